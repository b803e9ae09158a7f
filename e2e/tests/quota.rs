//! Rate limiting end to end: `meshctl up --demo`, then Istio 1.4's unmodified
//! `mixer-rule-productpage-ratelimit.yaml` (memquota: productpage gets 2 requests per 5 s) with
//! `meshctl apply -f`. Galley stores the handler/instance/rule for Mixer and the
//! QuotaSpec/QuotaSpecBinding for Pilot; Pilot puts the bound quota into productpage's inbound
//! `mixer` filter config; productpage's sidecar charges `requestcountquota` in its Check and
//! answers Istio's 429 once Mixer grants nothing, until the window has passed. The sidecar
//! prefetches quota (units Mixer granted ahead serve later requests locally), and still admits
//! exactly the budget: every unit it serves was granted by Mixer.
//!
//! Build the binaries first: `cargo build -p galley -p pilot -p citadel -p mixer -p mesh-proxy
//! -p meshctl -p e2e --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::{Duration, Instant};

use common::{Mesh, http, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BODY_429: &str = "RESOURCE_EXHAUSTED:Quota is exhausted for: requestcountquota";

/// GET ingress/productpage: (status, body).
async fn productpage(mesh: &Mesh) -> Result<(u16, String), String> {
    let url = format!("{}/productpage", mesh.ingress());
    let resp = http()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A counter of a proxy's `/stats/prometheus` (0 when absent).
async fn proxy_counter(mesh: &Mesh, pod: &str, name: &str) -> Result<f64, String> {
    let admin = mesh.proxy(pod)["admin"]
        .as_str()
        .ok_or("no admin address")?
        .to_string();
    let text = http()
        .get(format!("{admin}/stats/prometheus"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productpage_ratelimit_sample_answers_429_past_the_budget_then_recovers() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../shared/conformance/istio-1.4/samples/bookinfo/policy/mixer-rule-productpage-ratelimit.yaml",
    );
    assert!(
        sample.is_file(),
        "Istio 1.4 sample missing: {}",
        sample.display()
    );
    let mut mesh = Mesh::start_demo();

    // The demo serves productpage before any quota exists.
    poll(
        "productpage 200 before the quota",
        Duration::from_secs(90),
        || async {
            match productpage(&mesh).await? {
                (200, _) => Ok(()),
                (s, b) => Err(format!("{s} {b}")),
            }
        },
    )
    .await;

    // Istio's sample, unchanged: every document accepted (nothing skipped).
    let out = mesh.meshctl(&["apply", "-f", sample.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "meshctl apply failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mesh.diagnostics()
    );
    for kind in [
        "handler",
        "instance",
        "QuotaSpec",
        "QuotaSpecBinding",
        "rule",
    ] {
        assert!(
            stdout.to_lowercase().contains(&kind.to_lowercase()),
            "{kind} not applied: {stdout}"
        );
    }

    // Once Mixer and productpage's sidecar have the config, a burst runs past the budget
    // (2 per 5 s) and is refused with Istio's answer.
    let (ok_before, body) = poll("a 429 past the budget", Duration::from_secs(90), || async {
        let mut ok = 0;
        for _ in 0..4 {
            match productpage(&mesh).await? {
                (200, _) => ok += 1,
                (429, body) => return Ok((ok, body)),
                (s, b) => return Err(format!("unexpected {s} {b}")),
            }
        }
        Err(format!("{ok} requests in a row were answered 200"))
    })
    .await;
    assert_eq!(body.trim(), BODY_429);
    assert!(ok_before <= 2, "{ok_before} answered 200 before the 429");

    // The quota is counted where it was enforced: productpage's sidecar.
    let refused = proxy_counter(&mesh, "productpage-v1", "proxy_mixer_quota_refused_total")
        .await
        .unwrap();
    assert!(
        refused >= 1.0,
        "proxy_mixer_quota_refused_total = {refused}"
    );

    // After the 5 s window productpage answers again...
    let refused_at = Instant::now();
    poll(
        "productpage 200 after the window",
        Duration::from_secs(30),
        || async {
            match productpage(&mesh).await? {
                (200, _) => Ok(()),
                (s, b) => Err(format!("{s} {b}")),
            }
        },
    )
    .await;
    let recovered_after = refused_at.elapsed();
    eprintln!("429 after {ok_before} x 200; 200 again after {recovered_after:?}");
    // ...and the budget holds again: of three more requests at once, at most one more fits.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, body) = productpage(&mesh).await.unwrap();
        if status == 429 {
            assert_eq!(body.trim(), BODY_429);
        }
        statuses.push(status);
    }
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 1 && statuses.contains(&429),
        "after recovering ({recovered_after:?}) the budget did not hold: {statuses:?}"
    );

    // Check-cache hits and misses are on the gateway's /stats/prometheus (no quota there, so
    // its Checks are cached): the hit ratio can be computed.
    let hits = proxy_counter(
        &mesh,
        "istio-ingressgateway",
        "proxy_mixer_check_cache_hits_total",
    )
    .await
    .unwrap();
    let misses = proxy_counter(
        &mesh,
        "istio-ingressgateway",
        "proxy_mixer_check_cache_misses_total",
    )
    .await
    .unwrap();
    assert!(hits >= 1.0 && misses >= 1.0, "hits {hits}, misses {misses}");

    // Mixer unreachable. `meshctl up`'s mesh config says policyCheckFailOpen: true, so the
    // quota Check times out (5 s) and productpage's sidecar lets the request through.
    let mixer = mesh.info["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mixer")
        .and_then(|p| p["pid"].as_i64())
        .expect("mixer pid in mesh.json") as i32;
    let mixer = Pid::from_raw(mixer);
    let slow_client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("{}/productpage", mesh.ingress());
    // The sidecar prefetches quota: for 500 ms after Mixer granted nothing its pool refuses
    // (429) without asking; the first request past that asks Mixer, times out and fails open.
    kill(mixer, Signal::SIGSTOP).unwrap();
    let opened = poll(
        "fail open with Mixer stopped",
        Duration::from_secs(60),
        || {
            let (client, url) = (&slow_client, &url);
            async move {
                let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp.text().await.map_err(|e| e.to_string())?;
                match status {
                    200 => Ok(()),
                    429 if body.trim() == BODY_429 => Err("429 from the closed pool".into()),
                    _ => Err(format!("unexpected {status} {body}")),
                }
            }
        },
    )
    .await;
    kill(mixer, Signal::SIGCONT).unwrap();
    let () = opened;
    let opened = proxy_counter(&mesh, "productpage-v1", "proxy_mixer_fail_open_total")
        .await
        .unwrap();
    assert!(opened >= 1.0, "proxy_mixer_fail_open_total = {opened}");

    // Istio's default, fail close: once the mesh config says policyCheckFailOpen: false and
    // pilot has pushed it, the same outage answers 503 UNAVAILABLE (the gateway passes it on
    // after its retries). Each try waits out the 5 s Check timeout.
    std::fs::write(
        mesh.state_dir().join("meshconfig.yaml"),
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\npolicyCheckFailOpen: false\n\
         disablePolicyChecks: false\n",
    )
    .expect("write mesh config");
    kill(mixer, Signal::SIGSTOP).unwrap();
    let closed = poll(
        "503 UNAVAILABLE with Mixer stopped",
        Duration::from_secs(90),
        || {
            let (client, url) = (&slow_client, &url);
            async move {
                let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp.text().await.map_err(|e| e.to_string())?;
                if status == 503 && body.starts_with("UNAVAILABLE:") {
                    Ok(body)
                } else {
                    Err(format!("{status} {body}"))
                }
            }
        },
    )
    .await;
    kill(mixer, Signal::SIGCONT).unwrap();
    assert!(closed.starts_with("UNAVAILABLE:"), "{closed}");
    let closed = proxy_counter(&mesh, "productpage-v1", "proxy_mixer_fail_close_total")
        .await
        .unwrap();
    assert!(closed >= 1.0, "proxy_mixer_fail_close_total = {closed}");
    mesh.stop();
}
