//! xDS over mutual TLS against the real Pilot's mTLS listener (`--xds-tls-addr`): the proxy
//! presents its workload certificate and verifies Pilot's, gets its config, presents the new
//! certificate after a rotation; a proxy asking for another namespace's config, or pinning
//! another Pilot identity, gets nothing.
#![allow(clippy::unwrap_used)]

mod xds_pilot;

use std::sync::Arc;

use mesh_identity::{MeshTls, SpiffeId, TlsMaterial};
use mesh_proxy::tls::{IdentitySlot, TlsSource};
use mesh_proxy::xds::{XdsClientConfig, XdsProtocol, XdsTlsConfig};
use parking_lot::Mutex;
use pilot::xds::XdsTls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use xds_pilot::{Pilot, Proxy, REVIEWS, Serve, World, wait_until};

const PILOT_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-pilot-service-account";

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf with one SPIFFE URI SAN: (PEM cert, PEM key, DER cert, DER key).
fn leaf(
    ca: &Ca,
    uri: &str,
) -> (
    String,
    String,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A workload identity whose certificate the test replaces (a rotation).
struct TestIdentity {
    tls: Mutex<(MeshTls, String)>,
}

impl TestIdentity {
    fn new(ca: &Ca, id: &str) -> Arc<TestIdentity> {
        Arc::new(TestIdentity {
            tls: Mutex::new(Self::material(ca, id)),
        })
    }

    fn material(ca: &Ca, id: &str) -> (MeshTls, String) {
        let (_, _, cert, key) = leaf(ca, id);
        let tls = MeshTls::new(TlsMaterial {
            chain: vec![cert],
            key,
            root: ca.der.clone(),
            trust_domain: "cluster.local".into(),
        })
        .unwrap();
        (tls, id.to_string())
    }

    fn rotate(&self, ca: &Ca, id: &str) {
        *self.tls.lock() = Self::material(ca, id);
    }
}

impl TlsSource for TestIdentity {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.lock().0.server_config()
    }
    fn client_config(&self, expected_sans: &[String]) -> Arc<rustls::ClientConfig> {
        self.tls.lock().0.client_config(expected_sans)
    }
    fn spiffe_id(&self) -> String {
        self.tls.lock().1.clone()
    }
}

fn client(pilot: &Pilot, identity: Arc<TestIdentity>, expected_sans: &[&str]) -> XdsClientConfig {
    XdsClientConfig {
        addr: format!("https://{}", pilot.addr),
        protocol: XdsProtocol::Delta,
        tls: Some(XdsTlsConfig {
            identity: IdentitySlot::with(identity),
            expected_sans: expected_sans.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

#[tokio::test]
async fn mtls_config_rotation_and_refusals() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem, _, _) = leaf(&ca, PILOT_ID);
    let (cert, key, roots) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("roots.pem"),
    );
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    std::fs::write(&roots, &ca.pem).unwrap();
    let xds_tls = XdsTls::from_pem(&cert, &key, &roots, "cluster.local").unwrap();
    let world = World::new(&["127.0.0.1"]);
    let peers = Arc::new(Mutex::new(Vec::new()));
    let pilot = Pilot::start(&world, None, Serve::Tls(xds_tls.clone(), peers.clone())).await;
    let addr = pilot.addr;

    // A proxy of namespace default with a certificate of default gets its config.
    let first = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    let identity = TestIdentity::new(&ca, first);
    let proxy = Proxy::start(client(&pilot, identity.clone(), &[PILOT_ID]), "default");
    wait_until("the config over mtls", || {
        proxy.readiness.is_ready() && proxy.endpoints(REVIEWS) == Some(1)
    })
    .await;
    assert_eq!(pilot.proxies()[0].protocol, "delta");
    assert_eq!(*peers.lock(), [id(first)]);

    // A proxy claiming another namespace is refused (the stream ends PERMISSION_DENIED, again
    // on every retry); one pinning another Pilot identity never gets through the handshake.
    let intruder = Proxy::start(
        client(&pilot, TestIdentity::new(&ca, first), &[PILOT_ID]),
        "other",
    );
    let pinned = Proxy::start(
        client(
            &pilot,
            TestIdentity::new(&ca, first),
            &["spiffe://cluster.local/ns/istio-system/sa/someone-else"],
        ),
        "default",
    );
    wait_until("the intruder to be refused twice", || {
        intruder.metrics.xds_connects.get() >= 2
    })
    .await;
    for p in [&intruder, &pinned] {
        assert!(p.config.load().clusters.is_empty());
        assert!(!p.readiness.is_ready());
    }
    assert_eq!(pinned.metrics.xds_connects.get(), 0);
    assert_eq!(pilot.proxies().len(), 1, "only the first proxy is served");
    intruder.stop().await;
    pinned.stop().await;

    // The certificate rotates; after Pilot restarts the proxy reconnects with the new one.
    let second = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage-rotated";
    identity.rotate(&ca, second);
    pilot.stop().await;
    let peers = Arc::new(Mutex::new(Vec::new()));
    let pilot = Pilot::start(&world, Some(addr), Serve::Tls(xds_tls, peers.clone())).await;
    wait_until("the reconnect with the rotated certificate", || {
        proxy.metrics.xds_connects.get() == 2 && pilot.proxies().len() == 1
    })
    .await;
    assert_eq!(*peers.lock(), [id(second)]);
    assert_eq!(proxy.endpoints(REVIEWS), Some(1));

    proxy.stop().await;
    pilot.stop().await;
}

#[tokio::test]
async fn plaintext_client_is_not_served_on_the_mtls_port() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem, _, _) = leaf(&ca, PILOT_ID);
    std::fs::write(dir.path().join("c.pem"), cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), key_pem).unwrap();
    std::fs::write(dir.path().join("r.pem"), &ca.pem).unwrap();
    let xds_tls = XdsTls::from_pem(
        &dir.path().join("c.pem"),
        &dir.path().join("k.pem"),
        &dir.path().join("r.pem"),
        "cluster.local",
    )
    .unwrap();
    let world = World::new(&["127.0.0.1"]);
    let peers = Arc::new(Mutex::new(Vec::new()));
    let pilot = Pilot::start(&world, None, Serve::Tls(xds_tls, peers.clone())).await;
    // A proxy with mTLS and one without, side by side: only the first is served.
    let good = Proxy::start(
        client(
            &pilot,
            TestIdentity::new(&ca, "spiffe://cluster.local/ns/default/sa/a"),
            &[],
        ),
        "default",
    );
    let plain = Proxy::start(
        XdsClientConfig {
            addr: format!("http://{}", pilot.addr),
            protocol: XdsProtocol::Delta,
            tls: None,
        },
        "default",
    );
    wait_until("the mtls proxy's config", || good.readiness.is_ready()).await;
    assert!(!plain.readiness.is_ready());
    assert_eq!(pilot.proxies().len(), 1);
    good.stop().await;
    plain.stop().await;
    pilot.stop().await;
}
