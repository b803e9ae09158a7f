//! Behaviour of the routed path against local test upstreams: fault injection, retries, header
//! operations, circuit breaking, outlier detection and load balancing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::RoutedKind;
use crate::admin::ProxyMetrics;
use crate::cluster::{Cluster, Endpoints, LbPolicy, Limits, OutlierDetection};
use crate::http::context::ProxyContext;
use crate::http::server::serve_routed;
use crate::http::telemetry::Workload;
use crate::http::upstream::Upstream;
use crate::routing::{
    Fault, Forwarding, HeaderOps, HeaderPolicy, PathMatch, PerMillion, RetryOn, RetryPolicy, Route,
    RouteAction, RouteTable, VirtualHost,
};
use crate::tls::IdentitySlot;
use crate::xds::{Config, Listener, NodeInfo, ProxyType, SharedConfig};

const LISTENER: &str = "virtualOutbound";

/// What a test upstream answers for its n-th request (0-based): status and delay in ms.
type Behaviour = Arc<dyn Fn(usize) -> (u16, u64) + Send + Sync>;

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

#[derive(Clone)]
struct UpState {
    hits: Arc<AtomicUsize>,
    seen: Seen,
    behaviour: Behaviour,
}

struct TestUpstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Seen,
}

async fn upstream(behaviour: impl Fn(usize) -> (u16, u64) + Send + Sync + 'static) -> TestUpstream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let state = UpState {
        hits: Arc::new(AtomicUsize::new(0)),
        seen: Arc::new(Mutex::new(Vec::new())),
        behaviour: Arc::new(behaviour),
    };
    let out = TestUpstream {
        addr,
        hits: state.hits.clone(),
        seen: state.seen.clone(),
    };
    let app = Router::new()
        .fallback(
            |State(s): State<UpState>, headers: HeaderMap, body: Bytes| async move {
                let n = s.hits.fetch_add(1, Ordering::SeqCst);
                s.seen.lock().push((headers, body));
                let (status, delay) = (s.behaviour)(n);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let mut resp_headers = HeaderMap::new();
                resp_headers.insert("server", "test-upstream".parse().unwrap());
                (
                    StatusCode::from_u16(status).unwrap(),
                    resp_headers,
                    format!("answer {n}"),
                )
            },
        )
        .with_state(state);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    out
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        eds_name: name.into(),
        connect_timeout: Duration::from_secs(1),
        tls: None,
        lb: LbPolicy::RoundRobin,
        limits: Limits::default(),
        max_requests_per_connection: None,
        outlier: None,
        service: None,
    }
}

fn route(forwarding: Forwarding) -> Route {
    Route {
        name: "test-route".into(),
        path: PathMatch::Prefix("/".into()),
        headers: vec![],
        action: RouteAction::Cluster("c".into()),
        forwarding,
    }
}

/// A proxy serving one route (domain `svc`) to cluster `c` at `addrs`.
async fn proxy(
    forwarding: Forwarding,
    c: Cluster,
    addrs: Vec<SocketAddr>,
) -> (SocketAddr, mesh_runtime::Metrics) {
    proxy_with(forwarding, vec![(c, addrs)]).await
}

/// A proxy serving one route (domain `svc`) to cluster `c`, knowing every cluster given.
async fn proxy_with(
    forwarding: Forwarding,
    clusters: Vec<(Cluster, Vec<SocketAddr>)>,
) -> (SocketAddr, mesh_runtime::Metrics) {
    let table = RouteTable::new(
        "r".into(),
        vec![VirtualHost {
            name: "svc:80".into(),
            domains: vec!["svc".into()],
            routes: vec![route(forwarding)],
        }],
    );
    let mut config = Config::default();
    config.listeners.insert(
        LISTENER.into(),
        Listener {
            name: LISTENER.into(),
            address: None,
            route_config_name: Some("r".into()),
            inbound: None,
            tcp: None,
            mixer: None,
        },
    );
    config.routes.insert("r".into(), Arc::new(table));
    for (c, addrs) in clusters {
        config
            .endpoints
            .insert(c.eds_name.clone(), Arc::new(Endpoints::new(addrs)));
        config.clusters.insert(c.name.clone(), Arc::new(c));
    }
    let metrics = mesh_runtime::Metrics::default();
    let node = NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: "test-pod".into(),
        workload_name: None,
        namespace: "default".into(),
        service_account: "default".into(),
        labels: BTreeMap::new(),
    };
    let ctx = Arc::new(ProxyContext {
        config: SharedConfig::new(config),
        upstream: Upstream::new(Duration::from_secs(1)),
        metrics: ProxyMetrics::register(&metrics),
        mixer: None,
        identity: IdentitySlot::default(),
        node: node.clone(),
        app_addr: "127.0.0.1:9".parse().unwrap(),
        workload: Workload::of_node(&node),
        access_log: None,
        tracer: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_routed(
        l,
        ctx,
        LISTENER.into(),
        RoutedKind::SidecarOutbound,
        std::future::pending(),
    ));
    (addr, metrics)
}

/// Sends one request through the proxy: (status, headers, body).
async fn call(
    client: &Upstream,
    proxy: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "svc");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client.send(proxy, None, req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `metrics` until it contains `needle` (a request is recorded when its body ends).
async fn wait_for_metric(metrics: &mesh_runtime::Metrics, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics.encode();
        if text.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "no {needle} in metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn retry(n: u32, on: &str, codes: &[u16], per_try: Option<Duration>) -> RetryPolicy {
    RetryPolicy {
        num_retries: n,
        retry_on: RetryOn::parse(on, codes),
        per_try_timeout: per_try,
        base_interval: RetryPolicy::BASE_INTERVAL,
        max_interval: RetryPolicy::BASE_INTERVAL * 10,
        avoid_previous_hosts: true,
    }
}

#[tokio::test]
async fn fault_abort_answers_without_calling_upstream() {
    let up = upstream(|_| (200, 0)).await;
    let fw = Forwarding {
        fault: Some(Fault {
            delay: None,
            abort: Some((500, PerMillion::ALL)),
        }),
        ..Forwarding::default()
    };
    let (addr, metrics) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    let (status, _, body) = call(&client, addr, "GET", &[], "").await;
    assert_eq!(status, 500);
    assert!(body.contains("fault filter abort"), "{body}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    wait_for_metric(&metrics, "response_flags=\"FI\"").await;
}

#[tokio::test]
async fn fault_delay_holds_the_request_then_forwards() {
    let up = upstream(|_| (200, 0)).await;
    let fw = Forwarding {
        fault: Some(Fault {
            delay: Some((Duration::from_millis(300), PerMillion::ALL)),
            abort: None,
        }),
        // The route timeout does not include the injected delay.
        timeout: Some(Duration::from_millis(200)),
        ..Forwarding::default()
    };
    let (addr, metrics) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    let started = Instant::now();
    let (status, _, _) = call(&client, addr, "GET", &[], "").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    wait_for_metric(&metrics, "response_flags=\"DI\"").await;
    // A 0% fault does nothing.
    let none = Forwarding {
        fault: Some(Fault {
            delay: Some((Duration::from_secs(5), PerMillion(0))),
            abort: Some((503, PerMillion(0))),
        }),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(none, cluster("c"), vec![up.addr]).await;
    let started = Instant::now();
    assert_eq!(call(&client, addr, "GET", &[], "").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn retries_replay_the_body_until_success() {
    // 503, 503, then 200: two retries make it.
    let up = upstream(|n| (if n < 2 { 503 } else { 200 }, 0)).await;
    let fw = Forwarding {
        retry: Some(retry(2, "retriable-status-codes", &[503], None)),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    let (status, _, body) = call(&client, addr, "POST", &[], "payload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
    for (_, b) in up.seen.lock().iter() {
        assert_eq!(b.as_ref(), b"payload", "every attempt carries the body");
    }
}

#[tokio::test]
async fn retries_stop_at_the_limit_and_only_on_listed_conditions() {
    let up = upstream(|_| (503, 0)).await;
    let fw = Forwarding {
        retry: Some(retry(2, "gateway-error", &[], None)),
        ..Forwarding::default()
    };
    let (addr, metrics) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    assert_eq!(call(&client, addr, "GET", &[], "").await.0, 503);
    assert_eq!(up.hits.load(Ordering::SeqCst), 3, "first try + 2 retries");
    wait_for_metric(&metrics, "response_flags=\"URX\"").await;

    // 500 is not a gateway error: no retry.
    let up500 = upstream(|_| (500, 0)).await;
    let fw = Forwarding {
        retry: Some(retry(3, "gateway-error", &[], None)),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![up500.addr]).await;
    assert_eq!(call(&client, addr, "GET", &[], "").await.0, 500);
    assert_eq!(up500.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_host() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let up = upstream(|_| (200, 0)).await;
    let fw = Forwarding {
        retry: Some(retry(
            2,
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            &[503],
            None,
        )),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![dead, up.addr]).await;
    let client = Upstream::default();
    for _ in 0..4 {
        assert_eq!(call(&client, addr, "GET", &[], "").await.0, 200);
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn per_try_timeout_retries_and_route_timeout_bounds_all() {
    // First attempt hangs 2 s, the next answers at once.
    let up = upstream(|n| (200, if n == 0 { 2_000 } else { 0 })).await;
    let fw = Forwarding {
        retry: Some(retry(1, "5xx", &[], Some(Duration::from_millis(100)))),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    let started = Instant::now();
    assert_eq!(call(&client, addr, "GET", &[], "").await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(1_500));

    // Every attempt hangs: the route timeout (300 ms) answers 504 before the retries end.
    let slow = upstream(|_| (200, 2_000)).await;
    let fw = Forwarding {
        timeout: Some(Duration::from_millis(300)),
        retry: Some(retry(5, "5xx", &[], Some(Duration::from_millis(200)))),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![slow.addr]).await;
    let started = Instant::now();
    assert_eq!(call(&client, addr, "GET", &[], "").await.0, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1_500),
        "{took:?}"
    );
}

#[tokio::test]
async fn header_operations_on_request_and_response() {
    let up = upstream(|_| (200, 0)).await;
    let fw = Forwarding {
        headers: HeaderPolicy {
            request: HeaderOps {
                add: vec![
                    ("x-set".into(), "route".into(), false),
                    ("x-add".into(), "more".into(), true),
                ],
                remove: vec!["x-secret".into()],
            },
            response: HeaderOps {
                add: vec![("x-resp".into(), "yes".into(), false)],
                remove: vec!["server".into()],
            },
        },
        cluster_headers: [(
            "c".to_string(),
            HeaderPolicy {
                request: HeaderOps {
                    add: vec![("x-cluster".into(), "c".into(), false)],
                    remove: vec![],
                },
                response: HeaderOps::default(),
            },
        )]
        .into(),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    let (status, headers, _) = call(
        &client,
        addr,
        "GET",
        &[("x-set", "client"), ("x-add", "client"), ("x-secret", "s")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-resp"], "yes");
    assert!(headers.get("server").is_none());
    let seen = up.seen.lock();
    let h = &seen[0].0;
    assert_eq!(h["x-set"], "route");
    assert_eq!(h.get_all("x-add").iter().count(), 2);
    assert!(h.get("x-secret").is_none());
    assert_eq!(h["x-cluster"], "c");
}

#[tokio::test]
async fn circuit_breaker_overflow_answers_503_uo_at_once() {
    let up = upstream(|_| (200, 500)).await;
    let mut c = cluster("c");
    c.limits = Limits {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        ..Limits::default()
    };
    let (addr, metrics) = proxy(Forwarding::default(), c, vec![up.addr]).await;
    let client = Arc::new(Upstream::default());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let s = call(&client, addr, "GET", &[], "").await.0;
            (s, started.elapsed())
        }));
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let (s, took) = t.await.unwrap();
        match s {
            200 => ok += 1,
            503 => {
                overflow += 1;
                assert!(
                    took < Duration::from_millis(450),
                    "overflow is immediate: {took:?}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, overflow), (2, 2), "one active + one pending");
    wait_for_metric(&metrics, "response_flags=\"UO\"").await;
}

#[tokio::test]
async fn outlier_detection_ejects_the_failing_host() {
    let bad = upstream(|_| (500, 0)).await;
    let good = upstream(|_| (200, 0)).await;
    let mut c = cluster("c");
    c.outlier = Some(OutlierDetection {
        consecutive_5xx: Some(2),
        consecutive_gateway: None,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(60),
        max_ejection_time: Duration::from_secs(300),
        max_ejection_percent: 100,
    });
    let (addr, _) = proxy(Forwarding::default(), c, vec![bad.addr, good.addr]).await;
    let client = Upstream::default();
    for _ in 0..20 {
        call(&client, addr, "GET", &[], "").await;
    }
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        2,
        "ejected after 2 consecutive 5xx"
    );
    assert_eq!(good.hits.load(Ordering::SeqCst), 18);
}

#[tokio::test]
async fn least_request_prefers_the_idle_host() {
    let slow = upstream(|_| (200, 400)).await;
    let fast = upstream(|_| (200, 0)).await;
    let mut c = cluster("c");
    c.lb = LbPolicy::LeastRequest;
    let (addr, _) = proxy(Forwarding::default(), c, vec![slow.addr, fast.addr]).await;
    let client = Arc::new(Upstream::default());
    // Keep the slow host busy with several requests, then send sequential ones.
    let mut busy = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        busy.push(tokio::spawn(async move {
            call(&client, addr, "GET", &[], "").await;
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = slow.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        call(&client, addr, "GET", &[], "").await;
    }
    let during = slow.hits.load(Ordering::SeqCst) - before;
    assert!(during <= 1, "the busy host got {during} of 10 while loaded");
    for b in busy {
        b.await.unwrap();
    }
}

#[tokio::test]
async fn mirror_gets_a_copy_with_the_shadow_host() {
    let main = upstream(|_| (200, 0)).await;
    let shadow = upstream(|_| (500, 0)).await;
    let fw = Forwarding {
        mirrors: vec![crate::routing::Mirror {
            cluster: "m".into(),
            share: PerMillion::ALL,
        }],
        ..Forwarding::default()
    };
    let (addr, _) = proxy_with(
        fw,
        vec![
            (cluster("c"), vec![main.addr]),
            (cluster("m"), vec![shadow.addr]),
        ],
    )
    .await;
    let client = Upstream::default();
    let (status, _, _) = call(&client, addr, "POST", &[], "copy me").await;
    assert_eq!(status, 200, "the mirror's answer does not matter");
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "mirror never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = shadow.seen.lock();
    assert_eq!(seen[0].0["host"], "svc-shadow");
    assert_eq!(seen[0].1.as_ref(), b"copy me");
    assert_eq!(main.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cors_preflight_and_response_headers() {
    let up = upstream(|_| (200, 0)).await;
    let fw = Forwarding {
        cors: Some(crate::routing::Cors {
            allow_origins: vec![crate::routing::OriginMatch::Exact(
                "https://a.example".into(),
            )],
            allow_methods: "GET,POST".into(),
            allow_headers: String::new(),
            expose_headers: String::new(),
            max_age: "60".into(),
            allow_credentials: false,
        }),
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, cluster("c"), vec![up.addr]).await;
    let client = Upstream::default();
    let (status, h, _) = call(
        &client,
        addr,
        "OPTIONS",
        &[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "preflight answered by the proxy"
    );
    let (_, h, _) = call(&client, addr, "GET", &[("origin", "https://a.example")], "").await;
    assert_eq!(h["access-control-allow-origin"], "https://a.example");
    let (_, h, _) = call(&client, addr, "GET", &[("origin", "https://b.example")], "").await;
    assert!(h.get("access-control-allow-origin").is_none());
    assert_eq!(up.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn consistent_hash_sends_a_user_to_one_host() {
    let ups = [
        upstream(|_| (200, 0)).await,
        upstream(|_| (200, 0)).await,
        upstream(|_| (200, 0)).await,
    ];
    let mut c = cluster("c");
    c.lb = LbPolicy::RingHash;
    let fw = Forwarding {
        hash_policy: vec![crate::routing::HashPolicy::Header("x-user".into())],
        ..Forwarding::default()
    };
    let (addr, _) = proxy(fw, c, ups.iter().map(|u| u.addr).collect()).await;
    let client = Upstream::default();
    for _ in 0..6 {
        assert_eq!(
            call(&client, addr, "GET", &[("x-user", "jason")], "")
                .await
                .0,
            200
        );
    }
    let counts: Vec<usize> = ups.iter().map(|u| u.hits.load(Ordering::SeqCst)).collect();
    assert_eq!(counts.iter().filter(|n| **n == 6).count(), 1, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 6);
}
