//! Access logs as a mesh setting: `meshctl up --demo` writes a mesh config with JSON access
//! logs on (`accessLogFile: /dev/stdout`), galley serves it, pilot puts Envoy's file access
//! logger on every listener, and each proxy writes Istio's JSON line per request into its
//! process log. Turning `accessLogFile` off in the mesh config stops the lines.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Mesh, http, poll};
use serde_json::Value;

const PRODUCTPAGE_SA: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
const INGRESS_SA: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/// GET ingress/productpage with our own request id; Ok once it answers 200.
async fn productpage(mesh: &Mesh, request_id: &str) -> Result<(), String> {
    let url = format!("{}/productpage", mesh.ingress());
    let resp = http()
        .get(&url)
        .header("x-request-id", request_id)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("GET {url}: {status} {body}"));
    }
    Ok(())
}

/// The JSON access log lines of `log` (a process log: other lines are not JSON objects) with
/// `request_id`.
fn lines_with(log: &Path, request_id: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["request_id"] == request_id)
        .collect()
}

/// A proxy's admin `/config_dump`.
async fn config_dump(mesh: &Mesh, pod: &str) -> Result<Value, String> {
    let admin = mesh.proxy(pod)["admin"]
        .as_str()
        .ok_or("no admin address")?
        .to_string();
    http()
        .get(format!("{admin}/config_dump"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json::<Value>()
        .await
        .map_err(|e| e.to_string())
}

/// The sum of a proxy's `istio_requests_total` series of `reporter`.
async fn requests_total(mesh: &Mesh, pod: &str, reporter: &str) -> Result<f64, String> {
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
    let want = format!("reporter=\"{reporter}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_logs_follow_the_mesh_config() {
    let mesh = Mesh::start_demo();
    let logs = mesh.state_dir().join("logs");
    let gateway_log = logs.join("ingressgateway.log");
    let productpage_log = logs.join("productpage-v1-proxy.log");

    // (a) on by default: the gateway and productpage's sidecar log the request with its id.
    let id = "access-log-e2e-1";
    poll(
        "productpage through the ingress",
        Duration::from_secs(60),
        || productpage(&mesh, id),
    )
    .await;
    let gw = poll("the gateway's line", Duration::from_secs(20), || {
        let lines = lines_with(&gateway_log, id);
        async move {
            lines
                .into_iter()
                .find(|v| v["response_code"] == 200)
                .ok_or_else(|| "no 200 line yet".to_string())
        }
    })
    .await;
    assert_eq!(gw["method"], "GET", "{gw}");
    assert_eq!(gw["path"], "/productpage", "{gw}");
    assert_eq!(gw["upstream_peer_uri_san"], PRODUCTPAGE_SA, "{gw}");
    assert!(gw["start_time"].is_string(), "{gw}");
    assert!(gw["duration"].is_u64(), "{gw}");

    let inbound = poll(
        "productpage's inbound line",
        Duration::from_secs(20),
        || {
            let lines = lines_with(&productpage_log, id);
            async move {
                lines
                    .into_iter()
                    .find(|v| v["downstream_peer_uri_san"] == INGRESS_SA)
                    .ok_or_else(|| "no inbound line yet".to_string())
            }
        },
    )
    .await;
    assert_eq!(inbound["method"], "GET", "{inbound}");
    assert_eq!(inbound["path"], "/productpage", "{inbound}");
    assert_eq!(inbound["response_code"], 200, "{inbound}");
    assert_eq!(inbound["protocol"], "HTTP/1.1", "{inbound}");

    // The proxies show what Pilot sent.
    let dump = config_dump(&mesh, "productpage-v1")
        .await
        .expect("config_dump");
    assert_eq!(
        dump["access_logs"]["virtualInbound"]["http"]["path"], "/dev/stdout",
        "{}",
        dump["access_logs"]
    );

    // (b) off: rewrite the mesh config; once both proxies have no access logger, a request
    // leaves no line.
    std::fs::write(
        mesh.state_dir().join("meshconfig.yaml"),
        "accessLogFile: \"\"\naccessLogEncoding: JSON\n",
    )
    .expect("write mesh config");
    let mesh_ref = &mesh;
    for pod in ["istio-ingressgateway", "productpage-v1"] {
        poll(
            &format!("{pod} without access loggers"),
            Duration::from_secs(60),
            || async move {
                let dump = config_dump(mesh_ref, pod).await?;
                match dump["access_logs"].as_object() {
                    Some(m) if m.is_empty() => Ok(()),
                    _ => Err(format!("access_logs {}", dump["access_logs"])),
                }
            },
        )
        .await;
    }
    let before = requests_total(&mesh, "productpage-v1", "destination")
        .await
        .expect("metrics");
    let id = "access-log-e2e-2";
    poll(
        "productpage with logging off",
        Duration::from_secs(30),
        || productpage(&mesh, id),
    )
    .await;
    // The request's metrics and its access log entry are recorded together.
    poll(
        "productpage's sidecar to count the request",
        Duration::from_secs(20),
        || async {
            let now = requests_total(&mesh, "productpage-v1", "destination").await?;
            if now > before {
                Ok(())
            } else {
                Err(format!("still {now}"))
            }
        },
    )
    .await;
    assert!(
        lines_with(&gateway_log, id).is_empty(),
        "gateway logged with accessLogFile off"
    );
    assert!(
        lines_with(&productpage_log, id).is_empty(),
        "productpage's sidecar logged with accessLogFile off"
    );
}
