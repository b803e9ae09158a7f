//! The `listchecker` adapter: is a value in a static list? A whitelist denies values not in it
//! (`NOT_FOUND`, "X is not whitelisted"); a blacklist denies values in it (`PERMISSION_DENIED`,
//! "X is blacklisted"). Entries are strings, case-insensitive strings, or IP addresses/CIDRs.

use std::net::IpAddr;
use std::time::Duration;

use mesh_proto::attributes::Value;
use serde_json::Value as Json;

use super::{Verdict, duration_param, int_param};

/// How list entries are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Strings,
    CaseInsensitiveStrings,
    IpAddresses,
}

/// One IP entry: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(&n.octets(), &i.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(&n.octets(), &i.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// Handler params: `overrides` (the list), `blacklist`, `entryType`, `cachingInterval`,
/// `cachingUseCount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub entries: Vec<String>,
    pub nets: Vec<IpNet>,
    pub blacklist: bool,
    pub entry_type: EntryType,
    pub caching_interval: Duration,
    pub caching_use_count: i32,
}

impl Params {
    pub fn parse(p: &Json) -> Result<Params, String> {
        let entries: Vec<String> = match p.get("overrides") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("params.overrides: {v} is not a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("params.overrides {other} is not a list")),
        };
        if p.get("providerUrl")
            .and_then(Json::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            tracing::warn!("listchecker providerUrl is not supported; only overrides are used");
        }
        let blacklist = match p.get("blacklist") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(other) => return Err(format!("params.blacklist {other} is not a boolean")),
        };
        let entry_type = match p.get("entryType").and_then(Json::as_str) {
            None | Some("STRINGS") => EntryType::Strings,
            Some("CASE_INSENSITIVE_STRINGS") => EntryType::CaseInsensitiveStrings,
            Some("IP_ADDRESSES") => EntryType::IpAddresses,
            Some(other) => return Err(format!("params.entryType {other:?} is not supported")),
        };
        let nets = if entry_type == EntryType::IpAddresses {
            entries
                .iter()
                .map(|e| {
                    IpNet::parse(e).ok_or_else(|| format!("params.overrides: {e:?} is not an IP"))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let caching_interval = duration_param(
            p,
            &["cachingInterval", "caching_interval"],
            Duration::from_secs(300),
        )?;
        let count = int_param(p, &["cachingUseCount", "caching_use_count"], 10_000)?;
        Ok(Params {
            entries,
            nets,
            blacklist,
            entry_type,
            caching_interval,
            caching_use_count: i32::try_from(count)
                .map_err(|_| format!("params.cachingUseCount {count} is too large"))?,
        })
    }

    fn contains(&self, value: &Value) -> bool {
        match self.entry_type {
            EntryType::Strings => matches!(value, Value::String(s) if self.entries.contains(s)),
            EntryType::CaseInsensitiveStrings => matches!(
                value,
                Value::String(s) if self.entries.iter().any(|e| e.eq_ignore_ascii_case(s))
            ),
            EntryType::IpAddresses => {
                as_ip(value).is_some_and(|ip| self.nets.iter().any(|n| n.contains(ip)))
            }
        }
    }

    /// Checks `value` (None when the instance could not be built: never in the list).
    pub fn check(&self, value: Option<&Value>) -> Verdict {
        let found = value.is_some_and(|v| self.contains(v));
        let shown = value.map(display).unwrap_or_default();
        let (code, message) = match (self.blacklist, found) {
            (true, true) => (7, format!("{shown} is blacklisted")),
            (false, false) => (5, format!("{shown} is not whitelisted")),
            _ => (0, String::new()),
        };
        Verdict {
            code,
            message,
            valid_duration: self.caching_interval,
            valid_use_count: self.caching_use_count,
        }
    }
}

fn as_ip(v: &Value) -> Option<IpAddr> {
    match v {
        Value::Bytes(b) if b.len() == 4 => {
            let o: [u8; 4] = b.as_slice().try_into().ok()?;
            Some(IpAddr::from(o))
        }
        Value::Bytes(b) if b.len() == 16 => {
            let o: [u8; 16] = b.as_slice().try_into().ok()?;
            Some(IpAddr::from(o))
        }
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn display(v: &Value) -> String {
    if let Some(ip) = as_ip(v) {
        return ip.to_string();
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Int64(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whitelist_of_versions() {
        let p = Params::parse(&json!({"overrides": ["v1", "v2"], "blacklist": false})).unwrap();
        assert_eq!(p.check(Some(&Value::String("v1".into()))).code, 0);
        let v = p.check(Some(&Value::String("v3".into())));
        assert_eq!((v.code, v.message.as_str()), (5, "v3 is not whitelisted"));
        assert_eq!(p.check(None).code, 5);
        assert_eq!(v.valid_duration, Duration::from_secs(300));
    }

    #[test]
    fn blacklist_case_insensitive() {
        let p = Params::parse(&json!({
            "overrides": ["Bob"], "blacklist": true, "entryType": "CASE_INSENSITIVE_STRINGS"
        }))
        .unwrap();
        let v = p.check(Some(&Value::String("bob".into())));
        assert_eq!((v.code, v.message.as_str()), (7, "bob is blacklisted"));
        assert_eq!(p.check(Some(&Value::String("alice".into()))).code, 0);
        assert_eq!(p.check(None).code, 0);
    }

    #[test]
    fn ip_ranges() {
        let p = Params::parse(&json!({
            "overrides": ["10.57.0.0/16", "::1"], "entryType": "IP_ADDRESSES", "cachingInterval": "10s"
        }))
        .unwrap();
        assert_eq!(p.check(Some(&Value::Bytes(vec![10, 57, 3, 4]))).code, 0);
        let v = p.check(Some(&Value::Bytes(vec![10, 58, 0, 1])));
        assert_eq!(
            (v.code, v.message.as_str()),
            (5, "10.58.0.1 is not whitelisted")
        );
        assert_eq!(p.check(Some(&Value::String("::1".into()))).code, 0);
        assert_eq!(v.valid_duration, Duration::from_secs(10));
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(Params::parse(&json!({"overrides": ["x"], "entryType": "IP_ADDRESSES"})).is_err());
        assert!(Params::parse(&json!({"entryType": "REGEX"})).is_err());
        let n = IpNet::parse("192.168.0.0/20").unwrap();
        assert!(n.contains("192.168.15.255".parse().unwrap()));
        assert!(!n.contains("192.168.16.0".parse().unwrap()));
    }
}
