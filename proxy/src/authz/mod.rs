//! Inbound security from Pilot's `virtualInbound` listener, enforced with no network call per
//! request:
//!
//! - [`mode`]: the peer authentication mode (STRICT/PERMISSIVE/DISABLE) per destination port,
//!   read from the filter chains' `transport_protocol`, and first-byte TLS sniffing.
//! - [`jwt`]: `envoy.filters.http.jwt_authn` (RequestAuthentication); [`jwks`] key sets.
//! - [`rbac`]: `envoy.filters.http.rbac` (AuthorizationPolicy), compiled once per LDS version.
//!
//! [`InboundPolicy::decode`] builds everything when the listener is applied; the request path
//! runs [`InboundPolicy::authenticate`] then [`InboundPolicy::authorize`].

pub mod jwks;
pub mod jwt;
pub mod matcher;
pub mod mode;
pub mod rbac;

use std::net::SocketAddr;

use http::{HeaderMap, Uri};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::extensions::filters::http::jwt_authn::v3::JwtAuthentication;
use mesh_proto::envoy::envoy::extensions::filters::http::rbac::v3::Rbac;
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use mesh_proto::type_url;
use prost::{Message, Name};
use serde::Serialize;
use serde_json::Value;

pub use jwks::JwksCache;
pub use jwt::{JwtError, JwtFilter, VerifiedJwt};
pub use mode::{IngressTarget, MtlsMode, PortModes, TLS_HANDSHAKE, sniff_tls};
pub use rbac::{RbacAction, RbacFilter};

/// The listener Pilot sends with the inbound security config.
pub const INBOUND_LISTENER: &str = "virtualInbound";
/// Envoy's body for an RBAC denial.
pub const RBAC_DENIED: &str = "RBAC: access denied";
/// The dynamic metadata namespace of the request's JWT facts (Istio's `istio_authn`).
pub const AUTHN_METADATA: &str = "istio_authn";
/// The jwt_authn filter's own metadata namespace (payload under `payload_in_metadata`).
pub const JWT_METADATA: &str = "envoy.filters.http.jwt_authn";

/// A config field that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DecodeError {
    pub field: String,
    pub reason: String,
}

impl DecodeError {
    pub fn new(field: &str, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// What authorization sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The peer's SPIFFE id over mutual TLS; `None` for plaintext.
    pub peer: Option<&'a str>,
    pub source: SocketAddr,
    /// The local address the connection arrived on.
    pub destination: SocketAddr,
    pub method: &'a str,
    pub host: &'a str,
    /// Path without the query.
    pub path: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub server_name: Option<&'a str>,
    pub auth: Option<&'a AuthFacts>,
}

/// The request's verified JWT facts, as the RBAC metadata matchers read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthFacts {
    pub tokens: Vec<VerifiedJwt>,
}

impl AuthFacts {
    /// The request principal (`iss/sub`) of the first verified token.
    pub fn principal(&self) -> Option<String> {
        self.tokens.first().map(VerifiedJwt::principal)
    }

    /// The value at `path` in metadata namespace `filter`.
    pub fn metadata(&self, filter: &str, path: &[String]) -> Option<Value> {
        let first = self.tokens.first()?;
        match filter {
            AUTHN_METADATA => match path {
                [k] if k == "request.auth.principal" => Some(Value::String(first.principal())),
                [k] if k == "request.auth.audiences" => {
                    Some(as_list(first.claims.get("aud")?.clone()))
                }
                [k] if k == "request.auth.presenter" => first.claims.get("azp").cloned(),
                [k, claim] if k == "request.auth.claims" => {
                    Some(as_list(first.claims.get(claim)?.clone()))
                }
                _ => None,
            },
            JWT_METADATA => {
                let (key, rest) = path.split_first()?;
                let t = self.tokens.iter().find(|t| &t.metadata_key == key)?;
                let mut v = t.claims.get(rest.first()?)?;
                for k in rest.iter().skip(1) {
                    v = v.get(k)?;
                }
                Some(v.clone())
            }
            _ => None,
        }
    }
}

/// Claims as Istio puts them in metadata: a list of strings.
fn as_list(v: Value) -> Value {
    match v {
        Value::Array(_) => v,
        other => Value::Array(vec![other]),
    }
}

/// The decision of the RBAC filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with the reason for the log.
    Deny(String),
}

/// The compiled inbound security config of one `virtualInbound` version.
#[derive(Debug, Serialize)]
pub struct InboundPolicy {
    pub modes: PortModes,
    #[serde(skip)]
    pub jwt: Option<JwtFilter>,
    #[serde(skip)]
    pub rbac: Vec<RbacFilter>,
    /// For the config dump: the RBAC filters' actions and policy names.
    pub rbac_policies: Vec<(RbacAction, Vec<String>)>,
    pub jwt_providers: usize,
    /// The encoded listener, so equal configs compare equal.
    #[serde(skip)]
    source: Vec<u8>,
    #[serde(skip)]
    jwks: JwksCache,
}

impl PartialEq for InboundPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for InboundPolicy {}

impl InboundPolicy {
    /// Compiles the `virtualInbound` listener: modes from its filter chains, JWT and RBAC from
    /// the HTTP filters of its first HTTP connection manager (every chain carries the same).
    pub fn decode(l: &Listener) -> Result<InboundPolicy, DecodeError> {
        let modes = PortModes::from_listener(l)?;
        let mut jwt = None;
        let mut rbac = Vec::new();
        let hcm = l
            .filter_chains
            .iter()
            .flat_map(|c| c.filters.iter())
            .find_map(|f| match &f.config_type {
                Some(filter::ConfigType::TypedConfig(tc))
                    if tc.type_url == type_url::HTTP_CONNECTION_MANAGER =>
                {
                    Some(tc)
                }
                _ => None,
            });
        if let Some(tc) = hcm {
            let hcm = HttpConnectionManager::decode(tc.value.as_slice())
                .map_err(|e| DecodeError::new("http_connection_manager", e.to_string()))?;
            for (i, f) in hcm.http_filters.iter().enumerate() {
                let field = format!("http_filters[{i}]");
                let Some(http_filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
                    continue;
                };
                if tc.type_url == JwtAuthentication::type_url() {
                    let cfg = JwtAuthentication::decode(tc.value.as_slice())
                        .map_err(|e| DecodeError::new(&field, e.to_string()))?;
                    jwt = Some(JwtFilter::compile(&cfg, &field)?);
                } else if tc.type_url == Rbac::type_url() {
                    let cfg = Rbac::decode(tc.value.as_slice())
                        .map_err(|e| DecodeError::new(&field, e.to_string()))?;
                    rbac.push(RbacFilter::compile(&cfg, &field)?);
                }
            }
        }
        Ok(InboundPolicy {
            modes,
            jwt_providers: usize::from(jwt.is_some()),
            jwt,
            rbac_policies: rbac.iter().map(|r| (r.action, r.policy_names())).collect(),
            rbac,
            source: l.encode_to_vec(),
            jwks: JwksCache::shared(),
        })
    }

    /// Runs the JWT filter: the verified tokens, or the refusal.
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        uri: &Uri,
    ) -> Result<AuthFacts, JwtError> {
        let Some(jwt) = &self.jwt else {
            return Ok(AuthFacts::default());
        };
        let tokens = jwt.authenticate(headers, uri, &self.jwks).await?;
        Ok(AuthFacts { tokens })
    }

    /// Runs the RBAC filters in order (DENY, then ALLOW, as Pilot sends them).
    pub fn authorize(&self, req: &RequestView<'_>) -> Decision {
        for f in &self.rbac {
            if let Err(reason) = f.allows(req) {
                return Decision::Deny(reason);
            }
        }
        Decision::Allow
    }

    /// Uses `cache` for remote key sets (tests).
    pub fn with_jwks_cache(mut self, cache: &JwksCache) -> InboundPolicy {
        self.jwks = cache.clone();
        self
    }
}

#[cfg(test)]
mod tests;
