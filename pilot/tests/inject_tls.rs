//! The `pilot` service's TLS listeners, run in-process through `pilot::run`: xDS over mTLS
//! (`--xds-tls-addr`, PEM certificates made here) and the injection webhook over HTTPS
//! (`--inject-addr`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::Parser;
use hyper_util::rt::TokioIo;
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::DiscoveryRequest;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(20);
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

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

/// A leaf (PEM cert, PEM key, DER cert, DER key) with a URI SAN and optional DNS names.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn leaf(ca: &Ca, uri: Option<&str>, dns: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut sans = Vec::new();
    if let Some(uri) = uri {
        sans.push(rcgen::SanType::URI(uri.try_into().unwrap()));
    }
    for d in dns {
        sans.push(rcgen::SanType::DnsName((*d).try_into().unwrap()));
    }
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pilot {
    xds_tls: SocketAddr,
    inject: SocketAddr,
    ca: Ca,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), pilot::RunError>>,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn start_pilot() -> Pilot {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let server = leaf(
        &ca,
        Some("spiffe://cluster.local/ns/istio-system/sa/istio-pilot"),
        &["istio-pilot.istio-system.svc"],
    );
    let cert = write(dir.path(), "cert.pem", &server.cert_pem);
    let key = write(dir.path(), "key.pem", &server.key_pem);
    let roots = write(dir.path(), "roots.pem", &ca.pem);
    let port = |_: ()| format!("127.0.0.1:{}", free_port());
    let (xds_tls, inject) = (port(()), port(()));
    let args = pilot::Args::try_parse_from([
        "pilot",
        "--galley-addr",
        // Nothing listens there: pilot serves its empty snapshot and keeps retrying.
        &format!("http://127.0.0.1:{}", free_port()),
        "--xds-addr",
        &port(()),
        "--debug-addr",
        &port(()),
        "--monitoring-addr",
        &port(()),
        "--xds-tls-addr",
        &xds_tls,
        "--xds-tls-cert",
        &cert,
        "--xds-tls-key",
        &key,
        "--xds-tls-roots",
        &roots,
        "--inject-addr",
        &inject,
        "--inject-cert",
        &cert,
        "--inject-key",
        &key,
        "--inject-proxy-image",
        "example/mesh-proxy:test",
    ])
    .unwrap();
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(pilot::run(args, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let pilot = Pilot {
        xds_tls: xds_tls.parse().unwrap(),
        inject: inject.parse().unwrap(),
        ca,
        stop,
        task,
        _dir: dir,
    };
    for addr in [pilot.xds_tls, pilot.inject] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    pilot
}

impl Pilot {
    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("pilot stops")
            .unwrap()
            .unwrap();
    }
}

fn client_config(ca: &Ca, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(l) => builder
            .with_client_auth_cert(vec![l.cert.clone()], l.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("istio-pilot.istio-system.svc").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Opens an ADS stream over mTLS and sends one LDS request for a proxy of `namespace`; the
/// first answer (or the error).
async fn lds_over_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    namespace: &str,
) -> Result<mesh_proto::envoy::envoy::service::discovery::v3::DiscoveryResponse, String> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move { tls_connect(addr, config).await.map(TokioIo::new) }
    });
    let channel = tonic::transport::Endpoint::from_static("http://istio-pilot.istio-system.svc")
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: format!(
                "sidecar~10.1.0.7~productpage-v1.{namespace}~{namespace}.svc.cluster.local"
            ),
            ..Node::default()
        }),
        type_url: LISTENER.into(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut stream = tokio::time::timeout(
        WAIT,
        client.stream_aggregated_resources(ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|e| format!("rpc: {e}"))?
    .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .map_err(|_| "no response".to_string())?;
    drop(tx);
    match first {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("stream closed".into()),
        Err(status) => Err(format!("status {:?}: {}", status.code(), status.message())),
    }
}

#[tokio::test]
async fn xds_over_mtls_needs_a_mesh_certificate_of_the_proxy_namespace() {
    let pilot = start_pilot().await;
    let productpage = leaf(
        &pilot.ca,
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        &[],
    );

    // A mesh certificate gets LDS.
    let lds = lds_over_tls(
        pilot.xds_tls,
        client_config(&pilot.ca, Some(&productpage), &[b"h2"]),
        "default",
    )
    .await
    .unwrap();
    assert_eq!(lds.type_url, LISTENER);
    assert!(!lds.nonce.is_empty());

    // The same certificate may not ask for another namespace's config.
    let err = lds_over_tls(
        pilot.xds_tls,
        client_config(&pilot.ca, Some(&productpage), &[b"h2"]),
        "payments",
    )
    .await
    .unwrap_err();
    assert!(err.contains("PermissionDenied"), "{err}");

    // No client certificate: refused.
    let err = lds_over_tls(
        pilot.xds_tls,
        client_config(&pilot.ca, None, &[b"h2"]),
        "default",
    )
    .await
    .unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");

    // A certificate from another root: refused.
    let rogue_ca = ca();
    let rogue = leaf(
        &rogue_ca,
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        &[],
    );
    let err = lds_over_tls(
        pilot.xds_tls,
        client_config(&pilot.ca, Some(&rogue), &[b"h2"]),
        "default",
    )
    .await
    .unwrap_err();
    assert!(err.contains("fatal alert"), "{err}");

    // A mesh certificate without a SPIFFE id: refused.
    let plain = leaf(&pilot.ca, None, &["some-client"]);
    let err = lds_over_tls(
        pilot.xds_tls,
        client_config(&pilot.ca, Some(&plain), &[b"h2"]),
        "default",
    )
    .await
    .unwrap_err();
    // Handshake done, then closed by pilot: no SPIFFE id.
    assert!(err.contains("transport error"), "{err}");

    pilot.stop().await;
}

/// POSTs `body` to `/inject` over HTTPS (HTTP/1.1); status and body.
async fn post_inject(pilot: &Pilot, body: String) -> (u16, String) {
    use http_body_util::BodyExt;
    let tls = tls_connect(pilot.inject, client_config(&pilot.ca, None, &[b"http/1.1"]))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("/inject")
        .header("host", "istio-pilot.istio-system.svc")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn injection_webhook_answers_over_https() {
    let pilot = start_pilot().await;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b1c2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {
                "metadata": {"name": "ratings-v1-0", "labels": {"app": "ratings"}},
                "spec": {"containers": [{"name": "ratings", "image": "ratings:1",
                    "ports": [{"containerPort": 9080}]}]}
            }
        }
    });
    let (status, body) = post_inject(&pilot, review.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "b1c2");
    assert_eq!(answer["response"]["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &ops).unwrap();
    assert_eq!(pod["spec"]["containers"][1]["name"], "istio-proxy");
    assert_eq!(
        pod["spec"]["containers"][1]["image"],
        "example/mesh-proxy:test"
    );
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "istio-init");

    let (status, body) = post_inject(&pilot, "{\"kind\": 1}".into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("apiVersion"), "{body}");

    pilot.stop().await;
}
