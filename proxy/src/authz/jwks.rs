//! JSON Web Key Sets: inline ones parsed at config time, `jwksUri` ones fetched over HTTP or
//! HTTPS (rustls, TLS 1.2/1.3, the server verified against the operating system's roots, or
//! the roots a test gives) and cached per URI:
//!
//! - fresh keys (younger than the provider's `cache_duration`, [`DEFAULT_REFRESH`] when
//!   unset) are used with no network call;
//! - stale keys keep being used while one background fetch refreshes them; a failed refresh
//!   keeps them (and is retried at most every [`RETRY_AFTER_FAILURE`]);
//! - with no keys yet, the request waits for a fetch; while none has succeeded, requests
//!   carrying a token are refused (401, Envoy's behaviour), failing fast for
//!   [`RETRY_AFTER_FAILURE`] after each failed attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

/// Refresh interval when the provider sets no `cache_duration` (Istio refreshes JWKS every
/// 20 minutes).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20 * 60);
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed fetch, no other attempt for this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The largest key set accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Parses JWKS JSON text.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JWKS: {e}"))
}

/// What is known of one URI.
#[derive(Debug, Default)]
struct Entry {
    keys: Option<(Instant, Arc<JwkSet>)>,
    failed: Option<(Instant, String)>,
    refreshing: bool,
}

impl Entry {
    fn may_retry(&self) -> bool {
        self.failed
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= RETRY_AFTER_FAILURE)
    }
}

/// Fetched key sets by URI.
#[derive(Debug, Clone)]
pub struct JwksCache {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    /// `None` only if rustls refused the configuration (then HTTPS fetches fail).
    tls: Option<Arc<ClientConfig>>,
}

impl Default for JwksCache {
    /// HTTPS verified against the system roots.
    fn default() -> Self {
        JwksCache::with_roots(crate::tls::origination::system_roots())
    }
}

static SHARED: std::sync::LazyLock<JwksCache> = std::sync::LazyLock::new(JwksCache::default);

impl JwksCache {
    /// The process-wide cache, so fetched keys survive config updates.
    pub fn shared() -> JwksCache {
        SHARED.clone()
    }

    /// A cache whose HTTPS fetches trust `roots` (tests, or the mesh roots).
    pub fn with_roots(roots: Arc<RootCertStore>) -> JwksCache {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map(|b| {
                let mut c = b.with_root_certificates(roots).with_no_client_auth();
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                c
            });
        if let Err(e) = &tls {
            tracing::error!(error = %e, "JWKS TLS configuration failed; HTTPS fetches will fail");
        }
        JwksCache {
            inner: Arc::default(),
            fetch_lock: Arc::default(),
            tls: tls.ok().map(Arc::new),
        }
    }

    /// The keys at `uri`, refreshed after `ttl` (see the module documentation).
    pub async fn get(&self, uri: &str, ttl: Duration) -> Result<Arc<JwkSet>, String> {
        {
            let mut map = self.inner.lock();
            let e = map.entry(uri.to_string()).or_default();
            if let Some((at, keys)) = &e.keys {
                let keys = keys.clone();
                if at.elapsed() >= ttl && !e.refreshing && e.may_retry() {
                    e.refreshing = true;
                    let me = self.clone();
                    let uri = uri.to_string();
                    tokio::spawn(async move { me.refresh(&uri).await });
                }
                return Ok(keys);
            }
            if !e.may_retry() {
                let reason = e
                    .failed
                    .as_ref()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
                return Err(format!("JWKS {uri} not fetched yet: {reason}"));
            }
        }
        // No keys yet: one fetch at a time; the others reuse its result.
        let _guard = self.fetch_lock.lock().await;
        {
            let map = self.inner.lock();
            if let Some(e) = map.get(uri) {
                if let Some((_, keys)) = &e.keys {
                    return Ok(keys.clone());
                }
                if !e.may_retry() {
                    let reason = e
                        .failed
                        .as_ref()
                        .map(|(_, r)| r.clone())
                        .unwrap_or_default();
                    return Err(format!("JWKS {uri} not fetched yet: {reason}"));
                }
            }
        }
        self.refresh(uri).await
    }

    /// Fetches `uri` and records the outcome; failures keep the previous keys.
    async fn refresh(&self, uri: &str) -> Result<Arc<JwkSet>, String> {
        let result = fetch(uri, self.tls.as_ref()).await;
        let mut map = self.inner.lock();
        let e = map.entry(uri.to_string()).or_default();
        e.refreshing = false;
        match result {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::info!(jwks_uri = uri, keys = set.keys.len(), "JWKS fetched");
                e.keys = Some((Instant::now(), set.clone()));
                e.failed = None;
                Ok(set)
            }
            Err(err) => {
                tracing::warn!(jwks_uri = uri, error = %err, kept_previous_keys = e.keys.is_some(), "cannot fetch JWKS");
                e.failed = Some((Instant::now(), err.clone()));
                e.keys.as_ref().map(|(_, k)| k.clone()).ok_or(err)
            }
        }
    }

    #[cfg(test)]
    pub fn insert(&self, uri: &str, keys: JwkSet) {
        self.inner.lock().entry(uri.to_string()).or_default().keys =
            Some((Instant::now(), Arc::new(keys)));
    }

    /// Makes the keys of `uri` look `age` old (tests).
    #[cfg(test)]
    pub fn age(&self, uri: &str, age: Duration) {
        if let Some(e) = self.inner.lock().get_mut(uri) {
            if let Some((at, _)) = &mut e.keys {
                *at -= age;
            }
            if let Some((at, _)) = &mut e.failed {
                *at -= age;
            }
        }
    }
}

/// GET `uri` (http or https, no redirects) within [`FETCH_TIMEOUT`]; the body parsed as JWKS.
async fn fetch(uri: &str, tls: Option<&Arc<ClientConfig>>) -> Result<JwkSet, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("bad URI {uri}: {e}"))?;
    let https = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("{uri}: scheme {other:?} is not http or https")),
    };
    let host = parsed
        .host()
        .ok_or_else(|| format!("{uri}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = parsed
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = parsed
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {uri}: {e}"))?;
    let run = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("server name {host:?}: {e}"))?;
            let tls = tls.ok_or("no TLS client configuration")?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(stream), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
    };
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, run)
        .await
        .map_err(|_| format!("GET {uri}: timed out after {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("GET {uri}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {uri}: status {status}"));
    }
    parse_jwks(&String::from_utf8_lossy(&body))
}

/// One HTTP/1.1 exchange on `io`: the status and the body (at most [`MAX_JWKS_BYTES`]).
async fn send<I>(
    io: I,
    req: http::Request<Empty<Bytes>>,
) -> Result<(http::StatusCode, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}
