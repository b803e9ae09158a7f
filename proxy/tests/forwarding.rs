//! Route forwarding settings Pilot emits from a VirtualService: `prefix_rewrite`,
//! `host_rewrite_literal`, the route `timeout` (504 when the upstream does not answer in time), and
//! redirect routes.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use mesh_proto::envoy::envoy::config::route::v3::{
    RedirectAction, RouteConfiguration, redirect_action, route::Action,
    route_action::HostRewriteSpecifier,
};
use mesh_proto::envoy::google::protobuf::{Any, Duration as PbDuration};
use mesh_proto::type_url;
use mesh_proxy::http::{RoutedKind, serve_routed};
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::testdata::*;
use prost::Message;
use tokio::net::TcpListener;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const SILENT: &str = "outbound|9080||silent.default.svc.cluster.local";

/// A route configuration for `domain` whose only route (prefix `prefix`) is changed by `edit`.
fn route_with(
    domain: &str,
    prefix: &str,
    cluster: &str,
    edit: impl FnOnce(&mut mesh_proto::envoy::envoy::config::route::v3::RouteAction),
) -> RouteConfiguration {
    let mut rc =
        RouteConfiguration::decode(route_any("x", domain, prefix, cluster).value.as_slice())
            .unwrap();
    let Some(Action::Route(ra)) = rc.virtual_hosts[0].routes[0].action.as_mut() else {
        panic!("route action")
    };
    edit(ra);
    rc
}

#[tokio::test]
async fn rewrites_and_route_timeout_are_applied() {
    let reviews = upstream("reviews").await;
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });

    let mut rc = route_with("reviews", "/api/v1/", REVIEWS, |ra| {
        ra.prefix_rewrite = "/v2/".into();
        ra.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
            "reviews.internal".into(),
        ));
    });
    rc.virtual_hosts.extend(
        route_with("silent", "/", SILENT, |ra| {
            ra.timeout = Some(PbDuration {
                seconds: 0,
                nanos: 200_000_000,
            });
        })
        .virtual_hosts,
    );
    let mut moved = route_with("moved", "/", REVIEWS, |_| {});
    moved.virtual_hosts[0].routes[0].action = Some(Action::Redirect(RedirectAction {
        host_redirect: "reviews".into(),
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            "/new-home".into(),
        )),
        response_code: redirect_action::RedirectResponseCode::Found as i32,
        ..Default::default()
    }));
    rc.virtual_hosts.extend(moved.virtual_hosts);
    rc.name = "http_proxy".into();
    let cfg = config(vec![
        (
            type_url::CLUSTER,
            vec![cluster_any(REVIEWS, None), cluster_any(SILENT, None)],
        ),
        (
            type_url::ENDPOINT,
            vec![
                cla_any(REVIEWS, &[&reviews.to_string()]),
                cla_any(SILENT, &[&silent_addr.to_string()]),
            ],
        ),
        (
            type_url::LISTENER,
            vec![listener_any("virtualOutbound", "http_proxy")],
        ),
        (
            type_url::ROUTE,
            vec![Any {
                type_url: type_url::ROUTE.into(),
                value: rc.encode_to_vec(),
            }],
        ),
    ]);
    let ctx = context(
        cfg,
        IdentitySlot::default(),
        node("productpage-v1", "productpage"),
        silent_addr,
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

    let (status, headers, body) = send(proxy, "http://reviews/api/v1/items?page=2", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "reviews /v2/items", "prefix rewritten");
    assert_eq!(headers["echo-host"], "reviews.internal", "host rewritten");

    let (status, headers, _) = send(proxy, "http://moved:9080/old?q=1", &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "http://reviews/new-home?q=1");

    let (status, _, body) = send(proxy, "http://silent/slow", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("timeout"), "{body}");
    wait_for_metrics(
        &ctx.metrics,
        &[
            r#"response_code="504",grpc_response_status="",response_flags="UT""#,
            r#"destination_service="moved.default.svc.cluster.local""#,
            r#"response_code="302",grpc_response_status="",response_flags="-""#,
        ],
    )
    .await;

    stop.send(true).unwrap();
    server.await.unwrap();
}
