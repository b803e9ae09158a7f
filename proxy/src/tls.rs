//! Where the proxy's mTLS configuration comes from: the workload identity from Citadel, once
//! held. A trait so tests can supply certificates without a Citadel.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, ServerConfig};

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
