//! TCP through the mesh: client → `tcp_proxy` listener → mTLS (`istio-tcp`) → inbound →
//! application, with Istio's TCP metrics on both sidecars.

use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as EnvoyTcpProxy, tcp_proxy,
};
use mesh_proto::envoy::google::protobuf::Any;
use prost::{Message, Name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::testkit::{SERVICE, mesh, spiffe, wait_for_line};
use super::{TcpProxy, decode_tcp_proxy};

/// An application that echoes every byte back until the client closes.
async fn echo_app() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_bytes_cross_the_mesh_and_are_counted_on_both_sides() {
    let app = echo_app().await;
    let m = mesh(app).await;
    let mut c = TcpStream::connect(m.tcp).await.unwrap();
    c.write_all(b"hello mesh").await.unwrap();
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello mesh");
    c.write_all(b"!!").await.unwrap();
    let mut more = [0u8; 2];
    c.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"!!");
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let svc = format!("destination_service=\"{SERVICE}\"");
    let server_sa = format!("destination_principal=\"{}\"", spiffe("echo"));
    let client_sa = format!("source_principal=\"{}\"", spiffe("client"));
    let common = ["request_protocol=\"tcp\"", svc.as_str()];
    // Source side.
    for (metric, value) in [
        ("istio_tcp_connections_opened_total{", " 1"),
        ("istio_tcp_connections_closed_total{", " 1"),
        ("istio_tcp_received_bytes_total{", " 12"),
        ("istio_tcp_sent_bytes_total{", " 12"),
    ] {
        let mut needles = vec![metric, "reporter=\"source\"", server_sa.as_str(), value];
        needles.extend(common);
        wait_for_line(&m.client_metrics, &needles).await;
    }
    // Destination side: the service from the SNI, the peer from its certificate.
    for (metric, value) in [
        ("istio_tcp_connections_opened_total{", " 1"),
        ("istio_tcp_connections_closed_total{", " 1"),
        ("istio_tcp_received_bytes_total{", " 12"),
        ("istio_tcp_sent_bytes_total{", " 12"),
    ] {
        let mut needles = vec![
            metric,
            "reporter=\"destination\"",
            client_sa.as_str(),
            "connection_security_policy=\"mutual_tls\"",
            "destination_workload=\"echo-v1\"",
            value,
        ];
        needles.extend(common);
        wait_for_line(&m.server_metrics, &needles).await;
    }
}

#[tokio::test]
async fn tcp_to_an_unreachable_application_is_closed_and_counted_uf() {
    // A port nobody listens on.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let m = mesh(gone).await;
    let mut c = TcpStream::connect(m.tcp).await.unwrap();
    let _ = c.write_all(b"x").await;
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    wait_for_line(
        &m.server_metrics,
        &[
            "istio_tcp_connections_closed_total{",
            "reporter=\"destination\"",
            "response_flags=\"UF\"",
        ],
    )
    .await;
}

fn packed(tp: &EnvoyTcpProxy) -> Any {
    Any {
        type_url: EnvoyTcpProxy::type_url(),
        value: tp.encode_to_vec(),
    }
}

#[test]
fn decodes_single_and_weighted_tcp_proxies() {
    let single = EnvoyTcpProxy {
        stat_prefix: "x".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
        ..Default::default()
    };
    assert_eq!(
        decode_tcp_proxy(&packed(&single)).unwrap(),
        Some(TcpProxy::single(vec![("c".into(), 1)]))
    );
    let weighted = EnvoyTcpProxy {
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
            tcp_proxy::WeightedCluster {
                clusters: vec![
                    tcp_proxy::weighted_cluster::ClusterWeight {
                        name: "a".into(),
                        weight: 80,
                        ..Default::default()
                    },
                    tcp_proxy::weighted_cluster::ClusterWeight {
                        name: "b".into(),
                        weight: 0,
                        ..Default::default()
                    },
                ],
            },
        )),
        ..Default::default()
    };
    assert_eq!(
        decode_tcp_proxy(&packed(&weighted)).unwrap(),
        Some(TcpProxy::single(vec![("a".into(), 80)]))
    );
    assert!(decode_tcp_proxy(&packed(&EnvoyTcpProxy::default())).is_err());
    let other = Any {
        type_url: "type.googleapis.com/other".into(),
        value: vec![],
    };
    assert_eq!(decode_tcp_proxy(&other).unwrap(), None);
}

#[tokio::test]
async fn tls_passthrough_picks_the_chain_by_sni_and_forwards_the_hello() {
    use super::{TcpChain, TcpProxy};
    let app = echo_app().await;
    let tcp = TcpProxy {
        chains: vec![TcpChain {
            server_names: vec!["*.example.com".into()],
            clusters: vec![(super::testkit::cluster_name(), 1)],
        }],
    };
    let m = super::testkit::mesh_with(app, tcp).await;
    // The ClientHello (read to find the name) reaches the application first, unchanged.
    let hello = super::sni::tests::client_hello("db.example.com");
    let mut c = TcpStream::connect(m.tcp).await.unwrap();
    c.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
    c.write_all(b"after").await.unwrap();
    let mut more = [0u8; 5];
    c.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"after");
    drop(c);
    wait_for_line(
        &m.server_metrics,
        &[
            "istio_tcp_received_bytes_total{",
            "reporter=\"destination\"",
            &format!(" {}", hello.len() + 5),
        ],
    )
    .await;

    // A name no chain matches (and no default chain): closed without a byte.
    let mut c = TcpStream::connect(m.tcp).await.unwrap();
    c.write_all(&super::sni::tests::client_hello("db.other.org"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_tcp_connection_is_access_logged_when_its_listener_has_a_logger() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::http::{AccessLog, AccessLogFollower, LogFormat};
    use crate::xds::access_log::{AccessLogSpec, ListenerLogs};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tcp.log");
    let log = AccessLog::new(
        false,
        prometheus_client::metrics::counter::Counter::default(),
    );
    let mut follower = AccessLogFollower::new(log.clone(), 16);
    follower
        .apply(&BTreeMap::from([(
            "0.0.0.0_9000".to_string(),
            Arc::new(ListenerLogs {
                http: None,
                tcp: Some(AccessLogSpec {
                    path: path.display().to_string(),
                    format: LogFormat::default_json(),
                }),
            }),
        )]))
        .await;
    let app = echo_app().await;
    let tcp = TcpProxy::single(vec![(super::testkit::cluster_name(), 1)]);
    let m = super::testkit::mesh_logged(app, tcp, Some(log)).await;

    let mut c = TcpStream::connect(m.tcp).await.unwrap();
    c.write_all(b"0123456789").await.unwrap();
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).await.unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    // No request on a TCP connection: Envoy logs its method, path and protocol as absent.
    assert_eq!(v["method"], serde_json::Value::Null, "{line}");
    assert_eq!(v["path"], serde_json::Value::Null, "{line}");
    assert_eq!(v["protocol"], serde_json::Value::Null, "{line}");
    assert_eq!(v["response_code"], 0, "{line}");
    assert_eq!(v["response_flags"], "-", "{line}");
    assert_eq!(
        (v["bytes_received"].as_u64(), v["bytes_sent"].as_u64()),
        (Some(10), Some(10)),
        "{line}"
    );
    assert_eq!(
        v["upstream_cluster"],
        super::testkit::cluster_name(),
        "{line}"
    );
    assert_eq!(v["upstream_peer_uri_san"], spiffe("echo"), "{line}");
    assert!(
        v["upstream_host"]
            .as_str()
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{line}"
    );
}
