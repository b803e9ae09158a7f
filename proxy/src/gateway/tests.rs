use std::path::Path;
use std::sync::Arc;

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::listener::v3::Listener as EnvoyListener;
use prost::Message;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::xds::XdsState;

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

    /// (certificate PEM, key PEM) for `names` (DNS names, or URIs with `://`).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = names
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
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `dir/{tls.crt,tls.key,ca.crt}` for `names`.
    fn write(&self, dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        let (c, k) = self.leaf(names);
        std::fs::write(dir.join("tls.crt"), c).unwrap();
        std::fs::write(dir.join("tls.key"), k).unwrap();
        std::fs::write(dir.join("ca.crt"), &self.pem).unwrap();
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }
}

/// Pilot's listeners for a router under `servers` (the VirtualService binds productpage).
fn pilot_listeners(servers: serde_json::Value) -> Vec<EnvoyListener> {
    let objs: Vec<ConfigObject> = serde_json::from_value(json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "pp", "namespace": "default"},
         "spec": {"hosts": ["bookinfo.example.com"], "gateways": ["gw"], "http": [
             {"route": [{"destination": {"host": "productpage"}}]}]}}
    ]))
    .unwrap();
    let reg = pilot::model::Registry::from_snapshot(
        &pilot::galley_client::Snapshot::from_objects(objs),
        "cluster.local",
    );
    let mut proxy = pilot::translate::ProxyInfo::from_id(
        "router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local",
    )
    .unwrap();
    proxy.labels.insert("istio".into(), "ingressgateway".into());
    pilot::translate::translate(
        &reg,
        &proxy,
        &pilot::translate::Options {
            trust_domain: "cluster.local".into(),
        },
    )
    .listeners
}

fn any(l: &EnvoyListener) -> mesh_proto::envoy::google::protobuf::Any {
    mesh_proto::envoy::google::protobuf::Any {
        type_url: mesh_proto::type_url::LISTENER.to_string(),
        value: l.encode_to_vec(),
    }
}

fn p(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

#[test]
fn pilot_https_simple_and_mutual_servers_decode_to_chains() {
    let dir = tempfile::tempdir().unwrap();
    let ls = pilot_listeners(json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
         "hosts": ["bookinfo.example.com"],
         "tls": {"mode": "SIMPLE", "serverCertificate": p(dir.path(), "a/tls.crt"),
                 "privateKey": p(dir.path(), "a/tls.key")}},
        {"port": {"number": 443, "name": "https-m", "protocol": "HTTPS"},
         "hosts": ["*.example.org"],
         "tls": {"mode": "MUTUAL", "credentialName": "cred-b",
                 "subjectAltNames": ["spiffe://td/ns/a/sa/b", "client.example.org"]}}
    ]));
    let l = ls.iter().find(|l| l.name == "0.0.0.0_443").unwrap();
    let spec = listener_tls_in(l, Path::new("/creds")).unwrap().unwrap();
    assert_eq!(spec.chains.len(), 2);
    let a = &spec.chains[0];
    assert_eq!(a.server_names, ["bookinfo.example.com"]);
    assert_eq!(a.cert_chain, PemSource::File(dir.path().join("a/tls.crt")));
    assert_eq!(a.client_ca, None);
    assert!(!a.require_client_certificate);
    assert_eq!(a.alpn, ["h2", "http/1.1"]);
    assert!(a.tls12 && a.tls13);
    let b = &spec.chains[1];
    assert_eq!(
        b.cert_chain,
        PemSource::Secret {
            name: "cred-b".into(),
            part: SecretPart::CertChain,
            fallback: "/creds/cred-b/tls.crt".into()
        }
    );
    assert_eq!(
        b.private_key,
        PemSource::Secret {
            name: "cred-b".into(),
            part: SecretPart::PrivateKey,
            fallback: "/creds/cred-b/tls.key".into()
        }
    );
    assert_eq!(
        b.client_ca,
        Some(PemSource::Secret {
            name: "cred-b-cacert".into(),
            part: SecretPart::TrustedCa,
            fallback: "/creds/cred-b/ca.crt".into()
        })
    );
    assert_eq!(
        spec.secret_names().into_iter().collect::<Vec<_>>(),
        ["cred-b", "cred-b-cacert"]
    );
    assert!(b.require_client_certificate);
    assert_eq!(
        b.client_sans,
        ["spiffe://td/ns/a/sa/b", "client.example.org"]
    );
    // The plaintext port has no TLS.
    let plain = pilot_listeners(json!([
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    ]));
    assert_eq!(
        listener_tls_in(&plain[0], Path::new("/creds")).unwrap(),
        None
    );
}

#[test]
fn bad_or_missing_files_nack_the_listener_update_and_keep_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test ca");
    ca.write(&dir.path().join("good"), &["bookinfo.example.com"]);
    std::fs::create_dir_all(dir.path().join("bad")).unwrap();
    std::fs::write(dir.path().join("bad/tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("bad/tls.key"), "nope").unwrap();
    let server = |sub: &str| {
        json!([{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": ["bookinfo.example.com"],
                "tls": {"mode": "SIMPLE", "serverCertificate": p(dir.path(), &format!("{sub}/tls.crt")),
                        "privateKey": p(dir.path(), &format!("{sub}/tls.key"))}}])
    };
    let mut state = XdsState::default();
    let good: Vec<_> = pilot_listeners(server("good")).iter().map(any).collect();
    let (_, cfg) = state
        .apply(mesh_proto::type_url::LISTENER, "v1", &good)
        .unwrap();
    let tls = cfg.gateway_tls("0.0.0.0_443").expect("tls listener");
    assert!(tls.select(Some("bookinfo.example.com")).is_some());
    for sub in ["bad", "missing"] {
        let bad: Vec<_> = pilot_listeners(server(sub)).iter().map(any).collect();
        let err = state
            .apply(mesh_proto::type_url::LISTENER, "v2", &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener 0.0.0.0_443"), "{err}");
        assert!(err.contains(&format!("{sub}/tls.crt")), "{err}");
    }
    // Nothing changed: the good one keeps serving.
    let snap = state.snapshot();
    assert_eq!(snap.versions.listeners, "v1");
    assert!(Arc::ptr_eq(snap.gateway_tls("0.0.0.0_443").unwrap(), tls));
    // A key that does not belong to the certificate is refused too.
    let (_, other_key) = ca.leaf(&["x.example.com"]);
    std::fs::write(dir.path().join("bad/tls.crt"), ca.leaf(&["a"]).0).unwrap();
    std::fs::write(dir.path().join("bad/tls.key"), other_key).unwrap();
    let bad: Vec<_> = pilot_listeners(server("bad")).iter().map(any).collect();
    assert!(
        state
            .apply(mesh_proto::type_url::LISTENER, "v3", &bad)
            .is_err()
    );
}

fn chain(names: &[&str]) -> ChainSpec {
    ChainSpec {
        server_names: names.iter().map(|s| s.to_string()).collect(),
        cert_chain: PemSource::Inline(Vec::new()),
        private_key: PemSource::Inline(Vec::new()),
        client_ca: None,
        require_client_certificate: false,
        client_sans: Vec::new(),
        alpn: Vec::new(),
        tls12: true,
        tls13: true,
        tcp: None,
    }
}

#[test]
fn chain_pick_exact_then_longest_wildcard_then_catch_all() {
    let spec = GatewayTlsSpec {
        chains: vec![
            chain(&["*.example.com"]),
            chain(&["a.example.com"]),
            chain(&["*.b.example.com"]),
        ],
    };
    assert_eq!(tls::pick(&spec, Some("a.example.com")), Some(1));
    assert_eq!(tls::pick(&spec, Some("A.EXAMPLE.com")), Some(1));
    assert_eq!(tls::pick(&spec, Some("x.b.example.com")), Some(2));
    assert_eq!(tls::pick(&spec, Some("z.example.com")), Some(0));
    assert_eq!(tls::pick(&spec, Some("example.com")), None);
    assert_eq!(
        tls::pick(&spec, None),
        None,
        "no SNI: only a chain without names"
    );
    let with_default = GatewayTlsSpec {
        chains: vec![chain(&["a.example.com"]), chain(&[])],
    };
    assert_eq!(tls::pick(&with_default, Some("other.org")), Some(1));
    assert_eq!(tls::pick(&with_default, None), Some(1));
}

/// Serves one handshake as the gateway listener does (ClientHello, chain by SNI, SAN check);
/// returns what the server read after the handshake, or `None` when it refused.
async fn handshake(
    tls: Arc<GatewayTls>,
    client: rustls::ClientConfig,
    sni: &str,
) -> (Option<String>, Result<String, String>) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = async move {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), s)
            .await
            .ok()?;
        let sel = tls.select(start.client_hello().server_name())?;
        let mut stream = start.into_stream(sel.config.clone()).await.ok()?;
        if !sel.client_allowed(stream.get_ref().1.peer_certificates()) {
            return None;
        }
        let alpn = stream
            .get_ref()
            .1
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).to_string());
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.ok()?;
        stream.write_all(b"world").await.ok()?;
        stream.flush().await.ok()?;
        Some(alpn.unwrap_or_default())
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let client = async move {
        let mut s = connector
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"hello").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf).to_string())
    };
    tokio::join!(server, client)
}

fn client(ca: &TestCa, cert: Option<(String, String)>) -> rustls::ClientConfig {
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.roots());
    let mut c = match cert {
        Some((c, k)) => {
            let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut c.as_bytes())
                .map(Result::unwrap)
                .collect();
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut k.as_bytes())
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c
}

#[tokio::test]
async fn handshakes_by_sni_with_client_certificates_for_mutual_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("gateway ca");
    ca.write(&dir.path().join("simple"), &["bookinfo.example.com"]);
    ca.write(&dir.path().join("mutual"), &["secure.example.com"]);
    let files = |sub: &str| {
        (
            PemSource::File(dir.path().join(sub).join("tls.crt")),
            PemSource::File(dir.path().join(sub).join("tls.key")),
        )
    };
    let (c1, k1) = files("simple");
    let (c2, k2) = files("mutual");
    let spec = GatewayTlsSpec {
        chains: vec![
            ChainSpec {
                cert_chain: c1,
                private_key: k1,
                alpn: vec!["h2".into(), "http/1.1".into()],
                ..chain(&["bookinfo.example.com"])
            },
            ChainSpec {
                cert_chain: c2,
                private_key: k2,
                client_ca: Some(PemSource::File(dir.path().join("mutual/ca.crt"))),
                require_client_certificate: true,
                client_sans: vec![
                    "client.example.com".into(),
                    "spiffe://example.org/ns/a/sa/client".into(),
                ],
                alpn: vec!["http/1.1".into()],
                ..chain(&["secure.example.com"])
            },
        ],
    };
    let tls = Arc::new(GatewayTls::build(spec).unwrap());
    // SIMPLE: the right name works (ALPN h2 chosen), a wrong one is refused.
    let (alpn, got) = handshake(tls.clone(), client(&ca, None), "bookinfo.example.com").await;
    assert_eq!(got.as_deref(), Ok("world"));
    assert_eq!(alpn.as_deref(), Some("h2"));
    let (srv, got) = handshake(tls.clone(), client(&ca, None), "wrong.example.com").await;
    assert!(srv.is_none() && got.is_err(), "{got:?}");
    // MUTUAL: no client certificate, or one without the SAN, is refused; the right one works.
    let (srv, got) = handshake(tls.clone(), client(&ca, None), "secure.example.com").await;
    assert!(srv.is_none() && got.is_err(), "{got:?}");
    let wrong = Some(ca.leaf(&["other.example.com"]));
    let (srv, _) = handshake(tls.clone(), client(&ca, wrong), "secure.example.com").await;
    assert!(srv.is_none());
    let foreign = TestCa::new("foreign");
    let untrusted = Some(foreign.leaf(&["client.example.com"]));
    let (srv, _) = handshake(tls.clone(), client(&ca, untrusted), "secure.example.com").await;
    assert!(srv.is_none());
    let good = Some(ca.leaf(&["client.example.com"]));
    let (alpn, got) = handshake(tls.clone(), client(&ca, good), "secure.example.com").await;
    assert_eq!(got.as_deref(), Ok("world"));
    assert_eq!(alpn.as_deref(), Some("http/1.1"));
    let by_uri = Some(ca.leaf(&["spiffe://example.org/ns/a/sa/client"]));
    let (srv, _) = handshake(tls.clone(), client(&ca, by_uri), "secure.example.com").await;
    assert!(srv.is_some(), "a listed URI SAN is accepted");
    let other_uri = Some(ca.leaf(&["spiffe://example.org/ns/a/sa/other"]));
    let (srv, _) = handshake(tls.clone(), client(&ca, other_uri), "secure.example.com").await;
    assert!(srv.is_none(), "an unlisted URI SAN is refused");
    // The files change (a new CA signs the SIMPLE certificate): picked up without an update.
    let ca2 = TestCa::new("rotated ca");
    let (c, k) = ca2.leaf(&["bookinfo.example.com", "rotated.example.com"]);
    std::fs::write(dir.path().join("simple/tls.crt"), c).unwrap();
    std::fs::write(dir.path().join("simple/tls.key"), k).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, got) = handshake(tls.clone(), client(&ca2, None), "bookinfo.example.com").await;
        if got.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reloaded: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Broken files afterwards: the last good certificate keeps serving.
    std::fs::write(dir.path().join("simple/tls.key"), "garbage").unwrap();
    assert!(!tls.reload_if_changed(), "a broken key is not loaded");
    let (_, got) = handshake(tls.clone(), client(&ca2, None), "bookinfo.example.com").await;
    assert_eq!(got.as_deref(), Ok("world"));
}

#[path = "sds_tests.rs"]
mod sds;

#[path = "tcp_tests.rs"]
mod tcp;
