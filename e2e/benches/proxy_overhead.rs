//! What one proxy hop costs, side by side in one run on loopback: the same upstream (apt's
//! nginx serving a static 1 kB file, one worker) reached directly, through nginx as a reverse
//! proxy (one worker, keepalive upstream pool of 32, HTTP/1.1 upstream, access log off), and
//! through one `mesh-proxy` hop (its outbound listener, configured by the real galley + pilot
//! from a config directory: the upstream's Service + Endpoints and a DestinationRule with
//! `tls.mode: DISABLE`, so the hop is plaintext like nginx's; a real citadel gives it its
//! certificate). mesh-proxy runs with `TOKIO_WORKER_THREADS=1` (one worker thread).
//!
//! Measures (1) max throughput with `wrk -t1 -c16`, (2) latency at a fixed rate (open-loop
//! HTTP/1.1 client in this file, 16 keep-alive connections; a request delayed by the previous
//! response counts from its scheduled time), (3) CPU (utime+stime from /proc) of each proxy
//! per 1,000 rps over the fixed-rate run, (4) mesh-proxy's idle RSS with 100 and 1,000
//! services configured, after it applied them, (5) HTTP/2 (h2c) with h2load. Prints a markdown
//! report with the git commit and the commands.
//!
//! Needs: `apt-get install -y wrk nghttp2-client nginx`. Run with release binaries:
//!   CARGO_TARGET_DIR=/work/target-release cargo build --release -p galley -p pilot -p citadel -p mesh-proxy
//!   MESH_BIN_DIR=/work/target-release/release cargo bench -p e2e --bench proxy_overhead
//! Environment: `DURATION` seconds per measurement (default 10), `RATE` total rps of the
//! fixed-rate run (default 1000), `CONNS` (default 16), `SERVICES` (default `100,1000`),
//! `MESH_BIN_DIR` (default: this build's own target directory); `HOLD` seconds: only start the
//! three paths, print their addresses and the proxies' pids, keep them up that long (for
//! `perf record -g -p PID` under `wrk`) and measure nothing.
//!
//! `ONLY=memory`: only the idle RSS part (needs no quiet machine, no nginx): one proxy per
//! entry of `SERVICES` (`0` is the upstream's service alone), default worker threads unless
//! `MEM_WORKERS` is set, RSS split into anonymous and file-backed pages; `MEM_HOLD` seconds
//! keeps each proxy up after it is measured. `PROXY_WRAP` (e.g. `heaptrack -o /tmp/p`) runs
//! the proxy under a tool.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::load::{self, FixedRateResult, WrkResult};
use support::mesh::{self, ProxyOptions, SERVICE_PORT, UPSTREAM_SERVICE};
use support::nginx::{self, BODY_BYTES};
use support::procs::{cpu_seconds_all, free_addrs, rss_kb, rss_parts_kb, threads};
use support::report::{git_commit, mb, ms, ms_diff, shell};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One way to the upstream.
struct Path3 {
    name: &'static str,
    addr: SocketAddr,
    host: String,
    /// The proxy's processes (none for the direct path).
    pids: Vec<i32>,
}

struct Measured {
    wrk: WrkResult,
    /// vCPU the proxy used during the wrk run.
    wrk_cpu: f64,
    fixed: FixedRateResult,
    /// vCPU the proxy used during the fixed-rate run (warm-up included).
    fixed_cpu: f64,
}

async fn measure(p: &Path3, secs: u64, rate: f64, conns: usize) -> Measured {
    // Warm up connections and caches (not measured).
    load::wrk(p.addr, &p.host, conns, 2);
    let (c0, t0) = (cpu_seconds_all(&p.pids), Instant::now());
    let wrk = load::wrk(p.addr, &p.host, conns, secs);
    let wrk_cpu = (cpu_seconds_all(&p.pids) - c0) / t0.elapsed().as_secs_f64();
    let (c0, t0) = (cpu_seconds_all(&p.pids), Instant::now());
    let fixed = load::fixed_rate(
        p.addr,
        &p.host,
        rate,
        conns,
        Duration::from_secs(1),
        Duration::from_secs(secs),
        BODY_BYTES,
    )
    .await;
    let fixed_cpu = (cpu_seconds_all(&p.pids) - c0) / t0.elapsed().as_secs_f64();
    Measured {
        wrk,
        wrk_cpu,
        fixed,
        fixed_cpu,
    }
}

async fn check_path(p: &Path3) {
    match load::get_once(p.addr, &p.host).await {
        Ok((200, n)) if n == BODY_BYTES => {}
        other => panic!(
            "{} ({}, Host: {}) does not answer 200 with {BODY_BYTES} bytes: {other:?}",
            p.name, p.addr, p.host
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let secs: u64 = env_or("DURATION", 10);
    let rate: f64 = env_or("RATE", 1000.0);
    let conns: usize = env_or("CONNS", 16);
    let services: Vec<usize> = std::env::var("SERVICES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bin_dir = common::bin_dir();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tmp = tempfile::Builder::new()
        .prefix("proxy-overhead.")
        .tempdir()
        .expect("temp dir");
    // KEEP=1 keeps the work dir (configs, logs) for a look afterwards.
    let t = if std::env::var_os("KEEP").is_some() {
        tmp.keep()
    } else {
        tmp.path().to_path_buf()
    };
    let t = t.as_path();
    eprintln!(
        "proxy_overhead: binaries from {}, work dir {}",
        bin_dir.display(),
        t.display()
    );

    if std::env::var("ONLY").is_ok_and(|v| v == "memory") {
        memory_only(&bin_dir, t, &services, &repo, &loadavg).await;
        return;
    }

    let [up_addr, ngx_addr] = free_addrs(2)[..] else {
        unreachable!()
    };
    let upstream = nginx::start(
        "nginx-upstream",
        &t.join("nginx-upstream"),
        up_addr,
        &nginx::upstream_conf(&t.join("nginx-upstream"), up_addr),
    );
    let proxy_nginx = nginx::start(
        "nginx-proxy",
        &t.join("nginx-proxy"),
        ngx_addr,
        &nginx::proxy_conf(&t.join("nginx-proxy"), ngx_addr, up_addr),
    );
    let mesh_one = mesh::start(
        &bin_dir,
        &t.join("mesh"),
        &mesh::config_yaml(up_addr, 0),
        1,
        &ProxyOptions {
            worker_threads: Some(1),
        },
    )
    .await;
    let service_host = format!("{UPSTREAM_SERVICE}:{SERVICE_PORT}");
    let paths = [
        Path3 {
            name: "direct",
            addr: up_addr,
            host: format!("{up_addr}"),
            pids: vec![],
        },
        Path3 {
            name: "nginx (1 worker)",
            addr: ngx_addr,
            host: service_host.clone(),
            pids: proxy_nginx.pids(),
        },
        Path3 {
            name: "mesh-proxy (1 worker thread)",
            addr: mesh_one.outbound,
            host: service_host.clone(),
            pids: vec![mesh_one.proxy_pid()],
        },
    ];
    for p in &paths {
        check_path(p).await;
    }
    // HOLD=<secs>: keep the three paths up that long for a profiler (`perf record -p PID`),
    // print where they are, and measure nothing.
    if let Some(hold) = std::env::var("HOLD")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        for p in &paths {
            eprintln!(
                "HOLD {}: {} Host: {} pids {:?}",
                p.name, p.addr, p.host, p.pids
            );
        }
        tokio::time::sleep(Duration::from_secs(hold)).await;
        return;
    }
    let rss_one_idle = rss_kb(mesh_one.proxy_pid());
    let mut results = Vec::new();
    for p in &paths {
        eprintln!("measuring {} ...", p.name);
        results.push(measure(p, secs, rate, conns).await);
    }
    let rss_one_loaded = rss_kb(mesh_one.proxy_pid());
    let h2 = load::h2load(mesh_one.outbound, &service_host, 2000);
    drop(mesh_one);

    let mut rss = Vec::new();
    for n in &services {
        eprintln!("mesh-proxy with {n} services ...");
        let m = mesh::start(
            &bin_dir,
            &t.join(format!("mesh-{n}")),
            &mesh::config_yaml(up_addr, *n),
            n + 1,
            &ProxyOptions {
                worker_threads: None,
            },
        )
        .await;
        // The config is applied; let in-flight allocations settle before reading.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push((*n, rss_kb(m.proxy_pid())));
    }
    drop(proxy_nginx);
    drop(upstream);

    // The report.
    let mut r = String::new();
    let _ = writeln!(r, "## Proxy overhead (e2e/benches/proxy_overhead.rs)\n");
    let _ = writeln!(
        r,
        "commit `{}`, binaries `{}`, {} CPUs, load average before: `{}`\n",
        git_commit(&repo),
        bin_dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg.trim()
    );
    let _ = writeln!(
        r,
        "Command: `MESH_BIN_DIR={} DURATION={secs} RATE={rate} CONNS={conns} SERVICES={} cargo bench -p e2e --bench proxy_overhead`\n",
        bin_dir.display(),
        services
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    let _ = writeln!(
        r,
        "Upstream: apt nginx, 1 worker, static {BODY_BYTES}-byte file. Throughput: `{}` (per path). \
         Latency: open-loop fixed-rate HTTP/1.1 client, {rate} rps over {conns} keep-alive \
         connections, 1 s warm-up, {secs} s measured. CPU: utime+stime of the proxy's processes.\n",
        shell(
            "wrk",
            &load::wrk_args(paths[2].addr, &service_host, conns, secs)
        ),
    );
    let _ = writeln!(
        r,
        "| path | wrk req/s | proxy vCPU at max | p50 ms | p90 ms | p99 ms | max ms | added p50 | added p90 | added p99 | achieved rps | proxy vCPU per 1000 rps | errors |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let d = &results[0].fixed;
    for (p, m) in paths.iter().zip(&results) {
        let f = &m.fixed;
        let direct = p.pids.is_empty();
        let dash = || "–".to_string();
        let _ = writeln!(
            r,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
            p.name,
            m.wrk.rps,
            if direct {
                dash()
            } else {
                format!("{:.2}", m.wrk_cpu)
            },
            ms(f.percentile(0.50)),
            ms(f.percentile(0.90)),
            ms(f.percentile(0.99)),
            ms(f.max()),
            if direct {
                dash()
            } else {
                ms_diff(f.percentile(0.50), d.percentile(0.50))
            },
            if direct {
                dash()
            } else {
                ms_diff(f.percentile(0.90), d.percentile(0.90))
            },
            if direct {
                dash()
            } else {
                ms_diff(f.percentile(0.99), d.percentile(0.99))
            },
            f.achieved_rps,
            if direct {
                dash()
            } else {
                format!("{:.4}", m.fixed_cpu / (f.achieved_rps.max(1.0) / 1000.0))
            },
            m.wrk.errors + f.errors,
        );
    }
    let _ = writeln!(r, "\n| mesh-proxy RSS | MB |\n|---|---|");
    let _ = writeln!(
        r,
        "| 1 service, idle (1 worker thread) | {} |",
        mb(rss_one_idle)
    );
    let _ = writeln!(
        r,
        "| 1 service, after the runs above | {} |",
        mb(rss_one_loaded)
    );
    for (n, kb) in &rss {
        let _ = writeln!(
            r,
            "| {n} services (+ upstream) applied, idle (default worker threads) | {} |",
            mb(*kb)
        );
    }
    let _ = writeln!(
        r,
        "\nHTTP/2 (h2c prior knowledge): `{}`",
        shell(
            "h2load",
            &load::h2load_args(paths[2].addr, &service_host, 2000)
        )
    );
    for (name, h) in [("mesh-proxy", &h2)] {
        if h.succeeded > 0 {
            let _ = writeln!(r, "- {name}: {:.0} req/s, {} succeeded", h.rps, h.succeeded);
        } else {
            let why = h
                .raw
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("requests:") || l.contains("error") || l.contains("fail")
                })
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ");
            let _ = writeln!(
                r,
                "- {name}: does not speak h2c on this listener (h2load: {why})"
            );
        }
    }
    println!("{r}");
}

/// `ONLY=memory`: idle RSS of one proxy per service count (the upstream address is never
/// called, so no nginx is started).
async fn memory_only(bin_dir: &Path, t: &Path, services: &[usize], repo: &Path, loadavg: &str) {
    let up_addr = free_addrs(1)[0];
    let workers: Option<usize> = std::env::var("MEM_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok());
    let hold: u64 = env_or("MEM_HOLD", 0);
    let mut rows = Vec::new();
    for n in services {
        eprintln!("mesh-proxy with {n} services ...");
        let m = mesh::start(
            bin_dir,
            &t.join(format!("mesh-{n}")),
            &mesh::config_yaml(up_addr, *n),
            n + 1,
            &ProxyOptions {
                worker_threads: workers,
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = m.proxy_pid();
        let (anon, file) = rss_parts_kb(pid);
        rows.push((*n, rss_kb(pid), anon, file, threads(pid)));
        if hold > 0 {
            eprintln!("MEM_HOLD {n} services: mesh-proxy pid {pid}, {hold} s");
            tokio::time::sleep(Duration::from_secs(hold)).await;
        }
    }
    let mut r = String::new();
    let _ = writeln!(
        r,
        "## Proxy idle memory (e2e/benches/proxy_overhead.rs, ONLY=memory)\n"
    );
    let _ = writeln!(
        r,
        "commit `{}`, binaries `{}`, load average before: `{}`, worker threads: {}\n",
        git_commit(repo),
        bin_dir.display(),
        loadavg.trim(),
        workers.map_or("default".to_string(), |w| w.to_string()),
    );
    let _ = writeln!(
        r,
        "| services (+ upstream) | RSS MB | anonymous MB | file-backed MB | threads |\n|---|---|---|---|---|"
    );
    for (n, rss, anon, file, th) in rows {
        let _ = writeln!(
            r,
            "| {n} | {} | {} | {} | {th} |",
            mb(rss),
            mb(anon),
            mb(file)
        );
    }
    println!("{r}");
}
