//! The CA kept in the Kubernetes Secret `istio-ca-secret`, as Istio's Citadel keeps it, so
//! every replica signs with the same root and a restarted pod keeps it.
//!
//! Create-or-load: GET the Secret; if it does not exist, generate a self-signed root and
//! CREATE the Secret; if that CREATE meets 409 Conflict (another replica created it first),
//! GET it again and use the winner's. Replicas starting together therefore end with one root.
//! Data keys are Istio's: `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem` (a
//! Secret holding a plug-in intermediate is used as such). Citadel never updates the Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::authority::{
    CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, CaError, CaOrigin, CaPems, CertificateAuthority,
    ROOT_CERT_FILE, generate_root,
};

/// Name of the Secret holding the CA (Istio's).
pub const CA_SECRET_NAME: &str = "istio-ca-secret";

/// Type of the Secret Citadel creates (Istio's).
pub const CA_SECRET_TYPE: &str = "istio.io/ca-root";

/// Where the CA Secret lives.
#[derive(Debug, Clone)]
pub struct CaSecret {
    pub namespace: String,
    pub name: String,
}

impl CaSecret {
    /// `istio-ca-secret` in `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        CaSecret {
            namespace: namespace.into(),
            name: CA_SECRET_NAME.to_string(),
        }
    }

    fn origin(&self) -> CaOrigin {
        CaOrigin::Secret {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    fn kube_error(&self, action: &'static str, source: kube::Error) -> CaError {
        CaError::Kube {
            action,
            secret: format!("{}/{}", self.namespace, self.name),
            source,
        }
    }

    /// Loads the CA from the Secret, creating the Secret with a new self-signed root when it
    /// does not exist (see the module documentation for the race between replicas).
    pub async fn load_or_create(
        &self,
        client: kube::Client,
        trust_domain: &str,
    ) -> Result<CertificateAuthority, CaError> {
        let api: Api<Secret> = Api::namespaced(client, &self.namespace);
        match api.get_opt(&self.name).await {
            Ok(Some(secret)) => {
                tracing::info!(secret = %self.origin(), "loading the CA from its Secret");
                return self.from_secret(&secret);
            }
            Ok(None) => {}
            Err(e) => return Err(self.kube_error("read", e)),
        }

        let (cert_pem, key_pem) = generate_root(trust_domain)?;
        let pems = CaPems {
            ca_cert: cert_pem.clone().into_bytes(),
            ca_key: key_pem.clone().into_bytes(),
            cert_chain: Some(Vec::new()),
            root_cert: Some(cert_pem.clone().into_bytes()),
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            type_: Some(CA_SECRET_TYPE.to_string()),
            data: Some(BTreeMap::from([
                (CA_CERT_FILE.to_string(), ByteString(pems.ca_cert.clone())),
                (CA_KEY_FILE.to_string(), ByteString(pems.ca_key.clone())),
                (CERT_CHAIN_FILE.to_string(), ByteString(Vec::new())),
                (
                    ROOT_CERT_FILE.to_string(),
                    ByteString(pems.root_cert.clone().unwrap_or_default()),
                ),
            ])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %self.origin(), %trust_domain, "generated a self-signed root CA and stored it in its Secret");
                CertificateAuthority::from_pems(&pems, &self.origin())
            }
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                tracing::info!(secret = %self.origin(), "another replica created the CA Secret first; loading theirs");
                match api.get_opt(&self.name).await {
                    Ok(Some(secret)) => self.from_secret(&secret),
                    Ok(None) => Err(CaError::Invalid {
                        at: self.origin().to_string(),
                        reason: "creation conflicted, but the Secret is gone again".to_string(),
                    }),
                    Err(e) => Err(self.kube_error("read", e)),
                }
            }
            Err(e) => Err(self.kube_error("create", e)),
        }
    }

    /// The CA in a Secret read from the API server.
    pub fn from_secret(&self, secret: &Secret) -> Result<CertificateAuthority, CaError> {
        let origin = self.origin();
        let data = secret.data.as_ref();
        let get = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone());
        let required = |key: &'static str| {
            get(key)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| CaError::Invalid {
                    at: origin.item(key),
                    reason: "missing or empty".to_string(),
                })
        };
        let pems = CaPems {
            ca_cert: required(CA_CERT_FILE)?,
            ca_key: required(CA_KEY_FILE)?,
            cert_chain: get(CERT_CHAIN_FILE),
            root_cert: get(ROOT_CERT_FILE),
        };
        CertificateAuthority::from_pems(&pems, &origin)
    }
}

#[cfg(test)]
mod tests;
