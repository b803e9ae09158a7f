//! `protocol: TLS` servers with `tls.mode` SIMPLE or MUTUAL: Pilot's listener, decoded by the
//! proxy, terminates TLS on the gateway listener and splices the plaintext to the
//! `tcp_proxy` cluster (a plain TCP echo server here).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::cluster::{Cluster, Endpoints, LbPolicy, Limits};
use crate::http::{RoutedKind, serve_routed};
use crate::tcp::testkit::{Ca, context, node, wait_for_line};

const CLUSTER: &str = "outbound|5432||db.default.svc.cluster.local";

/// Pilot's router listeners for a SIMPLE server (`db.example.com`) and a MUTUAL one
/// (`secure-db.example.com`) on port 9443, both routed by a VirtualService `tcp` rule to `db`.
fn pilot_tls_listeners(dir: &Path) -> Vec<EnvoyListener> {
    let objs: Vec<ConfigObject> = serde_json::from_value(json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
         "spec": {"ports": [{"name": "tcp", "port": 5432}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             {"port": {"number": 9443, "name": "tls", "protocol": "TLS"},
              "hosts": ["db.example.com"],
              "tls": {"mode": "SIMPLE", "serverCertificate": p(dir, "simple/tls.crt"),
                      "privateKey": p(dir, "simple/tls.key")}},
             {"port": {"number": 9443, "name": "tls-m", "protocol": "TLS"},
              "hosts": ["secure-db.example.com"],
              "tls": {"mode": "MUTUAL", "serverCertificate": p(dir, "mutual/tls.crt"),
                      "privateKey": p(dir, "mutual/tls.key"),
                      "caCertificates": p(dir, "mutual/ca.crt")}}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "db", "namespace": "default"},
         "spec": {"hosts": ["db.example.com", "secure-db.example.com"], "gateways": ["gw"],
                  "tcp": [{"match": [{"port": 9443}],
                           "route": [{"destination": {"host": "db"}}]}]}}
    ]))
    .unwrap();
    let reg = pilot::model::Registry::from_snapshot(
        &pilot::galley_client::Snapshot::from_objects(objs),
        "cluster.local",
    );
    let mut proxy = pilot::translate::ProxyInfo::from_id(
        "router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local",
    )
    .unwrap();
    proxy.labels.insert("istio".into(), "ingressgateway".into());
    pilot::translate::translate(
        &reg,
        &proxy,
        &pilot::translate::Options {
            trust_domain: "cluster.local".into(),
        },
    )
    .listeners
}

/// A TCP server that echoes every byte back.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Connects over TLS naming `sni`, writes `msg`, reads as many bytes back.
async fn round_trip(
    gw: SocketAddr,
    client: rustls::ClientConfig,
    sni: &str,
    msg: &[u8],
) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(gw).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(msg).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

#[tokio::test]
async fn tls_servers_terminate_and_splice_plaintext_to_the_tcp_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("gateway tcp ca");
    ca.write(&dir.path().join("simple"), &["db.example.com"]);
    ca.write(&dir.path().join("mutual"), &["secure-db.example.com"]);

    // Pilot's listener through the proxy's xDS decoding.
    let listeners: Vec<_> = pilot_tls_listeners(dir.path()).iter().map(any).collect();
    assert_eq!(listeners.len(), 1);
    let mut state = XdsState::default();
    let (_, mut config) = state
        .apply(mesh_proto::type_url::LISTENER, "l1", &listeners)
        .unwrap();
    let tls = config.gateway_tls("0.0.0.0_9443").unwrap().clone();
    assert_eq!(tls.spec().chains.len(), 2);
    for c in &tls.spec().chains {
        let tcp = c.tcp.as_ref().expect("a tcp_proxy chain");
        assert_eq!(tcp.clusters, [(CLUSTER.to_string(), 1)]);
        assert!(c.alpn.is_empty(), "no ALPN for opaque bytes: {:?}", c.alpn);
    }
    assert!(tls.spec().chains[1].require_client_certificate);

    // The cluster (CDS/EDS) points at a plaintext echo server.
    let echo = echo_server().await;
    config.clusters.insert(
        CLUSTER.into(),
        Arc::new(Cluster {
            name: CLUSTER.into(),
            eds_name: CLUSTER.into(),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            lb: LbPolicy::RoundRobin,
            limits: Limits::default(),
            max_requests_per_connection: None,
            outlier: None,
            service: None,
        }),
    );
    config
        .endpoints
        .insert(CLUSTER.into(), Arc::new(Endpoints::new(vec![echo])));
    let metrics = mesh_runtime::Metrics::default();
    let mut router = node("gw-1", "gw", "ingressgateway");
    router.proxy_type = crate::xds::ProxyType::Router;
    let ctx = context(
        config,
        Ca::new().identity("gw"),
        router,
        "127.0.0.1:9".parse().unwrap(),
        &metrics,
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = l.local_addr().unwrap();
    tokio::spawn(serve_routed(
        l,
        ctx,
        "0.0.0.0_9443".into(),
        RoutedKind::Gateway,
        std::future::pending(),
    ));

    // SIMPLE: the decrypted bytes reach the echo server and come back encrypted.
    let got = round_trip(gw, client(&ca, None), "db.example.com", b"ping over tls")
        .await
        .unwrap();
    assert_eq!(got, b"ping over tls");
    // A name no server has: refused.
    assert!(
        round_trip(gw, client(&ca, None), "other.example.com", b"x")
            .await
            .is_err()
    );
    // MUTUAL: without a client certificate the connection is refused; with one it works.
    assert!(
        round_trip(gw, client(&ca, None), "secure-db.example.com", b"no cert")
            .await
            .is_err(),
        "MUTUAL accepted a client without a certificate"
    );
    let pair = ca.leaf(&["client.example.com"]);
    let got = round_trip(
        gw,
        client(&ca, Some(pair)),
        "secure-db.example.com",
        b"with cert",
    )
    .await
    .unwrap();
    assert_eq!(got, b"with cert");
    // Istio's TCP metrics, as for a plain tcp_proxy connection.
    wait_for_line(
        &metrics,
        &[
            "istio_tcp_connections_opened_total",
            "destination_service=\"db.default.svc.cluster.local\"",
        ],
    )
    .await;
    wait_for_line(
        &metrics,
        &[
            "istio_tcp_received_bytes_total",
            "destination_service=\"db.default.svc.cluster.local\"",
            "} 22",
        ],
    )
    .await;
}

#[tokio::test]
async fn passthrough_and_terminating_servers_share_a_port_by_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("mixed port ca");
    ca.write(&dir.path().join("simple"), &["db.example.com"]);
    let objs: Vec<ConfigObject> = serde_json::from_value(json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
         "spec": {"ports": [{"name": "tcp", "port": 5432}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pass", "namespace": "default"},
         "spec": {"ports": [{"name": "tls", "port": 8443}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             {"port": {"number": 9443, "name": "tls", "protocol": "TLS"},
              "hosts": ["db.example.com"],
              "tls": {"mode": "SIMPLE", "serverCertificate": p(dir.path(), "simple/tls.crt"),
                      "privateKey": p(dir.path(), "simple/tls.key")}},
             {"port": {"number": 9443, "name": "tls-pass", "protocol": "TLS"},
              "hosts": ["pass.example.com"], "tls": {"mode": "PASSTHROUGH"}}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "db", "namespace": "default"},
         "spec": {"hosts": ["db.example.com"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": "db"}}]}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "pass", "namespace": "default"},
         "spec": {"hosts": ["pass.example.com"], "gateways": ["gw"],
                  "tls": [{"match": [{"sniHosts": ["pass.example.com"]}],
                           "route": [{"destination": {"host": "pass"}}]}]}}
    ]))
    .unwrap();
    let reg = pilot::model::Registry::from_snapshot(
        &pilot::galley_client::Snapshot::from_objects(objs),
        "cluster.local",
    );
    let mut proxy = pilot::translate::ProxyInfo::from_id(
        "router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local",
    )
    .unwrap();
    proxy.labels.insert("istio".into(), "ingressgateway".into());
    let listeners: Vec<_> = pilot::translate::translate(
        &reg,
        &proxy,
        &pilot::translate::Options {
            trust_domain: "cluster.local".into(),
        },
    )
    .listeners
    .iter()
    .map(any)
    .collect();
    assert_eq!(listeners.len(), 1, "one listener for the port");
    let mut state = XdsState::default();
    let (_, mut config) = state
        .apply(mesh_proto::type_url::LISTENER, "l1", &listeners)
        .unwrap();
    let pass_cluster = "outbound|8443||pass.default.svc.cluster.local";
    // Passthrough chains only in the listener's tcp_proxy; the terminating one in its TLS.
    let tcp = config.listeners["0.0.0.0_9443"].tcp.clone().unwrap();
    assert_eq!(tcp.chains.len(), 1);
    assert_eq!(tcp.chains[0].clusters, [(pass_cluster.to_string(), 1)]);
    // Two echo servers, so the test sees which cluster a connection went to.
    let (db_echo, pass_echo) = (echo_server().await, echo_server().await);
    for (name, addr) in [(CLUSTER, db_echo), (pass_cluster, pass_echo)] {
        config.clusters.insert(
            name.into(),
            Arc::new(Cluster {
                name: name.into(),
                eds_name: name.into(),
                connect_timeout: Duration::from_secs(2),
                tls: None,
                lb: LbPolicy::RoundRobin,
                limits: Limits::default(),
                max_requests_per_connection: None,
                outlier: None,
                service: None,
            }),
        );
        config
            .endpoints
            .insert(name.into(), Arc::new(Endpoints::new(vec![addr])));
    }
    let metrics = mesh_runtime::Metrics::default();
    let mut router = node("gw-1", "gw", "ingressgateway");
    router.proxy_type = crate::xds::ProxyType::Router;
    let ctx = context(
        config,
        Ca::new().identity("gw"),
        router,
        "127.0.0.1:9".parse().unwrap(),
        &metrics,
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = l.local_addr().unwrap();
    tokio::spawn(serve_routed(
        l,
        ctx,
        "0.0.0.0_9443".into(),
        RoutedKind::Gateway,
        std::future::pending(),
    ));
    // Terminated: the TLS conversation is with the gateway, the plaintext echoes back.
    let got = round_trip(gw, client(&ca, None), "db.example.com", b"terminated")
        .await
        .unwrap();
    assert_eq!(got, b"terminated");
    // Passed through: the ClientHello itself reaches the passthrough upstream (the echo
    // server sends it back unchanged).
    let hello = crate::tcp::client_hello_for_tests("pass.example.com");
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, hello);
}
