//! TLS origination through the routed HTTP path against an in-test rustls server: the SNI and
//! client certificate it sees, CA and SAN verification, and the 503 `UF` on a failed
//! handshake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;

use super::*;
use crate::admin::ProxyMetrics;
use crate::cluster::{Cluster, Endpoints, LbPolicy, Limits, UpstreamTls};
use crate::http::{ProxyContext, RoutedKind, Upstream, Workload, serve_routed};
use crate::routing::{Forwarding, PathMatch, Route, RouteAction, RouteTable, VirtualHost};
use crate::tls::IdentitySlot;
use crate::tls::origination;
use crate::xds::{Config, Listener, NodeInfo, ProxyType, SharedConfig};

const LISTENER: &str = "virtualOutbound";
const HOST: &str = "api.example.com";

/// A CA that signs server and client certificates.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// (chain PEM, key PEM, chain DER) for `sans` (DNS names, or URIs with `://`).
    fn leaf(&self, sans: &[&str]) -> (String, String, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = sans
            .iter()
            .map(|s| {
                if s.contains("://") {
                    rcgen::SanType::URI((*s).try_into().unwrap())
                } else {
                    rcgen::SanType::DnsName((*s).try_into().unwrap())
                }
            })
            .collect();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn root_der(&self) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut self.pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }
}

/// What the test server saw of each handshake: the SNI and the client certificate.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<CertificateDer<'static>>)>>>;

/// An HTTPS server with `server` (SANs) signed by `ca`, asking for (not requiring) a client
/// certificate signed by `client_ca`; answers 200 `tls ok`.
async fn tls_server(ca: &TestCa, sans: &[&str], client_ca: &TestCa) -> (SocketAddr, Seen) {
    let (_, key_pem, der) = ca.leaf(sans);
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.root_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), s2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                {
                    let conn = tls.get_ref().1;
                    seen.lock().push((
                        conn.server_name().map(str::to_string),
                        conn.peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.clone().into_owned()),
                    ));
                }
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"tls ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A sidecar outbound listener routing `svc` to one cluster with `tls` at `addr`.
async fn proxy(tls: UpstreamTls, addr: SocketAddr) -> (SocketAddr, mesh_runtime::Metrics) {
    let table = RouteTable::new(
        "r".into(),
        vec![VirtualHost {
            name: "svc:80".into(),
            domains: vec!["svc".into()],
            routes: vec![Route {
                name: "test-route".into(),
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
                action: RouteAction::Cluster("c".into()),
                forwarding: Forwarding::default(),
            }],
        }],
    );
    let mut config = Config::default();
    config.listeners.insert(
        LISTENER.into(),
        Listener {
            name: LISTENER.into(),
            address: None,
            route_config_name: Some("r".into()),
            inbound: None,
            tcp: None,
            mixer: None,
        },
    );
    config.routes.insert("r".into(), Arc::new(table));
    let c = Cluster {
        name: "c".into(),
        eds_name: "c".into(),
        connect_timeout: Duration::from_secs(2),
        tls: Some(tls),
        lb: LbPolicy::RoundRobin,
        limits: Limits::default(),
        max_requests_per_connection: None,
        outlier: None,
        service: None,
    };
    config
        .endpoints
        .insert("c".into(), Arc::new(Endpoints::new(vec![addr])));
    config.clusters.insert("c".into(), Arc::new(c));
    let metrics = mesh_runtime::Metrics::default();
    let node = NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: "test-pod".into(),
        workload_name: None,
        namespace: "default".into(),
        service_account: "default".into(),
        labels: BTreeMap::new(),
    };
    let ctx = Arc::new(ProxyContext {
        config: SharedConfig::new(config),
        upstream: Upstream::new(Duration::from_secs(2)),
        metrics: ProxyMetrics::register(&metrics),
        mixer: None,
        // No workload identity: TLS origination does not need one.
        identity: IdentitySlot::default(),
        node: node.clone(),
        app_addr: "127.0.0.1:9".parse().unwrap(),
        workload: Workload::of_node(&node),
        access_log: None,
        tracer: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = l.local_addr().unwrap();
    tokio::spawn(serve_routed(
        l,
        ctx,
        LISTENER.into(),
        RoutedKind::SidecarOutbound,
        std::future::pending(),
    ));
    (proxy_addr, metrics)
}

async fn get(proxy: SocketAddr) -> (u16, String) {
    let client = Upstream::new(Duration::from_secs(2));
    let req = Request::builder()
        .uri("/x")
        .header("host", "svc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send(proxy, None, req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_for_metric(metrics: &mesh_runtime::Metrics, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics.encode();
        if text.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(Instant::now() < deadline, "no {needles:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn origination(spec: OriginationSpec) -> UpstreamTls {
    UpstreamTls {
        expected_sans: vec![],
        sni: spec.sni.clone(),
        origination: Some(Origination::build(spec).unwrap()),
    }
}

#[tokio::test]
async fn mutual_presents_the_client_certificate_and_sni() {
    let server_ca = TestCa::new("server-ca");
    let client_ca = TestCa::new("client-ca");
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, client_der) = client_ca.leaf(&["spiffe://client.example/app"]);
    let spec = OriginationSpec {
        client_cert: Some((
            write(dir.path(), "client.pem", &chain),
            write(dir.path(), "key.pem", &key),
        )),
        trusted_ca: Some(write(dir.path(), "ca.pem", &server_ca.pem)),
        sans: vec![],
        sni: HOST.into(),
        insecure_skip_verify: false,
    };
    let (addr, seen) = tls_server(&server_ca, &[HOST], &client_ca).await;
    let (proxy_addr, _) = proxy(origination(spec), addr).await;
    assert_eq!(get(proxy_addr).await, (200, "tls ok".to_string()));
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.as_deref(), Some(HOST), "SNI");
    assert_eq!(seen[0].1.as_ref(), Some(&client_der), "client certificate");
}

#[tokio::test]
async fn simple_presents_no_certificate_and_checks_sans() {
    let server_ca = TestCa::new("server-ca");
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &server_ca.pem);
    let (addr, seen) = tls_server(&server_ca, &[HOST, "spiffe://ext/x"], &server_ca).await;
    // SNI other than the certificate's names, SAN matcher naming the URI SAN: accepted.
    let spec = OriginationSpec {
        trusted_ca: Some(ca.clone()),
        sans: vec![SanMatch {
            kind: SanKind::Uri,
            value: "spiffe://ext/x".into(),
        }],
        sni: "other.example.org".into(),
        ..OriginationSpec::default()
    };
    let (p, _) = proxy(origination(spec), addr).await;
    assert_eq!(get(p).await.0, 200);
    assert_eq!(
        seen.lock()[0],
        (Some("other.example.org".to_string()), None),
        "SNI from the config, no client certificate"
    );
    // A SAN the certificate does not carry: refused.
    let spec = OriginationSpec {
        trusted_ca: Some(ca.clone()),
        sans: vec![SanMatch {
            kind: SanKind::Dns,
            value: "nope.example.com".into(),
        }],
        sni: HOST.into(),
        ..OriginationSpec::default()
    };
    let (p, _) = proxy(origination(spec), addr).await;
    assert_eq!(get(p).await.0, 503);
    // No SANs: the SNI must be one of the certificate's names.
    let spec = OriginationSpec {
        trusted_ca: Some(ca),
        sni: "other.example.org".into(),
        ..OriginationSpec::default()
    };
    let (p, _) = proxy(origination(spec), addr).await;
    assert_eq!(get(p).await.0, 503);
}

#[tokio::test]
async fn wrong_ca_is_a_503_uf_and_counted_unless_insecure() {
    let server_ca = TestCa::new("server-ca");
    let other_ca = TestCa::new("other-ca");
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = tls_server(&server_ca, &[HOST], &server_ca).await;
    let spec = OriginationSpec {
        trusted_ca: Some(write(dir.path(), "other.pem", &other_ca.pem)),
        sni: HOST.into(),
        ..OriginationSpec::default()
    };
    let (p, metrics) = proxy(origination(spec.clone()), addr).await;
    let (status, body) = get(p).await;
    assert_eq!(status, 503, "{body}");
    wait_for_metric(&metrics, &["istio_requests_total", "response_flags=\"UF\""]).await;
    wait_for_metric(
        &metrics,
        &["proxy_upstream_errors_total", "reason=\"connect\"", "} 1"],
    )
    .await;
    // The request did not count as mutual TLS.
    assert!(
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("istio_requests_total"))
            .all(|l| !l.contains("connection_security_policy=\"mutual_tls\"")),
    );
    // insecureSkipVerify: the same server is accepted.
    let insecure = OriginationSpec {
        insecure_skip_verify: true,
        ..spec
    };
    let (p, _) = proxy(origination(insecure), addr).await;
    assert_eq!(get(p).await.0, 200);
}

#[test]
fn building_fails_on_missing_files_and_names_are_remembered() {
    let e = Origination::build(OriginationSpec {
        trusted_ca: Some("/nonexistent/ca.pem".into()),
        ..OriginationSpec::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let o = Origination::build(OriginationSpec {
        sni: HOST.into(),
        insecure_skip_verify: true,
        ..OriginationSpec::default()
    })
    .unwrap();
    let cfg = o.client_config();
    // A copy with other ALPN (as the HTTP path makes) keeps the name.
    let copy = crate::http::alpn::client_config(&cfg, crate::http::alpn::HopProtocol::Http1);
    assert_eq!(
        origination::server_name_of(&copy),
        Some(rustls::pki_types::ServerName::try_from(HOST).unwrap())
    );
    // Mesh configurations have none.
    let mesh = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    assert_eq!(origination::server_name_of(&mesh), None);
}
