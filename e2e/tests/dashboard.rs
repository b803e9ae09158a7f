//! The mesh dashboard in a real browser: `meshctl up --demo` serves it, headless Chromium (apt
//! `chromium`) renders it while the demo takes traffic, and the rendered page must show every
//! demo service and call edge, with mTLS locks; after `meshctl apply` of Istio's
//! `virtual-service-reviews-v3.yaml`, the request rate on the reviews edges must follow the new
//! weights (v3 only).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Mesh, http, poll};

/// The Chromium binary: `CHROMIUM` or the first of the usual names on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "no chromium on PATH: install it (`apt-get install chromium`, .ci/run does) or set CHROMIUM"
    );
}

/// The page as Chromium renders it after its scripts have run for a while.
fn render(url: &str) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new("timeout")
        .arg("60")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run chromium: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "chromium exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `name="value"` attributes of every element whose opening tag holds `marker`.
fn elements(dom: &str, marker: &str) -> Vec<BTreeMap<String, String>> {
    dom.split('<')
        .filter(|tag| tag.contains(marker))
        .map(|tag| {
            let tag = tag.split('>').next().unwrap_or_default();
            let mut attrs = BTreeMap::new();
            let mut rest = tag;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq]
                    .rsplit(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let after = &rest[eq + 2..];
                let Some(end) = after.find('"') else { break };
                attrs.insert(name, after[..end].replace("&amp;", "&"));
                rest = &after[end + 1..];
            }
            attrs
        })
        .collect()
}

/// Edges of the rendered graph: (source, destination) → (req/s, mTLS).
fn edges(dom: &str) -> BTreeMap<(String, String), (f64, bool)> {
    elements(dom, "data-destination=")
        .into_iter()
        .filter(|a| a.contains_key("data-mtls"))
        .map(|a| {
            (
                (a["data-source"].clone(), a["data-destination"].clone()),
                (
                    a["data-rps"].parse().unwrap_or(-1.0),
                    a["data-mtls"] == "true",
                ),
            )
        })
        .collect()
}

fn e(from: &str, to: &str) -> (String, String) {
    (from.to_string(), to.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_demo_and_follows_a_weight_change() {
    // Fail before starting 17 processes when there is no browser.
    let _ = chromium();
    let mut mesh = Mesh::start_demo();
    let dashboard = mesh.info["dashboard"]
        .as_str()
        .expect("mesh.json names the dashboard")
        .to_string();
    assert!(
        mesh.stdout().contains(&format!("dashboard={dashboard}")),
        "the ready line prints the dashboard: {}",
        mesh.stdout()
    );

    // Steady traffic through the ingress for the whole test.
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (running, url) = (running.clone(), format!("{}/productpage", mesh.ingress()));
        tokio::spawn(async move {
            let client = http();
            while running.load(Ordering::Relaxed) {
                let _ = client.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // A short window so the rates react within seconds.
    let page = format!("{dashboard}/?window=4&refresh_ms=1000&service=reviews");
    let expected = [
        e("istio-ingressgateway", "productpage v1"),
        e("productpage v1", "details v1"),
        e("productpage v1", "reviews v1"),
        e("productpage v1", "reviews v2"),
        e("productpage v1", "reviews v3"),
        e("reviews v2", "ratings v1"),
        e("reviews v3", "ratings v1"),
    ];
    let dom = poll(
        "every demo edge with traffic",
        Duration::from_secs(90),
        || {
            let page = page.clone();
            let expected = expected.clone();
            async move {
                let dom = tokio::task::spawn_blocking(move || render(&page))
                    .await
                    .map_err(|e| e.to_string())??;
                let got = edges(&dom);
                for k in &expected {
                    match got.get(k) {
                        Some((rps, _)) if *rps > 0.0 => {}
                        other => return Err(format!("edge {k:?}: {other:?}; all: {got:?}")),
                    }
                }
                Ok(dom)
            }
        },
    )
    .await;
    let nodes: Vec<String> = elements(&dom, "data-node=")
        .into_iter()
        .map(|a| a["data-node"].clone())
        .collect();
    for n in [
        "istio-ingressgateway",
        "productpage v1",
        "details v1",
        "reviews v1",
        "reviews v2",
        "reviews v3",
        "ratings v1",
    ] {
        assert!(nodes.iter().any(|x| x == n), "node {n} missing: {nodes:?}");
    }
    let got = edges(&dom);
    // Every hop is mutual TLS, the gateway's to productpage included: the server side learns
    // the service the caller routed to, so its series land on the same edge.
    for k in &expected {
        assert!(got[k].1, "edge {k:?} is not shown as mTLS: {got:?}");
    }
    // The selected service's configuration comes from Galley (the demo's DestinationRule).
    assert!(
        dom.contains("data-kind=\"DestinationRule\""),
        "the reviews DestinationRule is not shown"
    );
    // Pilot's sync status lists the proxies.
    assert!(
        dom.contains("data-proxy=\"reviews-v1\""),
        "no sync row for reviews-v1"
    );

    // Shift every reviews request to v3.
    let vs = "../../shared/conformance/istio/valid/samples/bookinfo/networking/virtual-service-reviews-v3.yaml";
    let vs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(vs);
    let out = mesh.meshctl(&["apply", "-f", vs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll(
        "reviews traffic on v3 only",
        Duration::from_secs(60),
        || {
            let page = page.clone();
            async move {
                let dom = tokio::task::spawn_blocking(move || render(&page))
                    .await
                    .map_err(|e| e.to_string())??;
                let got = edges(&dom);
                let rps = |v: &str| got.get(&e("productpage v1", v)).map_or(0.0, |x| x.0);
                if rps("reviews v3") > 0.0 && rps("reviews v1") == 0.0 && rps("reviews v2") == 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "v1 {} v2 {} v3 {} rps",
                        rps("reviews v1"),
                        rps("reviews v2"),
                        rps("reviews v3")
                    ))
                }
            }
        },
    )
    .await;

    running.store(false, Ordering::Relaxed);
    let _ = load.await;
    let status = mesh.stop().expect("meshctl stops");
    assert!(status.success(), "meshctl exit {status}");
}
