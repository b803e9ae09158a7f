//! The demo's configuration: Service, Pod and Endpoints objects for every Bookinfo instance (the
//! endpoints are the sidecars' inbound listeners), Istio's `destination-rule-all` subsets, and the
//! `bookinfo-gateway` Gateway with its `bookinfo` VirtualService.

use mesh_proto::config::{ConfigObject, Kind};
use serde_json::{Value, json};

/// The Service port every demo app has (named `http`).
pub const DEMO_PORT: u16 = 9080;

/// The namespace of the demo.
pub const DEMO_NAMESPACE: &str = "default";

/// The demo's services and the versions `up --demo` runs, in start order.
pub const DEMO_APPS: &[(&str, &[&str])] = &[
    ("productpage", &["v1"]),
    ("details", &["v1"]),
    ("reviews", &["v1", "v2", "v3"]),
    ("ratings", &["v1"]),
];

/// Subsets as in Istio's `samples/bookinfo/networking/destination-rule-all.yaml`.
const SUBSETS: &[(&str, &[&str])] = &[
    ("productpage", &["v1"]),
    ("reviews", &["v1", "v2", "v3"]),
    ("ratings", &["v1", "v2", "v2-mysql", "v2-mysql-vm"]),
    ("details", &["v1", "v2"]),
];

/// One running instance of a demo app, as the config sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoInstance {
    pub app: String,
    pub version: String,
    /// Pod name, e.g. `reviews-v2`.
    pub pod: String,
    /// The sidecar's inbound (mTLS) port: the endpoint other proxies connect to.
    pub inbound_port: u16,
}

/// The service account of an app's pods.
pub fn service_account(app: &str) -> String {
    format!("bookinfo-{app}")
}

/// The versions that run under their own service account `bookinfo-<app>-<version>`, so an
/// AuthorizationPolicy can tell them apart (Istio's sample denies reviews-v3's calls to ratings).
const OWN_SERVICE_ACCOUNT: &[(&str, &str)] = &[("reviews", "v3")];

/// The service account of one instance: `bookinfo-<app>`, or `bookinfo-<app>-<version>` for the
/// versions in [`OWN_SERVICE_ACCOUNT`].
pub fn instance_service_account(app: &str, version: &str) -> String {
    if OWN_SERVICE_ACCOUNT.contains(&(app, version)) {
        format!("bookinfo-{app}-{version}")
    } else {
        service_account(app)
    }
}

/// Every object of the demo for these instances.
pub fn demo_objects(instances: &[DemoInstance]) -> Vec<ConfigObject> {
    let mut out = Vec::new();
    let mut apps: Vec<&str> = Vec::new();
    for i in instances {
        if !apps.contains(&i.app.as_str()) {
            apps.push(&i.app);
        }
    }
    for app in &apps {
        out.push(object(
            Kind::Service,
            app,
            json!({"spec": {
                "selector": {"app": app},
                "ports": [{"name": "http", "port": DEMO_PORT, "targetPort": DEMO_PORT, "protocol": "TCP"}],
            }}),
            json!({"app": app, "service": app}),
        ));
    }
    for i in instances {
        out.push(object(
            Kind::Pod,
            &i.pod,
            json!({
                "spec": {"serviceAccountName": instance_service_account(&i.app, &i.version), "containers": [{"name": i.app}]},
                "status": {"podIP": "127.0.0.1", "phase": "Running"},
            }),
            json!({"app": i.app, "version": i.version}),
        ));
    }
    for app in &apps {
        let subsets: Vec<Value> = instances
            .iter()
            .filter(|i| i.app == *app)
            .map(|i| {
                json!({
                    "addresses": [{"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": i.pod, "namespace": DEMO_NAMESPACE}}],
                    "ports": [{"name": "http", "port": i.inbound_port, "protocol": "TCP"}],
                })
            })
            .collect();
        out.push(object(
            Kind::Endpoints,
            app,
            json!({"subsets": subsets}),
            json!({"app": app, "service": app}),
        ));
    }
    for (host, versions) in SUBSETS {
        let subsets: Vec<Value> = versions
            .iter()
            .map(|v| json!({"name": v, "labels": {"version": v}}))
            .collect();
        out.push(object(
            Kind::DestinationRule,
            host,
            json!({"spec": {"host": host, "subsets": subsets}}),
            json!({}),
        ));
    }
    out.push(object(
        Kind::Gateway,
        "bookinfo-gateway",
        json!({"spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        }}),
        json!({}),
    ));
    out.push(object(
        Kind::VirtualService,
        "bookinfo",
        json!({"spec": {
            "hosts": ["*"],
            "gateways": ["bookinfo-gateway"],
            "http": [{
                "match": [
                    {"uri": {"exact": "/productpage"}},
                    {"uri": {"prefix": "/static"}},
                    {"uri": {"exact": "/login"}},
                    {"uri": {"exact": "/logout"}},
                    {"uri": {"prefix": "/api/v1/products"}},
                ],
                "route": [{"destination": {"host": "productpage", "port": {"number": DEMO_PORT}}}],
            }],
        }}),
        json!({}),
    ));
    out
}

fn object(kind: Kind, name: &str, body: Value, labels: Value) -> ConfigObject {
    let body = match body {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let labels = match labels {
        Value::Object(m) => m
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect(),
        _ => Default::default(),
    };
    ConfigObject {
        api_version: kind.api_version(),
        kind: kind.info().kind.to_string(),
        metadata: mesh_proto::config::ObjectMeta {
            name: name.to_string(),
            namespace: DEMO_NAMESPACE.to_string(),
            labels,
            ..Default::default()
        },
        body,
    }
}

/// The objects as one multi-document YAML file, with a header saying who wrote it.
pub fn demo_yaml(instances: &[DemoInstance]) -> Result<String, serde_saphyr::SerializeError> {
    let docs = serde_saphyr::to_string_multiple(&demo_objects(instances))?;
    Ok(format!(
        "# Written by `meshctl up --demo` at every start (the endpoint ports change): edits are lost.\n{docs}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::{
        DestinationRule, Endpoints, Gateway, Pod, ServiceSpec, VirtualService,
    };

    fn instances() -> Vec<DemoInstance> {
        let mut v = Vec::new();
        let mut port = 20000;
        for (app, versions) in DEMO_APPS {
            for ver in *versions {
                port += 1;
                v.push(DemoInstance {
                    app: app.to_string(),
                    version: ver.to_string(),
                    pod: format!("{app}-{ver}"),
                    inbound_port: port,
                });
            }
        }
        v
    }

    fn find<'a>(objs: &'a [ConfigObject], kind: Kind, name: &str) -> &'a ConfigObject {
        objs.iter()
            .find(|o| o.kind_info() == Some(kind) && o.metadata.name == name)
            .unwrap_or_else(|| panic!("no {kind:?} {name}"))
    }

    #[test]
    fn yaml_parses_back_as_the_demo_objects() {
        let inst = instances();
        let yaml = demo_yaml(&inst).unwrap();
        let objs: Vec<ConfigObject> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(objs, demo_objects(&inst));
        // 4 services, 6 pods, 4 endpoints, 4 destination rules, 1 gateway, 1 virtual service.
        assert_eq!(objs.len(), 20);
        assert!(objs.iter().all(|o| o.kind_info().is_some()));
        assert!(objs.iter().all(|o| o.metadata.namespace == "default"));

        let svc: ServiceSpec = find(&objs, Kind::Service, "reviews").spec().unwrap();
        assert_eq!(svc.ports[0].port, 9080);
        assert_eq!(svc.ports[0].name.as_deref(), Some("http"));
        assert_eq!(svc.selector.get("app").map(String::as_str), Some("reviews"));

        let pod_obj = find(&objs, Kind::Pod, "reviews-v2");
        assert_eq!(
            pod_obj.metadata.labels.get("version").map(String::as_str),
            Some("v2")
        );
        assert_eq!(
            pod_obj.metadata.labels.get("app").map(String::as_str),
            Some("reviews")
        );
        let pod: Pod = pod_obj.body_as().unwrap();
        assert_eq!(
            pod.spec.service_account_name.as_deref(),
            Some("bookinfo-reviews")
        );
        // reviews-v3 has its own service account.
        let v3: Pod = find(&objs, Kind::Pod, "reviews-v3").body_as().unwrap();
        assert_eq!(
            v3.spec.service_account_name.as_deref(),
            Some("bookinfo-reviews-v3")
        );
        assert_eq!(pod.status.pod_ip.as_deref(), Some("127.0.0.1"));

        let eps: Endpoints = find(&objs, Kind::Endpoints, "reviews").body_as().unwrap();
        assert_eq!(eps.subsets.len(), 3);
        for (subset, inst) in eps
            .subsets
            .iter()
            .zip(inst.iter().filter(|i| i.app == "reviews"))
        {
            let addr = &subset.addresses[0];
            assert_eq!(addr.ip, "127.0.0.1");
            let target = addr.target_ref.as_ref().unwrap();
            assert_eq!(target.kind.as_deref(), Some("Pod"));
            assert_eq!(target.name, inst.pod);
            assert_eq!(subset.ports[0].name.as_deref(), Some("http"));
            assert_eq!(subset.ports[0].port, inst.inbound_port);
        }

        let dr: DestinationRule = find(&objs, Kind::DestinationRule, "reviews")
            .spec()
            .unwrap();
        let names: Vec<&str> = dr.subsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["v1", "v2", "v3"]);
        assert_eq!(
            dr.subsets[2].labels.get("version").map(String::as_str),
            Some("v3")
        );

        let gw: Gateway = find(&objs, Kind::Gateway, "bookinfo-gateway")
            .spec()
            .unwrap();
        assert_eq!(
            gw.selector.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
        assert_eq!(gw.servers[0].port.number, 80);
        assert_eq!(gw.servers[0].hosts, ["*"]);

        let vs: VirtualService = find(&objs, Kind::VirtualService, "bookinfo")
            .spec()
            .unwrap();
        assert_eq!(vs.hosts, ["*"]);
        assert_eq!(vs.gateways, ["bookinfo-gateway"]);
        assert_eq!(vs.http[0].matches.len(), 5);
        assert_eq!(vs.http[0].route[0].destination.host, "productpage");
    }
}
