//! What every connected proxy was sent and acknowledged, for `/debug/syncz` and config dumps.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_proto::discovery::TypeState;
use parking_lot::Mutex;
use serde::Serialize;

use crate::translate::{ProxyInfo, XdsType};

/// One type's sync state for one proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<Nack>,
    pub nacks: u64,
    pub pushes: u64,
}

/// A rejected version and the proxy's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub version: String,
    pub error: String,
    /// Delta only: the rejected resources, as `name@version`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// One connected proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    pub proxy_id: String,
    pub stream: u64,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    pub proxy: ProxyInfo,
    /// By type short name (`cds`, `eds`, `lds`, `rds`).
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// Shared table of connected proxies, keyed by stream.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    inner: Arc<Mutex<BTreeMap<u64, ProxyStatus>>>,
}

impl SyncStatus {
    /// Records a new stream for `proxy`, speaking `protocol` (`sotw` or `delta`).
    pub fn connect(&self, stream: u64, proxy: ProxyInfo, protocol: &'static str) {
        self.inner.lock().insert(
            stream,
            ProxyStatus {
                proxy_id: proxy.id.clone(),
                stream,
                protocol,
                proxy,
                types: BTreeMap::new(),
            },
        );
    }

    /// Forgets a closed stream.
    pub fn disconnect(&self, stream: u64) {
        self.inner.lock().remove(&stream);
    }

    /// Copies `state` of `t` into the table; `pushed` counts a response just sent.
    pub fn update(&self, stream: u64, t: XdsType, state: &TypeState, pushed: bool) {
        self.record(stream, t, |ts| {
            ts.sent_version = state.sent.as_ref().map(|(v, _)| v.clone());
            ts.acked_version = state.acked_version.clone();
            ts.last_nack = state.nacked.as_ref().map(|(v, e)| Nack {
                version: v.clone(),
                error: e.clone(),
                resources: Vec::new(),
            });
            ts.nacks = state.nack_count;
            if pushed {
                ts.pushes += 1;
            }
        });
    }

    /// Applies `f` to the status of `t` on `stream` (nothing when the stream is gone).
    pub fn record(&self, stream: u64, t: XdsType, f: impl FnOnce(&mut TypeStatus)) {
        let mut inner = self.inner.lock();
        if let Some(p) = inner.get_mut(&stream) {
            f(p.types.entry(t.short()).or_default());
        }
    }

    /// Every connected proxy, by stream.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.inner.lock().values().cloned().collect()
    }

    /// The identity of a connected proxy with node id `id`.
    pub fn proxy(&self, id: &str) -> Option<ProxyInfo> {
        self.inner
            .lock()
            .values()
            .rev()
            .find(|p| p.proxy_id == id)
            .map(|p| p.proxy.clone())
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_empty()
    }
}
