//! A Kubernetes Secret as a gateway credential, the way istiod reads `credentialName`:
//!
//! - `kubernetes.io/tls` keys: `tls.crt` and `tls.key`, and optionally `ca.crt`;
//! - generic (`Opaque`) keys: `cert` and `key`, and optionally `cacert`;
//! - a Secret with only a CA (`ca.crt` or `cacert`), such as the `<name>-cacert` companion
//!   Istio documents for a MUTUAL server's client CA, is a CA-only credential: the SDS name
//!   `<name>-cacert` finds it when `<name>` itself has no CA (see [`super::secrets`]).
//!
//! Which keys are read does not depend on the Secret's `type` (istiod does the same): the
//! TLS pair wins when both pairs are present. An empty value counts as absent. A Secret that
//! has half of a pair (a certificate without its key, or the reverse), or one of these keys
//! not in base64, is malformed; one with none of these keys is not a credential at all (most
//! Secrets of a cluster).
//!
//! [`Secret`] is pilot's own reading of the object, not `k8s_openapi`'s: `data` stays the
//! API server's base64 text until a credential key is decoded here. With the typed Secret, one
//! undecodable value fails the whole list (the watcher could never sync), and kube-client
//! logs a response body it cannot decode in full, which would put every Secret's keys in
//! pilot's log.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use kube::api::ObjectMeta;

use super::store::Credential;

/// The keys of a `kubernetes.io/tls` Secret.
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const TLS_CA: &str = "ca.crt";
/// The keys of a generic Secret (Istio's `cert`/`key`/`cacert`).
pub const GENERIC_CERT: &str = "cert";
pub const GENERIC_KEY: &str = "key";
pub const GENERIC_CA: &str = "cacert";

/// A core/v1 Secret: metadata, type and the base64 `data` values as sent (any JSON value
/// parses, so a Secret never fails a list or watch event). `Debug` shows the key names only.
#[derive(Clone, Default, serde::Deserialize)]
pub struct Secret {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(rename = "type", default)]
    pub type_: Option<String>,
    #[serde(default)]
    pub data: Option<BTreeMap<String, serde_json::Value>>,
}

impl Secret {
    /// A Secret `namespace/name` with `data` (plain values, base64-encoded here).
    pub fn new(namespace: &str, name: &str, data: &[(&str, &[u8])]) -> Secret {
        let b64 = base64::engine::general_purpose::STANDARD;
        Secret {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            type_: None,
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(b64.encode(v))))
                    .collect(),
            ),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key names only: values never reach a log.
        f.debug_struct("Secret")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("resource_version", &self.metadata.resource_version)
            .field("type", &self.type_)
            .field(
                "keys",
                &self.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl kube::Resource for Secret {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Secret".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "secrets".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Why a Secret cannot be used as a credential. Names keys only, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Half of a certificate/key pair.
    #[error("has key `{present}` but no (or an empty) `{missing}`")]
    MissingKey {
        present: &'static str,
        missing: &'static str,
    },
    /// A credential key whose value is not a base64 string.
    #[error("key `{key}` is not valid base64")]
    BadValue { key: &'static str },
    /// No namespace or name (not something the API server sends).
    #[error("has no namespace or name")]
    Unnamed,
}

/// `(namespace, name)` of `secret`.
pub fn secret_key(secret: &Secret) -> Result<(String, String), SecretError> {
    match (&secret.metadata.namespace, &secret.metadata.name) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.clone(), name.clone()))
        }
        _ => Err(SecretError::Unnamed),
    }
}

/// The decoded value of `key`; `None` when absent or empty.
fn value(secret: &Secret, key: &'static str) -> Result<Option<Vec<u8>>, SecretError> {
    let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return Ok(None);
    };
    let text = match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => return Ok(None),
        _ => return Err(SecretError::BadValue { key }),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| SecretError::BadValue { key })?;
    Ok((!bytes.is_empty()).then_some(bytes))
}

/// A certificate chain and its private key.
type CertAndKey = (Vec<u8>, Vec<u8>);

/// The certificate and key of one pair of key names: both, neither, or the missing half.
fn pair(
    secret: &Secret,
    cert_key: &'static str,
    key_key: &'static str,
) -> Result<Option<CertAndKey>, SecretError> {
    match (value(secret, cert_key)?, value(secret, key_key)?) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(SecretError::MissingKey {
            present: cert_key,
            missing: key_key,
        }),
        (None, Some(_)) => Err(SecretError::MissingKey {
            present: key_key,
            missing: cert_key,
        }),
    }
}

/// The credential `secret` holds: `Ok(None)` when it has none of the credential keys.
pub fn credential_from_secret(secret: &Secret) -> Result<Option<Credential>, SecretError> {
    let tls = pair(secret, TLS_CERT, TLS_KEY);
    let generic = pair(secret, GENERIC_CERT, GENERIC_KEY);
    let cert_and_key = match (tls, generic) {
        // A complete pair wins over a broken one of the other naming.
        (Ok(Some(p)), _) | (_, Ok(Some(p))) => Some(p),
        (Err(e), _) | (_, Err(e)) => return Err(e),
        (Ok(None), Ok(None)) => None,
    };
    let ca = match value(secret, TLS_CA)? {
        Some(ca) => Some(ca),
        None => value(secret, GENERIC_CA)?,
    };
    if cert_and_key.is_none() && ca.is_none() {
        return Ok(None);
    }
    let (cert_chain, private_key) = match cert_and_key {
        Some((c, k)) => (Some(c), Some(k)),
        None => (None, None),
    };
    Ok(Some(Credential {
        cert_chain,
        private_key,
        ca,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(type_: &str, data: &[(&str, &str)]) -> Secret {
        let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        Secret {
            type_: Some(type_.into()),
            ..Secret::new("istio-system", "cred", &data)
        }
    }

    fn cred(cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> Credential {
        let b = |s: Option<&str>| s.map(|s| s.as_bytes().to_vec());
        Credential {
            cert_chain: b(cert),
            private_key: b(key),
            ca: b(ca),
        }
    }

    #[test]
    fn a_tls_secret_gives_certificate_key_and_ca() {
        let s = secret(
            "kubernetes.io/tls",
            &[("tls.crt", "C"), ("tls.key", "K"), ("ca.crt", "A")],
        );
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(Some("C"), Some("K"), Some("A"))))
        );
        let s = secret("kubernetes.io/tls", &[("tls.crt", "C"), ("tls.key", "K")]);
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(Some("C"), Some("K"), None)))
        );
        assert_eq!(
            secret_key(&s),
            Ok(("istio-system".to_string(), "cred".to_string()))
        );
    }

    #[test]
    fn a_generic_secret_gives_cert_key_and_cacert() {
        let s = secret("Opaque", &[("cert", "GC"), ("key", "GK"), ("cacert", "GA")]);
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(Some("GC"), Some("GK"), Some("GA"))))
        );
        // The TLS keys win when both namings are complete.
        let s = secret(
            "Opaque",
            &[
                ("cert", "GC"),
                ("key", "GK"),
                ("tls.crt", "C"),
                ("tls.key", "K"),
            ],
        );
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(Some("C"), Some("K"), None)))
        );
    }

    #[test]
    fn a_cacert_companion_is_a_ca_only_credential() {
        let s = secret("Opaque", &[("cacert", "CA")]);
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(None, None, Some("CA"))))
        );
        let s = secret("Opaque", &[("ca.crt", "CA2")]);
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(None, None, Some("CA2"))))
        );
    }

    #[test]
    fn half_a_pair_is_malformed_and_names_the_missing_key() {
        let s = secret("kubernetes.io/tls", &[("tls.crt", "C"), ("ca.crt", "A")]);
        let e = credential_from_secret(&s).unwrap_err();
        assert_eq!(
            e,
            SecretError::MissingKey {
                present: "tls.crt",
                missing: "tls.key"
            }
        );
        assert_eq!(
            e.to_string(),
            "has key `tls.crt` but no (or an empty) `tls.key`"
        );
        let s = secret("Opaque", &[("key", "SECRET-KEY")]);
        let e = credential_from_secret(&s).unwrap_err();
        assert_eq!(
            e,
            SecretError::MissingKey {
                present: "key",
                missing: "cert"
            }
        );
        // The message never carries the value.
        assert!(!e.to_string().contains("SECRET-KEY"));
        // An empty value is absent.
        let s = secret("kubernetes.io/tls", &[("tls.crt", "C"), ("tls.key", "")]);
        assert!(credential_from_secret(&s).is_err());
    }

    #[test]
    fn a_value_that_is_not_base64_is_malformed_and_parses_from_json() {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "cred", "namespace": "istio-system"},
            "data": {"tls.crt": "-----BEGIN CERTIFICATE-----", "tls.key": "S0VZ", "other": 7},
        }))
        .unwrap();
        let e = credential_from_secret(&s).unwrap_err();
        assert_eq!(e, SecretError::BadValue { key: "tls.crt" });
        // Neither the error nor Debug shows a value.
        assert!(!e.to_string().contains("BEGIN"));
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("BEGIN") && !debug.contains("S0VZ"),
            "{debug}"
        );
        assert!(debug.contains("tls.key"), "{debug}");
        // Keys that are not credential keys are not judged.
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cred", "namespace": "istio-system"},
            "data": {"tls.crt": "Qw==", "tls.key": "Sw==", "other": 7},
        }))
        .unwrap();
        assert_eq!(
            credential_from_secret(&s),
            Ok(Some(cred(Some("C"), Some("K"), None)))
        );
    }

    #[test]
    fn other_secrets_are_not_credentials() {
        let s = secret("Opaque", &[("password", "p")]);
        assert_eq!(credential_from_secret(&s), Ok(None));
        let none = Secret::default();
        assert_eq!(credential_from_secret(&none), Ok(None));
        assert_eq!(secret_key(&none), Err(SecretError::Unnamed));
    }
}
