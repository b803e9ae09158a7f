//! Where the proxy's mTLS configuration comes from: the workload identity from Citadel, once
//! held. A trait so tests can supply certificates without a Citadel. [`origination`]: TLS to
//! servers outside the mesh (DestinationRule SIMPLE/MUTUAL) with their own certificates.

pub mod origination;
pub mod pem_file;

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, ServerConfig};

pub use origination::{Origination, OriginationError, OriginationSpec, SanKind, SanMatch};
pub use pem_file::{MAX_PEM_FILE, read_pem_file};

/// The client configuration towards a cluster with a transport socket: its own TLS
/// origination (DestinationRule SIMPLE/MUTUAL), else the workload's mesh mTLS one expecting
/// the cluster's SANs. `None`: mesh mTLS is needed and no certificate is held yet.
pub fn upstream_client_config(
    tls: &crate::cluster::UpstreamTls,
    identity: &IdentitySlot,
) -> Option<Arc<ClientConfig>> {
    match &tls.origination {
        Some(o) => Some(o.client_config()),
        None => identity
            .get()
            .map(|id| id.client_config(&tls.expected_sans)),
    }
}

/// A source of mesh TLS configuration for this workload.
pub trait TlsSource: Send + Sync + 'static {
    /// Inbound: client certificate required, verified to the mesh root.
    fn server_config(&self) -> Arc<ServerConfig>;
    /// Outbound: presents the workload certificate, accepts servers whose URI SAN is listed.
    fn client_config(&self, expected_sans: &[String]) -> Arc<ClientConfig>;
    /// `spiffe://td/ns/N/sa/S` of this workload.
    fn spiffe_id(&self) -> String;
}

impl TlsSource for mesh_identity::WorkloadIdentity {
    fn server_config(&self) -> Arc<ServerConfig> {
        mesh_identity::WorkloadIdentity::server_config(self)
    }
    fn client_config(&self, expected_sans: &[String]) -> Arc<ClientConfig> {
        mesh_identity::WorkloadIdentity::client_config(self, expected_sans)
    }
    fn spiffe_id(&self) -> String {
        mesh_identity::WorkloadIdentity::spiffe_id(self).to_string()
    }
}

/// Whether a workload certificate with `seconds_left` of a `lifetime` is close to expiry
/// while renewals fail: less than a quarter of its life, or less than ten minutes, left and
/// at least one renewal failed in a row (a healthy identity renews at half life).
pub fn expiry_at_risk(seconds_left: f64, lifetime: std::time::Duration, failures: u64) -> bool {
    failures > 0 && (seconds_left < lifetime.as_secs_f64() / 4.0 || seconds_left < 600.0)
}

/// The identity once obtained; empty until then (mTLS traffic is refused meanwhile).
#[derive(Clone, Default)]
pub struct IdentitySlot {
    inner: Arc<OnceLock<Arc<dyn TlsSource>>>,
}

impl std::fmt::Debug for IdentitySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySlot")
            .field("held", &self.inner.get().is_some())
            .finish()
    }
}

impl IdentitySlot {
    /// A slot already holding `source`.
    pub fn with(source: Arc<dyn TlsSource>) -> Self {
        let slot = IdentitySlot::default();
        slot.set(source);
        slot
    }

    /// Stores the identity (the first one wins).
    pub fn set(&self, source: Arc<dyn TlsSource>) {
        let _ = self.inner.set(source);
    }

    pub fn get(&self) -> Option<&Arc<dyn TlsSource>> {
        self.inner.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry_is_at_risk_only_late_and_with_failures() {
        let day = Duration::from_secs(24 * 3600);
        assert!(!expiry_at_risk(3.0 * 3600.0, day, 0), "no failures");
        assert!(!expiry_at_risk(12.0 * 3600.0, day, 3), "half life left");
        assert!(expiry_at_risk(5.0 * 3600.0, day, 1), "under a quarter");
        let short = Duration::from_secs(3600);
        assert!(!expiry_at_risk(1800.0, short, 1));
        assert!(expiry_at_risk(599.0, short, 1), "under ten minutes");
    }
}
