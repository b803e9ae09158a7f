//! JSON Web Key Sets: inline ones parsed at config time, `jwksUri` ones fetched over HTTP and
//! cached per URI for the provider's cache duration (so requests make no network call while the
//! keys are fresh). A failed refresh keeps serving the previous keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use parking_lot::Mutex;

/// Parses JWKS JSON text.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JWKS: {e}"))
}

/// Key sets by URI with the time they were fetched.
type Fetched = HashMap<String, (Instant, Arc<JwkSet>)>;

/// Fetched key sets by URI.
#[derive(Debug, Clone, Default)]
pub struct JwksCache {
    inner: Arc<Mutex<Fetched>>,
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
}

static SHARED: std::sync::LazyLock<JwksCache> = std::sync::LazyLock::new(JwksCache::default);

impl JwksCache {
    /// The process-wide cache, so fetched keys survive config updates.
    pub fn shared() -> JwksCache {
        SHARED.clone()
    }

    /// The keys at `uri`, fetched when absent or older than `ttl`.
    pub async fn get(&self, uri: &str, ttl: Duration) -> Result<Arc<JwkSet>, String> {
        if let Some(k) = self.fresh(uri, ttl) {
            return Ok(k);
        }
        // One fetch at a time; the others reuse its result.
        let _guard = self.fetch_lock.lock().await;
        if let Some(k) = self.fresh(uri, ttl) {
            return Ok(k);
        }
        match fetch(uri).await {
            Ok(set) => {
                let set = Arc::new(set);
                self.inner
                    .lock()
                    .insert(uri.to_string(), (Instant::now(), set.clone()));
                tracing::info!(jwks_uri = uri, keys = set.keys.len(), "JWKS fetched");
                Ok(set)
            }
            Err(e) => {
                tracing::warn!(jwks_uri = uri, error = %e, "cannot fetch JWKS");
                // Stale keys beat none.
                self.inner.lock().get(uri).map(|(_, k)| k.clone()).ok_or(e)
            }
        }
    }

    fn fresh(&self, uri: &str, ttl: Duration) -> Option<Arc<JwkSet>> {
        let map = self.inner.lock();
        let (at, keys) = map.get(uri)?;
        (at.elapsed() < ttl).then(|| keys.clone())
    }

    #[cfg(test)]
    pub fn insert(&self, uri: &str, keys: JwkSet) {
        self.inner
            .lock()
            .insert(uri.to_string(), (Instant::now(), Arc::new(keys)));
    }
}

async fn fetch(uri: &str) -> Result<JwkSet, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(uri)
        .send()
        .await
        .map_err(|e| format!("GET {uri}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {uri}: status {}", resp.status()));
    }
    let text = resp.text().await.map_err(|e| format!("GET {uri}: {e}"))?;
    parse_jwks(&text)
}
