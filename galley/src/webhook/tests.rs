//! Webhook tests: the review logic, and the routes over real HTTPS with a test CA.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use super::*;

const INVALID_VS: &str = r#"{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews"},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": 150}]}]}}"#;

fn admission(version: &str, operation: &str, object: Value) -> Value {
    json!({"apiVersion": version, "kind": "AdmissionReview", "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
        "namespace": "prod", "operation": operation, "object": object}})
}

#[test]
fn invalid_object_is_denied_with_validate_text() {
    let obj: Value = serde_json::from_str(INVALID_VS).unwrap();
    let answer = review(&admission("admission.k8s.io/v1", "CREATE", obj)).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let r = &answer["response"];
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], false);
    // The namespace comes from the request; the text is what `meshctl validate` prints, without
    // the file position.
    let errs = crate::validate::check_text(
        "f.yaml",
        &INVALID_VS.replace(
            r#""name": "reviews"}"#,
            r#""name": "reviews", "namespace": "prod"}"#,
        ),
    )
    .errors;
    let expected: Vec<String> = errs
        .iter()
        .map(|e| e.to_string().trim_start_matches("f.yaml:1: ").to_string())
        .collect();
    assert_eq!(r["status"]["message"], expected.join("\n"));
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("VirtualService prod/reviews: spec.http[0].route[0].weight: "),
        "{r}"
    );
}

#[test]
fn valid_unknown_and_delete_are_allowed_in_the_version_asked() {
    let valid = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r"}, "spec": {"hosts": ["r"], "tcp": [{"route": [{"destination": {"host": "r"}}]}]}});
    let a = review(&admission("admission.k8s.io/v1beta1", "CREATE", valid)).unwrap();
    assert_eq!(a["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(a["response"]["allowed"], true);
    let unknown = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"}});
    let a = review(&admission("admission.k8s.io/v1", "UPDATE", unknown)).unwrap();
    assert_eq!(a["response"]["allowed"], true);
    let a = review(&admission("admission.k8s.io/v1", "DELETE", Value::Null)).unwrap();
    assert_eq!(a["response"]["allowed"], true);
    let a = review(&admission("admission.k8s.io/v1", "CREATE", Value::Null)).unwrap();
    assert_eq!(a["response"]["allowed"], false);
}

#[test]
fn malformed_reviews_are_errors() {
    assert!(matches!(
        review(&json!({"apiVersion": "v1", "kind": "AdmissionReview"})),
        Err(ReviewError::Version(_))
    ));
    assert!(matches!(
        review(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"})),
        Err(ReviewError::Kind(_))
    ));
    assert_eq!(
        review(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})),
        Err(ReviewError::NoRequest)
    );
    assert_eq!(
        review(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}})
        ),
        Err(ReviewError::NoUid)
    );
}

/// A CA, and a server certificate for `localhost` signed by it, written as PEM files.
pub(crate) struct TestPki {
    _dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

pub(crate) fn pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    TestPki {
        ca_der: ca.der().clone(),
        _dir: dir,
        cert,
        key,
    }
}

/// Starts the webhook on a free port; returns its address and the stop sender.
async fn start(pki: &TestPki) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = server_config(&pki.cert, &pki.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_tls(
        listener,
        config,
        webhook_router(WebhookMetrics::default()),
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

/// One HTTPS POST over a fresh connection (TLS `version`) that trusts only the test CA.
pub(crate) async fn post(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    version: &'static rustls::SupportedProtocolVersion,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn https_admission_reviews() {
    let pki = pki();
    let (addr, stop) = start(&pki).await;
    let tls13 = &rustls::version::TLS13;
    let tls12 = &rustls::version::TLS12;
    let obj: Value = serde_json::from_str(INVALID_VS).unwrap();
    let body = admission("admission.k8s.io/v1", "CREATE", obj).to_string();
    for path in WEBHOOK_PATHS {
        let (status, text) = post(&pki, addr, tls13, path, "application/json", body.clone()).await;
        assert_eq!(status, 200, "{path}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["response"]["allowed"], false, "{path}");
        assert_eq!(
            answer["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("VirtualService prod/reviews: spec.http[0].route[0].weight")
        );
    }
    let valid = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
        "metadata": {"name": "gw"}, "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}});
    let body = admission("admission.k8s.io/v1beta1", "CREATE", valid).to_string();
    let (status, text) = post(
        &pki,
        addr,
        tls12,
        "/admitpilot",
        "application/json; charset=utf-8",
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(answer["response"]["allowed"], true, "{text}");

    let (status, _) = post(&pki, addr, tls13, "/validate", "text/plain", "{}".into()).await;
    assert_eq!(status, 415);
    let (status, _) = post(
        &pki,
        addr,
        tls13,
        "/validate",
        "application/json",
        String::new(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &pki,
        addr,
        tls13,
        "/validate",
        "application/json",
        "{x".into(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &pki,
        addr,
        tls13,
        "/validate",
        "application/json",
        "{}".into(),
    )
    .await;
    assert_eq!(status, 400);
    let _ = stop.send(());
}

#[test]
fn unusable_cert_files_are_named() {
    let pki = pki();
    let missing = pki.cert.with_file_name("nope.crt");
    let err = server_config(&missing, &pki.key).unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    // A key file holding a certificate is not a key.
    let err = server_config(&pki.cert, &pki.cert).unwrap_err();
    assert!(matches!(err, TlsError::Key { .. }), "{err}");
}
