//! Mutual TLS end to end on `meshctl up --demo` (build the binaries first:
//! `cargo build -p galley -p pilot -p citadel -p mixer -p mesh-proxy -p meshctl -p e2e --bins`):
//!
//! - Istio's unmodified `destination-rule-all-mtls.yaml` plus a mesh-wide STRICT
//!   PeerAuthentication: productpage answers 200 with ratings through the ingress, and a
//!   plaintext client is refused at a sidecar's inbound port;
//! - certificate rotation under load: workload certificates of 30 s (`meshctl up --cert-ttl`)
//!   rotate at least twice in every proxy while steady traffic through the ingress sees only
//!   200s.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Mesh, http, poll};
use serde_json::Value;

const ALL_MTLS: &str = "/work/shared/conformance/istio/valid/samples/bookinfo/networking/destination-rule-all-mtls.yaml";

fn apply_file(mesh: &Mesh, path: &std::path::Path) {
    let out = mesh.meshctl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "meshctl apply {} failed:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

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

/// Whether productpage's call tree shows reviews calling ratings v1 successfully.
fn has_ratings(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    v["calls"].as_array().is_some_and(|calls| {
        calls.iter().any(|c| {
            c["service"] == "reviews"
                && c["calls"].as_array().is_some_and(|rc| {
                    rc.iter()
                        .any(|r| r["service"] == "ratings" && r["version"] == "v1")
                })
        })
    })
}

/// A plaintext HTTP/1.1 GET to a sidecar's inbound address.
async fn plaintext_get(inbound: &str) -> Result<u16, String> {
    http()
        .get(format!("http://{inbound}/reviews/0"))
        .header("host", "reviews:9080")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_all_mtls_rules_and_strict_peer_authentication() {
    let mut mesh = Mesh::start_demo();
    poll(
        "productpage through the ingress",
        Duration::from_secs(60),
        || async {
            match productpage(&mesh).await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // PERMISSIVE by default: a plaintext client still reaches ratings' sidecar.
    let inbound = mesh.proxy("ratings-v1")["inbound"]
        .as_str()
        .unwrap()
        .to_string();
    poll(
        "plaintext answer under PERMISSIVE",
        Duration::from_secs(60),
        || async { plaintext_get(&inbound).await },
    )
    .await;

    apply_file(&mesh, std::path::Path::new(ALL_MTLS));
    let files = tempfile::tempdir().unwrap();
    let strict = files.path().join("strict.yaml");
    std::fs::write(
        &strict,
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n",
    )
    .unwrap();
    apply_file(&mesh, &strict);

    // Plaintext to a sidecar's inbound port is refused once STRICT is applied.
    poll(
        "plaintext refused under STRICT",
        Duration::from_secs(60),
        || async {
            match plaintext_get(&inbound).await {
                Ok(s) => Err(format!("plaintext request answered {s}")),
                Err(e) => Ok(e),
            }
        },
    )
    .await;
    for _ in 0..3 {
        assert!(plaintext_get(&inbound).await.is_err(), "stays refused");
    }

    // The demo keeps working over mutual TLS: productpage with reviews calling ratings.
    let body = poll(
        "productpage with ratings",
        Duration::from_secs(60),
        || async {
            match productpage(&mesh).await {
                Ok((200, body)) if has_ratings(&body) => Ok(body),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(body.contains("\"productpage\""), "{body}");
    for _ in 0..10 {
        let (status, body) = productpage(&mesh).await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", mesh.diagnostics());
    }
    // The calls between sidecars were mutual TLS (ratings' side reports them).
    let admin = mesh.proxy("ratings-v1")["admin"]
        .as_str()
        .unwrap()
        .to_string();
    let stats = http()
        .get(format!("{}/stats/prometheus", base(&admin)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total")
            && l.contains("reporter=\"destination\"")
            && l.contains("connection_security_policy=\"mutual_tls\"")),
        "{stats}"
    );

    let status = mesh.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// An admin address from mesh.json as a URL base.
fn base(admin: &str) -> String {
    if admin.starts_with("http://") {
        admin.to_string()
    } else {
        format!("http://{admin}")
    }
}

/// `proxy_identity_cert_expiry_seconds` of the proxy whose admin is `admin`.
async fn cert_expiry(admin: &str) -> Option<f64> {
    let text = http()
        .get(format!("{}/stats/prometheus", base(admin)))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("proxy_identity_cert_expiry_seconds "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_failed_requests() {
    const TTL_SECS: f64 = 30.0;
    let mut mesh = Mesh::start_demo_with(&["--cert-ttl", "30s"]);
    poll(
        "productpage through the ingress",
        Duration::from_secs(60),
        || async {
            match productpage(&mesh).await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let admins: BTreeMap<String, String> = mesh.info["proxies"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(pod, p)| (pod.clone(), p["admin"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(admins.len(), 7, "{admins:?}");
    // The proxies asked for the short lifetime.
    for (pod, admin) in &admins {
        let left = cert_expiry(admin).await.unwrap();
        assert!(left <= TTL_SECS + 1.0, "{pod}: {left} s left");
    }

    // Steady traffic through the ingress from two clients.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let ingress = mesh.ingress();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            format!("{ingress}/productpage"),
        );
        clients.push(tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        let s = r.status();
                        let body = r.text().await.unwrap_or_default();
                        failed.lock().unwrap().push(format!("{s} {body}"));
                    }
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }

    // Watch every proxy's remaining lifetime: a rotation makes it jump back up.
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    let mut rotations: BTreeMap<String, usize> = admins.keys().map(|p| (p.clone(), 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(150);
    let started = Instant::now();
    loop {
        for (pod, admin) in &admins {
            if let Some(left) = cert_expiry(admin).await {
                if let Some(prev) = last.get(pod)
                    && left > prev + 3.0
                {
                    *rotations.get_mut(pod).unwrap() += 1;
                }
                last.insert(pod.clone(), left);
            }
        }
        // Longer than two rotations everywhere, and at least 40 s of traffic.
        if rotations.values().all(|n| *n >= 2) && started.elapsed() > Duration::from_secs(40) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every proxy rotated twice: {rotations:?}\n{}",
            mesh.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::SeqCst);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        failed.len(),
        failed.len() + ok,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "too little traffic: {ok}");
    eprintln!("{ok} requests, all 200; rotations {rotations:?}");

    let status = mesh.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
