//! SPIFFE identities of workloads (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`)
//! and reading them out of X.509 certificates.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A workload identity in Istio's SPIFFE form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not an Istio SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE id {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error(
        "SPIFFE id {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    #[error("SPIFFE id {id:?} has an invalid {part}: {value:?}")]
    Part {
        id: String,
        part: &'static str,
        value: String,
    },
}

impl SpiffeId {
    /// Builds an id, checking every part.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let id = SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        id.validate()?;
        Ok(id)
    }

    fn validate(&self) -> Result<(), SpiffeIdError> {
        let bad = |part: &'static str, value: &str| SpiffeIdError::Part {
            id: self.to_string(),
            part,
            value: value.to_string(),
        };
        if !valid_trust_domain(&self.trust_domain) {
            return Err(bad("trust domain", &self.trust_domain));
        }
        if !valid_path_segment(&self.namespace) {
            return Err(bad("namespace", &self.namespace));
        }
        if !valid_path_segment(&self.service_account) {
            return Err(bad("service account", &self.service_account));
        }
        Ok(())
    }
}

/// Trust domain: lowercase letters, digits, `.`, `-`, `_` (SPIFFE ID spec).
fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Path segment: letters, digits, `.`, `-`, `_`, and not `.` or `..` (SPIFFE ID spec).
fn valid_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => SpiffeId::new(*td, *ns, *sa),
            _ => Err(SpiffeIdError::Shape(s.to_string())),
        }
    }
}

/// The URI subject alternative names of a DER certificate (empty when it has none or does not
/// parse).
pub fn uri_sans(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

/// The SPIFFE id of a DER certificate: its only `spiffe://` URI SAN. `None` when there is none,
/// more than one, or it is malformed.
pub fn spiffe_id_of(cert_der: &[u8]) -> Option<SpiffeId> {
    let mut ids = uri_sans(cert_der)
        .into_iter()
        .filter(|u| u.starts_with("spiffe://"));
    let first = ids.next()?;
    if ids.next().is_some() {
        return None;
    }
    first.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = SpiffeId::new("cluster.local", "default", "bookinfo-reviews").unwrap();
        let s = id.to_string();
        assert_eq!(s, "spiffe://cluster.local/ns/default/sa/bookinfo-reviews");
        assert_eq!(s.parse::<SpiffeId>().unwrap(), id);
    }

    #[test]
    fn rejects_malformed_ids() {
        assert!(matches!(
            "https://cluster.local/ns/a/sa/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Scheme(_))
        ));
        for bad in [
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/sa/a/ns/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns/../sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} parsed");
        }
    }

    fn cert_with_sans(sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn reads_uri_sans_and_spiffe_id() {
        let der = cert_with_sans(vec![
            rcgen::SanType::DnsName("example.com".try_into().unwrap()),
            uri("spiffe://cluster.local/ns/default/sa/ratings"),
        ]);
        assert_eq!(
            uri_sans(&der),
            vec!["spiffe://cluster.local/ns/default/sa/ratings".to_string()]
        );
        let id = spiffe_id_of(&der).unwrap();
        assert_eq!(id.service_account, "ratings");
        assert_eq!(id.namespace, "default");
    }

    #[test]
    fn no_or_ambiguous_spiffe_id_is_none() {
        assert_eq!(spiffe_id_of(&cert_with_sans(vec![])), None);
        let two = cert_with_sans(vec![
            uri("spiffe://cluster.local/ns/a/sa/x"),
            uri("spiffe://cluster.local/ns/b/sa/y"),
        ]);
        assert_eq!(uri_sans(&two).len(), 2);
        assert_eq!(spiffe_id_of(&two), None);
        assert!(uri_sans(b"not a certificate").is_empty());
    }
}
