//! Citadel's local tokens: HS256 JWTs naming a Kubernetes-style service account, signed with a
//! key kept in the state directory. `meshctl` hands one to each local workload; Citadel accepts
//! it as `authorization: Bearer <token>` in place of a Kubernetes TokenReview.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::files::{self, FileError};

/// `iss` of local tokens.
pub const ISSUER: &str = "citadel-local";
/// `aud` of local tokens (Istio's CA audience).
pub const AUDIENCE: &str = "istio-ca";
/// The key file's name in the state directory.
pub const KEY_FILE: &str = "issuer.key";
const KEY_LEN: usize = 32;
const SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// Why a token could not be issued or was not accepted. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("issuer key {path} is {len} bytes, expected {KEY_LEN}")]
    KeyLength { path: PathBuf, len: usize },
    #[error("token is not a JWT (header.payload.signature)")]
    Malformed,
    #[error("token algorithm {0:?} is not HS256")]
    Algorithm(String),
    #[error("token signature does not match the issuer key")]
    Signature,
    #[error("token issuer {0:?} is not {ISSUER}")]
    Issuer(String),
    #[error("token audience does not include {AUDIENCE}")]
    Audience,
    #[error("token expired")]
    Expired,
    #[error("token subject {0:?} is not system:serviceaccount:<namespace>:<name>")]
    Subject(String),
    #[error("invalid namespace or service account name: {0}")]
    Name(String),
}

/// The service account a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    iat: u64,
}

/// The HMAC key tokens are signed with.
pub struct IssuerKey {
    key: hmac::Key,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerKey(..)")
    }
}

impl IssuerKey {
    /// Loads `STATE/issuer.key`, creating it (32 random bytes, mode 0600) on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, TokenError> {
        files::ensure_dir(state_dir)?;
        let path = state_dir.join(KEY_FILE);
        if !path.exists() {
            let mut bytes = [0u8; KEY_LEN];
            rand::fill(&mut bytes);
            if files::create_once(&path, &bytes, 0o600)? {
                tracing::info!(path = %path.display(), "created token issuer key");
            }
        }
        let bytes = files::read(&path)?;
        if bytes.len() != KEY_LEN {
            return Err(TokenError::KeyLength {
                path,
                len: bytes.len(),
            });
        }
        Ok(IssuerKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// A token for `namespace/service_account` valid for `ttl` from now.
    pub fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        check_name(namespace)?;
        check_name(service_account)?;
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: format!("{SUBJECT_PREFIX}{namespace}:{service_account}"),
            aud: Audience::One(AUDIENCE.to_string()),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
        };
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
        };
        let signing_input = format!("{}.{}", encode_json(&header), encode_json(&claims));
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// Checks a token's signature (constant time), issuer, audience and expiry, and returns
    /// the service account it names.
    pub fn verify(&self, token: &str) -> Result<ServiceAccount, TokenError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<ServiceAccount, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        hmac::verify(&self.key, signing_input.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode_json(p)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Issuer(claims.iss));
        }
        let aud_ok = match &claims.aud {
            Audience::One(a) => a == AUDIENCE,
            Audience::Many(v) => v.iter().any(|a| a == AUDIENCE),
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        let rest = claims
            .sub
            .strip_prefix(SUBJECT_PREFIX)
            .ok_or_else(|| TokenError::Subject(claims.sub.clone()))?;
        let (ns, sa) = rest
            .split_once(':')
            .ok_or_else(|| TokenError::Subject(claims.sub.clone()))?;
        check_name(ns)?;
        check_name(sa)?;
        Ok(ServiceAccount {
            namespace: ns.to_string(),
            name: sa.to_string(),
        })
    }
}

/// Kubernetes names: non-empty lowercase letters, digits, `-`, `.`, at most 253 bytes.
fn check_name(s: &str) -> Result<(), TokenError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(TokenError::Name(s.to_string()))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn encode_json<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default())
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Issues a token for `namespace/service_account`, creating `STATE/issuer.key` on first use.
pub fn issue(
    state_dir: &Path,
    namespace: &str,
    service_account: &str,
    ttl: Duration,
) -> Result<String, TokenError> {
    IssuerKey::load_or_create(state_dir)?.issue(namespace, service_account, ttl)
}

/// Verifies a token against `STATE/issuer.key`.
pub fn verify(state_dir: &Path, token: &str) -> Result<ServiceAccount, TokenError> {
    IssuerKey::load_or_create(state_dir)?.verify(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn issued_token_verifies_and_names_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let token = issue(dir.path(), "default", "bookinfo-reviews", HOUR).unwrap();
        let sa = verify(dir.path(), &token).unwrap();
        assert_eq!(sa.namespace, "default");
        assert_eq!(sa.name, "bookinfo-reviews");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The claims are the documented ones.
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["iss"], "citadel-local");
        assert_eq!(claims["aud"], "istio-ca");
        assert_eq!(
            claims["sub"],
            "system:serviceaccount:default:bookinfo-reviews"
        );
    }

    #[test]
    fn tampered_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let key = IssuerKey::load_or_create(dir.path()).unwrap();
        let token = key.issue("default", "reviews", HOUR).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        // Payload swapped for another account, signature kept.
        let forged_claims = Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:kube-system:admin".into(),
            aud: Audience::One(AUDIENCE.into()),
            exp: unix_now() + 3600,
            iat: unix_now(),
        };
        let forged = format!("{}.{}.{}", parts[0], encode_json(&forged_claims), parts[2]);
        assert!(matches!(key.verify(&forged), Err(TokenError::Signature)));

        // One flipped signature character.
        let mut sig: Vec<char> = parts[2].chars().collect();
        sig[3] = if sig[3] == 'A' { 'B' } else { 'A' };
        let bad_sig = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            sig.into_iter().collect::<String>()
        );
        assert!(key.verify(&bad_sig).is_err());

        // alg=none with no signature.
        let none = format!(
            "{}.{}.",
            encode_json(&Header {
                alg: "none".into(),
                typ: None
            }),
            parts[1]
        );
        assert!(matches!(key.verify(&none), Err(TokenError::Algorithm(_))));

        // Signed by another state directory's key.
        let other = tempfile::tempdir().unwrap();
        let foreign = issue(other.path(), "default", "reviews", HOUR).unwrap();
        assert!(matches!(key.verify(&foreign), Err(TokenError::Signature)));

        assert!(matches!(key.verify("abc"), Err(TokenError::Malformed)));
        assert!(matches!(key.verify("a.b.c.d"), Err(TokenError::Malformed)));
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let key = IssuerKey::load_or_create(dir.path()).unwrap();
        let token = key
            .issue("default", "reviews", Duration::from_secs(60))
            .unwrap();
        assert!(key.verify_at(&token, unix_now()).is_ok());
        assert!(matches!(
            key.verify_at(&token, unix_now() + 61),
            Err(TokenError::Expired)
        ));
        let zero = key.issue("default", "reviews", Duration::ZERO).unwrap();
        assert!(matches!(key.verify(&zero), Err(TokenError::Expired)));
    }

    #[test]
    fn wrong_issuer_or_audience_is_rejected_even_when_signed() {
        let dir = tempfile::tempdir().unwrap();
        let key = IssuerKey::load_or_create(dir.path()).unwrap();
        let sign = |claims: &Claims| {
            let input = format!(
                "{}.{}",
                encode_json(&Header {
                    alg: "HS256".into(),
                    typ: None
                }),
                encode_json(claims)
            );
            let sig = hmac::sign(&key.key, input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        };
        let base = || Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:default:reviews".into(),
            aud: Audience::Many(vec!["other".into(), AUDIENCE.into()]),
            exp: unix_now() + 60,
            iat: unix_now(),
        };
        assert!(key.verify(&sign(&base())).is_ok());
        let mut c = base();
        c.iss = "kubernetes".into();
        assert!(matches!(key.verify(&sign(&c)), Err(TokenError::Issuer(_))));
        let mut c = base();
        c.aud = Audience::One("vault".into());
        assert!(matches!(key.verify(&sign(&c)), Err(TokenError::Audience)));
        let mut c = base();
        c.sub = "alice".into();
        assert!(matches!(key.verify(&sign(&c)), Err(TokenError::Subject(_))));
    }

    #[test]
    fn key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let t = issue(dir.path(), "default", "a", HOUR).unwrap();
        let before = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(before.len(), 32);
        assert!(verify(dir.path(), &t).is_ok());
        assert_eq!(std::fs::read(dir.path().join(KEY_FILE)).unwrap(), before);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            verify(dir.path(), &t),
            Err(TokenError::KeyLength { .. })
        ));
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue(dir.path(), "default", "a:b", HOUR),
            Err(TokenError::Name(_))
        ));
        assert!(matches!(
            issue(dir.path(), "", "a", HOUR),
            Err(TokenError::Name(_))
        ));
    }
}
