//! The credentials a request carries and the identity they prove.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::metadata::MetadataMap;

/// The credentials found on one request.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CallerInfo {
    /// The token from `authorization: Bearer <token>`, if any.
    pub bearer: Option<String>,
    /// The client certificate chain (leaf first) presented on the TLS listener, already
    /// verified to the trust bundle during the handshake; empty without one.
    pub peer_chain: Arc<Vec<CertificateDer<'static>>>,
}

impl std::fmt::Debug for CallerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are never printed.
        f.debug_struct("CallerInfo")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("peer_chain", &self.peer_chain.len())
            .finish()
    }
}

impl CallerInfo {
    /// Reads the credentials from gRPC request metadata.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        let bearer = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        CallerInfo {
            bearer,
            peer_chain: Arc::default(),
        }
    }

    /// Credentials carrying only a bearer token.
    pub fn with_bearer(token: impl Into<String>) -> Self {
        CallerInfo {
            bearer: Some(token.into()),
            peer_chain: Arc::default(),
        }
    }

    /// These credentials plus the client certificate chain of the connection.
    pub fn with_peer_chain(mut self, chain: Arc<Vec<CertificateDer<'static>>>) -> Self {
        self.peer_chain = chain;
        self
    }
}

/// The Kubernetes-style identity a caller proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub namespace: String,
    pub service_account: String,
    /// Which authenticator accepted the caller.
    pub by: &'static str,
}

/// Why an authenticator did not accept a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// The request carries no credential of the kind this authenticator checks.
    #[error("no credential for {0}")]
    NotApplicable(&'static str),
    /// The credential is there but not valid.
    #[error("{authenticator}: {reason}")]
    Rejected {
        authenticator: &'static str,
        reason: String,
    },
}

/// One way of authenticating callers.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// A short name for logs and error messages.
    fn name(&self) -> &'static str;

    /// The identity `caller` proves, or why it proves none.
    async fn authenticate(&self, caller: &CallerInfo) -> Result<Authenticated, AuthnError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_tokens() {
        let mut m = MetadataMap::new();
        assert_eq!(CallerInfo::from_metadata(&m).bearer, None);
        m.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(
            CallerInfo::from_metadata(&m).bearer.as_deref(),
            Some("abc.def.ghi")
        );
        m.insert("authorization", "bearer   xyz ".parse().unwrap());
        assert_eq!(CallerInfo::from_metadata(&m).bearer.as_deref(), Some("xyz"));
        m.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(CallerInfo::from_metadata(&m).bearer, None);
        m.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(CallerInfo::from_metadata(&m).bearer, None);
        assert!(!format!("{:?}", CallerInfo::with_bearer("s3cret")).contains("s3cret"));
    }
}
