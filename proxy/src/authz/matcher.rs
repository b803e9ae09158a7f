//! Envoy's `StringMatcher`, header and CIDR matchers, compiled once per config version.

use std::net::IpAddr;

use http::HeaderMap;
use mesh_proto::envoy::envoy::config::core::v3::CidrRange;
use mesh_proto::envoy::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use super::DecodeError;

/// A compiled `StringMatcher`.
#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(regex::Regex),
}

impl StrMatch {
    pub fn compile(m: &StringMatcher, field: &str) -> Result<StrMatch, DecodeError> {
        use string_matcher::MatchPattern as P;
        let ic = m.ignore_case;
        let lower = |s: &str| if ic { s.to_lowercase() } else { s.to_string() };
        Ok(match &m.match_pattern {
            Some(P::Exact(s)) => StrMatch::Exact(lower(s), ic),
            Some(P::Prefix(s)) => StrMatch::Prefix(lower(s), ic),
            Some(P::Suffix(s)) => StrMatch::Suffix(lower(s), ic),
            Some(P::Contains(s)) => StrMatch::Contains(lower(s), ic),
            Some(P::SafeRegex(r)) => StrMatch::regex(&r.regex, field)?,
            _ => return Err(DecodeError::new(field, "unsupported string matcher")),
        })
    }

    /// A full-match regular expression (Envoy's `safe_regex`).
    pub fn regex(re: &str, field: &str) -> Result<StrMatch, DecodeError> {
        regex::Regex::new(&format!("^(?:{re})$"))
            .map(StrMatch::Regex)
            .map_err(|e| DecodeError::new(field, format!("bad regex {re:?}: {e}")))
    }

    pub fn matches(&self, v: &str) -> bool {
        let fold = |ic: bool| {
            if ic {
                std::borrow::Cow::Owned(v.to_lowercase())
            } else {
                std::borrow::Cow::Borrowed(v)
            }
        };
        match self {
            StrMatch::Exact(s, ic) => *fold(*ic) == **s,
            StrMatch::Prefix(s, ic) => fold(*ic).starts_with(s.as_str()),
            StrMatch::Suffix(s, ic) => fold(*ic).ends_with(s.as_str()),
            StrMatch::Contains(s, ic) => fold(*ic).contains(s.as_str()),
            StrMatch::Regex(re) => re.is_match(v),
        }
    }
}

/// A compiled `HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    name: String,
    kind: HeaderKind,
    invert: bool,
}

#[derive(Debug, Clone)]
enum HeaderKind {
    Str(StrMatch),
    Present(bool),
}

impl HeaderMatch {
    #[allow(deprecated)]
    pub fn compile(h: &HeaderMatcher, field: &str) -> Result<HeaderMatch, DecodeError> {
        use header_matcher::HeaderMatchSpecifier as S;
        let s = |p: string_matcher::MatchPattern| StringMatcher {
            match_pattern: Some(p),
            ignore_case: false,
        };
        use string_matcher::MatchPattern as P;
        let kind = match &h.header_match_specifier {
            Some(S::StringMatch(m)) => HeaderKind::Str(StrMatch::compile(m, field)?),
            Some(S::ExactMatch(v)) => {
                HeaderKind::Str(StrMatch::compile(&s(P::Exact(v.clone())), field)?)
            }
            Some(S::PrefixMatch(v)) => {
                HeaderKind::Str(StrMatch::compile(&s(P::Prefix(v.clone())), field)?)
            }
            Some(S::SuffixMatch(v)) => {
                HeaderKind::Str(StrMatch::compile(&s(P::Suffix(v.clone())), field)?)
            }
            Some(S::ContainsMatch(v)) => {
                HeaderKind::Str(StrMatch::compile(&s(P::Contains(v.clone())), field)?)
            }
            Some(S::SafeRegexMatch(r)) => HeaderKind::Str(StrMatch::regex(&r.regex, field)?),
            Some(S::PresentMatch(b)) => HeaderKind::Present(*b),
            None => HeaderKind::Present(true),
            Some(_) => return Err(DecodeError::new(field, "unsupported header matcher")),
        };
        Ok(HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            kind,
            invert: h.invert_match,
        })
    }

    /// Matches against the request; `:method`, `:authority` and `:path` are the pseudo-headers.
    pub fn matches(&self, req: &super::RequestView<'_>) -> bool {
        let value: Option<String> = match self.name.as_str() {
            ":method" => Some(req.method.to_string()),
            ":authority" | "host" => Some(req.host.to_string()),
            ":path" => Some(req.path_and_query.to_string()),
            name => header_value(req.headers, name),
        };
        let r = match (&self.kind, value) {
            (HeaderKind::Present(want), v) => v.is_some() == *want,
            (HeaderKind::Str(m), Some(v)) => m.matches(&v),
            (HeaderKind::Str(_), None) => false,
        };
        r != self.invert
    }
}

/// All values of `name`, joined by `,` as Envoy does.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A compiled `CidrRange`.
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    addr: IpAddr,
    len: u32,
}

impl Cidr {
    pub fn compile(c: &CidrRange, field: &str) -> Result<Cidr, DecodeError> {
        let addr: IpAddr = c
            .address_prefix
            .parse()
            .map_err(|_| DecodeError::new(field, format!("{:?} is not an IP", c.address_prefix)))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = c.prefix_len.map_or(max, |l| l.value);
        if len > max {
            return Err(DecodeError::new(
                field,
                format!("prefix length {len} too long"),
            ));
        }
        Ok(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - self.len).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - self.len).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::google::protobuf::UInt32Value;

    #[test]
    fn strings_and_cidrs() {
        let m = |p| {
            StrMatch::compile(
                &StringMatcher {
                    match_pattern: Some(p),
                    ignore_case: false,
                },
                "f",
            )
            .unwrap()
        };
        use string_matcher::MatchPattern as P;
        assert!(m(P::Prefix("/a".into())).matches("/abc"));
        assert!(!m(P::Prefix("/a".into())).matches("/b"));
        assert!(m(P::Suffix(".png".into())).matches("/x.png"));
        assert!(StrMatch::regex(".+", "f").unwrap().matches("x"));
        assert!(!StrMatch::regex(".+", "f").unwrap().matches(""));
        assert!(!StrMatch::regex("a", "f").unwrap().matches("ba"));
        let ic = StrMatch::compile(
            &StringMatcher {
                match_pattern: Some(P::Exact("Host".into())),
                ignore_case: true,
            },
            "f",
        )
        .unwrap();
        assert!(ic.matches("HOST"));
        let c = Cidr::compile(
            &CidrRange {
                address_prefix: "10.1.0.0".into(),
                prefix_len: Some(UInt32Value { value: 16 }),
            },
            "f",
        )
        .unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all = Cidr::compile(
            &CidrRange {
                address_prefix: "0.0.0.0".into(),
                prefix_len: Some(UInt32Value { value: 0 }),
            },
            "f",
        )
        .unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
    }
}
