//! Mixer attribute bags and their compressed wire form (`istio.mixer.v1.CompressedAttributes`).
//!
//! A [`Bag`] maps attribute names to typed [`Value`]s. On the wire, names and string values are
//! words: an index `i >= 0` names `dictionary::word(i)`, an index `i < 0` names the per-message
//! word `words[-(i + 1)]`. [`compress`] prefers the global dictionary and falls back to
//! per-message words; [`decompress`] reverses it and rejects any index that names nothing.
//!
//! A `ReportRequest` carries many bags. With `DELTA_ENCODING` each entry only holds what changed
//! since the previous entry (the first entry is complete); `default_words` is the word list of
//! every entry that has no words of its own (Istio 1.4 semantics). See [`compress_report`] and
//! [`decompress_report`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::dictionary;
use crate::istio::mixer::v1::report_request::RepeatedAttributesSemantics;
use crate::istio::mixer::v1::{CompressedAttributes, ReportRequest, StringMap};

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Timestamp(SystemTime),
    Duration(Duration),
    StringMap(BTreeMap<String, String>),
}

impl Value {
    /// The attribute type's name as Istio's attribute manifests spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "STRING",
            Value::Int64(_) => "INT64",
            Value::Double(_) => "DOUBLE",
            Value::Bool(_) => "BOOL",
            Value::Bytes(_) => "BYTES",
            Value::Timestamp(_) => "TIMESTAMP",
            Value::Duration(_) => "DURATION",
            Value::StringMap(_) => "STRING_MAP",
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<SystemTime> for Value {
    fn from(v: SystemTime) -> Self {
        Value::Timestamp(v)
    }
}
impl From<Duration> for Value {
    fn from(v: Duration) -> Self {
        Value::Duration(v)
    }
}
impl From<BTreeMap<String, String>> for Value {
    fn from(v: BTreeMap<String, String>) -> Self {
        Value::StringMap(v)
    }
}

/// An attribute bag: attribute name → value, ordered by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bag {
    values: BTreeMap<String, Value>,
}

impl Bag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing any previous value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.values.insert(name.into(), value.into());
        self
    }

    /// Builder form of [`Bag::set`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set(name, value);
        self
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.values.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Attributes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Copies every attribute of `other` into `self`, overwriting same-named ones.
    pub fn merge(&mut self, other: &Bag) {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    pub fn get_string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_int64(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Value::Int64(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn get_double(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Value::Double(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn get_bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(Value::Bool(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        match self.get(name) {
            Some(Value::Bytes(v)) => Some(v),
            _ => None,
        }
    }

    pub fn get_timestamp(&self, name: &str) -> Option<SystemTime> {
        match self.get(name) {
            Some(Value::Timestamp(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn get_duration(&self, name: &str) -> Option<Duration> {
        match self.get(name) {
            Some(Value::Duration(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn get_string_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        match self.get(name) {
            Some(Value::StringMap(v)) => Some(v),
            _ => None,
        }
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Bag {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Bag {
            values: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl IntoIterator for Bag {
    type Item = (String, Value);
    type IntoIter = std::collections::btree_map::IntoIter<String, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.values.into_iter()
    }
}

/// Why a compressed bag could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// A non-negative index at or beyond the global word count in use.
    #[error("global word index {index} is out of range (global word count {count})")]
    GlobalIndexOutOfRange { index: i32, count: usize },
    /// A negative index naming no per-message word.
    #[error("unknown word index {index}: the message has {count} words")]
    UnknownWord { index: i32, count: usize },
    /// A timestamp that does not fit `SystemTime` or is not normalised.
    #[error("attribute {name}: invalid timestamp")]
    BadTimestamp { name: String },
    /// A negative or invalid duration.
    #[error("attribute {name}: invalid duration")]
    BadDuration { name: String },
    /// A report request asked for an encoding this server does not know.
    #[error("unknown repeated attributes semantics {0}")]
    UnknownSemantics(i32),
    /// An attribute of Istio's vocabulary sent with another type than its declared one.
    #[error("attribute {name} is {found}, the vocabulary declares {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
        found: &'static str,
    },
}

/// Istio 1.4's attribute vocabulary (`mixer/testdata/config/attributes.yaml`: the `istio-proxy`
/// and `kubernetes` manifests), name → `valueType`, sorted by name.
pub const VOCABULARY: &[(&str, &str)] = &[
    ("api.operation", "STRING"),
    ("api.protocol", "STRING"),
    ("api.service", "STRING"),
    ("api.version", "STRING"),
    ("check.cache_hit", "BOOL"),
    ("check.error_code", "INT64"),
    ("check.error_message", "STRING"),
    ("connection.duration", "DURATION"),
    ("connection.event", "STRING"),
    ("connection.id", "STRING"),
    ("connection.mtls", "BOOL"),
    ("connection.received.bytes", "INT64"),
    ("connection.received.bytes_total", "INT64"),
    ("connection.requested_server_name", "STRING"),
    ("connection.sent.bytes", "INT64"),
    ("connection.sent.bytes_total", "INT64"),
    ("context.protocol", "STRING"),
    ("context.proxy_error_code", "STRING"),
    ("context.reporter.kind", "STRING"),
    ("context.reporter.local", "BOOL"),
    ("context.reporter.uid", "STRING"),
    ("context.time", "TIMESTAMP"),
    ("context.timestamp", "TIMESTAMP"),
    ("destination.container.name", "STRING"),
    ("destination.ip", "IP_ADDRESS"),
    ("destination.labels", "STRING_MAP"),
    ("destination.metadata", "STRING_MAP"),
    ("destination.name", "STRING"),
    ("destination.namespace", "STRING"),
    ("destination.owner", "STRING"),
    ("destination.port", "INT64"),
    ("destination.principal", "STRING"),
    ("destination.service.host", "STRING"),
    ("destination.service.name", "STRING"),
    ("destination.service.namespace", "STRING"),
    ("destination.service.uid", "STRING"),
    ("destination.serviceAccount", "STRING"),
    ("destination.uid", "STRING"),
    ("destination.workload.name", "STRING"),
    ("destination.workload.namespace", "STRING"),
    ("destination.workload.uid", "STRING"),
    ("origin.ip", "IP_ADDRESS"),
    ("origin.uid", "STRING"),
    ("origin.user", "STRING"),
    ("quota.cache_hit", "BOOL"),
    ("rbac.permissive.effective_policy_id", "STRING"),
    ("rbac.permissive.response_code", "STRING"),
    ("request.api_key", "STRING"),
    ("request.auth.audiences", "STRING"),
    ("request.auth.claims", "STRING_MAP"),
    ("request.auth.presenter", "STRING"),
    ("request.auth.principal", "STRING"),
    ("request.auth.raw_claims", "STRING"),
    ("request.headers", "STRING_MAP"),
    ("request.host", "STRING"),
    ("request.id", "STRING"),
    ("request.method", "STRING"),
    ("request.path", "STRING"),
    ("request.query_params", "STRING_MAP"),
    ("request.reason", "STRING"),
    ("request.referer", "STRING"),
    ("request.scheme", "STRING"),
    ("request.size", "INT64"),
    ("request.time", "TIMESTAMP"),
    ("request.total_size", "INT64"),
    ("request.url_path", "STRING"),
    ("request.useragent", "STRING"),
    ("response.code", "INT64"),
    ("response.duration", "DURATION"),
    ("response.grpc_message", "STRING"),
    ("response.grpc_status", "STRING"),
    ("response.headers", "STRING_MAP"),
    ("response.size", "INT64"),
    ("response.time", "TIMESTAMP"),
    ("response.total_size", "INT64"),
    ("source.ip", "IP_ADDRESS"),
    ("source.labels", "STRING_MAP"),
    ("source.name", "STRING"),
    ("source.namespace", "STRING"),
    ("source.owner", "STRING"),
    ("source.principal", "STRING"),
    ("source.serviceAccount", "STRING"),
    ("source.services", "STRING"),
    ("source.uid", "STRING"),
    ("source.user", "STRING"),
    ("source.workload.name", "STRING"),
    ("source.workload.namespace", "STRING"),
    ("source.workload.uid", "STRING"),
];

/// The declared `valueType` of `name` in [`VOCABULARY`].
pub fn vocabulary_type(name: &str) -> Option<&'static str> {
    VOCABULARY
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| VOCABULARY[i].1)
}

/// Whether a value of wire type `found` may carry an attribute declared `declared`: the same
/// type, IP addresses as bytes, and DNS names, emails and URIs as strings.
fn type_fits(declared: &str, found: &str) -> bool {
    declared == found
        || (declared == "IP_ADDRESS" && found == "BYTES")
        || (matches!(declared, "DNS_NAME" | "EMAIL_ADDRESS" | "URI") && found == "STRING")
}

/// Checks every attribute of `bag` that is in the vocabulary against its declared type;
/// attributes outside the vocabulary are accepted as sent.
pub fn check_types(bag: &Bag) -> Result<(), AttributeError> {
    for (name, value) in bag.iter() {
        if let Some(expected) = vocabulary_type(name) {
            let found = value.type_name();
            if !type_fits(expected, found) {
                return Err(AttributeError::WrongType {
                    name: name.to_string(),
                    expected,
                    found,
                });
            }
        }
    }
    Ok(())
}

/// Assigns word indexes while compressing: global dictionary first, then message words.
#[derive(Default)]
struct WordTable {
    words: Vec<String>,
    index: HashMap<String, i32>,
}

impl WordTable {
    fn index(&mut self, word: &str) -> i32 {
        if let Some(i) = dictionary::index_of(word) {
            return i;
        }
        if let Some(i) = self.index.get(word) {
            return *i;
        }
        let i = -(self.words.len() as i32) - 1;
        self.words.push(word.to_string());
        self.index.insert(word.to_string(), i);
        i
    }
}

/// Compresses `bag`, naming words by global dictionary index where possible.
pub fn compress(bag: &Bag) -> CompressedAttributes {
    let mut table = WordTable::default();
    let mut out = compress_with(bag, &mut table);
    out.words = table.words;
    out
}

fn compress_with(bag: &Bag, table: &mut WordTable) -> CompressedAttributes {
    compress_changed(bag, None, table)
}

/// Compresses the attributes of `bag` whose value differs from `previous`'s (all without one).
fn compress_changed(
    bag: &Bag,
    previous: Option<&Bag>,
    table: &mut WordTable,
) -> CompressedAttributes {
    let mut out = CompressedAttributes::default();
    for (name, value) in bag.iter() {
        if previous.is_some_and(|p| p.get(name) == Some(value)) {
            continue;
        }
        let n = table.index(name);
        match value {
            Value::String(s) => {
                let v = table.index(s);
                out.strings.insert(n, v);
            }
            Value::Int64(v) => {
                out.int64s.insert(n, *v);
            }
            Value::Double(v) => {
                out.doubles.insert(n, *v);
            }
            Value::Bool(v) => {
                out.bools.insert(n, *v);
            }
            Value::Bytes(v) => {
                out.bytes.insert(n, v.clone());
            }
            Value::Timestamp(t) => {
                out.timestamps.insert(n, prost_types::Timestamp::from(*t));
            }
            Value::Duration(d) => {
                let d = prost_types::Duration::try_from(*d).unwrap_or(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 999_999_999,
                });
                out.durations.insert(n, d);
            }
            Value::StringMap(m) => {
                let entries = m
                    .iter()
                    .map(|(k, v)| (table.index(k), table.index(v)))
                    .collect();
                out.string_maps.insert(n, StringMap { entries });
            }
        }
    }
    out
}

/// Resolves word indexes against the global dictionary (first `global_count` words) and the
/// message's own words.
struct Words<'a> {
    message: &'a [String],
    global_count: usize,
}

impl Words<'_> {
    fn lookup(&self, index: i32) -> Result<&str, AttributeError> {
        if index >= 0 {
            let i = index as usize;
            if i >= self.global_count {
                return Err(AttributeError::GlobalIndexOutOfRange {
                    index,
                    count: self.global_count,
                });
            }
            dictionary::word(i).ok_or(AttributeError::GlobalIndexOutOfRange {
                index,
                count: self.global_count,
            })
        } else {
            let i = (-(i64::from(index)) - 1) as usize;
            self.message
                .get(i)
                .map(String::as_str)
                .ok_or(AttributeError::UnknownWord {
                    index,
                    count: self.message.len(),
                })
        }
    }
}

/// Decompresses `attrs` against the whole global dictionary.
pub fn decompress(attrs: &CompressedAttributes) -> Result<Bag, AttributeError> {
    decompress_with_word_count(attrs, dictionary::words().len())
}

/// Decompresses `attrs` when the sender's dictionary has `global_word_count` words: indexes at
/// or beyond it are errors. A count larger than our dictionary is clamped to it (a server should
/// reject such a request before decompressing; see Mixer's Check).
pub fn decompress_with_word_count(
    attrs: &CompressedAttributes,
    global_word_count: usize,
) -> Result<Bag, AttributeError> {
    let mut bag = Bag::new();
    update_bag(&mut bag, attrs, &attrs.words, global_word_count)?;
    Ok(bag)
}

/// Applies the attributes of `attrs` onto `bag` (overwriting), naming message words from
/// `message_words`.
fn update_bag(
    bag: &mut Bag,
    attrs: &CompressedAttributes,
    message_words: &[String],
    global_word_count: usize,
) -> Result<(), AttributeError> {
    let words = Words {
        message: message_words,
        global_count: global_word_count.min(dictionary::words().len()),
    };
    // Sorted iteration keeps error reporting deterministic.
    for (k, v) in sorted(&attrs.strings) {
        let name = words.lookup(*k)?;
        let value = words.lookup(*v)?;
        bag.set(name, value);
    }
    for (k, v) in sorted(&attrs.int64s) {
        bag.set(words.lookup(*k)?, *v);
    }
    for (k, v) in sorted(&attrs.doubles) {
        bag.set(words.lookup(*k)?, *v);
    }
    for (k, v) in sorted(&attrs.bools) {
        bag.set(words.lookup(*k)?, *v);
    }
    for (k, v) in sorted(&attrs.bytes) {
        bag.set(words.lookup(*k)?, v.clone());
    }
    for (k, v) in sorted(&attrs.timestamps) {
        let name = words.lookup(*k)?;
        let t = SystemTime::try_from(*v).map_err(|_| AttributeError::BadTimestamp {
            name: name.to_string(),
        })?;
        bag.set(name, t);
    }
    for (k, v) in sorted(&attrs.durations) {
        let name = words.lookup(*k)?;
        let d = Duration::try_from(*v).map_err(|_| AttributeError::BadDuration {
            name: name.to_string(),
        })?;
        bag.set(name, d);
    }
    for (k, v) in sorted(&attrs.string_maps) {
        let name = words.lookup(*k)?;
        let mut m = BTreeMap::new();
        for (mk, mv) in sorted(&v.entries) {
            m.insert(
                words.lookup(*mk)?.to_string(),
                words.lookup(*mv)?.to_string(),
            );
        }
        bag.set(name, m);
    }
    Ok(())
}

fn sorted<V>(m: &HashMap<i32, V>) -> Vec<(&i32, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by_key(|(k, _)| **k);
    v
}

/// Decodes every bag of a report with the whole global dictionary.
pub fn decompress_report(req: &ReportRequest) -> Result<Vec<Bag>, AttributeError> {
    decompress_report_with_word_count(req, dictionary::words().len())
}

/// Decodes every bag of a report. With `DELTA_ENCODING` each bag starts from the previous one;
/// with `INDEPENDENT_ENCODING` each stands alone. An entry without words uses `default_words`.
pub fn decompress_report_with_word_count(
    req: &ReportRequest,
    global_word_count: usize,
) -> Result<Vec<Bag>, AttributeError> {
    let delta = match RepeatedAttributesSemantics::try_from(req.repeated_attributes_semantics) {
        Ok(RepeatedAttributesSemantics::DeltaEncoding) => true,
        Ok(RepeatedAttributesSemantics::IndependentEncoding) => false,
        Err(_) => {
            return Err(AttributeError::UnknownSemantics(
                req.repeated_attributes_semantics,
            ));
        }
    };
    let mut bags = Vec::with_capacity(req.attributes.len());
    let mut current = Bag::new();
    for attrs in &req.attributes {
        if !delta {
            current = Bag::new();
        }
        let words = if attrs.words.is_empty() {
            &req.default_words
        } else {
            &attrs.words
        };
        update_bag(&mut current, attrs, words, global_word_count)?;
        bags.push(current.clone());
    }
    Ok(bags)
}

/// Encodes `bags` as one report. Words not in the global dictionary go to `default_words`,
/// shared by all entries. Entries are delta-encoded against the previous bag, unless some bag
/// lacks an attribute its predecessor had (deltas cannot remove): then every entry is complete
/// and the request says `INDEPENDENT_ENCODING`.
pub fn compress_report(bags: &[Bag]) -> ReportRequest {
    let removes = bags
        .windows(2)
        .any(|w| w[0].names().any(|n| !w[1].contains(n)));
    let mut table = WordTable::default();
    let mut attributes = Vec::with_capacity(bags.len());
    let mut previous: Option<&Bag> = None;
    for bag in bags {
        let entry = match previous {
            Some(prev) if !removes => compress_changed(bag, Some(prev), &mut table),
            _ => compress_with(bag, &mut table),
        };
        attributes.push(entry);
        previous = Some(bag);
    }
    let semantics = if removes {
        RepeatedAttributesSemantics::IndependentEncoding
    } else {
        RepeatedAttributesSemantics::DeltaEncoding
    };
    ReportRequest {
        attributes,
        repeated_attributes_semantics: semantics as i32,
        default_words: table.words,
        global_word_count: dictionary::words().len() as u32,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Bag {
        let headers: BTreeMap<String, String> = [
            (":authority".to_string(), "reviews:9080".to_string()),
            ("x-custom-header".to_string(), "custom value".to_string()),
        ]
        .into_iter()
        .collect();
        Bag::new()
            .with("source.principal", "spiffe://cluster.local/ns/default/sa/a")
            .with("request.path", "/reviews/0")
            .with("response.code", 200i64)
            .with("my.double", 1.5f64)
            .with("connection.mtls", true)
            .with("my.bytes", vec![1u8, 2, 3])
            .with(
                "request.time",
                SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            )
            .with("response.duration", Duration::from_millis(42))
            .with("request.headers", headers)
    }

    #[test]
    fn round_trip_all_types() {
        let bag = sample();
        let c = compress(&bag);
        assert_eq!(decompress(&c).unwrap(), bag);
        assert_eq!(bag.get_int64("response.code"), Some(200));
        assert_eq!(bag.get_string("request.path"), Some("/reviews/0"));
        assert_eq!(bag.get_bool("connection.mtls"), Some(true));
        assert_eq!(bag.get_string("response.code"), None);
    }

    #[test]
    fn uses_dictionary_then_negative_words() {
        let bag = Bag::new()
            .with("request.path", "/a-path-not-in-the-dictionary")
            .with("custom.attr", "GET");
        let c = compress(&bag);
        let path = dictionary::index_of("request.path").unwrap();
        let get = dictionary::index_of("GET").unwrap();
        assert!(path >= 0);
        // Names and values missing from the dictionary become message words, negative indexes.
        assert_eq!(c.words.len(), 2);
        let wpath = c.strings[&path];
        assert!(wpath < 0);
        assert_eq!(
            c.words[(-wpath - 1) as usize],
            "/a-path-not-in-the-dictionary"
        );
        let custom = c.strings.keys().find(|k| **k < 0).copied().unwrap();
        assert_eq!(c.words[(-custom - 1) as usize], "custom.attr");
        assert_eq!(c.strings[&custom], get);
        assert_eq!(decompress(&c).unwrap(), bag);
    }

    #[test]
    fn repeated_words_are_shared() {
        let bag = Bag::new().with("x.a", "same").with("x.b", "same");
        let c = compress(&bag);
        assert_eq!(c.words, vec!["x.a", "same", "x.b"]);
        assert_eq!(c.strings.len(), 2);
        assert!(c.strings.values().all(|v| *v == -2));
    }

    #[test]
    fn bad_indexes_are_errors() {
        let mut c = CompressedAttributes::default();
        c.strings.insert(-1, 0);
        assert_eq!(
            decompress(&c),
            Err(AttributeError::UnknownWord {
                index: -1,
                count: 0
            })
        );

        let mut c = CompressedAttributes::default();
        c.int64s.insert(100_000, 1);
        assert!(matches!(
            decompress(&c),
            Err(AttributeError::GlobalIndexOutOfRange { index: 100_000, .. })
        ));

        let mut c = CompressedAttributes::default();
        c.string_maps.insert(
            0,
            StringMap {
                entries: [(0, -5)].into_iter().collect(),
            },
        );
        assert!(matches!(
            decompress(&c),
            Err(AttributeError::UnknownWord { index: -5, .. })
        ));

        let mut c = CompressedAttributes::default();
        c.int64s.insert(i32::MIN, 1);
        assert!(matches!(
            decompress(&c),
            Err(AttributeError::UnknownWord {
                index: i32::MIN,
                ..
            })
        ));
    }

    #[test]
    fn word_count_limits_global_indexes() {
        let mut c = CompressedAttributes::default();
        c.int64s.insert(10, 1);
        assert!(decompress_with_word_count(&c, 11).is_ok());
        assert_eq!(
            decompress_with_word_count(&c, 10),
            Err(AttributeError::GlobalIndexOutOfRange {
                index: 10,
                count: 10
            })
        );
    }

    #[test]
    fn bad_durations_and_timestamps_are_errors() {
        let mut c = CompressedAttributes::default();
        c.durations.insert(
            dictionary::index_of("response.duration").unwrap(),
            prost_types::Duration {
                seconds: -1,
                nanos: 0,
            },
        );
        assert!(matches!(
            decompress(&c),
            Err(AttributeError::BadDuration { .. })
        ));

        // Extreme values are errors or values, never panics.
        for (seconds, nanos) in [
            (i64::MIN, i32::MIN),
            (i64::MAX, i32::MAX),
            (i64::MIN, 0),
            (0, i32::MIN),
            (i64::MAX, 999_999_999),
        ] {
            let mut c = CompressedAttributes::default();
            c.timestamps
                .insert(0, prost_types::Timestamp { seconds, nanos });
            c.durations
                .insert(1, prost_types::Duration { seconds, nanos });
            let _ = decompress(&c);
        }
    }

    #[test]
    fn report_delta_encoding_round_trip() {
        let a = sample();
        let b = a
            .clone()
            .with("response.code", 404i64)
            .with("extra.word", "zzz-unknown");
        let c = b.clone().with("request.path", "/other");
        let req = compress_report(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(
            req.repeated_attributes_semantics,
            RepeatedAttributesSemantics::DeltaEncoding as i32
        );
        // Later entries only carry what changed.
        assert_eq!(req.attributes[1].int64s.len(), 1);
        assert_eq!(req.attributes[1].strings.len(), 1);
        assert_eq!(req.attributes[2].strings.len(), 1);
        assert!(req.attributes.iter().all(|e| e.words.is_empty()));
        assert!(req.default_words.contains(&"zzz-unknown".to_string()));
        assert_eq!(decompress_report(&req).unwrap(), vec![a, b, c]);
    }

    #[test]
    fn report_with_removed_attribute_is_independent() {
        let a = Bag::new()
            .with("request.path", "/a")
            .with("response.code", 200i64);
        let b = Bag::new().with("request.path", "/b");
        let req = compress_report(&[a.clone(), b.clone()]);
        assert_eq!(
            req.repeated_attributes_semantics,
            RepeatedAttributesSemantics::IndependentEncoding as i32
        );
        assert_eq!(decompress_report(&req).unwrap(), vec![a, b]);
    }

    #[test]
    fn report_entry_words_override_default_words() {
        let entry0 = compress(&Bag::new().with("k.one", "v1"));
        let mut entry1 = CompressedAttributes::default();
        // Uses default words: index -1 is "k.two" there.
        entry1.int64s.insert(-1, 7);
        let req = ReportRequest {
            attributes: vec![entry0, entry1],
            default_words: vec!["k.two".to_string()],
            ..Default::default()
        };
        let bags = decompress_report(&req).unwrap();
        assert_eq!(bags[0], Bag::new().with("k.one", "v1"));
        assert_eq!(bags[1], Bag::new().with("k.one", "v1").with("k.two", 7i64));

        let bad = ReportRequest {
            attributes: vec![entry1_with_bad_index()],
            ..Default::default()
        };
        assert!(matches!(
            decompress_report(&bad),
            Err(AttributeError::UnknownWord { index: -3, .. })
        ));
    }

    fn entry1_with_bad_index() -> CompressedAttributes {
        let mut c = CompressedAttributes::default();
        c.bools.insert(-3, true);
        c
    }
}
