//! Istio 1.4's `mixer-rule-deny-label-crd.yaml` (legacy `kind: denier` / `kind: checknothing`),
//! applied unchanged through a real galley (in-process, its apply API), reaches the real `mixer`
//! binary over MCP (the `istio/config/v1alpha2/legacy/...` collections): Check denies
//! reviews-v3 → ratings with the denier's status, allows reviews-v2, and allows again once the
//! denier is deleted from galley.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_proto::attributes::Bag;
use serde_json::Value;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Galley {
    mcp: SocketAddr,
    api: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start_galley() -> Galley {
    let dir = tempfile::tempdir().unwrap();
    let cfg = galley::Config {
        config_dir: None,
        store_dir: dir.path().join("store"),
        mcp_addr: free_addr(),
        api_addr: free_addr(),
        monitoring_addr: free_addr(),
        poll_interval: Duration::from_millis(100),
        webhook: None,
        kube: None,
        mesh_config: None,
    };
    let (mcp, api, mon) = (cfg.mcp_addr, cfg.api_addr, cfg.monitoring_addr);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(galley::run(cfg, async move {
        let _ = rx.await;
    }));
    poll("galley ready", || async move {
        reqwest::get(format!("http://{mon}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    Galley {
        mcp,
        api,
        _stop: stop,
        _dir: dir,
    }
}

async fn apply(galley: &Galley, file: &str, text: String) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/apis/v1/apply", galley.api))
        .header("x-mesh-source", file)
        .body(text)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{file}: {status} {body}");
    body
}

fn to_ratings(source: &str) -> Bag {
    Bag::new()
        .with("source.uid", format!("kubernetes://{source}.default"))
        .with("destination.uid", "kubernetes://ratings-v1.default")
        .with(
            "destination.service.host",
            "ratings.default.svc.cluster.local",
        )
}

/// The code and message of Check's precondition for a call from `source` to ratings.
async fn check(m: &mut Mixer, source: &str) -> (i32, String) {
    let resp = m
        .client
        .check(check_request(&to_ratings(source), None, ""))
        .await
        .unwrap()
        .into_inner();
    let status = resp.precondition.unwrap().status.unwrap();
    (status.code, status.message)
}

#[tokio::test]
async fn deny_label_crd_sample_through_galley_denies_reviews_v3() {
    let galley = start_galley().await;
    for p in [
        pod("ratings-v1", "ratings", "v1"),
        pod("reviews-v2", "reviews", "v2"),
        pod("reviews-v3", "reviews", "v3"),
    ] {
        apply(&galley, "pod.json", serde_json::to_string(&p).unwrap()).await;
    }

    let mut m = Mixer::start(galley.mcp, 0).await;
    let ready = format!("http://{}/readyz", m.monitoring);
    poll("mixer synced with galley", || {
        let url = ready.clone();
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert_eq!(check(&mut m, "reviews-v3").await.0, 0, "no rule yet");

    let text = std::fs::read_to_string(format!("{SAMPLES}/policy/mixer-rule-deny-label-crd.yaml"))
        .unwrap();
    let applied = apply(&galley, "mixer-rule-deny-label-crd.yaml", text).await;
    let kinds: Vec<&str> = applied["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["denier", "checknothing", "rule"], "{applied}");
    assert!(
        applied["skipped"].as_array().is_none_or(Vec::is_empty),
        "{applied}"
    );
    let listed: Value = reqwest::get(format!("http://{}/apis/v1/deniers", galley.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"][0]["metadata"]["name"], "denyreviewsv3handler",
        "{listed}"
    );

    let want = (
        7,
        "PERMISSION_DENIED:denyreviewsv3handler.denier.default:Not allowed".to_string(),
    );
    let mut last = (0, String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while last != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reviews-v3 → ratings never denied; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = check(&mut m, "reviews-v3").await;
    }
    assert_eq!(check(&mut m, "reviews-v2").await.0, 0);

    // Deleting the legacy handler in galley reaches Mixer: the rule is left out.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "http://{}/apis/v1/denier/default/denyreviewsv3handler",
            galley.api
        ))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while check(&mut m, "reviews-v3").await.0 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still denied after the denier was deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = m.metrics().await;
    assert!(
        metrics.contains(
            r#"mixer_config_updates_total{collection="istio/config/v1alpha2/legacy/deniers",result="ack"}"#
        ),
        "{metrics}"
    );
}
