//! Sidecar to sidecar over mTLS: outbound of A → inbound of B → B's application, with SPIFFE
//! SAN checks, `x-forwarded-client-cert`, and `istio_requests_total` on both sides.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use http::StatusCode;
use mesh_identity::{MeshTls, TlsMaterial};
use mesh_proto::type_url;
use mesh_proxy::http::{RoutedKind, serve_inbound, serve_routed};
use mesh_proxy::tls::{IdentitySlot, TlsSource};
use mesh_proxy::xds::testdata::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const A_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const B_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

struct TestIdentity {
    tls: MeshTls,
    id: String,
}

impl TlsSource for TestIdentity {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.server_config()
    }
    fn client_config(&self, sans: &[String]) -> Arc<rustls::ClientConfig> {
        self.tls.client_config(sans)
    }
    fn spiffe_id(&self) -> String {
        self.id.clone()
    }
}

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: CertificateDer<'static>,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        issuer: rcgen::Issuer::new(params, key),
        cert,
    }
}

fn identity(ca: &Ca, san: &str) -> IdentitySlot {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(san.try_into().unwrap())];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).unwrap().der().clone();
    let material = TlsMaterial {
        chain: vec![cert],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        root: ca.cert.clone(),
        trust_domain: "cluster.local".into(),
    };
    IdentitySlot::with(Arc::new(TestIdentity {
        tls: MeshTls::new(material).unwrap(),
        id: san.into(),
    }))
}

const GOOD: &str = "outbound|9080||reviews.default.svc.cluster.local";
const WRONG_SAN: &str = "outbound|9080|wrong|reviews.default.svc.cluster.local";

#[tokio::test]
async fn sidecar_to_sidecar_mutual_tls() {
    let ca = ca();
    let (stop, stopped) = stopper();

    // B: application and inbound listener.
    let app_b = upstream("reviews-app").await;
    let inbound_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound_b = inbound_l.local_addr().unwrap();
    let ctx_b = context(
        Default::default(),
        identity(&ca, B_ID),
        node("reviews-v1", "reviews"),
        app_b,
    );
    let b = tokio::spawn(serve_inbound(inbound_l, ctx_b.clone(), stopped()));

    // A: outbound with a cluster expecting B's identity, and one expecting someone else.
    let mut route = route_any("http_proxy", "reviews", "/", GOOD);
    {
        use mesh_proto::envoy::envoy::config::route::v3::RouteConfiguration;
        use prost::Message;
        let mut a = RouteConfiguration::decode(route.value.as_slice()).unwrap();
        let w =
            RouteConfiguration::decode(route_any("x", "wrong", "/", WRONG_SAN).value.as_slice())
                .unwrap();
        a.virtual_hosts.extend(w.virtual_hosts);
        route.value = a.encode_to_vec();
    }
    let cfg = config(vec![
        (
            type_url::CLUSTER,
            vec![
                cluster_any(GOOD, Some(B_ID)),
                cluster_any(
                    WRONG_SAN,
                    Some("spiffe://cluster.local/ns/default/sa/other"),
                ),
            ],
        ),
        (
            type_url::ENDPOINT,
            vec![
                cla_any(GOOD, &[&inbound_b.to_string()]),
                cla_any(WRONG_SAN, &[&inbound_b.to_string()]),
            ],
        ),
        (
            type_url::LISTENER,
            vec![listener_any("virtualOutbound", "http_proxy")],
        ),
        (type_url::ROUTE, vec![route]),
    ]);
    let ctx_a = context(
        cfg,
        identity(&ca, A_ID),
        node("productpage-v1", "productpage"),
        app_b,
    );
    let out_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outbound_a = out_l.local_addr().unwrap();
    let a = tokio::spawn(serve_routed(
        out_l,
        ctx_a.clone(),
        "virtualOutbound".into(),
        RoutedKind::SidecarOutbound,
        stopped(),
    ));

    let (status, headers, body) = send(
        outbound_a,
        "http://reviews/reviews/1",
        &[("x-forwarded-client-cert", "forged")],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "reviews-app /reviews/1")
    );
    assert_eq!(
        headers["echo-x-forwarded-client-cert"],
        format!("By={B_ID};URI={A_ID}").as_str()
    );

    // The server's identity is not the one the cluster expects: refused.
    let (status, _, body) = send(outbound_a, "http://wrong/x", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("invalid peer certificate"), "{body}");

    // Plain HTTP to the inbound port is not served.
    let plain = tokio::net::TcpStream::connect(inbound_b).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(plain))
    .await
    .unwrap();
    tokio::spawn(conn);
    let r = tx
        .send_request(
            http::Request::get("/")
                .header("host", "reviews")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert!(r.is_err(), "plaintext must not get an HTTP answer");

    // Metadata exchange: neither application sees the x-mesh-peer-* headers.
    assert!(
        !headers.contains_key("echo-x-mesh-peer-workload"),
        "{headers:?}"
    );
    assert!(!headers.contains_key("x-mesh-peer-workload"), "{headers:?}");
    // An application cannot forge its peer metadata: the sidecar replaces it.
    let (status, _, _) = send(
        outbound_a,
        "http://reviews/reviews/2",
        &[("x-mesh-peer-workload", "forged")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let service = "destination_service=\"reviews.default.svc.cluster.local\",destination_service_name=\"reviews\",destination_service_namespace=\"default\"";
    let b_labels = format!(
        r#"{{reporter="destination",source_workload="productpage-v1",source_workload_namespace="default",source_principal="{A_ID}",source_app="productpage",source_version="unknown",destination_workload="reviews-v1",destination_workload_namespace="default",destination_principal="{B_ID}",{service},destination_app="reviews",destination_version="unknown",request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls"}}"#
    );
    let a_labels = format!(
        r#"{{reporter="source",source_workload="productpage-v1",source_workload_namespace="default",source_principal="{A_ID}",source_app="productpage",source_version="unknown",destination_workload="reviews-v1",destination_workload_namespace="default",destination_principal="{B_ID}",{service},destination_app="reviews",destination_version="unknown",request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="unknown"}}"#
    );
    // The app's body is `reviews-app /reviews/N`: 22 bytes.
    let b_text = wait_for_metrics(
        &ctx_b.metrics,
        &[
            &format!("istio_requests_total{b_labels} 2"),
            &format!("istio_request_duration_milliseconds_count{b_labels} 2"),
            &format!("istio_request_bytes_count{b_labels} 2"),
            &format!("istio_response_bytes_count{b_labels} 2"),
            &format!("istio_response_bytes_sum{b_labels} 44.0"),
        ],
    )
    .await;
    assert!(!b_text.contains("forged"), "{b_text}");
    wait_for_metrics(
        &ctx_a.metrics,
        &[
            &format!("istio_requests_total{a_labels} 2"),
            &format!("istio_request_duration_milliseconds_count{a_labels} 2"),
            &format!("istio_response_bytes_sum{a_labels} 44.0"),
            // The refused handshake (wrong SAN) is an upstream connect failure.
            r#"response_code="503",grpc_response_status="",response_flags="UF""#,
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while ctx_b.metrics.tls_handshake_failures.get() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handshake failures not counted"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    stop.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
}
