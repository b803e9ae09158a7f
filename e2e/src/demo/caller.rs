//! Calls to other demo services through the sidecar's outbound listener, used as an HTTP proxy
//! (requests go out in proxy form: `GET http://details:9080/details`).

use std::time::Duration;

use http::HeaderMap;

use super::reply::{CallResult, Reply};
use super::topology::{DEMO_PORT, Service};

/// Request headers copied from the incoming request to every call (user identity and tracing),
/// plus every header starting with `x-b3-`.
pub const FORWARDED_HEADERS: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-ot-span-context",
];

/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The caller could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("invalid proxy URL {url}: {source}")]
    Proxy {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Makes the calls of one service.
#[derive(Debug, Clone)]
pub struct Caller {
    client: reqwest::Client,
}

impl Caller {
    /// A caller sending every request through `proxy` (the sidecar's outbound address, e.g.
    /// `http://127.0.0.1:15001`); without a proxy it connects directly (outside a mesh).
    pub fn new(proxy: Option<&str>) -> Result<Self, CallerError> {
        let mut builder = reqwest::Client::builder().timeout(CALL_TIMEOUT).no_proxy();
        if let Some(url) = proxy {
            let p = reqwest::Proxy::http(url).map_err(|source| CallerError::Proxy {
                url: url.to_string(),
                source,
            })?;
            builder = builder.proxy(p);
        }
        Ok(Caller {
            client: builder.build().map_err(CallerError::Client)?,
        })
    }

    /// Calls `callee` at `http://<callee>:9080/<callee>`, forwarding the tracing and user headers
    /// of `incoming`.
    pub async fn call(&self, callee: Service, incoming: &HeaderMap) -> CallResult {
        let url = format!("http://{}:{}/{}", callee.name(), DEMO_PORT, callee.name());
        let mut req = self.client.get(&url);
        for (name, value) in incoming {
            if is_forwarded(name.as_str()) {
                req = req.header(name.clone(), value.clone());
            }
        }
        let failed = |status: u16, error: Option<String>| CallResult::Failed {
            service: callee.name().to_string(),
            status,
            error,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(callee = callee.name(), url, error = %error_chain(&e), "call failed");
                return failed(0, Some(error_chain(&e)));
            }
        };
        let status = resp.status();
        if !status.is_success() {
            tracing::warn!(
                callee = callee.name(),
                status = status.as_u16(),
                "call answered with an error"
            );
            return failed(status.as_u16(), None);
        }
        match resp.json::<Reply>().await {
            Ok(reply) => CallResult::Ok(reply),
            Err(e) => failed(
                status.as_u16(),
                Some(format!("invalid reply: {}", error_chain(&e))),
            ),
        }
    }
}

fn is_forwarded(name: &str) -> bool {
    FORWARDED_HEADERS.contains(&name) || name.starts_with("x-b3-")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_user_and_trace_headers_only() {
        assert!(is_forwarded("end-user"));
        assert!(is_forwarded("x-request-id"));
        assert!(is_forwarded("traceparent"));
        assert!(is_forwarded("tracestate"));
        assert!(is_forwarded("x-b3-traceid"));
        assert!(is_forwarded("x-b3-sampled"));
        assert!(!is_forwarded("cookie"));
        assert!(!is_forwarded("host"));
        assert!(!is_forwarded("content-length"));
    }

    #[test]
    fn rejects_a_bad_proxy_url() {
        assert!(Caller::new(Some("::not a url")).is_err());
        assert!(Caller::new(Some("http://127.0.0.1:15001")).is_ok());
    }
}
