//! `stdio`: `logentry` instances written as lines to stdout, stderr or a (rotated) file, as
//! Istio 1.4's stdio adapter does.
//!
//! Handler params (camelCase or snake_case): `logStream` (`STDOUT` default, `STDERR`, `FILE`,
//! `ROTATED_FILE`, or 0–3), `outputPath` (needed by the file streams), `outputLevel` (`INFO`
//! default, `WARNING`, `ERROR`, or 0–2), `outputAsJson` (default `false`: a tab-separated console
//! line), `severityLevels` (severity text → level, case-insensitive; Istio's defaults kept),
//! `maxMegabytesBeforeRotation` (100), `maxDaysBeforeRotation` (30), `maxRotatedFiles` (1000).
//!
//! A line is `{"level","time","instance", <variables…>}`. An instance whose variables are Istio's
//! standard `accesslog` set is written in the proxy's access-log shape instead (see
//! [`crate::adapter::accesslog`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_proto::attributes::Value;
use parking_lot::Mutex;
use serde_json::{Map, Value as Json};

use super::accesslog;
use super::int_param;
use crate::config::Instance;
use crate::expr::{Attributes, evaluate_value};

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    File,
    RotatedFile,
}

/// A log level, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    /// How zap (Istio's logger) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warn",
            Level::Error => "error",
        }
    }

    fn parse(v: &Json, what: &str) -> Result<Level, String> {
        match v {
            Json::Number(n) => match n.as_i64() {
                Some(0) => Ok(Level::Info),
                Some(1) => Ok(Level::Warning),
                Some(2) => Ok(Level::Error),
                _ => Err(format!("{what} {n} is not a level (0-2)")),
            },
            Json::String(s) => match s.to_ascii_uppercase().as_str() {
                "INFO" | "0" => Ok(Level::Info),
                "WARNING" | "WARN" | "1" => Ok(Level::Warning),
                "ERROR" | "2" => Ok(Level::Error),
                _ => Err(format!(
                    "{what} {s:?} is not a level (INFO, WARNING, ERROR)"
                )),
            },
            other => Err(format!("{what} {other} is not a level")),
        }
    }
}

/// A `stdio` handler's params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub log_stream: Stream,
    pub output_path: Option<PathBuf>,
    pub output_level: Level,
    pub output_as_json: bool,
    /// Lower-cased severity → level.
    pub severity_levels: BTreeMap<String, Level>,
    pub max_megabytes_before_rotation: i64,
    pub max_days_before_rotation: i64,
    pub max_rotated_files: i64,
}

/// Istio's default `severity_levels`.
fn default_severities() -> BTreeMap<String, Level> {
    [
        ("informational", Level::Info),
        ("info", Level::Info),
        ("default", Level::Info),
        ("warning", Level::Warning),
        ("warn", Level::Warning),
        ("error", Level::Error),
        ("err", Level::Error),
        ("fatal", Level::Error),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn get<'a>(p: &'a Json, names: &[&str]) -> Option<&'a Json> {
    names
        .iter()
        .find_map(|n| p.get(*n))
        .filter(|v| !v.is_null())
}

impl Params {
    pub fn parse(p: &Json) -> Result<Params, String> {
        let log_stream = match get(p, &["logStream", "log_stream"]) {
            None => Stream::Stdout,
            Some(Json::Number(n)) => match n.as_i64() {
                Some(0) => Stream::Stdout,
                Some(1) => Stream::Stderr,
                Some(2) => Stream::File,
                Some(3) => Stream::RotatedFile,
                _ => return Err(format!("params.logStream {n} is not a stream (0-3)")),
            },
            Some(Json::String(s)) => match s.to_ascii_uppercase().as_str() {
                "STDOUT" => Stream::Stdout,
                "STDERR" => Stream::Stderr,
                "FILE" => Stream::File,
                "ROTATED_FILE" => Stream::RotatedFile,
                _ => return Err(format!("params.logStream {s:?} is not a stream")),
            },
            Some(other) => return Err(format!("params.logStream {other} is not a stream")),
        };
        let output_path = match get(p, &["outputPath", "output_path"]) {
            None => None,
            Some(Json::String(s)) if s.is_empty() => None,
            Some(Json::String(s)) => Some(PathBuf::from(s)),
            Some(other) => return Err(format!("params.outputPath {other} is not a path")),
        };
        if matches!(log_stream, Stream::File | Stream::RotatedFile) && output_path.is_none() {
            return Err(
                "params.outputPath is required for the FILE and ROTATED_FILE streams".into(),
            );
        }
        let output_level = match get(p, &["outputLevel", "output_level"]) {
            None => Level::Info,
            Some(v) => Level::parse(v, "params.outputLevel")?,
        };
        let output_as_json = match get(p, &["outputAsJson", "output_as_json"]) {
            None => false,
            Some(Json::Bool(b)) => *b,
            Some(other) => return Err(format!("params.outputAsJson {other} is not a boolean")),
        };
        let mut severity_levels = default_severities();
        if let Some(map) = get(p, &["severityLevels", "severity_levels"]) {
            let map = map
                .as_object()
                .ok_or_else(|| "params.severityLevels is not a map".to_string())?;
            for (k, v) in map {
                let level = Level::parse(v, &format!("params.severityLevels.{k}"))?;
                severity_levels.insert(k.to_ascii_lowercase(), level);
            }
        }
        Ok(Params {
            log_stream,
            output_path,
            output_level,
            output_as_json,
            severity_levels,
            max_megabytes_before_rotation: int_param(
                p,
                &[
                    "maxMegabytesBeforeRotation",
                    "max_megabytes_before_rotation",
                ],
                100,
            )?,
            max_days_before_rotation: int_param(
                p,
                &["maxDaysBeforeRotation", "max_days_before_rotation"],
                30,
            )?,
            max_rotated_files: int_param(p, &["maxRotatedFiles", "max_rotated_files"], 1000)?,
        })
    }

    /// The level of a severity text (unknown severities are INFO, as in Istio).
    pub fn level_of(&self, severity: &str) -> Level {
        self.severity_levels
            .get(&severity.to_ascii_lowercase())
            .copied()
            .unwrap_or(Level::Info)
    }
}

/// A `logentry` instance evaluated for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `name.instance.namespace`.
    pub instance: String,
    pub severity: String,
    pub time: SystemTime,
    /// Whether `time` came from the instance's `timestamp` (else it is when Mixer got it).
    pub time_given: bool,
    /// Whether the instance's variables are Istio's standard `accesslog` set.
    pub accesslog: bool,
    /// Variables that evaluated, by name.
    pub variables: BTreeMap<String, Value>,
}

/// Evaluates `inst` (template `logentry`) against `bag`. Variables that cannot be evaluated are
/// left out (logged at debug); a missing `timestamp` is now.
pub fn evaluate_entry<B: Attributes + ?Sized>(inst: &Instance, bag: &B) -> LogEntry {
    let severity = inst
        .field("severity")
        .and_then(|e| evaluate_value(e, bag).result.ok())
        .map_or_else(|| "info".to_string(), |v| scalar_text(&v));
    let (time, time_given) = match inst
        .field("timestamp")
        .map(|e| evaluate_value(e, bag).result)
    {
        Some(Ok(Value::Timestamp(t))) => (t, true),
        _ => (SystemTime::now(), false),
    };
    let names = inst.map("variables");
    let accesslog = accesslog::MARKERS
        .iter()
        .all(|m| names.iter().any(|(n, _)| n == m));
    let mut variables = BTreeMap::new();
    for (name, e) in inst.map("variables") {
        match evaluate_value(e, bag).result {
            Ok(v) => {
                variables.insert(name.clone(), v);
            }
            Err(err) => {
                tracing::debug!(instance = %inst.key, variable = %name, error = %err, "logentry variable not evaluated");
            }
        }
    }
    LogEntry {
        instance: inst.full_name(),
        severity,
        time,
        time_given,
        accesslog,
        variables,
    }
}

/// The line for `entry` (with its newline), or `None` when its level is below `outputLevel`.
pub fn render(params: &Params, entry: &LogEntry) -> Option<Vec<u8>> {
    let level = params.level_of(&entry.severity);
    if level < params.output_level {
        return None;
    }
    let mut line = if entry.accesslog {
        accesslog::line(entry)
    } else if params.output_as_json {
        let mut obj = Map::new();
        obj.insert("level".into(), Json::String(level.as_str().into()));
        obj.insert("time".into(), Json::String(rfc3339_nanos(entry.time)));
        obj.insert("instance".into(), Json::String(entry.instance.clone()));
        for (k, v) in &entry.variables {
            obj.insert(k.clone(), to_json(v));
        }
        serde_json::to_vec(&Json::Object(obj)).unwrap_or_default()
    } else {
        let vars: Map<String, Json> = entry
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect();
        format!(
            "{}\t{}\t{}\t{}",
            rfc3339_nanos(entry.time),
            level.as_str(),
            entry.instance,
            Json::Object(vars)
        )
        .into_bytes()
    };
    line.push(b'\n');
    Some(line)
}

/// A value as text (strings unquoted).
pub fn scalar_text(v: &Value) -> String {
    match to_json(v) {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

/// A value as zap writes it: durations Go-style (`1.5ms`), timestamps RFC 3339, IP addresses
/// dotted, maps as objects.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::String(s) => Json::String(s.clone()),
        Value::Int64(i) => Json::from(*i),
        Value::Double(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::Bool(b) => Json::Bool(*b),
        Value::Bytes(b) => match ip_text(b) {
            Some(ip) => Json::String(ip),
            None => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        },
        Value::Timestamp(t) => Json::String(rfc3339_nanos(*t)),
        Value::Duration(d) => Json::String(go_duration(*d)),
        Value::StringMap(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect(),
        ),
    }
}

/// 4 or 16 bytes as an IP address.
pub fn ip_text(b: &[u8]) -> Option<String> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        return Some(std::net::Ipv4Addr::from(a).to_string());
    }
    <[u8; 16]>::try_from(b)
        .ok()
        .map(|a| std::net::Ipv6Addr::from(a).to_string())
}

/// A duration as Go's `time.Duration.String()` writes it.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let trim = |x: f64| {
        let s = format!("{x:.9}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    };
    if ns == 0 {
        "0s".into()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", trim(ns as f64 / 1e3))
    } else if ns < 1_000_000_000 {
        format!("{}ms", trim(ns as f64 / 1e6))
    } else {
        let secs = d.as_secs();
        let (h, m) = (secs / 3600, secs / 60 % 60);
        let s = trim((secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (Go's RFC3339Nano: trailing zeros dropped).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = civil(d.as_secs() as i64);
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (the proxy's access-log `start_time`).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}Z", civil(d.as_secs() as i64), d.subsec_millis())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS` (UTC).
fn civil(secs: i64) -> String {
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Where a handler's lines are written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

struct Output {
    writer: Box<dyn Write + Send>,
    /// For rotated files: the file's size and when it was opened.
    size: u64,
    opened: Instant,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("size", &self.size).finish()
    }
}

/// The open outputs of every stdio handler, shared by all policies (a file stays open across
/// config changes). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StdioSink {
    outputs: Arc<Mutex<HashMap<Target, Output>>>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl StdioSink {
    /// Writes `lines` (already rendered, each ending in a newline) for a handler with `params`,
    /// rotating the file first when its size or age limit is reached.
    pub fn write(&self, params: &Params, lines: &[u8]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let target = match (params.log_stream, &params.output_path) {
            (Stream::Stdout, _) => Target::Stdout,
            (Stream::Stderr, _) => Target::Stderr,
            (_, Some(p)) => Target::File(p.clone()),
            (_, None) => Target::Stdout,
        };
        let mut outputs = self.outputs.lock();
        if let (Stream::RotatedFile, Target::File(path)) = (params.log_stream, &target)
            && let Some(out) = outputs.get(&target)
            && rotation_due(params, out, lines.len() as u64)
        {
            outputs.remove(&target);
            rotate(path, params.max_rotated_files)?;
        }
        let out = match outputs.entry(target.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let (writer, size): (Box<dyn Write + Send>, u64) = match &target {
                    Target::Stdout => (Box::new(std::io::stdout()), 0),
                    Target::Stderr => (Box::new(std::io::stderr()), 0),
                    Target::File(p) => {
                        let f = open_append(p)?;
                        let size = f.metadata().map_or(0, |m| m.len());
                        (Box::new(BufWriter::new(f)), size)
                    }
                };
                v.insert(Output {
                    writer,
                    size,
                    opened: Instant::now(),
                })
            }
        };
        out.writer.write_all(lines)?;
        out.size += lines.len() as u64;
        out.writer.flush()
    }
}

fn rotation_due(params: &Params, out: &Output, adding: u64) -> bool {
    let max_bytes = u64::try_from(params.max_megabytes_before_rotation)
        .unwrap_or(0)
        .saturating_mul(1024 * 1024);
    let max_age = u64::try_from(params.max_days_before_rotation)
        .unwrap_or(0)
        .saturating_mul(86_400);
    (max_bytes > 0 && out.size > 0 && out.size + adding > max_bytes)
        || (max_age > 0 && out.opened.elapsed() >= Duration::from_secs(max_age))
}

/// Renames `path` to `path-YYYY-MM-DDTHH-MM-SS.mmm` (as lumberjack, Istio's rotator, does) and
/// removes the oldest rotated files beyond `keep`.
fn rotate(path: &Path, keep: i64) -> std::io::Result<()> {
    let stamp = rfc3339_millis(SystemTime::now())
        .trim_end_matches('Z')
        .replace(':', "-");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("log");
    let mut rotated = path.with_file_name(format!("{name}-{stamp}"));
    let mut n = 0;
    while rotated.exists() {
        n += 1;
        rotated = path.with_file_name(format!("{name}-{stamp}.{n}"));
    }
    std::fs::rename(path, &rotated)?;
    tracing::info!(path = %path.display(), rotated = %rotated.display(), "log file rotated");
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{name}-");
    let mut old: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    old.sort();
    let keep = usize::try_from(keep.max(0)).unwrap_or(usize::MAX);
    if keep > 0 && old.len() > keep {
        for p in &old[..old.len() - keep] {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;
    use mesh_proto::attributes::Bag;
    use serde_json::json;

    fn newlog() -> Instance {
        let e = |s: &str| parse(s).unwrap();
        Instance {
            key: "istio-system/newlog".into(),
            template: "logentry".into(),
            value: None,
            dimensions: vec![],
            legacy: false,
            fields: vec![
                ("severity".into(), e(r#""warning""#)),
                ("timestamp".into(), e("request.time")),
            ],
            maps: vec![(
                "variables".into(),
                vec![
                    (
                        "destination".into(),
                        e(r#"destination.labels["app"] | destination.workload.name | "unknown""#),
                    ),
                    ("latency".into(), e(r#"response.duration | "0ms""#)),
                    ("responseCode".into(), e("response.code | 0")),
                    ("user".into(), e(r#"source.user | "unknown""#)),
                    ("missing".into(), e("no.such.attribute")),
                ],
            )],
        }
    }

    #[test]
    fn params_parse_with_istio_names_and_defaults() {
        let p = Params::parse(&json!({"severity_levels": {"warning": 1}, "outputAsJson": true}))
            .unwrap();
        assert_eq!(p.log_stream, Stream::Stdout);
        assert!(p.output_as_json);
        assert_eq!(p.level_of("WARNING"), Level::Warning);
        assert_eq!(p.level_of("whatever"), Level::Info);
        assert_eq!(p.max_rotated_files, 1000);
        let f = Params::parse(&json!({"logStream": "FILE", "outputPath": "/tmp/x.log"})).unwrap();
        assert_eq!(f.log_stream, Stream::File);
        assert!(Params::parse(&json!({"logStream": "FILE"})).is_err());
        assert!(Params::parse(&json!({"outputLevel": "LOUD"})).is_err());
        assert_eq!(
            Params::parse(&json!({"outputLevel": 2}))
                .unwrap()
                .output_level,
            Level::Error
        );
    }

    #[test]
    fn json_line_has_level_time_instance_and_variables() {
        let bag = Bag::new()
            .with(
                "destination.labels",
                BTreeMap::from([("app".to_string(), "reviews".to_string())]),
            )
            .with("response.duration", Duration::from_micros(1500))
            .with("response.code", 200i64)
            .with(
                "request.time",
                UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            );
        let entry = evaluate_entry(&newlog(), &bag);
        let p = Params::parse(&json!({"outputAsJson": true})).unwrap();
        let line = render(&p, &entry).unwrap();
        let v: Json = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "level": "warn",
                "time": "2023-11-14T22:13:20.123Z",
                "instance": "newlog.instance.istio-system",
                "destination": "reviews",
                "latency": "1.5ms",
                "responseCode": 200,
                "user": "unknown",
            })
        );
        // Below the output level: nothing.
        let quiet = Params::parse(&json!({"outputLevel": "ERROR"})).unwrap();
        assert!(render(&quiet, &entry).is_none());
        // Console form.
        let text = String::from_utf8(render(&Params::parse(&json!({})).unwrap(), &entry).unwrap())
            .unwrap();
        assert!(
            text.starts_with("2023-11-14T22:13:20.123Z\twarn\tnewlog.instance.istio-system\t{"),
            "{text}"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(12)), "12ns");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_millis(61_500)), "1m1.5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn writes_to_a_file_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/mixer.log");
        let p = Params::parse(&json!({
            "logStream": "ROTATED_FILE", "outputPath": path.to_str().unwrap(),
            "maxMegabytesBeforeRotation": 1, "maxRotatedFiles": 2,
        }))
        .unwrap();
        let sink = StdioSink::default();
        let big = vec![b'x'; 700 * 1024];
        for _ in 0..4 {
            let mut line = big.clone();
            line.push(b'\n');
            sink.write(&p, &line).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // 4 writes of 0.7 MiB with a 1 MiB limit: 3 rotations, 2 rotated files kept.
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().any(|n| n == "mixer.log"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            big.len() as u64 + 1
        );
    }
}
