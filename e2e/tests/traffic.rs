//! Istio's fault-injection task on the demo mesh, with Istio's own samples unmodified:
//! `virtual-service-all-v1.yaml` and `virtual-service-reviews-test-v2.yaml` (jason → reviews v2,
//! which calls ratings; everyone else → reviews v1, which does not), then
//! `virtual-service-ratings-test-delay.yaml` (7 s delay on jason's calls to ratings) and
//! `virtual-service-ratings-test-abort.yaml` (HTTP 500 on jason's calls to ratings).
//!
//! What Istio's docs say happens, in the demo's terms: jason's page waits the injected 7 s for
//! ratings (the demo's calls time out after 10 s, so unlike Bookinfo's 6 s productpage timeout
//! the page still loads), then with the abort jason's page shows "ratings unavailable" (reviews
//! v2 records the 500 from ratings); other users are never affected. reviews-v2's sidecar counts
//! the injected faults with Envoy's response flags `DI` and `FI`.
//!
//! One mesh start (17 processes). Build the binaries first: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Mesh, http, poll};
use serde_json::Value;

fn sample(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/istio/valid/samples/bookinfo/networking")
        .join(name)
}

fn apply(mesh: &Mesh, name: &str) {
    let path = sample(name);
    let out = mesh.meshctl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply {name} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET ingress/productpage as `user`: (elapsed, status, body as JSON or Null).
async fn productpage(mesh: &Mesh, user: Option<&str>) -> Result<(Duration, Value), String> {
    let url = format!("{}/productpage", mesh.ingress());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.get(&url);
    if let Some(u) = user {
        req = req.header("end-user", u);
    }
    let started = Instant::now();
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if status != 200 {
        return Err(format!("GET {url}: {status} {body}"));
    }
    let v = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((took, v))
}

/// The reviews call of a productpage reply: (version, its calls).
fn reviews(body: &Value) -> Result<(String, Vec<Value>), String> {
    let r = &body["calls"][1];
    if r["service"] != "reviews" {
        return Err(format!("second call is not reviews: {body}"));
    }
    Ok((
        r["version"].as_str().unwrap_or_default().to_string(),
        r["calls"].as_array().cloned().unwrap_or_default(),
    ))
}

/// Ratings answered reviews normally.
fn ratings_ok(calls: &[Value]) -> bool {
    calls.len() == 1 && calls[0]["service"] == "ratings" && calls[0]["version"] == "v1"
}

/// Polls until a request as `user` satisfies `check` (deadline `secs`).
async fn until(
    mesh: &Mesh,
    what: &str,
    user: Option<&'static str>,
    secs: u64,
    check: impl Fn(Duration, &Value) -> Result<(), String>,
) {
    poll(what, Duration::from_secs(secs), || async {
        let (took, body) = productpage(mesh, user).await?;
        check(took, &body).map_err(|e| format!("{e} (took {took:?}): {body}"))
    })
    .await
}

async fn metric_lines(mesh: &Mesh, pod: &str) -> Result<String, String> {
    let admin = mesh.proxy(pod)["admin"]
        .as_str()
        .ok_or("no admin address")?
        .to_string();
    http()
        .get(format!("{admin}/stats/prometheus"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_fault_injection_task() {
    let all_v1 = sample("virtual-service-all-v1.yaml");
    if !all_v1.is_file() {
        eprintln!("skipping: Istio's samples are not at {}", all_v1.display());
        return;
    }
    let mut mesh = Mesh::start_demo();

    // The task's starting point: everyone on v1, jason on reviews v2 (which calls ratings).
    apply(&mesh, "virtual-service-all-v1.yaml");
    apply(&mesh, "virtual-service-reviews-test-v2.yaml");
    until(
        &mesh,
        "jason on reviews v2 with ratings",
        Some("jason"),
        90,
        |_, b| match reviews(b)? {
            (v, calls) if v == "v2" && ratings_ok(&calls) => Ok(()),
            (v, _) => Err(format!("reviews {v}")),
        },
    )
    .await;
    until(
        &mesh,
        "others on reviews v1",
        None,
        60,
        |_, b| match reviews(b)? {
            (v, calls) if v == "v1" && calls.is_empty() => Ok(()),
            (v, _) => Err(format!("reviews {v}")),
        },
    )
    .await;

    // Delay: jason's call to ratings is held 7 s, then answered.
    apply(&mesh, "virtual-service-ratings-test-delay.yaml");
    until(&mesh, "jason delayed 7 s", Some("jason"), 120, |took, b| {
        let (v, calls) = reviews(b)?;
        if v != "v2" || !ratings_ok(&calls) {
            return Err(format!("reviews {v} without ratings"));
        }
        if took < Duration::from_secs(7) {
            return Err("not delayed yet".into());
        }
        Ok(())
    })
    .await;
    // Every request of jason's is delayed (100%); other users are not.
    let (took, body) = productpage(&mesh, Some("jason")).await.unwrap();
    assert!(took >= Duration::from_secs(7), "jason took {took:?}");
    assert!(took < Duration::from_secs(10), "jason took {took:?}");
    assert!(ratings_ok(&reviews(&body).unwrap().1), "{body}");
    for _ in 0..3 {
        let (took, body) = productpage(&mesh, None).await.unwrap();
        assert!(
            took < Duration::from_secs(3),
            "others took {took:?}: {body}"
        );
        assert_eq!(reviews(&body).unwrap().0, "v1", "{body}");
    }
    poll(
        "DI in reviews-v2's sidecar metrics",
        Duration::from_secs(30),
        || async {
            let m = metric_lines(&mesh, "reviews-v2").await?;
            m.lines()
                .any(|l| {
                    l.starts_with("istio_requests_total")
                        && l.contains("reporter=\"source\"")
                        && l.contains("destination_service_name=\"ratings\"")
                        && l.contains("response_flags=\"DI\"")
                })
                .then_some(())
                .ok_or_else(|| "no DI line".to_string())
        },
    )
    .await;

    // Abort: jason's call to ratings answers 500 at once; reviews shows ratings unavailable.
    apply(&mesh, "virtual-service-ratings-test-abort.yaml");
    until(
        &mesh,
        "jason's ratings aborted",
        Some("jason"),
        90,
        |took, b| {
            let (v, calls) = reviews(b)?;
            if v != "v2" {
                return Err(format!("reviews {v}"));
            }
            match calls.as_slice() {
                [c] if c["service"] == "ratings" && c["status"] == 500 => {}
                _ => return Err("ratings not aborted yet".into()),
            }
            if took >= Duration::from_secs(5) {
                return Err("still delayed".into());
            }
            Ok(())
        },
    )
    .await;
    for _ in 0..3 {
        let (_, body) = productpage(&mesh, Some("jason")).await.unwrap();
        let (_, calls) = reviews(&body).unwrap();
        assert_eq!(calls[0]["status"], 500, "{body}");
        let (_, body) = productpage(&mesh, None).await.unwrap();
        assert_eq!(
            reviews(&body).unwrap(),
            ("v1".to_string(), vec![]),
            "{body}"
        );
    }
    poll(
        "FI in reviews-v2's sidecar metrics",
        Duration::from_secs(30),
        || async {
            let m = metric_lines(&mesh, "reviews-v2").await?;
            m.lines()
                .any(|l| {
                    l.starts_with("istio_requests_total")
                        && l.contains("destination_service_name=\"ratings\"")
                        && l.contains("response_code=\"500\"")
                        && l.contains("response_flags=\"FI\"")
                })
                .then_some(())
                .ok_or_else(|| "no FI line".to_string())
        },
    )
    .await;

    assert_eq!(mesh.stop().map(|s| s.code()), Some(Some(0)));
}
