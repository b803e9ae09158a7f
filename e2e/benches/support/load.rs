//! Load generators: wrk (max throughput), an open-loop fixed-rate HTTP/1.1 client (latency
//! percentiles), and h2load (HTTP/2).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::HOST;
use hyper_util::rt::TokioIo;

/// What wrk measured.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub errors: u64,
}

/// The command line of one wrk run.
pub fn wrk_args(addr: SocketAddr, host: &str, conns: usize, secs: u64) -> Vec<String> {
    vec![
        "-t1".into(),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "-H".into(),
        format!("Host: {host}"),
        format!("http://{addr}/"),
    ]
}

/// Runs `wrk -t1 -cN -dSs -H 'Host: host' http://addr/`.
pub fn wrk(addr: SocketAddr, host: &str, conns: usize, secs: u64) -> WrkResult {
    run_wrk(
        &wrk_args(addr, host, conns, secs),
        &format!("{addr} (Host: {host})"),
    )
}

/// Runs `wrk -t1 -cN -dSs URL` (any path, the URL's own Host). Used by the mesh_policy bench
/// (each bench compiles this module on its own).
#[allow(dead_code)]
pub fn wrk_url(url: &str, conns: usize, secs: u64) -> WrkResult {
    let args = vec![
        "-t1".into(),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        url.to_string(),
    ];
    run_wrk(&args, url)
}

fn run_wrk(args: &[String], what: &str) -> WrkResult {
    let out = Command::new("wrk")
        .args(args)
        .output()
        .expect("run wrk (apt-get install -y wrk)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let num = |prefix: &str| -> u64 {
        raw.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    };
    let errors = num("Non-2xx or 3xx responses:") + num("Socket errors:");
    assert!(
        out.status.success() && rps > 0.0,
        "wrk to {what} failed: {raw}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    WrkResult { rps, errors }
}

/// What the fixed-rate client measured.
#[derive(Debug, Clone, Default)]
pub struct FixedRateResult {
    /// Latencies of the measured (post-warm-up) requests, sorted.
    pub latencies: Vec<Duration>,
    pub errors: u64,
    /// Requests completed per second over the measured window.
    pub achieved_rps: f64,
}

impl FixedRateResult {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64) * p).ceil() as usize;
        self.latencies[i.clamp(1, self.latencies.len()) - 1]
    }
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

/// One connection's share of the schedule: request `k` is due at `first + k * interval`;
/// those due from `measure_from` on are measured; none is sent from `end` on.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
}

/// Runs one connection's schedule: (latencies of measured requests, errors).
async fn connection(
    addr: SocketAddr,
    host: String,
    s: Schedule,
    body_bytes: usize,
) -> (Vec<Duration>, u64) {
    let mut lat = Vec::new();
    let mut errors = 0u64;
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => return (lat, 1),
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return (lat, 1);
    };
    tokio::spawn(conn);
    for k in 0u32.. {
        let intended = s.first + s.interval * k;
        if intended >= s.end {
            break;
        }
        // Open loop: a request whose slot passed while the previous response was still
        // coming counts from its slot (no coordinated omission); otherwise from the moment
        // it is sent (the timer wakes up to 1 ms late: client time, not the server's).
        let sent = if Instant::now() < intended {
            tokio::time::sleep_until(intended.into()).await;
            Instant::now()
        } else {
            intended
        };
        let req = Request::get("/")
            .header(HOST, &host)
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_body().collect().await {
                    Ok(b) => status.is_success() && b.to_bytes().len() == body_bytes,
                    Err(_) => false,
                }
            }
            Err(_) => false,
        };
        let done = Instant::now();
        if !ok {
            // The connection may be gone: stop this connection's schedule.
            errors += 1;
            break;
        }
        if intended >= s.measure_from {
            lat.push(done - sent);
        }
    }
    (lat, errors)
}

/// Sends GET / with `Host: host` to `addr` at `rps` requests per second in total over `conns`
/// keep-alive HTTP/1.1 connections (staggered schedules), for `warmup` + `duration`; latency
/// of the requests scheduled after the warm-up.
pub async fn fixed_rate(
    addr: SocketAddr,
    host: &str,
    rps: f64,
    conns: usize,
    warmup: Duration,
    duration: Duration,
    body_bytes: usize,
) -> FixedRateResult {
    let interval = Duration::from_secs_f64(conns as f64 / rps);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let offset = interval.mul_f64(i as f64 / conns as f64);
            let s = Schedule {
                first: start + offset,
                interval,
                measure_from,
                end,
            };
            tokio::spawn(connection(addr, host.to_string(), s, body_bytes))
        })
        .collect();
    let mut out = FixedRateResult::default();
    for t in tasks {
        match t.await {
            Ok((lat, errors)) => {
                out.latencies.extend(lat);
                out.errors += errors;
            }
            Err(_) => out.errors += 1,
        }
    }
    out.latencies.sort();
    out.achieved_rps = out.latencies.len() as f64 / duration.as_secs_f64();
    out
}

/// The command line of one h2load run over HTTP/2 prior knowledge (h2c).
pub fn h2load_args(addr: SocketAddr, host: &str, requests: u64) -> Vec<String> {
    vec![
        "-n".into(),
        requests.to_string(),
        "-c16".into(),
        "-m10".into(),
        "-t1".into(),
        "-H".into(),
        format!(":authority: {host}"),
        format!("http://{addr}/"),
    ]
}

/// What h2load reported: requests per second and succeeded count, or its failure text.
#[derive(Debug, Clone, Default)]
pub struct H2Result {
    pub rps: f64,
    pub succeeded: u64,
    pub raw: String,
}

/// Runs h2load (h2c prior knowledge).
pub fn h2load(addr: SocketAddr, host: &str, requests: u64) -> H2Result {
    let out = Command::new("timeout")
        .arg("60")
        .arg("h2load")
        .args(h2load_args(addr, host, requests))
        .output()
        .expect("run h2load (apt-get install -y nghttp2-client)");
    let raw = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "finished in 1.23s, 8123.45 req/s, 9.87MB/s"
    let rps = raw
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse().ok())
        .unwrap_or(0.0);
    // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, ..."
    let succeeded = raw
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with("succeeded")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    H2Result {
        rps,
        succeeded,
        raw,
    }
}

/// One GET / with `Host: host`: (status, body length).
pub async fn get_once(addr: SocketAddr, host: &str) -> Result<(u16, usize), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/")
        .header(HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.len()))
}
