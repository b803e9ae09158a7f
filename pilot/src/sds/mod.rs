//! SDS for gateways: the TLS credentials a Gateway server names with `tls.credentialName`,
//! served over ADS as `envoy.extensions.transport_sockets.tls.v3.Secret` resources.
//!
//! - [`store`](mod@store): the credential source, a directory
//!   `<dir>/<namespace>/<credentialName>/{tls.crt,tls.key,ca.crt}` (Kubernetes TLS Secret keys;
//!   the generic-Secret keys `cert`, `key`, `cacert` are read too), polled and re-published
//!   whenever a file's content changes, so a rotation reaches the gateways without a restart.
//! - [`kubernetes`](mod@kubernetes): the other credential source (`--credential-kube`), Kubernetes
//!   Secrets watched through the API server, converted by [`secret`](mod@secret) the way
//!   istiod reads `credentialName` (`tls.crt`/`tls.key`/`ca.crt` or `cert`/`key`/`cacert`,
//!   and the `<name>-cacert` companion Secret).
//! - [`secrets`](mod@secrets): which secret names a proxy's listeners reference, and the
//!   `Secret` resources built for it.
//!
//! Who gets what (Istio's `credentialName` rule: the Secret lives in the gateway workload's
//! namespace): only `router` proxies; only the names their own listeners reference (a name
//! asked for but not referenced is never sent); looked up in the proxy's namespace only; and
//! only on streams whose peer identity is verified (xDS over mTLS, where the certificate's
//! namespace must be the node's) unless Pilot runs with `--credential-plaintext`. A name
//! `<credential>` gives a `TlsCertificate` (chain and key as inline bytes), a name
//! `<credential>-cacert` a `CertificateValidationContext` (`trusted_ca` inline) from
//! `ca.crt`. A credential that does not exist (or lacks the file) is not sent: the gateway
//! keeps waiting for it; it is logged and counted (`pilot_sds_secrets_missing_total`).

pub mod kubernetes;
pub mod metrics;
pub mod secret;
pub mod secrets;
pub mod store;

pub use kubernetes::{
    KubeClientError, KubeCredentialOptions, SECRET_FIELD_SELECTOR, SecretSync, kube_client,
    watch_kube,
};
pub use metrics::SdsMetrics;
pub use secret::{Secret, SecretError, credential_from_secret};
pub use secrets::{referenced_names, secrets_for};
pub use store::{CREDENTIAL_POLL, Credential, CredentialSource, Credentials, watch_dir};

#[cfg(test)]
mod tests;
