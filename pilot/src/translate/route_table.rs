//! RDS: `http_proxy` for sidecars (one virtual host per service port) and `http.<port>` for
//! gateways (virtual hosts from the VirtualServices bound to the gateway).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mesh_proto::envoy::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};

use super::http_route::{RouteContext, default_route, http_routes};
use super::names::{HTTP_PROXY_ROUTE, cluster_name, gateway_route};
use super::{ProxyInfo, Skipped};
use crate::model::{GatewayEntry, Registry, Service};

/// The sidecar route table `http_proxy`.
pub fn sidecar_routes(
    reg: &Registry,
    proxy: &ProxyInfo,
    skipped: &mut Vec<Skipped>,
) -> RouteConfiguration {
    let mesh = vec!["mesh".to_string()];
    let mut virtual_hosts = Vec::new();
    for svc in reg.services.values() {
        let vs = reg.mesh_virtual_services(&svc.fqdn).next();
        for port in &svc.ports {
            let mut routes: Vec<Route> = Vec::new();
            if let Some(vs) = vs {
                let ctx = RouteContext {
                    registry: reg,
                    vs,
                    port: port.port,
                    service_host: Some(&svc.fqdn),
                    gateways: &mesh,
                    proxy_labels: &proxy.labels,
                };
                match http_routes(&ctx) {
                    Ok(r) => routes = r,
                    Err(e) => skipped.push(Skipped::new(vs, e.to_string())),
                }
            }
            if routes.is_empty() {
                routes.push(default_route(reg, cluster_name(port.port, "", &svc.fqdn)));
            }
            virtual_hosts.push(VirtualHost {
                name: format!("{}:{}", svc.fqdn, port.port),
                domains: sidecar_domains(svc, port.port, &proxy.namespace),
                routes,
                ..VirtualHost::default()
            });
        }
    }
    RouteConfiguration {
        name: HTTP_PROXY_ROUTE.to_string(),
        virtual_hosts,
        ..RouteConfiguration::default()
    }
}

/// `FQDN`, `FQDN:P`, `name.ns[.svc]`, `name.ns[.svc]:P`, and `name`, `name:P` for proxies in the
/// service's namespace (Kubernetes Services); a ServiceEntry host and `host:P`.
fn sidecar_domains(svc: &Service, port: u16, proxy_namespace: &str) -> Vec<String> {
    let mut hosts = vec![svc.fqdn.clone()];
    // A ServiceEntry host (maybe `*.example.com`) only as written; a Kubernetes Service also by
    // its short names.
    if svc.is_kubernetes() {
        if svc.namespace == proxy_namespace {
            hosts.push(svc.name.clone());
        }
        hosts.push(format!("{}.{}", svc.name, svc.namespace));
        hosts.push(format!("{}.{}.svc", svc.name, svc.namespace));
    }
    let mut domains: Vec<String> = hosts
        .into_iter()
        .flat_map(|h| [h.clone(), format!("{h}:{port}")])
        .collect();
    // The service's VIPs (clusterIP, ServiceEntry `addresses` that are single IPs), as a client
    // that connects by address sends them in `Host` (`curl http://10.0.0.1:9080/`).
    for ip in svc
        .addresses
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
    {
        domains.push(ip.to_string());
        domains.push(SocketAddr::new(ip, port).to_string());
    }
    domains
}

/// One `http.<port>` table per port of the gateways selecting this proxy, sorted by port.
pub fn gateway_routes(
    reg: &Registry,
    proxy: &ProxyInfo,
    gateways: &[&GatewayEntry],
    skipped: &mut Vec<Skipped>,
) -> Vec<RouteConfiguration> {
    let mut by_port: BTreeMap<u32, Vec<&GatewayEntry>> = BTreeMap::new();
    for gw in gateways {
        for server in &gw.spec.servers {
            let list = by_port.entry(server.port.number).or_default();
            if !list.iter().any(|g| std::ptr::eq(*g, *gw)) {
                list.push(gw);
            }
        }
    }
    by_port
        .into_iter()
        .map(|(port, gws)| gateway_table(reg, proxy, port, &gws, skipped))
        .collect()
}

fn gateway_table(
    reg: &Registry,
    proxy: &ProxyInfo,
    port: u32,
    gateways: &[&GatewayEntry],
    skipped: &mut Vec<Skipped>,
) -> RouteConfiguration {
    let names: Vec<String> = gateways
        .iter()
        .map(|g| format!("{}/{}", g.namespace, g.name))
        .collect();
    // host → routes, merged over VirtualServices in namespace/name order.
    let mut hosts: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    for vs in &reg.virtual_services {
        if !gateways
            .iter()
            .any(|g| vs.bound_to_gateway(&g.namespace, &g.name))
        {
            continue;
        }
        let ctx = RouteContext {
            registry: reg,
            vs,
            port: u16::try_from(port).unwrap_or(0),
            service_host: None,
            gateways: &names,
            proxy_labels: &proxy.labels,
        };
        match http_routes(&ctx) {
            Ok(routes) => {
                for h in &vs.spec.hosts {
                    hosts.entry(h.clone()).or_default().extend(routes.clone());
                }
            }
            Err(e) => skipped.push(Skipped::new(vs, e.to_string())),
        }
    }
    let virtual_hosts = hosts
        .into_iter()
        .map(|(host, routes)| VirtualHost {
            // A plain HTTP server with `tls.httpsRedirect` covering the host: 301 to https.
            routes: if super::gateway_tls::https_redirect(gateways, port, &host) {
                vec![super::gateway_tls::https_redirect_route()]
            } else {
                routes
            },
            name: format!("{host}:{port}"),
            domains: if host == "*" {
                vec![host]
            } else {
                vec![host.clone(), format!("{host}:{port}")]
            },
            ..VirtualHost::default()
        })
        .collect();
    RouteConfiguration {
        name: gateway_route(port),
        virtual_hosts,
        ..RouteConfiguration::default()
    }
}
