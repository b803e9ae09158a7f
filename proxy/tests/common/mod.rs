//! Helpers for the data-path tests: a tiny upstream, a raw HTTP/1.1 client, a proxy context.

#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proxy::admin::ProxyMetrics;
use mesh_proxy::http::{ProxyContext, Upstream, Workload};
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::{NodeInfo, ProxyType, SharedConfig, XdsState};
use tokio::net::{TcpListener, TcpStream};

/// Starts an upstream answering `<name> <path>` with the request's `x-forwarded-client-cert`
/// and `host` echoed as response headers.
pub async fn upstream(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from(format!(
                        "{name} {}",
                        req.uri().path()
                    ))));
                    for h in [
                        "x-forwarded-client-cert",
                        "host",
                        "x-request-id",
                        "x-mesh-peer-workload",
                    ] {
                        if let Some(v) = req.headers().get(h) {
                            resp.headers_mut().insert(
                                format!("echo-{h}").parse::<http::HeaderName>().unwrap(),
                                v.clone(),
                            );
                        }
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Sends one request (the URI is written as given, so proxy form works) to `to`.
pub async fn send(
    to: SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let s = TcpStream::connect(to).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tx
        .send_request(b.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub fn node(pod: &str, app: &str) -> NodeInfo {
    NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: pod.into(),
        workload_name: None,
        namespace: "default".into(),
        service_account: app.into(),
        labels: [("app".to_string(), app.to_string())].into_iter().collect(),
    }
}

/// Applies (type_url, resources) in order, as the ADS client would, and publishes the result.
pub fn config(updates: Vec<(&str, Vec<Any>)>) -> SharedConfig {
    let mut st = XdsState::default();
    let mut last = None;
    for (i, (url, res)) in updates.into_iter().enumerate() {
        let (_, cfg) = st.apply(url, &format!("v{i}"), &res).unwrap();
        last = Some(cfg);
    }
    SharedConfig::new(last.unwrap())
}

pub fn context(
    config: SharedConfig,
    identity: IdentitySlot,
    node: NodeInfo,
    app_addr: SocketAddr,
) -> Arc<ProxyContext> {
    Arc::new(ProxyContext {
        config,
        upstream: Upstream::new(Duration::from_secs(2)),
        metrics: ProxyMetrics::default(),
        mixer: None,
        identity,
        workload: Workload::of_node(&node),
        node,
        app_addr,
        access_log: None,
        tracer: None,
    })
}

/// The standard request metrics of `m` in the text format.
pub fn request_metrics(m: &ProxyMetrics) -> String {
    let metrics = mesh_runtime::Metrics::default();
    metrics.register(|r| {
        r.register("istio_requests", "x", m.requests.clone());
        r.register(
            "istio_request_duration_milliseconds",
            "x",
            m.request_duration.clone(),
        );
        r.register("istio_request_bytes", "x", m.request_bytes.clone());
        r.register("istio_response_bytes", "x", m.response_bytes.clone());
    });
    metrics.encode()
}

/// Polls (deadline 5 s) until the request metrics of `m` contain every one of `want`, and
/// returns their text. Requests are recorded when their response body ends, just after the
/// client has read it.
pub async fn wait_for_metrics(m: &ProxyMetrics, want: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = request_metrics(m);
        if want.iter().all(|w| text.contains(w)) {
            return text;
        }
        let missing: Vec<_> = want.iter().filter(|w| !text.contains(**w)).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A stop signal for servers started in a test.
pub fn stopper() -> (
    tokio::sync::watch::Sender<bool>,
    impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let f = move || {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    (tx, f)
}
