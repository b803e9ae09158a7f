//! Envoy-style JSON access logs: one object per request and line, with Envoy's field names.
//!
//! Entries are recorded when the response body ends (with the request metrics) and handed to a
//! writer task over a bounded channel, so the request path never waits on the disk. When the
//! channel is full the entry is dropped and `proxy_access_log_dropped_total` counts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;
use http::header::USER_AGENT;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::headers::X_REQUEST_ID;
use super::telemetry::Reporter;

/// Entries waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `-`: standard output.
    Stdout,
    /// A file, appended to (created with its directory when missing).
    File(PathBuf),
}

impl AccessLogTarget {
    /// `-` is stdout; anything else a file path.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            AccessLogTarget::Stdout
        } else {
            AccessLogTarget::File(PathBuf::from(s))
        }
    }
}

/// One request as Envoy's JSON access log names its parts.
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
    pub x_request_id: Option<String>,
    pub authority: Option<String>,
    pub user_agent: Option<String>,
    pub downstream_remote_address: Option<String>,
    pub downstream_peer_principal: Option<String>,
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

    /// One JSON line (with its newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
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

/// The request path's handle on the access log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<AccessLogEntry>,
    dropped: Counter,
}

impl AccessLog {
    /// Queues `entry` for the writer; drops and counts it when the queue is full.
    pub fn log(&self, entry: AccessLogEntry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }

    /// Opens `target` and returns the handle plus the writer task to spawn; the writer ends
    /// (after flushing) when every handle is dropped.
    pub async fn open(
        target: &AccessLogTarget,
        dropped: Counter,
        queue: usize,
    ) -> std::io::Result<(AccessLog, impl Future<Output = ()> + Send + 'static)> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match target {
            AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
            AccessLogTarget::File(path) => Box::new(open_file(path).await?),
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        Ok((AccessLog { tx, dropped }, write_lines(rx, out)))
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

/// Writes every queued entry, flushing whenever the queue runs empty.
async fn write_lines(
    mut rx: mpsc::Receiver<AccessLogEntry>,
    out: Box<dyn AsyncWrite + Send + Unpin>,
) {
    let mut out = BufWriter::new(out);
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some(entry) = next {
            if result.is_ok() {
                result = out.write_all(&entry.to_line()).await;
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

    #[test]
    fn entry_has_envoys_field_names_and_nulls() {
        let req = Request::get("http://reviews:9080/reviews/1?x=1")
            .header("x-request-id", "abc")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap();
        let mut e = AccessLogEntry::start(
            &req,
            Some("127.0.0.1:5555".parse().unwrap()),
            Reporter::Source,
            3,
        );
        e.response_code = 200;
        e.upstream_host = Some("127.0.0.1:9081".into());
        let line = e.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "authority",
                "bytes_received",
                "bytes_sent",
                "downstream_peer_principal",
                "downstream_remote_address",
                "duration",
                "method",
                "path",
                "protocol",
                "reporter",
                "response_code",
                "response_flags",
                "route_name",
                "start_time",
                "upstream_cluster",
                "upstream_host",
                "upstream_peer_principal",
                "user_agent",
                "x_request_id",
            ]
        );
        assert_eq!(v["path"], "/reviews/1?x=1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["authority"], "reviews:9080");
        assert_eq!(v["x_request_id"], "abc");
        assert_eq!(v["user_agent"], "curl/8");
        assert_eq!(v["downstream_remote_address"], "127.0.0.1:5555");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["bytes_received"], 3);
        assert_eq!(v["upstream_host"], "127.0.0.1:9081");
        assert!(v["upstream_cluster"].is_null());
        assert!(v["downstream_peer_principal"].is_null());
        assert_eq!(v["reporter"], "source");
        assert_eq!(v["start_time"].as_str().unwrap().len(), 24);
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
        let req = Request::get("/a").body(()).unwrap();
        let entry = AccessLogEntry::start(&req, None, Reporter::Destination, 0);
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
            (v["path"].as_str(), v["reporter"].as_str()),
            (Some("/a"), Some("destination"))
        );
    }

    #[test]
    fn dash_is_stdout() {
        assert_eq!(AccessLogTarget::parse("-"), AccessLogTarget::Stdout);
        assert_eq!(
            AccessLogTarget::parse("/tmp/a.log"),
            AccessLogTarget::File("/tmp/a.log".into())
        );
    }
}
