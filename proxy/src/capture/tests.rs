//! The capture listeners on loopback: the original destination is fed by a table (no
//! iptables in tests), keyed by the client's address.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::*;
use crate::cluster::{Cluster, Endpoints, LbPolicy, Limits};
use crate::http::HttpLimits;
use crate::routing::{Forwarding, PathMatch, Route, RouteAction, RouteTable, VirtualHost};
use crate::tcp::TcpProxy;
use crate::tcp::testkit::{self, Ca, wait_for_line};
use crate::xds::{Config, Listener};

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const DB: &str = "outbound|3306||db.default.svc.cluster.local";

/// Original destinations by client address.
#[derive(Default)]
struct Table(Mutex<HashMap<SocketAddr, SocketAddr>>);

impl OriginalDst for Table {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let peer = stream.peer_addr()?;
        self.0
            .lock()
            .get(&peer)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not redirected"))
    }
}

/// Connects to `proxy` as if redirected there on the way to `original` (`None`: not
/// redirected).
async fn connect_as(table: &Table, proxy: SocketAddr, original: Option<SocketAddr>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let me = socket.local_addr().unwrap();
    if let Some(o) = original {
        table.0.lock().insert(me, o);
    }
    socket.connect(proxy).await.unwrap()
}

/// An HTTP server answering `<name> <host>`.
async fn http_upstream(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = Router::new().fallback(move |headers: HeaderMap| async move {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        format!("{name} {host}")
    });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// A TCP server that first sends `greeting` (may be empty), then echoes.
async fn tcp_server(greeting: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if !greeting.is_empty() && s.write_all(greeting).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        eds_name: name.into(),
        connect_timeout: Duration::from_secs(2),
        tls: None,
        lb: LbPolicy::RoundRobin,
        limits: Limits::default(),
        max_requests_per_connection: None,
        outlier: None,
        service: None,
    }
}

fn listener(name: &str, route: Option<&str>, tcp: Option<&str>) -> Listener {
    Listener {
        name: name.into(),
        address: None,
        route_config_name: route.map(str::to_string),
        inbound: None,
        tcp: tcp.map(|c| Arc::new(TcpProxy::single(vec![(c.to_string(), 1)]))),
        mixer: None,
    }
}

/// Reviews (HTTP, port 9080) and db (TCP, port 3306) in the registry; `catch_all` is the
/// cluster of `virtualOutbound`'s catch-all `tcp_proxy`, when Pilot sends one.
fn config(reviews: SocketAddr, db: SocketAddr, catch_all: Option<&str>) -> Config {
    let mut c = Config::default();
    for (name, addr) in [(REVIEWS, reviews), (DB, db)] {
        c.endpoints
            .insert(name.into(), Arc::new(Endpoints::new(vec![addr])));
        c.clusters.insert(name.into(), Arc::new(cluster(name)));
    }
    let fqdn = "reviews.default.svc.cluster.local";
    c.routes.insert(
        "http_proxy".into(),
        Arc::new(RouteTable::new(
            "http_proxy".into(),
            vec![VirtualHost {
                name: format!("{fqdn}:9080"),
                domains: vec![
                    fqdn.into(),
                    format!("{fqdn}:9080"),
                    "reviews".into(),
                    "reviews:9080".into(),
                ],
                routes: vec![Route {
                    name: "default".into(),
                    path: PathMatch::Prefix("/".into()),
                    headers: vec![],
                    action: RouteAction::Cluster(REVIEWS.into()),
                    forwarding: Forwarding::default(),
                }],
            }],
        )),
    );
    for l in [
        listener("virtualOutbound", Some("http_proxy"), catch_all),
        listener("0.0.0.0_3306", None, Some(DB)),
    ] {
        c.listeners.insert(l.name.clone(), l);
    }
    c
}

struct Capture {
    addr: SocketAddr,
    table: Arc<Table>,
    metrics: mesh_runtime::Metrics,
}

async fn capture(config: Config, policy: OutboundPolicy) -> Capture {
    let ca = Ca::new();
    let metrics = mesh_runtime::Metrics::default();
    let ctx = testkit::context(
        config,
        ca.identity("client"),
        testkit::node("client-v1", "client", "client"),
        "127.0.0.1:9".parse().unwrap(),
        &metrics,
    );
    let table = Arc::new(Table::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_capture_outbound(
        l,
        ctx,
        CaptureConfig {
            original_dst: table.clone(),
            policy,
            sniff_wait: Duration::from_millis(100),
            limits: HttpLimits::default(),
        },
        std::future::pending(),
    ));
    Capture {
        addr,
        table,
        metrics,
    }
}

/// One HTTP/1.1 request with `host` on `s`; the response's status and body.
async fn get(s: TcpStream, host: &str) -> (u16, String) {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads until `want` bytes arrived or the peer closed (5 s at most).
async fn read_n(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("timed out with {out:?}"),
        }
    }
    out
}

/// Whether the proxy closes `s` (end of stream or reset) within 5 s.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn fake(ip_last: u8, port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from(([10, 0, 0, ip_last], port)))
}

#[tokio::test]
async fn declared_ports_go_to_their_routes_and_tcp_proxy() {
    let reviews = http_upstream("reviews").await;
    let db = tcp_server(b"").await;
    let cap = capture(config(reviews, db, None), OutboundPolicy::RegistryOnly).await;

    // An HTTP port: routed by Host (the dialled port added), whatever the IP dialled.
    let s = connect_as(&cap.table, cap.addr, fake(1, 9080)).await;
    let (status, body) = get(s, "reviews").await;
    assert_eq!((status, body.as_str()), (200, "reviews reviews:9080"));

    // A TCP port: its tcp_proxy's cluster, bytes both ways.
    let mut s = connect_as(&cap.table, cap.addr, fake(2, 3306)).await;
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"ping");

    wait_for_line(
        &cap.metrics,
        &[
            "proxy_capture_connections_total",
            "protocol=\"declared\"",
            "target=\"tcp_proxy\"",
        ],
    )
    .await;
    wait_for_line(
        &cap.metrics,
        &[
            "istio_requests_total",
            "destination_service=\"reviews.default.svc.cluster.local\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn allow_any_passes_unknown_destinations_through() {
    let reviews = http_upstream("reviews").await;
    let outside = http_upstream("outside").await;
    let mysql = tcp_server(b"greeting from server\n").await;
    let echo = tcp_server(b"").await;
    let cap = capture(config(reviews, echo, None), OutboundPolicy::AllowAny).await;

    // Server-first (MySQL style): the client sends nothing; after the bounded sniff wait the
    // connection is spliced and the greeting arrives.
    let started = Instant::now();
    let mut s = connect_as(&cap.table, cap.addr, Some(mysql)).await;
    let greeting = read_n(&mut s, 21).await;
    assert_eq!(greeting, b"greeting from server\n");
    assert!(started.elapsed() < Duration::from_secs(3));
    s.write_all(b"after").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"after");

    // HTTP to a host outside the registry, on an undeclared port: sniffed, forwarded as is.
    let s = connect_as(&cap.table, cap.addr, Some(outside)).await;
    let (status, body) = get(s, "example.com").await;
    assert_eq!((status, body.as_str()), (200, "outside example.com"));

    // A TLS ClientHello to an undeclared port: spliced, the sniffed bytes replayed first.
    let mut s = connect_as(&cap.table, cap.addr, Some(echo)).await;
    let hello = b"\x16\x03\x01\x00\x05hello";
    s.write_all(hello).await.unwrap();
    assert_eq!(read_n(&mut s, hello.len()).await, hello);

    for (protocol, target) in [
        ("tcp", "passthrough"),
        ("http1", "http"),
        ("tls", "passthrough"),
    ] {
        wait_for_line(
            &cap.metrics,
            &[
                "proxy_capture_connections_total",
                &format!("protocol=\"{protocol}\""),
                &format!("target=\"{target}\""),
            ],
        )
        .await;
    }
    wait_for_line(
        &cap.metrics,
        &[
            "istio_tcp_connections_opened_total",
            "destination_service_name=\"PassthroughCluster\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn registry_only_refuses_unknown_destinations() {
    let reviews = http_upstream("reviews").await;
    let outside = http_upstream("outside").await;
    let mysql = tcp_server(b"greeting\n").await;
    let cap = capture(config(reviews, mysql, None), OutboundPolicy::RegistryOnly).await;

    let mut s = connect_as(&cap.table, cap.addr, Some(mysql)).await;
    assert!(closed(&mut s).await, "unknown TCP destination refused");

    let s = connect_as(&cap.table, cap.addr, Some(outside)).await;
    let (status, body) = get(s, "example.com").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("BlackHoleCluster"), "{body}");

    // Registered hosts still work on an undeclared port: the route decides.
    let s = connect_as(&cap.table, cap.addr, Some(outside)).await;
    let (status, body) = get(s, "reviews:9080").await;
    assert_eq!((status, body.as_str()), (200, "reviews reviews:9080"));
    wait_for_line(
        &cap.metrics,
        &[
            "proxy_capture_connections_total",
            "protocol=\"tcp\"",
            "target=\"blackhole\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn pilot_catch_all_overrides_the_flag() {
    let reviews = http_upstream("reviews").await;
    let mysql = tcp_server(b"greeting\n").await;
    let cap = capture(
        config(reviews, mysql, Some(BLACKHOLE_CLUSTER)),
        OutboundPolicy::AllowAny,
    )
    .await;
    let mut s = connect_as(&cap.table, cap.addr, Some(mysql)).await;
    assert!(closed(&mut s).await, "REGISTRY_ONLY from Pilot");
    let cap = capture(
        config(reviews, mysql, Some(PASSTHROUGH_CLUSTER)),
        OutboundPolicy::RegistryOnly,
    )
    .await;
    let mut s = connect_as(&cap.table, cap.addr, Some(mysql)).await;
    assert_eq!(
        read_n(&mut s, 9).await,
        b"greeting\n",
        "ALLOW_ANY from Pilot"
    );
}

#[tokio::test]
async fn connections_without_an_original_destination_or_to_itself_are_closed() {
    let reviews = http_upstream("reviews").await;
    let cap = capture(config(reviews, reviews, None), OutboundPolicy::AllowAny).await;
    let mut s = connect_as(&cap.table, cap.addr, None).await;
    assert!(closed(&mut s).await);
    // Redirected to the capture port itself: would loop forever.
    let mut s = connect_as(&cap.table, cap.addr, Some(cap.addr)).await;
    assert!(closed(&mut s).await);
    wait_for_line(
        &cap.metrics,
        &[
            "proxy_capture_connections_total",
            "target=\"no_original_dst\"",
        ],
    )
    .await;
    wait_for_line(
        &cap.metrics,
        &["proxy_capture_connections_total", "target=\"loop\""],
    )
    .await;
}

/// Inbound capture: a sidecar's mTLS request redirected to the capture port goes to the
/// application on the port it was addressed to (here `--app-addr` is a dead port, so only the
/// original destination can reach the application).
#[tokio::test]
async fn inbound_capture_forwards_to_the_original_port() {
    let app = http_upstream("app").await;
    let ca = Ca::new();
    let server_metrics = mesh_runtime::Metrics::default();
    let server = testkit::context(
        Config::default(),
        ca.identity("echo"),
        testkit::node("echo-v1", "echo", "echo"),
        "127.0.0.1:9".parse().unwrap(),
        &server_metrics,
    );
    let table = Arc::new(Table::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound = l.local_addr().unwrap();
    tokio::spawn(serve_capture_inbound(
        l,
        server,
        CaptureConfig {
            original_dst: table.clone(),
            policy: OutboundPolicy::AllowAny,
            sniff_wait: Duration::from_millis(100),
            limits: HttpLimits::default(),
        },
        std::future::pending(),
    ));
    // The calling sidecar dials the inbound capture port over mTLS (its SAN is `echo`).
    let client_id = ca.identity("client");
    let tls = client_id.client_config(&[testkit::spiffe("echo")]);
    let cfg = crate::http::alpn::client_config(&tls, crate::http::alpn::HopProtocol::Http1);
    let s = connect_as(
        &table,
        inbound,
        Some(SocketAddr::new([10, 1, 1, 1].into(), app.port())),
    )
    .await;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::IpAddress(inbound.ip().into()),
            s,
        )
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "echo.default.svc.cluster.local")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.starts_with(b"app "), "{body:?}");
    wait_for_line(
        &server_metrics,
        &[
            "istio_requests_total",
            "reporter=\"destination\"",
            "response_code=\"200\"",
        ],
    )
    .await;
}

/// A config whose `virtualInbound` accepts mutual TLS and plaintext (PERMISSIVE), or plaintext
/// only (DISABLE), as Pilot's filter chains say.
fn inbound_config(transports: &[&str]) -> Config {
    use mesh_proto::envoy::envoy::config::listener::v3::{
        FilterChain, FilterChainMatch, Listener as EnvoyListener,
    };
    let l = EnvoyListener {
        name: crate::authz::INBOUND_LISTENER.into(),
        filter_chains: transports
            .iter()
            .map(|t| FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    transport_protocol: t.to_string(),
                    ..FilterChainMatch::default()
                }),
                ..FilterChain::default()
            })
            .collect(),
        ..EnvoyListener::default()
    };
    let mut c = Config::default();
    c.listeners.insert(
        crate::authz::INBOUND_LISTENER.into(),
        Listener {
            name: crate::authz::INBOUND_LISTENER.into(),
            address: None,
            route_config_name: None,
            inbound: Some(Arc::new(crate::authz::InboundPolicy::decode(&l).unwrap())),
            tcp: None,
            mixer: None,
        },
    );
    c
}

/// An inbound capture listener for `config`; its address, its table, its metrics.
async fn inbound_capture(config: Config) -> Capture {
    inbound_capture_with(config, &Ca::new()).await
}

/// [`inbound_capture`] with the workload certificate from `ca`.
async fn inbound_capture_with(config: Config, ca: &Ca) -> Capture {
    let metrics = mesh_runtime::Metrics::default();
    let ctx = testkit::context(
        config,
        ca.identity("echo"),
        testkit::node("echo-v1", "echo", "echo"),
        "127.0.0.1:9".parse().unwrap(),
        &metrics,
    );
    let table = Arc::new(Table::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_capture_inbound(
        l,
        ctx,
        CaptureConfig {
            original_dst: table.clone(),
            policy: OutboundPolicy::AllowAny,
            sniff_wait: Duration::from_millis(100),
            limits: HttpLimits::default(),
        },
        std::future::pending(),
    ));
    Capture {
        addr,
        table,
        metrics,
    }
}

/// Inbound capture of plaintext that is not HTTP (PERMISSIVE): a client-first binary protocol
/// and a server-first one (the client waits for the greeting) reach the application as TCP,
/// and plaintext HTTP still goes through the inbound HTTP server. Before, every plaintext
/// connection was parsed as HTTP: the binary one got `400 Bad Request`, the silent one hung.
#[tokio::test]
async fn inbound_capture_splices_plaintext_tcp_to_the_application() {
    let echo = tcp_server(b"").await;
    let greeter = tcp_server(b"220 ready\r\n").await;
    let web = http_upstream("app").await;
    let cap = inbound_capture(inbound_config(&["tls", "raw_buffer"])).await;

    let mut s = connect_as(&cap.table, cap.addr, fake(7, echo.port())).await;
    s.write_all(b"\x00\x01binary").await.unwrap();
    assert_eq!(read_n(&mut s, 8).await, b"\x00\x01binary");

    let mut s = connect_as(&cap.table, cap.addr, fake(7, greeter.port())).await;
    assert_eq!(read_n(&mut s, 11).await, b"220 ready\r\n");

    let s = connect_as(&cap.table, cap.addr, fake(7, web.port())).await;
    let (status, body) = get(s, "echo.default.svc.cluster.local").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("app "), "{body}");

    wait_for_line(
        &cap.metrics,
        &[
            "proxy_capture_connections_total",
            "direction=\"inbound\"",
            "protocol=\"tcp\"",
            "target=\"inbound\"",
            "} 2",
        ],
    )
    .await;
    wait_for_line(
        &cap.metrics,
        &[
            "istio_tcp_connections_opened_total",
            "reporter=\"destination\"",
            "connection_security_policy=\"none\"",
        ],
    )
    .await;
}

/// STRICT ports take no plaintext at all, TCP or not; DISABLE ports take a TLS handshake for
/// the application's own TLS (spliced), PERMISSIVE ones for mutual TLS (the inbound server).
#[tokio::test]
async fn inbound_capture_modes_decide_what_plaintext_gets() {
    let echo = tcp_server(b"").await;
    let strict = inbound_capture(Config::default()).await;
    let mut s = connect_as(&strict.table, strict.addr, fake(7, echo.port())).await;
    s.write_all(b"\x00\x01binary").await.unwrap();
    // The TLS server may answer a fatal alert; it never reaches the application.
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "STRICT: plaintext connection not closed");
    assert!(
        !got.windows(6).any(|w| w == b"binary"),
        "STRICT: plaintext reached the application: {got:?}"
    );

    let disable = inbound_capture(inbound_config(&["raw_buffer"])).await;
    let mut s = connect_as(&disable.table, disable.addr, fake(7, echo.port())).await;
    let hello = b"\x16\x03\x01\x00\x05hello";
    s.write_all(hello).await.unwrap();
    assert_eq!(read_n(&mut s, hello.len()).await, hello);

    use super::listener::inbound_is_served;
    use crate::authz::MtlsMode::{Disable, Permissive, Strict};
    assert!(inbound_is_served(Permissive, Sniffed::Tls));
    assert!(!inbound_is_served(Disable, Sniffed::Tls));
    assert!(inbound_is_served(Disable, Sniffed::Http1));
    assert!(!inbound_is_served(Permissive, Sniffed::Tcp));
    assert!(inbound_is_served(Strict, Sniffed::Tcp));
}

/// The first flight of an application's own TLS client offering `alpn`.
fn app_client_hello(alpn: Vec<Vec<u8>>) -> Vec<u8> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    cfg.alpn_protocols = alpn;
    let mut conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        rustls::pki_types::ServerName::try_from("app.example.com").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// The local-mode inbound listener (`--inbound-addr`, no capture) tells them apart the same
/// way on a PERMISSIVE port: the application's own TLS is spliced to it untouched.
#[tokio::test]
async fn local_mode_inbound_passes_application_tls_through() {
    let echo = tcp_server(b"").await;
    let metrics = mesh_runtime::Metrics::default();
    let ctx = testkit::context(
        inbound_config(&["tls", "raw_buffer"]),
        Ca::new().identity("echo"),
        testkit::node("echo-v1", "echo", "echo"),
        echo,
        &metrics,
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(crate::http::serve_inbound(l, ctx, std::future::pending()));
    let hello = app_client_hello(vec![b"h2".to_vec()]);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    assert_eq!(read_n(&mut s, hello.len()).await, hello);
}

/// PERMISSIVE: a TLS ClientHello offering a mesh ALPN is a sidecar's mTLS (the inbound server
/// terminates it); TLS without one is the application's own TLS, spliced to it untouched.
/// STRICT keeps terminating every connection.
#[tokio::test]
async fn permissive_tells_mesh_mtls_from_application_tls_by_alpn() {
    let echo = tcp_server(b"").await;
    let web = http_upstream("app").await;
    let cap = inbound_capture(inbound_config(&["tls", "raw_buffer"])).await;
    // The application's TLS client (ALPN h2/http/1.1, then none): its ClientHello reaches the
    // application byte for byte (the echo sends it back).
    for alpn in [vec![b"h2".to_vec(), b"http/1.1".to_vec()], vec![]] {
        let hello = app_client_hello(alpn);
        let mut s = connect_as(&cap.table, cap.addr, fake(7, echo.port())).await;
        s.write_all(&hello).await.unwrap();
        assert_eq!(read_n(&mut s, hello.len()).await, hello);
    }
    wait_for_line(
        &cap.metrics,
        &[
            "proxy_capture_connections_total",
            "protocol=\"tls\"",
            "target=\"app_tls\"",
            "} 2",
        ],
    )
    .await;
    // A sidecar's mTLS (ALPN `istio`, `http/1.1`): terminated, the request reaches the app.
    let ca = Ca::new();
    let cap = inbound_capture_with(inbound_config(&["tls", "raw_buffer"]), &ca).await;
    let client_id = ca.identity("client");
    let tls = client_id.client_config(&[testkit::spiffe("echo")]);
    let cfg = crate::http::alpn::client_config(&tls, crate::http::alpn::HopProtocol::Http1);
    let s = connect_as(&cap.table, cap.addr, fake(7, web.port())).await;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::IpAddress(cap.addr.ip().into()),
            s,
        )
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "echo.default.svc.cluster.local")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    wait_for_line(
        &cap.metrics,
        &[
            "proxy_capture_connections_total",
            "protocol=\"tls\"",
            "target=\"inbound\"",
            "} 1",
        ],
    )
    .await;
}
