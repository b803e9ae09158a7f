//! The plan of a local mesh: every process, its flags and addresses, derived from picked ports.
//! Pure data: nothing here starts anything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::demo_config::{DEMO_APPS, DEMO_NAMESPACE, DemoInstance, instance_service_account};
use super::ports::{Exhausted, PortPool};
use crate::state::{
    AppAddrs, GalleyAddrs, GrpcAddrs, MeshState, PilotAddrs, ProcessInfo, ProxyAddrs,
};

/// The ingress gateway's pod, namespace, service account and labels (as Istio names them).
pub const INGRESS_POD: &str = "istio-ingressgateway";
pub const INGRESS_NAMESPACE: &str = "istio-system";
pub const INGRESS_SERVICE_ACCOUNT: &str = "istio-ingressgateway-service-account";
pub const INGRESS_LABELS: &str = "istio=ingressgateway";
/// Pilot's identity (its xDS mTLS certificate, from Citadel), as Istio 1.4 names it; the
/// proxies accept only this identity on Pilot's mTLS xDS port.
pub const PILOT_NAMESPACE: &str = "istio-system";
pub const PILOT_SERVICE_ACCOUNT: &str = "istio-pilot-service-account";
pub const PILOT_SPIFFE_ID: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-pilot-service-account";

/// One process to start: a name (its log is `logs/<name>.log`), the command, and the URL that
/// answers 200 once it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub ready_url: String,
}

/// One mesh-proxy instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    pub router: bool,
    pub pod: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: String,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// The app behind a sidecar.
    pub app: Option<SocketAddr>,
}

/// One demo app instance with its sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub app: String,
    pub version: String,
    pub sidecar: ProxyPlan,
    pub listen: SocketAddr,
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub state: PathBuf,
    pub config: PathBuf,
    pub bin: PathBuf,
}

impl Dirs {
    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }
    pub fn tokens(&self) -> PathBuf {
        self.state.join("tokens")
    }
    /// Citadel's `--state-dir`: root key/cert and the local token issuer key.
    pub fn citadel(&self) -> PathBuf {
        self.state.join("citadel")
    }
    pub fn galley_store(&self) -> PathBuf {
        self.state.join("galley.sled")
    }
    /// Galley's `--mesh-config`: Istio's mesh config YAML, written by `up`, watched by galley.
    pub fn mesh_config(&self) -> PathBuf {
        self.state.join("meshconfig.yaml")
    }
    /// The token file of a service account.
    /// The ingress' file fallback for a Gateway server's `credentialName` (used only while
    /// Pilot sends no secret of that name):
    /// `STATE/gateway-credentials/<name>/{tls.crt,tls.key,ca.crt}`.
    pub fn gateway_credentials(&self) -> PathBuf {
        self.state.join("gateway-credentials")
    }
    /// Pilot's `--credential-dir`, served to the ingress over SDS (and watched, so a rotated
    /// certificate is served without a restart):
    /// `STATE/credentials/<namespace>/<name>/{tls.crt,tls.key,ca.crt}`; the demo ingress runs
    /// in `istio-system`.
    pub fn credentials(&self) -> PathBuf {
        self.state.join("credentials")
    }
    pub fn token_file(&self, namespace: &str, sa: &str) -> PathBuf {
        self.tokens().join(format!("{namespace}.{sa}.jwt"))
    }
    fn bin(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// Every process and address of one local mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dirs: Dirs,
    pub galley_mcp: SocketAddr,
    pub galley_api: SocketAddr,
    pub galley_monitoring: SocketAddr,
    pub pilot_xds: SocketAddr,
    /// Pilot's xDS over mTLS (Istio's 15012): where the proxies connect.
    pub pilot_xds_tls: SocketAddr,
    pub pilot_debug: SocketAddr,
    pub pilot_monitoring: SocketAddr,
    pub citadel_grpc: SocketAddr,
    /// Citadel's TLS listener: workloads renew there with their current certificate.
    pub citadel_tls: SocketAddr,
    pub citadel_monitoring: SocketAddr,
    pub mixer_grpc: SocketAddr,
    pub mixer_monitoring: SocketAddr,
    pub ingress: ProxyPlan,
    /// Where the ingress serves the Gateway's port 80.
    pub ingress_http: SocketAddr,
    /// Where the ingress serves the Gateway's port 443 (HTTPS servers, TLS passthrough).
    pub ingress_https: SocketAddr,
    pub workloads: Vec<Workload>,
    /// Every proxy exports spans here (OTLP/gRPC) and records every trace; none when `None`.
    pub trace_collector: Option<String>,
    /// Workload certificate lifetime every proxy asks Citadel for (`--cert-ttl`); the proxy's
    /// default (24h) when `None`.
    pub cert_ttl: Option<String>,
    /// Whether the mesh config turns access logging on (JSON to each proxy's stdout, i.e. its
    /// process log `STATE/logs/<name>.log`).
    pub access_log: bool,
}

/// The mesh config `up` writes (Istio's `mesh` ConfigMap key): access logs in JSON to each
/// proxy's standard output when `access_log`, else off. Policy checks fail open (Istio's
/// default is closed): the local demo keeps answering while Mixer restarts, as the chart's
/// default `policyCheckFailOpen: true` does in a cluster.
pub fn mesh_config_yaml(access_log: bool) -> String {
    let file = if access_log { "/dev/stdout" } else { "\"\"" };
    format!(
        "# Istio's mesh config (what the `mesh` key of Istio's `istio` ConfigMap holds), read by\n\
         # galley --mesh-config and watched: edit it while the mesh runs. Written by `meshctl up`.\n\
         accessLogFile: {file}\n\
         accessLogEncoding: JSON\n\
         policyCheckFailOpen: true\n\
         # Istio 1.4 defaults to true; the demo's Mixer policy (deny, whitelist, quota) needs checks.\n\
         disablePolicyChecks: false\n"
    )
}

fn url(a: SocketAddr) -> String {
    format!("http://{a}")
}

impl Layout {
    /// How many ports a layout takes.
    pub fn ports_needed(demo: bool) -> usize {
        let instances: usize = DEMO_APPS.iter().map(|(_, v)| v.len()).sum();
        12 + 5 + if demo { instances * 4 } else { 0 }
    }

    /// Assigns ports from `pool` to every listener.
    pub fn new(dirs: Dirs, demo: bool, pool: &mut PortPool) -> Result<Layout, Exhausted> {
        let mut next = || pool.next_addr();
        let mut layout = Layout {
            dirs,
            galley_mcp: next()?,
            galley_api: next()?,
            galley_monitoring: next()?,
            pilot_xds: next()?,
            pilot_xds_tls: next()?,
            pilot_debug: next()?,
            pilot_monitoring: next()?,
            citadel_grpc: next()?,
            citadel_tls: next()?,
            citadel_monitoring: next()?,
            mixer_grpc: next()?,
            mixer_monitoring: next()?,
            ingress: ProxyPlan {
                router: true,
                pod: INGRESS_POD.into(),
                namespace: INGRESS_NAMESPACE.into(),
                service_account: INGRESS_SERVICE_ACCOUNT.into(),
                labels: INGRESS_LABELS.into(),
                outbound: next()?,
                inbound: next()?,
                admin: next()?,
                app: None,
            },
            ingress_http: next()?,
            ingress_https: next()?,
            workloads: Vec::new(),
            trace_collector: None,
            cert_ttl: None,
            access_log: true,
        };
        if demo {
            for (app, versions) in DEMO_APPS {
                for version in *versions {
                    let listen = next()?;
                    layout.workloads.push(Workload {
                        app: app.to_string(),
                        version: version.to_string(),
                        listen,
                        sidecar: ProxyPlan {
                            router: false,
                            pod: format!("{app}-{version}"),
                            namespace: DEMO_NAMESPACE.into(),
                            service_account: instance_service_account(app, version),
                            labels: format!("app={app},version={version}"),
                            outbound: next()?,
                            inbound: next()?,
                            admin: next()?,
                            app: Some(listen),
                        },
                    });
                }
            }
        }
        Ok(layout)
    }

    /// The demo instances as the generated config sees them.
    pub fn demo_instances(&self) -> Vec<DemoInstance> {
        self.workloads
            .iter()
            .map(|w| DemoInstance {
                app: w.app.clone(),
                version: w.version.clone(),
                pod: w.sidecar.pod.clone(),
                inbound_port: w.sidecar.inbound.port(),
            })
            .collect()
    }

    /// Every proxy: the ingress first, then the sidecars.
    pub fn proxies(&self) -> Vec<&ProxyPlan> {
        std::iter::once(&self.ingress)
            .chain(self.workloads.iter().map(|w| &w.sidecar))
            .collect()
    }

    /// galley, pilot, citadel, mixer.
    pub fn control_plane(&self) -> Vec<ProcSpec> {
        let d = &self.dirs;
        let s = |a: SocketAddr| a.to_string();
        let p = |p: &Path| p.display().to_string();
        vec![
            ProcSpec {
                name: "galley".into(),
                program: d.bin("galley"),
                args: vec![
                    "--config-dir".into(),
                    p(&d.config),
                    "--store".into(),
                    p(&d.galley_store()),
                    "--mcp-addr".into(),
                    s(self.galley_mcp),
                    "--api-addr".into(),
                    s(self.galley_api),
                    "--monitoring-addr".into(),
                    s(self.galley_monitoring),
                    "--mesh-config".into(),
                    p(&d.mesh_config()),
                ],
                ready_url: format!("{}/readyz", url(self.galley_monitoring)),
            },
            ProcSpec {
                name: "pilot".into(),
                program: d.bin("pilot"),
                args: vec![
                    "--galley-addr".into(),
                    url(self.galley_mcp),
                    "--xds-addr".into(),
                    s(self.pilot_xds),
                    "--xds-tls-addr".into(),
                    s(self.pilot_xds_tls),
                    "--citadel-addr".into(),
                    url(self.citadel_grpc),
                    "--citadel-token-file".into(),
                    p(&d.token_file(PILOT_NAMESPACE, PILOT_SERVICE_ACCOUNT)),
                    "--debug-addr".into(),
                    s(self.pilot_debug),
                    "--monitoring-addr".into(),
                    s(self.pilot_monitoring),
                    "--credential-dir".into(),
                    p(&d.credentials()),
                ],
                ready_url: format!("{}/readyz", url(self.pilot_monitoring)),
            },
            ProcSpec {
                name: "citadel".into(),
                program: d.bin("citadel"),
                args: vec![
                    "--grpc-addr".into(),
                    s(self.citadel_grpc),
                    "--tls-addr".into(),
                    s(self.citadel_tls),
                    "--state-dir".into(),
                    p(&d.citadel()),
                    "--monitoring-addr".into(),
                    s(self.citadel_monitoring),
                ],
                ready_url: format!("{}/readyz", url(self.citadel_monitoring)),
            },
            ProcSpec {
                name: "mixer".into(),
                program: d.bin("mixer"),
                args: vec![
                    "--grpc-addr".into(),
                    s(self.mixer_grpc),
                    "--galley-addr".into(),
                    url(self.galley_mcp),
                    "--monitoring-addr".into(),
                    s(self.mixer_monitoring),
                ],
                ready_url: format!("{}/readyz", url(self.mixer_monitoring)),
            },
        ]
    }

    fn proxy_spec(&self, p: &ProxyPlan) -> ProcSpec {
        let s = |a: SocketAddr| a.to_string();
        let mut args = vec![
            "--type".to_string(),
            if p.router { "router" } else { "sidecar" }.into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--pod".into(),
            p.pod.clone(),
            "--namespace".into(),
            p.namespace.clone(),
            "--service-account".into(),
            p.service_account.clone(),
            "--labels".into(),
            p.labels.clone(),
            "--xds-addr".into(),
            format!("https://{}", self.pilot_xds_tls),
            "--xds-san".into(),
            PILOT_SPIFFE_ID.into(),
            "--citadel-addr".into(),
            url(self.citadel_grpc),
            "--citadel-tls-addr".into(),
            s(self.citadel_tls),
            "--token-file".into(),
            self.dirs
                .token_file(&p.namespace, &p.service_account)
                .display()
                .to_string(),
            "--mixer-addr".into(),
            url(self.mixer_grpc),
            "--outbound-addr".into(),
            s(p.outbound),
            "--inbound-addr".into(),
            s(p.inbound),
            "--admin-addr".into(),
            s(p.admin),
        ];
        if let Some(app) = p.app {
            args.extend(["--app-addr".into(), s(app)]);
        }
        if p.router {
            args.extend(["--gateway-port".into(), format!("80={}", self.ingress_http)]);
            args.extend([
                "--gateway-port".into(),
                format!("443={}", self.ingress_https),
            ]);
            args.extend([
                "--gateway-credential-dir".into(),
                self.dirs.gateway_credentials().display().to_string(),
            ]);
        }
        let name = if p.router {
            "ingressgateway".to_string()
        } else {
            format!("{}-proxy", p.pod)
        };
        // Access logs come from the mesh config (galley --mesh-config): JSON lines on the
        // proxy's stdout, i.e. in its process log.
        if let Some(ttl) = &self.cert_ttl {
            args.extend(["--cert-ttl".into(), ttl.clone()]);
        }
        if let Some(collector) = &self.trace_collector {
            // A local mesh is for looking at: record every trace.
            args.extend([
                "--trace-collector".into(),
                collector.clone(),
                "--trace-sampling".into(),
                "100".into(),
            ]);
        }
        ProcSpec {
            name,
            program: self.dirs.bin("mesh-proxy"),
            args,
            ready_url: format!("{}/readyz", url(p.admin)),
        }
    }

    /// The ingress gateway, every sidecar, and every demo app.
    pub fn data_plane(&self) -> Vec<ProcSpec> {
        let mut out: Vec<ProcSpec> = self
            .proxies()
            .into_iter()
            .map(|p| self.proxy_spec(p))
            .collect();
        for w in &self.workloads {
            out.push(ProcSpec {
                name: w.sidecar.pod.clone(),
                program: self.dirs.bin("bookinfo"),
                args: vec![
                    "--service".into(),
                    w.app.clone(),
                    "--version".into(),
                    w.version.clone(),
                    "--listen".into(),
                    w.listen.to_string(),
                    "--proxy".into(),
                    url(w.sidecar.outbound),
                ],
                ready_url: format!("{}/healthz", url(w.listen)),
            });
        }
        out
    }

    /// Every (namespace, service account) that needs a token.
    pub fn identities(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            vec![(PILOT_NAMESPACE.into(), PILOT_SERVICE_ACCOUNT.into())];
        for p in self.proxies() {
            let id = (p.namespace.clone(), p.service_account.clone());
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// What `mesh.json` says about this mesh.
    pub fn mesh_state(&self, pid: u32, processes: Vec<ProcessInfo>) -> MeshState {
        let proxies: BTreeMap<String, ProxyAddrs> = self
            .proxies()
            .into_iter()
            .map(|p| {
                (
                    p.pod.clone(),
                    ProxyAddrs {
                        type_: if p.router { "router" } else { "sidecar" }.into(),
                        namespace: p.namespace.clone(),
                        service_account: p.service_account.clone(),
                        outbound: p.outbound.to_string(),
                        inbound: p.inbound.to_string(),
                        admin: url(p.admin),
                        app: p.app.map(|a| a.to_string()),
                    },
                )
            })
            .collect();
        let apps = self
            .workloads
            .iter()
            .map(|w| {
                (
                    w.sidecar.pod.clone(),
                    AppAddrs {
                        service: w.app.clone(),
                        version: w.version.clone(),
                        listen: w.listen.to_string(),
                        sidecar: w.sidecar.pod.clone(),
                    },
                )
            })
            .collect();
        MeshState {
            pid,
            state_dir: self.dirs.state.clone(),
            config_dir: self.dirs.config.clone(),
            ingress: url(self.ingress_http),
            ingress_https: Some(self.ingress_https.to_string()),
            galley: GalleyAddrs {
                api: url(self.galley_api),
                mcp: url(self.galley_mcp),
                monitoring: url(self.galley_monitoring),
            },
            pilot: PilotAddrs {
                xds: url(self.pilot_xds),
                debug: url(self.pilot_debug),
                monitoring: url(self.pilot_monitoring),
            },
            citadel: GrpcAddrs {
                grpc: url(self.citadel_grpc),
                monitoring: url(self.citadel_monitoring),
            },
            mixer: GrpcAddrs {
                grpc: url(self.mixer_grpc),
                monitoring: url(self.mixer_monitoring),
            },
            proxies,
            apps,
            processes,
            dashboard: None,
        }
    }

    /// The one line printed when the mesh is ready.
    pub fn ready_line(&self) -> String {
        format!(
            "mesh ready: ingress={} galley={} pilot={} citadel={} mixer={}",
            url(self.ingress_http),
            url(self.galley_api),
            url(self.pilot_xds),
            url(self.citadel_grpc),
            url(self.mixer_grpc)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::ports::pick_free_ports;
    use std::collections::BTreeSet;

    fn dirs() -> Dirs {
        Dirs {
            state: "/s".into(),
            config: "/s/config".into(),
            bin: "/bin".into(),
        }
    }

    fn layout(demo: bool) -> Layout {
        let ports = pick_free_ports(Layout::ports_needed(demo)).unwrap();
        Layout::new(dirs(), demo, &mut PortPool::new(ports)).unwrap()
    }

    fn flag<'a>(spec: &'a ProcSpec, name: &str) -> Vec<&'a str> {
        spec.args
            .windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn every_listener_gets_its_own_port() {
        let l = layout(true);
        let mut addrs = vec![
            l.galley_mcp,
            l.galley_api,
            l.galley_monitoring,
            l.pilot_xds,
            l.pilot_xds_tls,
            l.pilot_debug,
            l.pilot_monitoring,
            l.citadel_grpc,
            l.citadel_tls,
            l.citadel_monitoring,
            l.mixer_grpc,
            l.mixer_monitoring,
            l.ingress_http,
            l.ingress_https,
        ];
        for p in l.proxies() {
            addrs.extend([p.outbound, p.inbound, p.admin]);
            addrs.extend(p.app);
        }
        let distinct: BTreeSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), addrs.len());
        assert_eq!(addrs.len(), Layout::ports_needed(true));
        assert!(Layout::new(dirs(), true, &mut PortPool::new(vec![1, 2])).is_err());
    }

    #[test]
    fn mesh_config_turns_json_access_logs_on_or_off() {
        for (on, file) in [(true, "/dev/stdout"), (false, "")] {
            let v: serde_json::Value = serde_saphyr::from_str(&mesh_config_yaml(on)).unwrap();
            let mesh = mesh_proto::config::MeshConfig::from_json(v).unwrap();
            assert_eq!(mesh.access_log_file, file);
            assert!(mesh.policy_check_fail_open);
            assert!(!mesh.disable_policy_checks, "checks stay on in local mode");
            assert_eq!(
                mesh.access_log_encoding,
                mesh_proto::config::AccessLogEncoding::Json
            );
        }
    }

    #[test]
    fn sidecars_and_apps_are_wired_together() {
        let l = layout(true);
        assert_eq!(l.workloads.len(), 6);
        let data = l.data_plane();
        assert_eq!(data.len(), 1 + 6 + 6);
        let reviews_v2 = l
            .workloads
            .iter()
            .find(|w| w.sidecar.pod == "reviews-v2")
            .unwrap();
        let proxy = data.iter().find(|p| p.name == "reviews-v2-proxy").unwrap();
        assert_eq!(proxy.program, PathBuf::from("/bin/mesh-proxy"));
        assert_eq!(flag(proxy, "--type"), ["sidecar"]);
        assert_eq!(flag(proxy, "--labels"), ["app=reviews,version=v2"]);
        assert_eq!(flag(proxy, "--service-account"), ["bookinfo-reviews"]);
        assert_eq!(
            flag(proxy, "--token-file"),
            ["/s/tokens/default.bookinfo-reviews.jwt"]
        );
        assert_eq!(
            flag(proxy, "--xds-addr"),
            [format!("https://{}", l.pilot_xds_tls)]
        );
        assert_eq!(flag(proxy, "--xds-san"), [PILOT_SPIFFE_ID]);
        assert!(
            flag(proxy, "--access-log").is_empty(),
            "the mesh config decides"
        );
        let app = data.iter().find(|p| p.name == "reviews-v2").unwrap();
        assert_eq!(app.program, PathBuf::from("/bin/bookinfo"));
        assert_eq!(flag(app, "--listen"), flag(proxy, "--app-addr"));
        assert_eq!(flag(app, "--proxy"), [url(reviews_v2.sidecar.outbound)]);
        let inst = l.demo_instances();
        let i = inst.iter().find(|i| i.pod == "reviews-v2").unwrap();
        assert_eq!(
            i.inbound_port.to_string(),
            flag(proxy, "--inbound-addr")[0].rsplit(':').next().unwrap()
        );

        assert!(flag(proxy, "--trace-collector").is_empty());
        let ingress = data.iter().find(|p| p.name == "ingressgateway").unwrap();
        assert_eq!(flag(ingress, "--type"), ["router"]);
        assert_eq!(flag(ingress, "--namespace"), ["istio-system"]);
        assert_eq!(flag(ingress, "--labels"), ["istio=ingressgateway"]);
        assert_eq!(
            flag(ingress, "--gateway-port"),
            [
                format!("80={}", l.ingress_http),
                format!("443={}", l.ingress_https)
            ]
        );
        assert!(flag(ingress, "--app-addr").is_empty());
        assert_eq!(
            flag(ingress, "--gateway-credential-dir"),
            ["/s/gateway-credentials"]
        );
    }

    #[test]
    fn control_plane_points_at_galley_and_citadel_state() {
        let l = layout(false);
        assert!(l.workloads.is_empty());
        assert_eq!(l.data_plane().len(), 1);
        let cp = l.control_plane();
        let names: Vec<&str> = cp.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["galley", "pilot", "citadel", "mixer"]);
        assert_eq!(flag(&cp[0], "--config-dir"), ["/s/config"]);
        assert_eq!(flag(&cp[1], "--galley-addr"), [url(l.galley_mcp)]);
        assert_eq!(flag(&cp[0], "--mesh-config"), ["/s/meshconfig.yaml"]);
        assert_eq!(flag(&cp[2], "--state-dir"), ["/s/citadel"]);
        assert_eq!(flag(&cp[3], "--galley-addr"), [url(l.galley_mcp)]);
        assert_eq!(
            cp[0].ready_url,
            format!("http://{}/readyz", l.galley_monitoring)
        );
        assert_eq!(
            l.identities(),
            [
                (
                    PILOT_NAMESPACE.to_string(),
                    PILOT_SERVICE_ACCOUNT.to_string()
                ),
                (
                    "istio-system".to_string(),
                    INGRESS_SERVICE_ACCOUNT.to_string()
                )
            ]
        );
        assert_eq!(
            flag(&cp[1], "--xds-tls-addr"),
            [l.pilot_xds_tls.to_string()]
        );
        assert_eq!(
            flag(&cp[1], "--citadel-token-file"),
            ["/s/tokens/istio-system.istio-pilot-service-account.jwt"]
        );
        // Gateway credentials reach the ingress over SDS from pilot.
        assert_eq!(flag(&cp[1], "--credential-dir"), ["/s/credentials"]);
        let line = l.ready_line();
        assert!(line.starts_with(&format!(
            "mesh ready: ingress=http://{} galley=http://{}",
            l.ingress_http, l.galley_api
        )));
        let state = l.mesh_state(9, vec![]);
        assert_eq!(state.galley.api, url(l.galley_api));
        assert_eq!(state.proxies["istio-ingressgateway"].type_, "router");
    }

    #[test]
    fn a_trace_collector_goes_to_every_proxy_with_full_sampling() {
        let mut l = layout(true);
        l.trace_collector = Some("127.0.0.1:4317".into());
        let data = l.data_plane();
        let proxies: Vec<&ProcSpec> = data
            .iter()
            .filter(|p| p.program == Path::new("/bin/mesh-proxy"))
            .collect();
        assert_eq!(proxies.len(), 7);
        for p in proxies {
            assert_eq!(
                flag(p, "--trace-collector"),
                ["127.0.0.1:4317"],
                "{}",
                p.name
            );
            assert_eq!(flag(p, "--trace-sampling"), ["100"], "{}", p.name);
        }
        let app = data.iter().find(|p| p.name == "reviews-v2").unwrap();
        assert!(flag(app, "--trace-collector").is_empty());
    }

    #[test]
    fn a_cert_ttl_goes_to_every_proxy() {
        let mut l = layout(true);
        assert!(
            l.data_plane()
                .iter()
                .all(|p| flag(p, "--cert-ttl").is_empty())
        );
        l.cert_ttl = Some("90s".into());
        let data = l.data_plane();
        let proxies: Vec<&ProcSpec> = data
            .iter()
            .filter(|p| p.program == Path::new("/bin/mesh-proxy"))
            .collect();
        assert_eq!(proxies.len(), 7);
        for p in proxies {
            assert_eq!(flag(p, "--cert-ttl"), ["90s"], "{}", p.name);
        }
    }
}
