//! What Mixer policy checks and telemetry reports cost the whole mesh (issue 7), side by side in
//! one run: Bookinfo throughput through the ingress with policy + telemetry on, then off, then on
//! again, and the proxies' Check cache hit ratio during the "on" runs.
//!
//! Starts `meshctl up --demo --no-access-log` (the binaries from `MESH_BIN_DIR`), applies Istio
//! 1.4's unmodified `policy/mixer-rule-deny-label.yaml` (denier: reviews-v3 → ratings; every
//! Check evaluates its match) and `telemetry/metrics.yaml` (prometheus `requestcount` from every
//! Report) with `meshctl apply -f`, waits until Mixer holds both rules, then measures
//! `wrk -t1 -cCONNS -dDURATIONs INGRESS/productpage` (after a 2 s warm-up) in three phases:
//! - `on`: `STATE/meshconfig.yaml` with `disablePolicyChecks: false` (as `meshctl up` writes);
//! - `off`: the same file with `disablePolicyChecks: true` and `disableMixerHttpReports: true`;
//! - `on again`: the first file back.
//!
//! Between phases the bench edits the file (galley watches it) and polls, with a deadline, until
//! every proxy's `/config_dump` shows the new mixer filter settings and pilot's `/debug/syncz`
//! shows every type of every proxy ACKed at the version last sent. Per phase it prints req/s,
//! errors, the Check and Report calls Mixer answered (`mixer_check_total`,
//! `mixer_report_records_total`), the proxies' Check cache hits/misses
//! (`proxy_mixer_check_cache_hits_total`, `_misses_total` on `/stats/prometheus`) and the CPU
//! time per request of every process `meshctl up` started (from `/proc/PID/stat`, by process
//! name; wrk's own is not counted), then the throughput ratio on/off.
//!
//! Release run (the figures to quote):
//!   CARGO_TARGET_DIR=/work/target-release cargo build --release -p galley -p pilot -p citadel \
//!     -p mixer -p mesh-proxy -p meshctl -p e2e --bins
//!   MESH_BIN_DIR=/work/target-release/release cargo bench -p e2e --bench mesh_policy
//! Quick correctness run in debug (1 s phases): `MESH_BIN_DIR=/work/target/debug cargo bench -p
//! e2e --bench mesh_policy --profile dev -- --test`. Environment: `DURATION` seconds per phase
//! (default 10), `CONNS` (default 16). Needs `wrk` (`apt-get install -y wrk`).

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Mesh, http, poll};
use load::WrkResult;
use serde_json::Value;

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/istio-1.4/samples/bookinfo"
);
/// The policy (one Check rule) and telemetry (one Report rule) applied before measuring.
const SAMPLE_FILES: [&str; 2] = [
    "policy/mixer-rule-deny-label.yaml",
    "telemetry/metrics.yaml",
];
/// How long a phase change or a config apply may take to reach every proxy.
const CONVERGE: Duration = Duration::from_secs(90);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The sum of every sample of metric `name` (with or without labels) in a Prometheus text page.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn get_text(url: &str) -> Result<String, String> {
    http()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))
}

async fn get_json(url: &str) -> Result<Value, String> {
    serde_json::from_str(&get_text(url).await?).map_err(|e| format!("GET {url}: {e}"))
}

/// Every proxy's admin URL, by pod.
fn admins(mesh: &Mesh) -> Vec<(String, String)> {
    mesh.info["proxies"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(pod, p)| Some((pod.clone(), p["admin"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Counters summed over the proxies and Mixer.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cache_hits: f64,
    cache_misses: f64,
    checks: f64,
    reports: f64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            cache_hits: self.cache_hits - before.cache_hits,
            cache_misses: self.cache_misses - before.cache_misses,
            checks: self.checks - before.checks,
            reports: self.reports - before.reports,
        }
    }

    fn hit_ratio(&self) -> Option<f64> {
        let total = self.cache_hits + self.cache_misses;
        (total > 0.0).then(|| self.cache_hits / total)
    }
}

async fn counters(mesh: &Mesh) -> Counters {
    let mut c = Counters::default();
    for (pod, admin) in admins(mesh) {
        let text = get_text(&format!("{admin}/stats/prometheus"))
            .await
            .unwrap_or_else(|e| panic!("{pod}: {e}"));
        c.cache_hits += metric_sum(&text, "proxy_mixer_check_cache_hits_total");
        c.cache_misses += metric_sum(&text, "proxy_mixer_check_cache_misses_total");
    }
    let mixer = mixer_metrics(mesh).await.expect("mixer /metrics");
    c.checks = metric_sum(&mixer, "mixer_check_total");
    c.reports = metric_sum(&mixer, "mixer_report_records_total");
    c
}

async fn mixer_metrics(mesh: &Mesh) -> Result<String, String> {
    let mon = mesh.info["mixer"]["monitoring"]
        .as_str()
        .ok_or("mesh.json has no mixer monitoring address")?;
    get_text(&format!("{mon}/metrics")).await
}

/// The ServiceConfigs of every listener's mixer filter in a proxy's `/config_dump`:
/// (listener, disable_check_calls, disable_report_calls).
fn mixer_settings(dump: &Value) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let Some(listeners) = dump["listeners"].as_object() else {
        return out;
    };
    for (name, l) in listeners {
        let m = &l["mixer"];
        if !m.is_object() {
            continue;
        }
        let mut configs: Vec<&Value> = m["service_configs"]
            .as_object()
            .map(|s| s.values().collect())
            .unwrap_or_default();
        if m["route"].is_object() {
            configs.push(&m["route"]);
        }
        for sc in configs {
            out.push((
                name.clone(),
                sc["disable_check_calls"].as_bool().unwrap_or(false),
                sc["disable_report_calls"].as_bool().unwrap_or(false),
            ));
        }
    }
    out
}

/// Whether one proxy's mixer settings are those of the phase: `off` = checks and reports
/// disabled everywhere; on = reports everywhere, checks everywhere but on sidecars' outbound
/// listener (Istio checks on the destination's side).
fn settings_match(settings: &[(String, bool, bool)], off: bool) -> bool {
    settings.iter().all(|(listener, check_off, report_off)| {
        if off {
            *check_off && *report_off
        } else {
            !*report_off && (listener == "virtualOutbound" || !*check_off)
        }
    })
}

/// Polls until every proxy applied the phase's mixer settings (and at least one has a mixer
/// filter), and pilot sees every type of every proxy ACKed at the version it last sent.
async fn wait_phase(mesh: &Mesh, off: bool) -> Duration {
    let started = Instant::now();
    let debug = mesh.info["pilot"]["debug"]
        .as_str()
        .expect("mesh.json has pilot debug")
        .to_string();
    let proxies = admins(mesh);
    poll(
        &format!(
            "every proxy on the {} settings",
            if off { "off" } else { "on" }
        ),
        CONVERGE,
        || async {
            let mut filters = 0;
            for (pod, admin) in &proxies {
                let dump = get_json(&format!("{admin}/config_dump")).await?;
                let s = mixer_settings(&dump);
                if !settings_match(&s, off) {
                    return Err(format!("{pod}: {s:?}"));
                }
                filters += s.len();
            }
            if filters == 0 {
                return Err("no proxy has a mixer filter".into());
            }
            let syncz = get_json(&format!("{debug}/debug/syncz")).await?;
            let all = syncz.as_array().ok_or("syncz is not a list")?;
            if all.len() < proxies.len() {
                return Err(format!(
                    "{} of {} proxies connected",
                    all.len(),
                    proxies.len()
                ));
            }
            for p in all {
                for (t, v) in p["types"].as_object().into_iter().flatten() {
                    if v["sent_version"].is_null() || v["sent_version"] != v["acked_version"] {
                        return Err(format!("{} {t} not ACKed: {v}", p["proxy_id"]));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    started.elapsed()
}

/// Rewrites the mesh config file with the phase's two fields.
fn write_mesh_config(path: &Path, original: &str, off: bool) {
    let mut text: String = original
        .lines()
        .filter(|l| {
            !l.starts_with("disablePolicyChecks:") && !l.starts_with("disableMixerHttpReports:")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "disablePolicyChecks: {off}\ndisableMixerHttpReports: {off}\n"
    ));
    std::fs::write(path, text).expect("write the mesh config");
}

struct Phase {
    name: &'static str,
    wrk: WrkResult,
    counters: Counters,
    converged: Duration,
    /// CPU seconds each mesh process used during the measurement, by process name.
    cpu: Vec<(String, f64)>,
}

impl Phase {
    /// CPU µs per request of the processes whose name `pick` accepts.
    fn cpu_per_request(&self, secs: u64, pick: impl Fn(&str) -> bool) -> f64 {
        let requests = self.wrk.rps * secs as f64;
        let cpu: f64 = self
            .cpu
            .iter()
            .filter(|(n, _)| pick(n))
            .map(|(_, c)| c)
            .sum();
        if requests > 0.0 {
            cpu / requests * 1e6
        } else {
            0.0
        }
    }
}

/// utime + stime in seconds of each process `meshctl up` started (mesh.json `processes`).
fn process_cpu(mesh: &Mesh) -> Vec<(String, f64)> {
    mesh.info["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_string();
            let pid = p["pid"].as_i64()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            // Fields 14 and 15 (utime, stime), in clock ticks (100 a second on Linux).
            Some((name, (f.get(11)? + f.get(12)?) / 100.0))
        })
        .collect()
}

async fn measure(
    mesh: &Mesh,
    name: &'static str,
    converged: Duration,
    secs: u64,
    conns: usize,
) -> Phase {
    let url = format!("{}/productpage", mesh.ingress());
    load::wrk_url(&url, conns, 2);
    let before = counters(mesh).await;
    let cpu_before = process_cpu(mesh);
    let wrk = load::wrk_url(&url, conns, secs);
    let cpu: Vec<(String, f64)> = process_cpu(mesh)
        .into_iter()
        .map(|(n, c)| {
            let c0 = cpu_before
                .iter()
                .find(|(m, _)| *m == n)
                .map_or(c, |(_, c0)| *c0);
            (n, c - c0)
        })
        .collect();
    let counters = counters(mesh).await.since(before);
    println!(
        "{name:<9} {:>9.1} req/s  errors {:>5}  checks {:>7.0}  reports {:>7.0}  cache hits {:>7.0} misses {:>5.0}",
        wrk.rps,
        wrk.errors,
        counters.checks,
        counters.reports,
        counters.cache_hits,
        counters.cache_misses
    );
    let phase = Phase {
        name,
        wrk,
        counters,
        converged,
        cpu,
    };
    let mut by_cpu = phase.cpu.clone();
    by_cpu.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "          mesh CPU {:.0} µs/request: {}",
        phase.cpu_per_request(secs, |_| true),
        by_cpu
            .iter()
            .take(8)
            .map(|(n, _)| format!("{n} {:.0}", phase.cpu_per_request(secs, |m| m == n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    phase
}

fn ratio(p: &Phase) -> String {
    p.counters
        .hit_ratio()
        .map_or_else(|| "—".to_string(), |r| format!("{:.1} %", r * 100.0))
}

fn sample_paths() -> Vec<PathBuf> {
    SAMPLE_FILES
        .iter()
        .map(|f| Path::new(SAMPLES).join(f))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let secs: u64 = if quick { 1 } else { env_or("DURATION", 10) };
    let conns: usize = env_or("CONNS", 16);
    let samples = sample_paths();
    if let Some(missing) = samples.iter().find(|p| !p.is_file()) {
        println!("skipped: {} not found", missing.display());
        return;
    }

    let mesh = Mesh::start_demo_with(&["--no-access-log"]);
    poll("productpage 200", CONVERGE, || async {
        let url = format!("{}/productpage", mesh.ingress());
        let r = http().get(&url).send().await.map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("{}", r.status()))
        }
    })
    .await;

    // Mixer's rules: the demo's, then the two samples.
    let rules = |text: &str| metric_sum(text, "mixer_config_rules");
    let before = rules(&mixer_metrics(&mesh).await.expect("mixer /metrics"));
    for s in &samples {
        let out = mesh.meshctl(&["apply", "-f", s.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "meshctl apply -f {} failed: {}{}",
            s.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    poll("Mixer holds the sample rules", CONVERGE, || async {
        let n = rules(&mixer_metrics(&mesh).await?);
        if n >= before + 2.0 {
            Ok(())
        } else {
            Err(format!("{n} rules (before: {before})"))
        }
    })
    .await;

    let mesh_config = mesh.state_dir().join("meshconfig.yaml");
    let original = std::fs::read_to_string(&mesh_config).expect("STATE/meshconfig.yaml");
    let mut phases = Vec::new();
    for (name, off) in [("on", false), ("off", true), ("on again", false)] {
        write_mesh_config(&mesh_config, &original, off);
        let converged = wait_phase(&mesh, off).await;
        phases.push(measure(&mesh, name, converged, secs, conns).await);
    }
    // With checks on, Mixer answered Checks (cache misses) and Reports; off, neither.
    let (on, off, again) = (&phases[0], &phases[1], &phases[2]);
    assert!(
        on.counters.reports > 0.0,
        "no Report reached Mixer with telemetry on"
    );
    assert!(
        on.counters.cache_hits + on.counters.cache_misses > 0.0,
        "no Check with policy on"
    );
    assert_eq!(
        off.counters.checks, 0.0,
        "Checks reached Mixer with policy off"
    );
    assert_eq!(
        off.counters.reports, 0.0,
        "Reports reached Mixer with telemetry off"
    );

    let on_rps = (on.wrk.rps + again.wrk.rps) / 2.0;
    let mut out = String::new();
    out.push_str(&format!(
        "\n### Bookinfo through the ingress, Mixer policy + telemetry on vs off\n\n\
         commit {}, `wrk -t1 -c{conns} -d{secs}s INGRESS/productpage`{}\n\n\
         | phase | req/s | errors | Checks at Mixer | Reports at Mixer | proxy Check cache hit ratio | mesh CPU µs/request | of it Mixer | converged in |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        report::git_commit(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."))),
        if quick { " (quick run: not a measurement)" } else { "" },
    ));
    for p in &phases {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {:.0} | {:.0} | {} | {:.0} | {:.1} | {:.1} s |\n",
            p.name,
            p.wrk.rps,
            p.wrk.errors,
            p.counters.checks,
            p.counters.reports,
            ratio(p),
            p.cpu_per_request(secs, |_| true),
            p.cpu_per_request(secs, |n| n == "mixer"),
            p.converged.as_secs_f64()
        ));
    }
    out.push_str(&format!(
        "\non / off throughput: {:.1} % (mean of the two \"on\" phases; target ≥ 90 %, Istio 1.1: 58 %)\n",
        on_rps / off.wrk.rps * 100.0
    ));
    println!("{out}");
}
