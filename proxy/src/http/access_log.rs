//! Envoy-style access logs: one line per request, in the format of the listener's access
//! logger (Istio's JSON keys or a TEXT format string, see [`super::log_format`]).
//!
//! Entries are recorded when the response body ends (with the request metrics), rendered, and
//! handed to the target's writer task over a bounded channel, so the request path never waits
//! on the disk. When the channel is full the line is dropped and
//! `proxy_access_log_dropped_total` counts it. Which target and format an entry gets follows
//! LDS ([`AccessLogFollower`]), or is fixed by `--access-log`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;
use http::header::USER_AGENT;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch};

use super::headers::X_REQUEST_ID;
use super::log_format::LogFormat;
use super::telemetry::Reporter;
use crate::authz::INBOUND_LISTENER;
use crate::run::OUTBOUND_LISTENER;
use crate::xds::Config;
use crate::xds::access_log::ListenerLogs;

/// Entries waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessLogTarget {
    /// `-` or `/dev/stdout`: standard output.
    Stdout,
    /// A file, appended to (created with its directory when missing).
    File(PathBuf),
}

impl AccessLogTarget {
    /// `-` and `/dev/stdout` are stdout; anything else a file path.
    pub fn parse(s: &str) -> Self {
        if s == "-" || s == "/dev/stdout" {
            AccessLogTarget::Stdout
        } else {
            AccessLogTarget::File(PathBuf::from(s))
        }
    }
}

/// One request: what the access log formats render (serialized with Istio's JSON keys).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// RFC 3339, UTC, milliseconds.
    pub start_time: String,
    pub method: String,
    /// The original path with its query (before any rewrite).
    pub path: String,
    pub protocol: &'static str,
    pub response_code: u16,
    pub response_flags: &'static str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Milliseconds from arrival to the last response byte.
    pub duration: u64,
    pub upstream_host: Option<String>,
    pub upstream_cluster: Option<String>,
    #[serde(rename = "request_id")]
    pub x_request_id: Option<String>,
    pub authority: Option<String>,
    pub user_agent: Option<String>,
    pub downstream_remote_address: Option<String>,
    /// The downstream peer's SPIFFE id (`%DOWNSTREAM_PEER_URI_SAN%`).
    #[serde(rename = "downstream_peer_uri_san")]
    pub downstream_peer_principal: Option<String>,
    /// The upstream peer's SPIFFE id (`%UPSTREAM_PEER_URI_SAN%`).
    #[serde(rename = "upstream_peer_uri_san")]
    pub upstream_peer_principal: Option<String>,
    pub route_name: Option<String>,
    pub reporter: &'static str,
}

impl AccessLogEntry {
    /// What is known when `req` arrives (from `remote`); the outcome fields start empty.
    pub fn start<B>(
        req: &Request<B>,
        remote: Option<SocketAddr>,
        reporter: Reporter,
        bytes_received: u64,
    ) -> Self {
        let header = |name: &http::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        AccessLogEntry {
            start_time: rfc3339_millis(SystemTime::now()),
            method: req.method().as_str().to_string(),
            path: req.uri().path_and_query().map_or_else(
                || req.uri().path().to_string(),
                |pq| pq.as_str().to_string(),
            ),
            protocol: protocol(req.version()),
            response_code: 0,
            response_flags: super::telemetry::flags::NONE,
            bytes_received,
            bytes_sent: 0,
            duration: 0,
            upstream_host: None,
            upstream_cluster: None,
            x_request_id: header(&X_REQUEST_ID),
            authority: super::headers::authority(req),
            user_agent: header(&USER_AGENT),
            downstream_remote_address: remote.map(|a| a.to_string()),
            downstream_peer_principal: None,
            upstream_peer_principal: None,
            route_name: None,
            reporter: reporter.as_str(),
        }
    }

    /// A TCP connection (no request: method, path, request id and authority empty; response
    /// code 0, as Envoy logs a `tcp_proxy` connection), started at `start`.
    pub fn tcp(start: SystemTime, remote: SocketAddr, reporter: Reporter) -> Self {
        AccessLogEntry {
            start_time: rfc3339_millis(start),
            method: String::new(),
            path: String::new(),
            protocol: "",
            response_code: 0,
            response_flags: super::telemetry::flags::NONE,
            bytes_received: 0,
            bytes_sent: 0,
            duration: 0,
            upstream_host: None,
            upstream_cluster: None,
            x_request_id: None,
            authority: None,
            user_agent: None,
            downstream_remote_address: Some(remote.to_string()),
            downstream_peer_principal: None,
            upstream_peer_principal: None,
            route_name: None,
            reporter: reporter.as_str(),
        }
    }

    /// One line in Istio's default JSON format (with its newline).
    pub fn to_line(&self) -> Vec<u8> {
        LogFormat::default_json().render(self)
    }
}

/// `None` for an empty string (unknown principal).
pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// Where log lines of one target go: its writer task's queue.
#[derive(Debug, Clone)]
struct Sink {
    tx: mpsc::Sender<Vec<u8>>,
}

/// A sink and the format lines are rendered in.
#[derive(Debug, Clone)]
struct ActiveLog {
    sink: Sink,
    format: Arc<LogFormat>,
}

/// Which log each entry goes to.
#[derive(Debug, Default)]
struct Routing {
    /// `--access-log`: every entry, whatever the listeners say.
    fixed: Option<ActiveLog>,
    /// By listener name (`virtualOutbound`, `virtualInbound`, `0.0.0.0_<port>`), from LDS.
    by_listener: HashMap<String, ActiveLog>,
    /// A router's gateway listeners: the first (by name) with an HTTP access logger.
    gateway: Option<ActiveLog>,
    /// `tcp_proxy` listeners with an access logger, by listener name.
    tcp: HashMap<String, ActiveLog>,
}

impl Routing {
    fn pick(&self, e: &AccessLogEntry, router: bool) -> Option<&ActiveLog> {
        if let Some(f) = &self.fixed {
            return Some(f);
        }
        if e.reporter == Reporter::Destination.as_str() {
            self.by_listener.get(INBOUND_LISTENER)
        } else if router {
            self.gateway.as_ref()
        } else {
            self.by_listener.get(OUTBOUND_LISTENER)
        }
    }
}

#[derive(Debug)]
struct Inner {
    routing: RwLock<Arc<Routing>>,
    dropped: Counter,
    router: bool,
}

/// The request path's handle on the access log. Cheap to clone. Which file and format an
/// entry goes to follows the listeners' `access_log` config ([`AccessLogFollower`]), unless a
/// fixed target was given ([`AccessLog::open`], the `--access-log` override).
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl AccessLog {
    /// A log that writes nothing until an [`AccessLogFollower`] configures it; `router` says
    /// whether non-inbound entries come from gateway listeners (else `virtualOutbound`).
    pub fn new(router: bool, dropped: Counter) -> AccessLog {
        AccessLog {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(Routing::default())),
                dropped,
                router,
            }),
        }
    }

    /// Renders `entry` in its listener's format and queues it for the writer; drops and
    /// counts it when the queue is full. Nothing happens when its listener has no logger.
    pub fn log(&self, entry: AccessLogEntry) {
        let routing = self.inner.routing.read().clone();
        if let Some(active) = routing.pick(&entry, self.inner.router) {
            self.send(active, &entry);
        }
    }

    /// Whether an entry reported by `reporter` would be written now, so the request path
    /// builds one only then.
    pub fn logs(&self, reporter: Reporter) -> bool {
        let routing = self.inner.routing.read();
        routing.fixed.is_some()
            || match reporter {
                Reporter::Destination => routing.by_listener.contains_key(INBOUND_LISTENER),
                Reporter::Source if self.inner.router => routing.gateway.is_some(),
                Reporter::Source => routing.by_listener.contains_key(OUTBOUND_LISTENER),
            }
    }

    /// Logs a closed TCP connection of the `tcp_proxy` listener `listener` (see
    /// [`AccessLogEntry::tcp`]), when that listener has an access logger.
    pub fn log_tcp(&self, listener: &str, entry: AccessLogEntry) {
        let routing = self.inner.routing.read().clone();
        let active = match &routing.fixed {
            Some(f) => Some(f),
            None => routing.tcp.get(listener),
        };
        if let Some(active) = active {
            self.send(active, &entry);
        }
    }

    fn send(&self, active: &ActiveLog, entry: &AccessLogEntry) {
        if active
            .sink
            .tx
            .try_send(active.format.render(entry))
            .is_err()
        {
            self.inner.dropped.inc();
        }
    }

    /// Opens `target` as a fixed log in Istio's default JSON format (every entry goes there)
    /// and returns the handle plus the writer task to spawn; the writer ends (after flushing)
    /// when every handle is dropped.
    pub async fn open(
        target: &AccessLogTarget,
        dropped: Counter,
        queue: usize,
    ) -> std::io::Result<(AccessLog, impl Future<Output = ()> + Send + 'static)> {
        let (sink, writer) = open_sink(target, queue).await?;
        let log = AccessLog::new(false, dropped);
        *log.inner.routing.write() = Arc::new(Routing {
            fixed: Some(ActiveLog {
                sink,
                format: Arc::new(LogFormat::default_json()),
            }),
            ..Routing::default()
        });
        Ok((log, writer))
    }
}

async fn open_sink(
    target: &AccessLogTarget,
    queue: usize,
) -> std::io::Result<(Sink, impl Future<Output = ()> + Send + 'static)> {
    let out: Box<dyn AsyncWrite + Send + Unpin> = match target {
        AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
        AccessLogTarget::File(path) => Box::new(open_file(path).await?),
    };
    let (tx, rx) = mpsc::channel(queue.max(1));
    Ok((Sink { tx }, write_lines(rx, out)))
}

/// Keeps an [`AccessLog`] following the access loggers of the applied listeners: each path is
/// opened once and shared by every listener naming it; a path no listener names any more is
/// closed (its writer flushes and ends).
#[derive(Debug)]
pub struct AccessLogFollower {
    log: AccessLog,
    sinks: HashMap<AccessLogTarget, Sink>,
    queue: usize,
}

impl AccessLogFollower {
    pub fn new(log: AccessLog, queue: usize) -> AccessLogFollower {
        AccessLogFollower {
            log,
            sinks: HashMap::new(),
            queue,
        }
    }

    async fn sink(&mut self, path: &str) -> Option<Sink> {
        let target = AccessLogTarget::parse(path);
        if let Some(s) = self.sinks.get(&target) {
            return Some(s.clone());
        }
        match open_sink(&target, self.queue).await {
            Ok((sink, writer)) => {
                tokio::spawn(writer);
                tracing::info!(path, "access log opened");
                self.sinks.insert(target, sink.clone());
                Some(sink)
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot open the access log; its listeners do not log");
                None
            }
        }
    }

    /// Switches the log to the loggers of `listeners` (listener name → its loggers).
    pub async fn apply(&mut self, listeners: &BTreeMap<String, Arc<ListenerLogs>>) {
        let mut routing = Routing::default();
        let mut used = HashSet::new();
        for (name, logs) in listeners {
            if let Some(spec) = logs.tcp.as_ref()
                && let Some(sink) = self.sink(&spec.path).await
            {
                used.insert(AccessLogTarget::parse(&spec.path));
                let active = ActiveLog {
                    sink,
                    format: Arc::new(spec.format.clone()),
                };
                routing.tcp.insert(name.clone(), active);
            }
            let Some(spec) = logs.http.as_ref() else {
                continue;
            };
            let Some(sink) = self.sink(&spec.path).await else {
                continue;
            };
            used.insert(AccessLogTarget::parse(&spec.path));
            let active = ActiveLog {
                sink,
                format: Arc::new(spec.format.clone()),
            };
            if name != INBOUND_LISTENER && name != OUTBOUND_LISTENER && routing.gateway.is_none() {
                routing.gateway = Some(active.clone());
            }
            routing.by_listener.insert(name.clone(), active);
        }
        self.sinks.retain(|t, _| used.contains(t));
        *self.log.inner.routing.write() = Arc::new(routing);
    }

    /// Applies every published config until `shutdown` resolves.
    pub async fn run(
        mut self,
        mut config: watch::Receiver<Arc<Config>>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut last = None;
        loop {
            let current = config.borrow_and_update().access_logs.clone();
            if last.as_ref() != Some(&current) {
                self.apply(&current).await;
                last = Some(current);
            }
            tokio::select! {
                () = &mut shutdown => return,
                r = config.changed() => if r.is_err() { return },
            }
        }
    }
}

async fn open_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Writes every queued line, flushing whenever the queue runs empty.
async fn write_lines(mut rx: mpsc::Receiver<Vec<u8>>, out: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut out = BufWriter::new(out);
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some(line) = next {
            if result.is_ok() {
                result = out.write_all(&line).await;
            }
            next = rx.try_recv().ok();
        }
        if result.is_ok() {
            result = out.flush().await;
        }
        match result {
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot write the access log");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn start_time_is_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_007);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.007Z");
    }

    fn entry(path: &str, reporter: Reporter) -> AccessLogEntry {
        let req = Request::get(path)
            .header("x-request-id", "abc")
            .body(())
            .unwrap();
        AccessLogEntry::start(&req, None, reporter, 0)
    }

    #[test]
    fn entry_serializes_with_istios_keys() {
        let v: serde_json::Value = serde_json::to_value(entry("/a", Reporter::Source)).unwrap();
        assert_eq!(v["request_id"], "abc");
        assert!(v.get("x_request_id").is_none());
        assert!(v.get("downstream_peer_uri_san").is_some());
        let line: serde_json::Value =
            serde_json::from_slice(&entry("/a", Reporter::Source).to_line()).unwrap();
        assert_eq!(line["request_id"], "abc");
        assert_eq!(line["path"], "/a");
    }

    #[tokio::test]
    async fn writes_lines_and_counts_drops_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/access.log");
        let dropped = Counter::default();
        let (log, writer) =
            AccessLog::open(&AccessLogTarget::File(path.clone()), dropped.clone(), 1)
                .await
                .unwrap();
        let entry = entry("/a", Reporter::Destination);
        // The writer is not running yet: the second entry finds the queue full.
        log.log(entry.clone());
        log.log(entry);
        assert_eq!(dropped.get(), 1);
        drop(log);
        writer.await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            (v["path"].as_str(), v["request_id"].as_str()),
            (Some("/a"), Some("abc"))
        );
    }

    fn spec(path: &Path, format: LogFormat) -> Arc<ListenerLogs> {
        Arc::new(ListenerLogs {
            http: Some(crate::xds::access_log::AccessLogSpec {
                path: path.display().to_string(),
                format,
            }),
            tcp: None,
        })
    }

    async fn lines_eventually(path: &Path, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {lines:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn follows_listeners_per_listener_and_switches() {
        let dir = tempfile::tempdir().unwrap();
        let (json, text) = (dir.path().join("json.log"), dir.path().join("text.log"));
        let log = AccessLog::new(false, Counter::default());
        let mut follower = AccessLogFollower::new(log.clone(), 16);
        // Nothing configured: nothing written, nothing opened.
        log.log(entry("/none", Reporter::Source));
        follower
            .apply(&BTreeMap::from([
                (
                    OUTBOUND_LISTENER.to_string(),
                    spec(&json, LogFormat::default_json()),
                ),
                (
                    INBOUND_LISTENER.to_string(),
                    spec(&text, LogFormat::text("%REQ(:PATH)% %REQ(X-REQUEST-ID)%\n")),
                ),
            ]))
            .await;
        log.log(entry("/out", Reporter::Source));
        log.log(entry("/in", Reporter::Destination));
        let out = lines_eventually(&json, 1).await;
        let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(v["path"], "/out");
        assert_eq!(lines_eventually(&text, 1).await, ["/in abc"]);

        // Both listeners now share the JSON file (opened once); inbound stops writing text.
        let shared = spec(&json, LogFormat::default_json());
        follower
            .apply(&BTreeMap::from([
                (OUTBOUND_LISTENER.to_string(), shared.clone()),
                (INBOUND_LISTENER.to_string(), shared),
            ]))
            .await;
        assert_eq!(follower.sinks.len(), 1);
        log.log(entry("/in2", Reporter::Destination));
        let out = lines_eventually(&json, 2).await;
        assert!(out[1].contains("\"/in2\""), "{out:?}");

        // Off: no listener logs.
        follower.apply(&BTreeMap::new()).await;
        assert!(follower.sinks.is_empty());
        log.log(entry("/off", Reporter::Source));
        log.log(entry("/off", Reporter::Destination));
        tokio::task::yield_now().await;
        assert_eq!(std::fs::read_to_string(&json).unwrap().lines().count(), 2);
        assert_eq!(std::fs::read_to_string(&text).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn router_logs_gateway_entries_to_its_gateway_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.log");
        let log = AccessLog::new(true, Counter::default());
        let mut follower = AccessLogFollower::new(log.clone(), 16);
        follower
            .apply(&BTreeMap::from([(
                "0.0.0.0_80".to_string(),
                spec(&path, LogFormat::default_json()),
            )]))
            .await;
        log.log(entry("/productpage", Reporter::Source));
        let lines = lines_eventually(&path, 1).await;
        assert!(lines[0].contains("/productpage"), "{lines:?}");
    }

    #[test]
    fn dash_is_stdout() {
        assert_eq!(AccessLogTarget::parse("-"), AccessLogTarget::Stdout);
        assert_eq!(
            AccessLogTarget::parse("/dev/stdout"),
            AccessLogTarget::Stdout
        );
        assert_eq!(
            AccessLogTarget::parse("/tmp/a.log"),
            AccessLogTarget::File("/tmp/a.log".into())
        );
    }
}
