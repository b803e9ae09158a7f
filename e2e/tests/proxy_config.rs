//! `meshctl proxy-status` and `meshctl proxy-config` against the demo mesh (`meshctl up
//! --demo` with the real binaries; build them first: `cargo build --workspace --bins`): every
//! proxy in sync with Pilot, productpage's routes to reviews, and the v3 subset after Istio's
//! `virtual-service-reviews-v3.yaml` is applied.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::Duration;

use common::{Mesh, poll};
use serde_json::Value;

/// `meshctl ARGS`'s stdout, or its stderr as the error.
fn run(mesh: &Mesh, args: &[&str]) -> Result<String, String> {
    let out = mesh.meshctl(args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "meshctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The table's rows after the header, as cells (columns are three or more spaces apart).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("NACK ") && !l.starts_with('('))
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The route rows for reviews in productpage's route table.
fn reviews_routes(mesh: &Mesh) -> Result<Vec<Vec<String>>, String> {
    let out = run(mesh, &["proxy-config", "routes", "productpage"])?;
    let reviews: Vec<Vec<String>> = rows(&out)
        .into_iter()
        .filter(|r| r.get(1).is_some_and(|d| d.starts_with("reviews ")))
        .collect();
    if reviews.is_empty() {
        return Err(format!("no reviews route:\n{out}"));
    }
    Ok(reviews)
}

#[tokio::test]
async fn proxy_status_and_config_of_the_demo() {
    let mesh = Mesh::start_demo();
    let proxies: Vec<String> = mesh.info["proxies"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(pod, p)| format!("{pod}.{}", p["namespace"].as_str().unwrap()))
        .collect();
    assert!(proxies.len() >= 7, "demo proxies: {proxies:?}");

    // Every demo proxy is connected and has ACKed the CDS, LDS, EDS and RDS last sent.
    let wait_synced = |what: &'static str| {
        poll(what, Duration::from_secs(60), || async {
            let out = run(&mesh, &["proxy-status"])?;
            let rows = rows(&out);
            for name in &proxies {
                let Some(row) = rows.iter().find(|r| r.first() == Some(name)) else {
                    return Err(format!("{name} not listed:\n{out}"));
                };
                if row.get(1..5)
                    != Some(&["SYNCED", "SYNCED", "SYNCED", "SYNCED"].map(String::from)[..])
                {
                    return Err(format!("{name} not synced:\n{out}"));
                }
            }
            Ok(out)
        })
    };
    let status = wait_synced("every demo proxy SYNCED").await;
    assert!(status.starts_with("NAME"), "{status}");
    let syncz: Value =
        serde_json::from_str(&run(&mesh, &["proxy-status", "-o", "json"]).unwrap()).unwrap();
    assert!(syncz.as_array().unwrap().len() >= proxies.len(), "{syncz}");

    // Without a VirtualService productpage's reviews route goes to the whole service.
    let reviews = poll("reviews default route", Duration::from_secs(30), || async {
        reviews_routes(&mesh)
    })
    .await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0][0], "http_proxy");
    assert_eq!(reviews[0][2], "/*");
    assert_eq!(reviews[0][3], "-", "no VirtualService yet: {reviews:?}");
    assert_eq!(
        reviews[0][4],
        "outbound|9080||reviews.default.svc.cluster.local"
    );

    // The other tables show productpage's view of the mesh.
    let clusters = run(&mesh, &["proxy-config", "clusters", "productpage"]).unwrap();
    assert!(
        rows(&clusters).iter().any(|r| r
            == &[
                "reviews.default.svc.cluster.local",
                "9080",
                "v3",
                "OUTBOUND",
                "EDS"
            ]),
        "{clusters}"
    );
    let listeners = run(&mesh, &["proxy-config", "listeners", "productpage-v1"]).unwrap();
    assert!(
        rows(&listeners).iter().any(|r| r.get(2..5)
            == Some(&["HTTP", "virtualOutbound", "Route: http_proxy"].map(String::from)[..])),
        "{listeners}"
    );
    let endpoints = run(&mesh, &["proxy-config", "endpoints", "productpage"]).unwrap();
    let v3 = "outbound|9080|v3|reviews.default.svc.cluster.local";
    let v3_rows: Vec<Vec<String>> = rows(&endpoints)
        .into_iter()
        .filter(|r| r.get(3).map(String::as_str) == Some(v3))
        .collect();
    assert_eq!(v3_rows.len(), 1, "one reviews-v3 endpoint:\n{endpoints}");
    assert_eq!(v3_rows[0][1], "HEALTHY");
    let inbound = mesh.proxy("reviews-v3")["inbound"].as_str().unwrap();
    assert_eq!(v3_rows[0][0], inbound, "{endpoints}");
    let raw: Value = serde_json::from_str(
        &run(
            &mesh,
            &["proxy-config", "routes", "productpage", "-o", "json"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(raw["resources"][0]["name"], "http_proxy", "{raw}");

    // Istio's sample, unmodified: every reviews request to v3.
    let vs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../shared/conformance/istio/valid/samples/bookinfo/networking/virtual-service-reviews-v3.yaml",
    );
    let applied = run(&mesh, &["apply", "-f", vs.to_str().unwrap()]).unwrap();
    assert!(
        applied.contains("VirtualService default/reviews"),
        "{applied}"
    );
    let reviews = poll("reviews route to v3", Duration::from_secs(30), || async {
        let r = reviews_routes(&mesh)?;
        match r.as_slice() {
            [only] if only[4] == v3 => Ok(r),
            _ => Err(format!("{r:?}")),
        }
    })
    .await;
    assert_eq!(reviews[0][3], "reviews.default", "{reviews:?}");
    wait_synced("every proxy SYNCED after the apply").await;

    // An unknown proxy is an error naming the connected ones.
    let err = run(&mesh, &["proxy-config", "routes", "nosuchpod"]).unwrap_err();
    assert!(
        err.contains("no proxy \"nosuchpod\"") && err.contains("productpage-v1.default"),
        "{err}"
    );
}
