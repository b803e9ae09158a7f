//! A real Prometheus scrapes the demo mesh (issue 9): every control-plane `/metrics` and every
//! proxy's `/stats/prometheus` is a target that is `up`, and queries for the demo's requests and
//! errors give the values of the traffic this test sent.
//!
//! Needs the `prometheus` binary (Debian: `apt-get install prometheus`; `.ci/run` installs it when
//! it can) on PATH or in `PROMETHEUS_BIN`. Without it the test fails, unless
//! `MESH_SKIP_PROMETHEUS=1`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mesh, http, poll, wait_timeout};
use e2e::demo::Reply;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Requests to /productpage (routed to productpage, all 200).
const N_OK: u64 = 30;
/// Requests to a path the ingress has no route for (404 `NR` from the gateway itself).
const M_NOT_FOUND: u64 = 10;

/// The `prometheus` binary: `PROMETHEUS_BIN`, else the first `prometheus` on PATH.
fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// A free loopback port (bound then released; Prometheus binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `http://host:port` → `host:port`.
fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// The scrape configuration for every endpoint in `mesh.json`: one job per component, each
/// target labelled with `component` (and `pod` for proxies). Written as JSON, which is YAML.
fn scrape_config(info: &Value) -> (Value, usize) {
    let mut jobs = Vec::new();
    let mut count = 0;
    for component in ["galley", "pilot", "citadel", "mixer"] {
        let addr = info[component]["monitoring"]
            .as_str()
            .unwrap_or_else(|| panic!("mesh.json has no {component}.monitoring: {info}"));
        jobs.push(json!({
            "job_name": component,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [host_port(addr)], "labels": {"component": component}}],
        }));
        count += 1;
    }
    let proxies = info["proxies"].as_object().expect("mesh.json has proxies");
    for kind in ["sidecar", "router"] {
        let groups: Vec<Value> = proxies
            .iter()
            .filter(|(_, p)| p["type"] == kind)
            .map(|(pod, p)| {
                let component = if kind == "router" {
                    "ingress"
                } else {
                    "sidecar"
                };
                json!({
                    "targets": [host_port(p["admin"].as_str().expect("proxy admin address"))],
                    "labels": {"component": component, "pod": pod},
                })
            })
            .collect();
        count += groups.len();
        jobs.push(json!({
            "job_name": if kind == "router" { "ingress" } else { "sidecars" },
            "metrics_path": "/stats/prometheus",
            "static_configs": groups,
        }));
    }
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    });
    (config, count)
}

/// A running Prometheus; dropping it (also on panic) stops it.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Prometheus {
    fn start(binary: &Path, config: &Value) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_string_pretty(config).unwrap()).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `/-/ready` (failing at once, with its log, if Prometheus exits).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if let Ok(r) = http().get(format!("{}/-/ready", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /api/v1/...` → the `data` of a `success` answer.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query)
            .map_err(|e| e.to_string())?;
        let resp = http()
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = resp.text().await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("GET {url} {query:?}: {body}"));
        }
        Ok(v["data"].clone())
    }

    /// The value of a scalar-producing instant query (`sum(...)`); `None` when the result is
    /// empty (no matching series).
    async fn value(&self, promql: &str) -> Result<Option<f64>, String> {
        let data = self.api("query", &[("query", promql)]).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        match result.as_slice() {
            [] => Ok(None),
            [one] => one["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .map(Some)
                .ok_or_else(|| format!("{promql}: bad value {one}")),
            _ => Err(format!("{promql}: more than one series: {data}")),
        }
    }

    /// Polls `promql` until it reaches `want` (a counter only grows), then checks it is exactly
    /// `want`; returns the value.
    async fn wait_for(&self, promql: &str, want: f64) -> f64 {
        let v = poll(
            &format!("{promql} to reach {want}"),
            Duration::from_secs(30),
            || async {
                match self.value(promql).await? {
                    Some(v) if v >= want => Ok(v),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        if v != want {
            panic!(
                "{promql} = {v}, want {want}; the series:\n{}",
                self.series("istio_requests_total").await
            );
        }
        v
    }

    /// Every series of `selector` with its current value, one per line (for failure messages).
    async fn series(&self, selector: &str) -> String {
        match self.api("query", &[("query", selector)]).await {
            Ok(data) => data["result"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| format!("{} {}", s["metric"], s["value"][1]))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            Err(e) => e,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "prometheus log (tail):\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// GET `url` and return the status code.
async fn status_of(url: &str) -> u16 {
    http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mesh_and_counts_the_traffic() {
    let Some(binary) = prometheus_binary() else {
        if std::env::var("MESH_SKIP_PROMETHEUS").as_deref() == Ok("1") {
            eprintln!("MESH_SKIP_PROMETHEUS=1: skipping, prometheus is not installed");
            return;
        }
        panic!(
            "the `prometheus` binary is not on PATH (PROMETHEUS_BIN={:?}): install it with \
             `sudo apt-get install -y prometheus` (Debian/Ubuntu; do not start the service, the \
             test runs the binary itself) or a release from https://prometheus.io/download/, or \
             set MESH_SKIP_PROMETHEUS=1 to skip this test",
            std::env::var_os("PROMETHEUS_BIN")
        );
    };

    let mesh = Mesh::start_demo();
    let ingress = mesh.ingress();
    let page = format!("{ingress}/productpage");

    // The ingress may answer before its routes arrive, and a sidecar before its clusters and
    // endpoints do: wait until one request makes the whole call tree, ratings included. These
    // requests are counted too, which is why the checks below are relative to a baseline.
    poll(
        "productpage, reviews and ratings through the ingress",
        Duration::from_secs(90),
        || async {
            let r = http().get(&page).send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let body = r.text().await.map_err(|e| e.to_string())?;
            let reply: Reply =
                serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
            let with_ratings = reply
                .call("reviews")
                .is_some_and(|rv| rv.call("ratings").is_some());
            if status == 200 && reply.all_ok() && with_ratings {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;

    let (config, targets) = scrape_config(&mesh.info);
    assert_eq!(targets, 4 + 7, "4 control-plane components and 7 proxies");
    let mut prom = Prometheus::start(&binary, &config);
    prom.wait_ready().await;

    // Every target is scraped successfully (an unparsable exposition would show as `down` with
    // its `lastError`).
    poll(
        "every prometheus target up",
        Duration::from_secs(30),
        || async {
            let data = prom.api("targets", &[("state", "active")]).await?;
            let active = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let not_up: Vec<String> = active
                .iter()
                .filter(|t| t["health"] != "up")
                .map(|t| {
                    format!(
                        "{} {} health={} lastError={}",
                        t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]
                    )
                })
                .collect();
            if active.len() == targets && not_up.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} active targets; not up: {not_up:#?}",
                    active.len()
                ))
            }
        },
    )
    .await;

    // Each target's exposition was parsed into samples (an empty or unparsable page would not).
    let empty_q = "count(scrape_samples_scraped == 0) or vector(0)";
    assert_eq!(prom.value(empty_q).await.unwrap(), Some(0.0), "{empty_q}");
    let scraped_q = "count(scrape_samples_scraped > 0)";
    assert_eq!(
        prom.value(scraped_q).await.unwrap(),
        Some(targets as f64),
        "{scraped_q}"
    );

    // Every target was scraped at least once after the warm-up ended (Prometheus started
    // afterwards) and nothing sends traffic now, so these are the totals before our traffic.
    // Counter totals are exact, so the checks are exact differences rather than `rate()`/
    // `increase()`, which extrapolate over the scrape timing.
    let ok_q = r#"sum(istio_requests_total{reporter="destination",destination_app="productpage"})"#;
    let nr_q =
        r#"sum(istio_requests_total{component="ingress",reporter="source",response_code="404"})"#;
    let err_q = r#"sum(istio_requests_total{response_code=~"5.."})"#;
    let ratings_q =
        r#"sum(istio_requests_total{reporter="destination",destination_app="ratings"})"#;
    let before = |q: &'static str| {
        let prom = &prom;
        async move { prom.value(q).await.unwrap().unwrap_or(0.0) }
    };
    let ok0 = before(ok_q).await;
    let nr0 = before(nr_q).await;
    let err0 = before(err_q).await;
    let ratings0 = before(ratings_q).await;
    eprintln!("baseline: productpage={ok0} ingress-404={nr0} 5xx={err0} ratings={ratings0}");

    for _ in 0..N_OK {
        assert_eq!(status_of(&page).await, 200, "GET {page}");
    }
    let missing = format!("{ingress}/no-such-page");
    for _ in 0..M_NOT_FOUND {
        assert_eq!(status_of(&missing).await, 404, "GET {missing}");
    }

    // Every target scrapes on its own schedule: wait until each was scraped after the traffic
    // ended (the `up` sample's timestamp is its scrape time), so every total below is final.
    let traffic_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    poll(
        "every target scraped after the traffic",
        Duration::from_secs(30),
        || async {
            match prom.value("min(timestamp(up))").await? {
                Some(t) if t > traffic_end => Ok(()),
                other => Err(format!(
                    "oldest scrape {other:?}, traffic ended {traffic_end}"
                )),
            }
        },
    )
    .await;
    let ok = prom.wait_for(ok_q, ok0 + N_OK as f64).await;
    let nr = prom.wait_for(nr_q, nr0 + M_NOT_FOUND as f64).await;
    // 5xx answered while the configuration was still arriving (before the warm-up above got a
    // whole call tree) are in the baseline; the test's own traffic must add none.
    let err = prom.value(err_q).await.unwrap();
    if err.unwrap_or(0.0) != err0 {
        panic!(
            "{err_q}: the test's traffic caused 5xx ({err0} before, {err:?} after):\n{}",
            prom.series(r#"istio_requests_total{response_code=~"5.."}"#)
                .await
        );
    }
    if err0 != 0.0 {
        eprintln!(
            "5xx during the warm-up:\n{}",
            prom.series(r#"istio_requests_total{response_code=~"5.."}"#)
                .await
        );
    }
    let ratings = prom.value(ratings_q).await.unwrap().unwrap_or(0.0);
    assert!(
        ratings > ratings0,
        "{ratings_q}: reviews v2/v3 called ratings ({ratings0} before, {ratings} after)"
    );

    // The request rate and error rate as a dashboard shows them: the rate is positive (its exact
    // value depends on the scrape timing), the error ratio is zero.
    let rate_q = r#"sum(rate(istio_requests_total{reporter="destination",destination_app="productpage"}[1m]))"#;
    let rate = prom.value(rate_q).await.unwrap().unwrap_or(0.0);
    assert!(rate > 0.0, "{rate_q} = {rate}");
    let err_ratio_q = r#"(sum(rate(istio_requests_total{reporter="destination",response_code=~"5.."}[1m])) or vector(0)) / sum(rate(istio_requests_total{reporter="destination"}[1m]))"#;
    let err_ratio = prom.value(err_ratio_q).await.unwrap();
    if err_ratio != Some(0.0) {
        panic!(
            "{err_ratio_q} = {err_ratio:?}, want 0:\n{}",
            prom.series("istio_requests_total").await
        );
    }
    eprintln!(
        "after: {ok_q} = {ok}; {nr_q} = {nr}; {err_q} = {err:?}; {ratings_q} = {ratings}; \
         {rate_q} = {rate}; {err_ratio_q} = {err_ratio:?}"
    );

    drop(prom);
    drop(mesh);
}
