//! `meshctl proxy-status` and `meshctl proxy-config` against a stand-in for Pilot's debug
//! server that answers with fixed JSON in Pilot's shapes.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::HashMap;
use std::process::Output;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::{Value, json};

const PRODUCTPAGE: &str = "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local";

fn syncz() -> Value {
    let synced = json!({"sent_version": "v1", "acked_version": "v1", "last_nack": null});
    json!([
        {"proxy_id": PRODUCTPAGE, "protocol": "sotw", "stream": 1,
         "proxy": {"pod": "productpage-v1", "namespace": "default"},
         "types": {"cds": synced, "lds": synced, "eds": synced, "rds": synced}},
        {"proxy_id": "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local", "protocol": "sotw", "stream": 2,
         "proxy": {"pod": "reviews-v1", "namespace": "default"},
         "types": {"cds": synced, "lds": {"sent_version": "v2", "acked_version": "v1",
                    "last_nack": {"version": "v2", "error": "unknown filter"}}}},
    ])
}

fn dump() -> Value {
    json!({
        "proxy": {"id": PRODUCTPAGE},
        "clusters": {"version": "c", "resources": [
            {"name": "outbound|9080|v3|reviews.default.svc.cluster.local", "type": "EDS", "outlierDetection": false}]},
        "listeners": {"version": "l", "resources": []},
        "routes": {"version": "r", "resources": [{"name": "http_proxy", "virtualHosts": [
            {"name": "reviews.default.svc.cluster.local:9080", "domains": ["reviews.default.svc.cluster.local", "reviews"],
             "routes": [{"name": "default.reviews.0", "match": {"path": {"prefix": "/"}, "headers": []},
                "action": {"clusters": [{"name": "outbound|9080|v3|reviews.default.svc.cluster.local", "weight": 100}]},
                "virtualService": "reviews.default"}]}]}]},
        "endpoints": {"version": "e", "resources": []},
    })
}

async fn fake_pilot() -> String {
    async fn config_dump(Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
        match q.get("proxyID").map(String::as_str) {
            Some(PRODUCTPAGE) => (StatusCode::OK, Json(dump())),
            other => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("proxy {other:?} is not connected to this pilot")})),
            ),
        }
    }
    let app = Router::new()
        .route("/debug/syncz", get(|| async { Json(syncz()) }))
        .route("/debug/config_dump", get(config_dump));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Runs meshctl with `args` (and an empty state dir) off the async runtime.
async fn meshctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let state = tempfile::tempdir().unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(&args)
            .arg("--state")
            .arg(state.path())
            .env_remove("MESH_PILOT")
            .env_remove("MESH_OUTPUT")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "meshctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_config_from_pilot() {
    let pilot = fake_pilot().await;

    let out = stdout(&meshctl(&["proxy-status", "--pilot", &pilot]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    let pp: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        pp[..5],
        [
            "productpage-v1.default",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED"
        ],
        "{out}"
    );
    assert!(
        lines[2].contains("NACKED") && lines[2].contains("NOT SENT"),
        "{out}"
    );
    assert!(
        out.contains("NACK reviews-v1.default LDS: unknown filter"),
        "{out}"
    );

    let json_out = stdout(&meshctl(&["proxy-status", "--pilot", &pilot, "-o", "json"]).await);
    assert_eq!(serde_json::from_str::<Value>(&json_out).unwrap(), syncz());

    let out = stdout(&meshctl(&["proxy-config", "routes", "productpage", "--pilot", &pilot]).await);
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.contains("reviews") && row.contains("reviews.default") && row.contains("|v3|"),
        "{out}"
    );
    let out = stdout(
        &meshctl(&[
            "proxy-config",
            "clusters",
            PRODUCTPAGE,
            "--pilot",
            &pilot,
            "-o",
            "json",
        ])
        .await,
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        dump()["clusters"]
    );

    // Unknown and ambiguous names fail with the connected proxies listed.
    let o = meshctl(&["proxy-config", "routes", "ratings", "--pilot", &pilot]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no proxy \"ratings\"") && err.contains("productpage-v1.default"),
        "{err}"
    );
    let o = meshctl(&["proxy-config", "routes", "sidecar", "--pilot", &pilot]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("more than one proxy"));
    // Pilot's 404 (the proxy went away between the two calls) is shown with Pilot's message.
    let o = meshctl(&["proxy-config", "routes", "reviews", "--pilot", &pilot]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("404") && err.contains("not connected"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pilot_address() {
    let o = meshctl(&["proxy-status"]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--pilot") && err.contains("meshctl up"),
        "{err}"
    );
}
