//! The demo service's HTTP server: `/healthz`, and every other path answers with the call tree.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;

use super::caller::Caller;
use super::reply::Reply;
use super::topology::Service;

/// What one running demo service is.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub service: Service,
    pub version: String,
    pub listen: SocketAddr,
    /// The sidecar's outbound address as a proxy URL (`http://127.0.0.1:15001`).
    pub proxy: Option<String>,
}

/// Why the demo service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] mesh_runtime::StartError),
    #[error(transparent)]
    Caller(#[from] super::caller::CallerError),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Debug, Clone)]
struct AppState {
    service: Service,
    version: String,
    caller: Caller,
}

/// The demo routes for `service` at `version`, calling others through `caller`.
pub fn router(service: Service, version: &str, caller: Caller) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(get(answer))
        .with_state(AppState {
            service,
            version: version.to_string(),
            caller,
        })
}

async fn answer(State(s): State<AppState>, headers: HeaderMap) -> Json<Reply> {
    let mut calls = Vec::new();
    for callee in s.service.callees(&s.version) {
        calls.push(s.caller.call(*callee, &headers).await);
    }
    tracing::debug!(
        service = s.service.name(),
        version = s.version,
        calls = calls.len(),
        "answered"
    );
    Json(Reply {
        service: s.service.name().to_string(),
        version: s.version.clone(),
        calls,
    })
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn run(
    config: DemoConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let caller = Caller::new(config.proxy.as_deref())?;
    let listener = mesh_runtime::bind_tcp("http", config.listen).await?;
    tracing::info!(
        service = config.service.name(),
        version = config.version,
        listen = %config.listen,
        proxy = config.proxy.as_deref().unwrap_or("none"),
        "serving"
    );
    axum::serve(listener, router(config.service, &config.version, caller))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::extract::Request;
    use parking_lot::Mutex;
    use tokio::net::TcpListener;

    use super::*;
    use crate::demo::reply::CallResult;

    /// What the fake sidecar saw: (absolute URI, end-user header, x-b3-traceid header).
    type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

    async fn serve(router: Router) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
        addr
    }

    /// A fake next hop standing in for the sidecar: it gets the proxy-form request and answers as
    /// the service named by the authority would (reviews as v2, which calls ratings through the
    /// same fake proxy); `details` answers 503 when `fail_details`.
    async fn fake_sidecar(seen: Seen, fail_details: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let proxy = format!("http://{addr}");
        let app = Router::new().fallback(move |req: Request| {
            let seen = seen.clone();
            let proxy = proxy.clone();
            let headers = req.headers().clone();
            let uri = req.uri().clone();
            drop(req);
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                seen.lock()
                    .push((uri.to_string(), h("end-user"), h("x-b3-traceid")));
                let host = uri.host().unwrap_or_default().to_string();
                if fail_details && host == "details" {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy upstream".to_string(),
                    );
                }
                let service = Service::ALL.into_iter().find(|s| s.name() == host).unwrap();
                let version = if service == Service::Reviews {
                    "v2"
                } else {
                    "v1"
                };
                let caller = Caller::new(Some(&proxy)).unwrap();
                let mut calls = Vec::new();
                for c in service.callees(version) {
                    calls.push(caller.call(*c, &headers).await);
                }
                let body = serde_json::to_string(&Reply {
                    service: service.name().into(),
                    version: version.into(),
                    calls,
                })
                .unwrap();
                (axum::http::StatusCode::OK, body)
            }
        });
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn productpage_calls_details_then_reviews_which_calls_ratings() {
        let seen = Seen::default();
        let proxy = fake_sidecar(seen.clone(), false).await;
        let caller = Caller::new(Some(&format!("http://{proxy}"))).unwrap();
        let app = serve(router(Service::Productpage, "v1", caller)).await;
        let body = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{app}/productpage"))
            .header("end-user", "jason")
            .header("x-b3-traceid", "abc")
            .header("cookie", "secret")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            body,
            r#"{"service":"productpage","version":"v1","calls":[{"service":"details","version":"v1","calls":[]},{"service":"reviews","version":"v2","calls":[{"service":"ratings","version":"v1","calls":[]}]}]}"#
        );
        let seen = seen.lock().clone();
        let uris: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            uris,
            vec![
                "http://details:9080/details",
                "http://reviews:9080/reviews",
                "http://ratings:9080/ratings"
            ]
        );
        for s in &seen {
            assert_eq!(
                s.1.as_deref(),
                Some("jason"),
                "end-user forwarded on {}",
                s.0
            );
            assert_eq!(
                s.2.as_deref(),
                Some("abc"),
                "x-b3-traceid forwarded on {}",
                s.0
            );
        }
    }

    #[tokio::test]
    async fn failed_calls_are_reported_with_their_status() {
        let seen = Seen::default();
        let proxy = fake_sidecar(seen, true).await;
        let caller = Caller::new(Some(&format!("http://{proxy}"))).unwrap();
        let app = serve(router(Service::Productpage, "v1", caller)).await;
        let reply: Reply = reqwest::get(format!("http://{app}/"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            reply.calls[0],
            CallResult::Failed {
                service: "details".into(),
                status: 503,
                error: None
            }
        );
        assert_eq!(reply.call("reviews").unwrap().version, "v2");
    }

    #[tokio::test]
    async fn unreachable_proxy_gives_status_zero_with_the_error() {
        // A port that was free a moment ago: nothing listens there.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let caller = Caller::new(Some(&format!("http://{dead}"))).unwrap();
        let app = serve(router(Service::Reviews, "v3", caller)).await;
        let reply: Reply = reqwest::get(format!("http://{app}/reviews/0"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply.service, "reviews");
        assert_eq!(reply.version, "v3");
        match &reply.calls[..] {
            [
                CallResult::Failed {
                    service,
                    status: 0,
                    error: Some(e),
                },
            ] => {
                assert_eq!(service, "ratings");
                assert!(!e.is_empty());
            }
            other => panic!("unexpected calls {other:?}"),
        }
    }

    #[tokio::test]
    async fn leaf_services_call_nobody_and_healthz_answers() {
        let caller = Caller::new(None).unwrap();
        let app = serve(router(Service::Reviews, "v1", caller)).await;
        let reply: Reply = reqwest::get(format!("http://{app}/anything"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply.calls, vec![]);
        let h = reqwest::get(format!("http://{app}/healthz")).await.unwrap();
        assert_eq!(h.status(), 200);
    }
}
