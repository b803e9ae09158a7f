//! The outbound listener against real local upstreams: routing, weighted split, errors.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use mesh_proto::type_url;
use mesh_proxy::http::{RoutedKind, serve_routed};
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::testdata::*;
use tokio::net::TcpListener;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const V1: &str = "outbound|9080|v1|ratings.default.svc.cluster.local";
const V2: &str = "outbound|9080|v2|ratings.default.svc.cluster.local";

#[tokio::test]
async fn proxies_routes_splits_and_reports_errors() {
    let reviews = upstream("reviews").await;
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    // A port nothing listens on: bind, note, drop.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let routes_http_proxy = {
        // Two virtual hosts in one route configuration.
        use mesh_proto::envoy::envoy::config::route::v3::RouteConfiguration;
        use prost::Message;
        let mut a = RouteConfiguration::decode(
            route_any("http_proxy", "reviews", "/", REVIEWS)
                .value
                .as_slice(),
        )
        .unwrap();
        let b = RouteConfiguration::decode(
            weighted_route_any("x", "ratings:9080", &[(V1, 25), (V2, 75)])
                .value
                .as_slice(),
        )
        .unwrap();
        let c = RouteConfiguration::decode(
            route_any(
                "x",
                "empty",
                "/",
                "outbound|9080||empty.default.svc.cluster.local",
            )
            .value
            .as_slice(),
        )
        .unwrap();
        let d = RouteConfiguration::decode(
            route_any(
                "x",
                "dead",
                "/",
                "outbound|9080||dead.default.svc.cluster.local",
            )
            .value
            .as_slice(),
        )
        .unwrap();
        a.virtual_hosts.extend(b.virtual_hosts);
        a.virtual_hosts.extend(c.virtual_hosts);
        a.virtual_hosts.extend(d.virtual_hosts);
        mesh_proto::envoy::google::protobuf::Any {
            type_url: type_url::ROUTE.into(),
            value: a.encode_to_vec(),
        }
    };
    let cfg = config(vec![
        (
            type_url::CLUSTER,
            vec![
                cluster_any(REVIEWS, None),
                cluster_any(V1, None),
                cluster_any(V2, None),
                cluster_any("outbound|9080||empty.default.svc.cluster.local", None),
                cluster_any("outbound|9080||dead.default.svc.cluster.local", None),
            ],
        ),
        (
            type_url::ENDPOINT,
            vec![
                cla_any(REVIEWS, &[&reviews.to_string()]),
                cla_any(V1, &[&v1.to_string()]),
                cla_any(V2, &[&v2.to_string()]),
                cla_any(
                    "outbound|9080||dead.default.svc.cluster.local",
                    &[&dead.to_string()],
                ),
            ],
        ),
        (
            type_url::LISTENER,
            vec![listener_any("virtualOutbound", "http_proxy")],
        ),
        (type_url::ROUTE, vec![routes_http_proxy]),
    ]);
    let ctx = context(
        cfg,
        IdentitySlot::default(),
        node("productpage-v1", "productpage"),
        dead,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let (stop, stopped) = stopper();
    let server = tokio::spawn(serve_routed(
        listener,
        ctx.clone(),
        "virtualOutbound".into(),
        RoutedKind::SidecarOutbound,
        stopped(),
    ));

    // Proxy form and origin form with Host.
    let (status, headers, body) = send(proxy, "http://reviews/reviews/0", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "reviews /reviews/0")
    );
    assert_eq!(headers["echo-host"], "reviews");
    assert_eq!(
        headers["echo-x-request-id"].len(),
        36,
        "x-request-id generated"
    );
    let (status, headers, body) =
        send(proxy, "/x", &[("host", "reviews"), ("x-request-id", "abc")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "reviews /x"));
    assert_eq!(headers["echo-x-request-id"], "abc", "x-request-id kept");

    // Weighted 25/75 split.
    let mut n1 = 0;
    let total = 400;
    for _ in 0..total {
        let (status, _, body) = send(proxy, "http://ratings:9080/r", &[]).await;
        assert_eq!(status, StatusCode::OK);
        match body.as_str() {
            "v1 /r" => n1 += 1,
            "v2 /r" => {}
            other => panic!("unexpected body {other}"),
        }
    }
    assert!(
        (60..=140).contains(&n1),
        "v1 got {n1} of {total}, expected about 100"
    );

    // No virtual host → 404; no endpoints → 503; connect failure → 503.
    let (status, _, body) = send(proxy, "http://unknown/x", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no route"), "{body}");
    let (status, _, body) = send(proxy, "http://empty/x", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no endpoints"), "{body}");
    let (status, _, body) = send(proxy, "http://dead/x", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("connect"), "{body}");

    // Plaintext upstreams: no peer metadata, so the destination workload is unknown.
    wait_for_metrics(
        &ctx.metrics,
        &[
            r#"destination_principal="unknown",destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="default",destination_app="unknown",destination_version="unknown",request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="unknown"}"#,
            r#"response_code="404",grpc_response_status="",response_flags="NR""#,
            r#"destination_service="empty.default.svc.cluster.local""#,
            r#"response_code="503",grpc_response_status="",response_flags="UH""#,
            r#"response_code="503",grpc_response_status="",response_flags="UF""#,
        ],
    )
    .await;

    stop.send(true).unwrap();
    server.await.unwrap();
}
