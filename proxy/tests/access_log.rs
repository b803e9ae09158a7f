//! Access logging on the outbound listener: one Envoy-style JSON line per request, written
//! when the response body ends.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use mesh_proto::type_url;
use mesh_proxy::http::{AccessLog, AccessLogTarget, RoutedKind, serve_routed};
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::testdata::*;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::net::TcpListener;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// Polls (deadline 5 s) until `path` holds at least `n` lines, and returns them parsed.
async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} access log lines: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn logs_a_200_and_a_404_nr() {
    let reviews = upstream("reviews").await;
    let cfg = config(vec![
        (type_url::CLUSTER, vec![cluster_any(REVIEWS, None)]),
        (
            type_url::ENDPOINT,
            vec![cla_any(REVIEWS, &[&reviews.to_string()])],
        ),
        (
            type_url::LISTENER,
            vec![listener_any("virtualOutbound", "http_proxy")],
        ),
        (
            type_url::ROUTE,
            vec![route_any("http_proxy", "reviews", "/", REVIEWS)],
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/productpage.access.log");
    let dropped = Counter::default();
    let (log, writer) = AccessLog::open(&AccessLogTarget::File(path.clone()), dropped.clone(), 64)
        .await
        .unwrap();
    tokio::spawn(writer);
    let mut ctx = Arc::into_inner(context(
        cfg,
        IdentitySlot::default(),
        node("productpage-v1", "productpage"),
        reviews,
    ))
    .unwrap();
    ctx.access_log = Some(log);
    let ctx = Arc::new(ctx);
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

    let (status, _, body) = send(
        proxy,
        "http://reviews:9080/reviews/1?u=jason",
        &[("x-request-id", "rid-1"), ("user-agent", "test/1")],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "reviews /reviews/1")
    );
    let lines = wait_for_lines(&path, 1).await;
    let ok = &lines[0];
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/reviews/1?u=jason");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["bytes_received"], 0);
    assert_eq!(ok["bytes_sent"], "reviews /reviews/1".len());
    assert!(ok["duration"].is_u64());
    assert_eq!(ok["upstream_host"], reviews.to_string());
    assert_eq!(ok["upstream_cluster"], REVIEWS);
    assert_eq!(ok["request_id"], "rid-1");
    assert_eq!(ok["authority"], "reviews:9080");
    assert_eq!(ok["user_agent"], "test/1");
    let remote = ok["downstream_remote_address"].as_str().unwrap();
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
    assert!(ok["downstream_peer_uri_san"].is_null());
    assert!(ok["upstream_peer_uri_san"].is_null(), "plaintext upstream");
    let start = ok["start_time"].as_str().unwrap();
    assert!(start.ends_with('Z') && start.len() == 24, "{start}");

    let (status, _, _) = send(proxy, "http://nowhere/x", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let lines = wait_for_lines(&path, 2).await;
    let nr = &lines[1];
    assert_eq!(nr["response_code"], 404);
    assert_eq!(nr["response_flags"], "NR");
    assert_eq!(nr["path"], "/x");
    assert_eq!(nr["authority"], "nowhere");
    assert!(nr["upstream_host"].is_null());
    assert!(nr["upstream_cluster"].is_null());
    assert!(nr["route_name"].is_null());
    // The proxy assigns a request id when the client sent none.
    assert_eq!(nr["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(dropped.get(), 0);

    stop.send(true).unwrap();
    server.await.unwrap();
}
