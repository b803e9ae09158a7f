//! The certificate service in process over real sockets: the response chain (decoded with
//! x509-parser), TTL limits, a plugged-in intermediate with a two-root trust bundle and
//! `/roots.pem`, and renewal over the TLS listener by the caller's current certificate.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use citadel::{Citadel, Config, TtlPolicy};
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use rcgen::{CertificateParams, DistinguishedName, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

const HOUR: Duration = Duration::from_secs(3600);

struct Running {
    grpc: SocketAddr,
    tls: Option<SocketAddr>,
    monitoring: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), citadel::RunError>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }

    async fn client(&self) -> IstioCertificateServiceClient<Channel> {
        IstioCertificateServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }
}

async fn start(state: &Path, tls: bool) -> Running {
    let mut config = Config::local(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        state.to_path_buf(),
        TtlPolicy {
            default: HOUR,
            max: 2 * HOUR,
        },
    );
    if tls {
        config.tls_addr = Some("127.0.0.1:0".parse().unwrap());
    }
    let citadel = Citadel::bind(config).await.unwrap();
    let grpc = citadel.grpc_addr().unwrap();
    let tls = citadel.tls_addr();
    let monitoring = citadel.monitoring_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(citadel.serve(async {
        let _ = rx.await;
    }));
    Running {
        grpc,
        tls,
        monitoring,
        stop: Some(tx),
        task,
    }
}

/// A fresh P-256 key and a CSR claiming an identity the caller does not have.
fn csr() -> (KeyPair, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://cluster.local/ns/istio-system/sa/admin"
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

fn request(csr: &str, token: Option<&str>, ttl: i64) -> tonic::Request<IstioCertificateRequest> {
    let mut r = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl,
        metadata: None,
    });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Each element of the response is exactly one PEM certificate; returns their DER.
fn decode(chain: &[String]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .map(|pem| {
            let mut r = pem.as_bytes();
            let certs: Vec<_> = rustls_pemfile::certs(&mut r).map(Result::unwrap).collect();
            assert_eq!(certs.len(), 1, "one certificate per element: {pem}");
            certs.into_iter().next().unwrap()
        })
        .collect()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der).unwrap().1
}

fn lifetime_secs(c: &X509Certificate<'_>) -> i64 {
    c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn chain_is_leaf_then_root_and_ttl_is_honoured_up_to_the_maximum() {
    let state = tempfile::tempdir().unwrap();
    let citadel = start(state.path(), false).await;
    let mut client = citadel.client().await;
    let token = citadel::token::issue(state.path(), "default", "reviews", HOUR).unwrap();
    let (key, csr) = csr();

    let chain = client
        .create_certificate(request(&csr, Some(&token), 5400))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let ders = decode(&chain);
    assert_eq!(ders.len(), 2, "leaf, root");
    let (leaf, root) = (parse(&ders[0]), parse(&ders[1]));
    leaf.verify_signature(Some(root.public_key())).unwrap();
    root.verify_signature(None).unwrap();
    assert!(root.is_ca() && !leaf.is_ca());
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(
        mesh_identity::uri_sans(&ders[0]),
        vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]
    );
    // The requested 90 minutes (plus the minute of backdating).
    assert!((5459..=5461).contains(&lifetime_secs(&leaf)));

    // 0 asks for the default (1 h here).
    let chain = client
        .create_certificate(request(&csr, Some(&token), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert!((3659..=3661).contains(&lifetime_secs(&parse(&decode(&chain)[0]))));

    // Above the maximum: refused, naming the limit.
    let err = client
        .create_certificate(request(&csr, Some(&token), 2 * 3600 + 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("max allowed TTL 2h"),
        "{}",
        err.message()
    );
    citadel.stop().await;
}

fn ca_params(cn: &str, constrained: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(if constrained {
        rcgen::BasicConstraints::Constrained(0)
    } else {
        rcgen::BasicConstraints::Unconstrained
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

#[tokio::test]
async fn plugged_in_intermediate_and_a_second_root_are_served() {
    let state = tempfile::tempdir().unwrap();
    // Istio's cacerts layout: an intermediate signed by the corporate root.
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Corp Root", false);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate().unwrap();
    let int = ca_params("Mesh Intermediate", true)
        .signed_by(&int_key, &root_issuer)
        .unwrap();
    // The next root, trusted ahead of a rotation.
    let next_key = KeyPair::generate().unwrap();
    let next = ca_params("Next Root", false)
        .self_signed(&next_key)
        .unwrap();
    let dir = state.path();
    std::fs::write(dir.join("ca-cert.pem"), int.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), int.pem() + &root.pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("extra-roots.pem"), next.pem()).unwrap();

    let citadel = start(dir, false).await;
    let token = citadel::token::issue(dir, "default", "ratings", HOUR).unwrap();
    let (_, csr) = csr();
    let chain = citadel
        .client()
        .await
        .create_certificate(request(&csr, Some(&token), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    // leaf → intermediate, then the bundle's roots with the signing root last.
    let ders = decode(&chain);
    assert_eq!(ders.len(), 4);
    let certs: Vec<_> = ders.iter().map(parse).collect();
    certs[0]
        .verify_signature(Some(certs[1].public_key()))
        .unwrap();
    certs[1]
        .verify_signature(Some(certs[3].public_key()))
        .unwrap();
    certs[3].verify_signature(None).unwrap();
    certs[2].verify_signature(None).unwrap();
    assert!(certs[0].issuer().to_string().contains("Mesh Intermediate"));
    assert_eq!(ders[1].as_ref(), int.der().as_ref());
    assert_eq!(ders[2].as_ref(), next.der().as_ref());
    assert_eq!(ders[3].as_ref(), root.der().as_ref());

    // mesh-identity, which takes the last certificate as its root, still gets the signing root.
    let workload = mesh_identity::WorkloadIdentity::start(mesh_identity::IdentityConfig {
        citadel_addr: format!("http://{}", citadel.grpc),
        token: token.clone(),
        ttl: HOUR,
        trust_domain: "cluster.local".into(),
    })
    .await
    .unwrap();
    assert_eq!(workload.root_cert().as_ref(), root.der().as_ref());

    // The bundle is also served over HTTP for clients that fetch it.
    let roots = http_get(citadel.monitoring, "/roots.pem").await;
    assert!(roots.starts_with("HTTP/1.0 200"), "{roots}");
    assert!(
        roots
            .to_ascii_lowercase()
            .contains("application/x-pem-file")
    );
    let body = roots.split("\r\n\r\n").nth(1).unwrap();
    let mut r = body.as_bytes();
    let served: Vec<_> = rustls_pemfile::certs(&mut r).map(Result::unwrap).collect();
    assert_eq!(served.len(), 2);
    assert_eq!(served[0].as_ref(), root.der().as_ref());
    assert_eq!(served[1].as_ref(), next.der().as_ref());
    citadel.stop().await;
}

/// A gRPC client over TLS to Citadel's TLS listener, presenting `identity` if given.
async fn tls_client(
    addr: SocketAddr,
    root: CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, &KeyPair)>,
) -> Result<IstioCertificateServiceClient<Channel>, tonic::transport::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = tonic::transport::Endpoint::from_static("http://istio-citadel")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = ServerName::try_from("istio-citadel").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(IstioCertificateServiceClient::new(channel))
}

fn san_of(chain: &[String]) -> Vec<String> {
    mesh_identity::uri_sans(&decode(chain)[0])
}

#[tokio::test]
async fn current_certificate_renews_the_same_identity_only() {
    let state = tempfile::tempdir().unwrap();
    let citadel = start(state.path(), true).await;
    let tls = citadel.tls.unwrap();
    let reviews = citadel::token::issue(state.path(), "default", "reviews", HOUR).unwrap();
    let ratings = citadel::token::issue(state.path(), "default", "ratings", HOUR).unwrap();

    // A first certificate, by token, on the plaintext listener.
    let (key, first_csr) = csr();
    let chain = citadel
        .client()
        .await
        .create_certificate(request(&first_csr, Some(&reviews), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let ders = decode(&chain);
    let root = ders.last().unwrap().clone();
    let leaf = vec![ders[0].clone()];

    // Renewal with that certificate alone, no token.
    let mut renewing = tls_client(tls, root.clone(), Some((leaf.clone(), &key)))
        .await
        .unwrap();
    let (_, csr2) = csr();
    let renewed = renewing
        .create_certificate(request(&csr2, None, 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        san_of(&renewed),
        vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]
    );
    // A token for another account does not change whose certificate it is.
    let renewed = renewing
        .create_certificate(request(&csr2, Some(&ratings), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        san_of(&renewed),
        vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]
    );

    // Without a client certificate the TLS listener still takes tokens, and nothing else.
    let mut anonymous = tls_client(tls, root.clone(), None).await.unwrap();
    let by_token = anonymous
        .create_certificate(request(&csr2, Some(&ratings), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        san_of(&by_token),
        vec!["spiffe://cluster.local/ns/default/sa/ratings".to_string()]
    );
    let err = anonymous
        .create_certificate(request(&csr2, None, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // A certificate from another mesh's root is refused at the handshake.
    let other_state = tempfile::tempdir().unwrap();
    let other = start(other_state.path(), false).await;
    let other_token =
        citadel::token::issue(other_state.path(), "default", "reviews", HOUR).unwrap();
    let (other_key, other_csr) = csr();
    let other_chain = other
        .client()
        .await
        .create_certificate(request(&other_csr, Some(&other_token), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let foreign_leaf = vec![decode(&other_chain)[0].clone()];
    // (TLS 1.3: the client may finish its side before the server's refusal arrives.)
    if let Ok(mut foreign) = tls_client(tls, root, Some((foreign_leaf, &other_key))).await {
        assert!(
            foreign
                .create_certificate(request(&csr2, None, 0))
                .await
                .is_err()
        );
    }
    other.stop().await;
    citadel.stop().await;
}
