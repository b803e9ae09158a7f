//! Bad input on the HTTP listeners: request smuggling, bad lengths, huge heads, slow clients,
//! upstream resets, arbitrary bytes (property test); and the circuit breaker holding while a
//! response body streams.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proxy::admin::ProxyMetrics;
use mesh_proxy::cluster::{Cluster, Endpoints, LbPolicy, Limits};
use mesh_proxy::http::{
    HttpLimits, ProxyContext, RoutedKind, Upstream, Workload, serve_routed_with,
};
use mesh_proxy::routing::{Forwarding, PathMatch, Route, RouteAction, RouteTable, VirtualHost};
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::{Config, Listener, NodeInfo, ProxyType, SharedConfig};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const LISTENER: &str = "virtualOutbound";

/// Paths the upstream was asked for, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A raw HTTP/1.1 upstream: reads request heads (and `content-length` bodies) and answers each
/// by its path: `/before` closes without answering, `/after` sends headers and part of the body
/// then closes, `/slow` sends headers then the body once `release` is notified, anything else
/// `200 ok`.
async fn upstream(seen: Seen, release: Arc<Notify>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen.clone();
            let release = release.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    seen.lock().push(path.clone());
                    match path.as_str() {
                        "/before" => return,
                        "/after" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                                .await;
                            return;
                        }
                        "/slow" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsl")
                                .await;
                            release.notified().await;
                            let _ = s.write_all(b"ow").await;
                        }
                        _ => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Proxy {
    addr: SocketAddr,
    seen: Seen,
    release: Arc<Notify>,
    metrics: mesh_runtime::Metrics,
}

/// A sidecar outbound listener routing host `svc` to the test upstream, within `limits`, the
/// cluster with circuit breaker `cluster_limits`.
async fn proxy(limits: HttpLimits, cluster_limits: Limits) -> Proxy {
    let seen: Seen = Arc::default();
    let release = Arc::new(Notify::new());
    let up = upstream(seen.clone(), release.clone()).await;
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
    config.routes.insert(
        "r".into(),
        Arc::new(RouteTable::new(
            "r".into(),
            vec![VirtualHost {
                name: "svc:80".into(),
                domains: vec!["svc".into()],
                routes: vec![Route {
                    name: "r".into(),
                    path: PathMatch::Prefix("/".into()),
                    headers: vec![],
                    action: RouteAction::Cluster("c".into()),
                    forwarding: Forwarding::default(),
                }],
            }],
        )),
    );
    config
        .endpoints
        .insert("c".into(), Arc::new(Endpoints::new(vec![up])));
    config.clusters.insert(
        "c".into(),
        Arc::new(Cluster {
            name: "c".into(),
            eds_name: "c".into(),
            connect_timeout: Duration::from_secs(1),
            tls: None,
            lb: LbPolicy::RoundRobin,
            limits: cluster_limits,
            max_requests_per_connection: None,
            outlier: None,
            service: None,
        }),
    );
    let metrics = mesh_runtime::Metrics::default();
    let node = NodeInfo {
        proxy_type: ProxyType::Sidecar,
        ip: "127.0.0.1".into(),
        pod: "test".into(),
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
        workload: Workload::of_node(&node),
        node,
        app_addr: "127.0.0.1:9".parse().unwrap(),
        access_log: None,
        tracer: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_routed_with(
        l,
        ctx,
        LISTENER.into(),
        RoutedKind::SidecarOutbound,
        limits,
        std::future::pending(),
    ));
    Proxy {
        addr,
        seen,
        release,
        metrics,
    }
}

fn small_timeout() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    }
}

/// Writes `bytes` and reads everything until the proxy closes (30 s at most: a guard against a
/// hang, not a measure; a debug build on a loaded CI machine has needed over 5 s).
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!(
            "connection not closed; got {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// Polls the metrics until a line has every needle (5 s).
async fn wait_for_line(metrics: &mesh_runtime::Metrics, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics.encode();
        if text.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(Instant::now() < deadline, "no {needles:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An ordinary request on a new connection: (status line, body).
async fn ordinary(proxy: SocketAddr, path: &str) -> String {
    exchange(
        proxy,
        format!("GET {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_nothing_is_smuggled() {
    let p = proxy(HttpLimits::default(), Limits::default()).await;
    // A good request, then one with both framings whose chunked body ends early so that,
    // read by Content-Length, a second request would appear.
    let attack = b"GET /first HTTP/1.1\r\nHost: svc\r\n\r\n\
POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n";
    let out = exchange(p.addr, attack).await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let second = &out[out.find("ok").unwrap() + 2..];
    assert!(second.starts_with("HTTP/1.1 400 Bad Request"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 2, "{out}");
    // The connection is closed (read_to_close returned) and the upstream saw the first only.
    assert_eq!(*p.seen.lock(), vec!["/first".to_string()]);
    // The other order of the headers too.
    let out = exchange(
        p.addr,
        b"POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(p.seen.lock().len(), 1);
    wait_for_line(
        &p.metrics,
        &[
            "proxy_downstream_rejected_total",
            "reason=\"cl_te_conflict\"",
            "} 2",
        ],
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_400() {
    let p = proxy(HttpLimits::default(), Limits::default()).await;
    let out = exchange(
        p.addr,
        b"POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(p.seen.lock().is_empty());
    // Equal duplicates are one length (RFC 9110), and pass.
    let out = exchange(
        p.addr,
        b"POST /b HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    wait_for_line(
        &p.metrics,
        &["proxy_downstream_rejected_total", "reason=\"bad_request\""],
    )
    .await;
}

#[tokio::test]
async fn request_heads_over_60_kib_are_431() {
    let p = proxy(HttpLimits::default(), Limits::default()).await;
    let big = "a".repeat(61 * 1024);
    let out = exchange(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: svc\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{out}"
    );
    assert!(p.seen.lock().is_empty());
    // Just under the limit is fine.
    let ok = "a".repeat(50 * 1024);
    let out = exchange(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: svc\r\nx-big: {ok}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    wait_for_line(
        &p.metrics,
        &[
            "proxy_downstream_rejected_total",
            "reason=\"header_too_large\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let p = proxy(small_timeout(), Limits::default()).await;
    // Slowloris: half a head, then a header line now and then, never the end.
    let mut slow = TcpStream::connect(p.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: svc\r\n")
        .await
        .unwrap();
    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    // Meanwhile an ordinary client is answered.
    let out = ordinary(p.addr, "/x").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let _ = slow.write_all(b"x-a: 1\r\n").await;
    let started = Instant::now();
    let rest = read_to_close(&mut slow).await;
    assert!(!rest.contains("200 OK"), "{rest}");
    read_to_close(&mut silent).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(p.seen.lock().iter().all(|path| path == "/x"));
    wait_for_line(
        &p.metrics,
        &[
            "proxy_downstream_rejected_total",
            "reason=\"header_timeout\"",
            "} 2",
        ],
    )
    .await;
    // And the listener still serves.
    assert!(ordinary(p.addr, "/y").await.starts_with("HTTP/1.1 200"));
}

/// The header read timeout is about unfinished heads: an idle keep-alive connection between
/// requests is not cut by it.
#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout() {
    let p = proxy(small_timeout(), Limits::default()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let answer = async |s: &mut TcpStream| {
        s.write_all(b"GET /k HTTP/1.1\r\nHost: svc\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let mut chunk = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header read timeout (the behaviour under test is the idle time).
    tokio::time::sleep(small_timeout().header_read_timeout * 2).await;
    assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn upstream_reset_before_headers_is_503_after_headers_an_aborted_response() {
    let p = proxy(HttpLimits::default(), Limits::default()).await;
    let out = ordinary(p.addr, "/before").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    wait_for_line(
        &p.metrics,
        &["proxy_upstream_errors_total", "reason=\"request\""],
    )
    .await;

    // After the headers: the client sees 200 and then the connection ends short of the
    // promised 100 bytes.
    let out = ordinary(p.addr, "/after").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.len() < 100, "{body:?}");
    wait_for_line(
        &p.metrics,
        &[
            "proxy_upstream_errors_total",
            "reason=\"reset_after_headers\"",
        ],
    )
    .await;
}

/// A request counts against `max_requests` until its response body ends, not only until the
/// response headers.
#[tokio::test]
async fn circuit_breaker_holds_while_the_body_streams() {
    let p = proxy(
        HttpLimits::default(),
        Limits {
            max_requests: Some(1),
            ..Limits::default()
        },
    )
    .await;
    let mut first = TcpStream::connect(p.addr).await.unwrap();
    first
        .write_all(b"GET /slow HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The headers and the first half of the body arrive...
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).ends_with("sl") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    // ...and while the rest is pending the request still holds the only slot.
    let out = ordinary(p.addr, "/x").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("overflow"), "{out}");
    p.release.notify_one();
    let rest = read_to_close(&mut first).await;
    assert!(rest.ends_with("ow"), "{rest:?}");
    // Released at the end of the body.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ordinary(p.addr, "/x").await;
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released: {out}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counts panics on every thread of this test binary (a panic in a connection task would
/// otherwise only end that task).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Requests built from HTTP's pieces, well and badly formed.
fn http_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("CONNECT".to_string()),
        Just("PRI".to_string()),
        "[A-Za-z]{0,8}",
    ];
    let version = prop_oneof![
        Just("HTTP/1.1"),
        Just("HTTP/1.0"),
        Just("HTTP/2.0"),
        Just("HTTP/9.9"),
        Just(""),
    ];
    let name = prop_oneof![
        Just("Host".to_string()),
        Just("Content-Length".to_string()),
        Just("Transfer-Encoding".to_string()),
        Just("Connection".to_string()),
        Just("Expect".to_string()),
        Just("Upgrade".to_string()),
        "[ -~]{0,12}",
    ];
    let value = prop_oneof![
        Just("svc".to_string()),
        Just("chunked".to_string()),
        Just("close".to_string()),
        Just("100-continue".to_string()),
        "[0-9]{1,4}",
        "-?[0-9]{1,25}",
        "[ -~]{0,20}",
    ];
    let eol = prop_oneof![Just("\r\n"), Just("\n"), Just("\r")];
    (
        method,
        "[ -~]{0,30}",
        version,
        proptest::collection::vec((name, value), 0..6),
        eol,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(m, path, v, headers, eol, body)| {
            let mut out = format!("{m} /{path} {v}{eol}").into_bytes();
            for (n, v) in headers {
                out.extend_from_slice(format!("{n}: {v}{eol}").as_bytes());
            }
            out.extend_from_slice(eol.as_bytes());
            out.extend_from_slice(&body);
            out
        })
}

/// Whatever bytes a client sends, the listener answers or closes the connection, in bounded
/// time, and never panics; and it keeps serving.
#[test]
fn arbitrary_request_bytes_get_an_answer_or_a_close() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        default_hook(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let p = rt.block_on(proxy(limits, Limits::default()));
    let addr = p.addr;
    let inputs = prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), http_like(),];
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 192,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner
        .run(&inputs, |bytes| {
            let out = rt.block_on(async {
                let mut s = TcpStream::connect(addr).await.unwrap();
                // The proxy may close before reading everything; that is an answer too.
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
                let mut out = Vec::new();
                let read = s.read_to_end(&mut out);
                tokio::time::timeout(Duration::from_secs(5), read)
                    .await
                    .map(|_| out)
            });
            let Ok(out) = out else {
                return Err(TestCaseError::fail("no answer and no close within 5 s"));
            };
            let h2 = bytes.starts_with(b"PRI * HTTP/2.0");
            prop_assert!(
                out.is_empty() || out.starts_with(b"HTTP/1.") || h2,
                "answer {:?}",
                String::from_utf8_lossy(&out)
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
    let out = rt.block_on(ordinary(addr, "/still"));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
