//! Sidecar `ingress[]` with the real binaries: on the demo mesh, a Sidecar selecting `details`
//! maps its port 9080 to `defaultEndpoint: 127.0.0.1:<port>`, where `<port>` is the real port of
//! another application (ratings' listener, not 9080 and not the port details' sidecar was
//! started with). A request through the mesh (ingress → productpage → details:9080) must then
//! be answered by the application on that port; deleting the Sidecar brings details back.
//!
//! One mesh start. Build the binaries first:
//! `cargo build -p galley -p pilot -p citadel -p mesh-proxy -p meshctl -p e2e --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::Duration;

use common::{Mesh, http, poll};
use serde_json::Value;

/// The service that answered productpage's call to details (the first call of the page).
async fn details_answered_by(mesh: &Mesh) -> Result<String, String> {
    let url = format!("{}/productpage", mesh.ingress());
    let resp = http()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("GET {url}: {status} {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let first = &v["calls"][0];
    match first["service"].as_str() {
        Some(s) if first.get("status").is_none() => Ok(s.to_string()),
        _ => Err(format!("details call failed: {body}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_ingress_sends_the_port_to_the_default_endpoint() {
    let mesh = Mesh::start_demo();
    // ratings' real port: neither 9080 nor the application port of details' sidecar.
    let ratings: std::net::SocketAddr = mesh.info["apps"]["ratings-v1"]["listen"]
        .as_str()
        .expect("mesh.json apps.ratings-v1.listen")
        .parse()
        .unwrap();
    let details_app = mesh.proxy("details-v1")["app"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(ratings.port(), 9080);
    assert_ne!(ratings.to_string(), details_app);

    let before = poll(
        "productpage through the ingress",
        Duration::from_secs(90),
        || async { details_answered_by(&mesh).await },
    )
    .await;
    assert_eq!(before, "details");

    let files = tempfile::tempdir().unwrap();
    let sidecar = files.path().join("sidecar.yaml");
    std::fs::write(
        &sidecar,
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata:\n  name: details-ingress\n  namespace: default\nspec:\n  workloadSelector:\n    labels:\n      app: details\n  ingress:\n  - port:\n      number: 9080\n      protocol: HTTP\n      name: http\n    defaultEndpoint: 127.0.0.1:{}\n",
            ratings.port()
        ),
    )
    .unwrap();
    let out = mesh.meshctl(&["apply", "-f", sidecar.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // details:9080 now reaches the application listening on ratings' port.
    poll(
        "details:9080 answered at the ingress defaultEndpoint",
        Duration::from_secs(60),
        || async {
            match details_answered_by(&mesh).await? {
                s if s == "ratings" => Ok(()),
                other => Err(format!("answered by {other}")),
            }
        },
    )
    .await;
    // Steadily so (every request, not one lucky one).
    for _ in 0..5 {
        assert_eq!(details_answered_by(&mesh).await.unwrap(), "ratings");
    }

    // Without the Sidecar, details' own application answers again.
    let out = mesh.meshctl(&["delete", "sidecar", "details-ingress", "-n", "default"]);
    assert!(
        out.status.success(),
        "delete failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    poll(
        "details answering again",
        Duration::from_secs(60),
        || async {
            match details_answered_by(&mesh).await? {
                s if s == "details" => Ok(()),
                other => Err(format!("answered by {other}")),
            }
        },
    )
    .await;
}
