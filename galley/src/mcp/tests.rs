use std::time::Duration;

use mesh_proto::config::{ConfigObject, Kind};
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources, SinkNode};
use mesh_proto::mcp::from_resource;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::store::{Change, Store};

const VS: &str = "istio/networking/v1alpha3/virtualservices";

fn vs(name: &str, host: &str) -> ConfigObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [host]}
    }))
    .unwrap()
}

fn request(collection: &str, nonce: &str, error: Option<&str>) -> RequestResources {
    RequestResources {
        sink_node: Some(SinkNode {
            id: "test-sink".into(),
            annotations: Default::default(),
        }),
        collection: collection.into(),
        initial_resource_versions: Default::default(),
        response_nonce: nonce.into(),
        error_detail: error.map(|m| RpcStatus {
            code: 3,
            message: m.into(),
            details: vec![],
        }),
        incremental: false,
    }
}

struct Harness {
    store: Store,
    metrics: McpMetrics,
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start() -> Harness {
    let store = Store::temporary().unwrap();
    let metrics = McpMetrics::default();
    let (stop, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(McpServer::new(store.clone(), metrics.clone(), stop_rx).serve(listener));
    Harness {
        store,
        metrics,
        addr,
        stop,
        server,
    }
}

async fn open(
    addr: std::net::SocketAddr,
) -> (mpsc::Sender<RequestResources>, tonic::Streaming<Resources>) {
    let mut client = ResourceSourceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let resp = client
        .establish_resource_stream(ReceiverStream::new(rx))
        .await
        .unwrap();
    (tx, resp.into_inner())
}

async fn next(stream: &mut tonic::Streaming<Resources>) -> Resources {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no response in time")
        .unwrap()
        .expect("stream ended")
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn names(res: &Resources) -> Vec<String> {
    res.resources
        .iter()
        .map(|r| from_resource(&res.collection, r).unwrap().key())
        .collect()
}

#[tokio::test]
async fn subscribe_push_ack_nack() {
    let h = start().await;
    h.store
        .apply(vec![Change::Put(Kind::VirtualService, vs("a", "a"))])
        .await
        .unwrap();
    let (tx, mut stream) = open(h.addr).await;
    tx.send(request(VS, "", None)).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.collection, VS);
    assert!(!first.incremental);
    assert_eq!(first.system_version_info, "1");
    assert_eq!(names(&first), vec!["default/a"]);
    assert!(!first.nonce.is_empty());
    wait_until("connected sink", || h.metrics.connected_sinks.get() == 1).await;

    // ACK, then a change in the store is pushed as a new full state
    tx.send(request(VS, &first.nonce, None)).await.unwrap();
    h.store
        .apply(vec![Change::Put(Kind::VirtualService, vs("b", "b"))])
        .await
        .unwrap();
    let second = next(&mut stream).await;
    assert_eq!(second.system_version_info, "2");
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(names(&second), vec!["default/a", "default/b"]);
    let obj = from_resource(VS, &second.resources[1]).unwrap();
    assert_eq!(obj.metadata.resource_version.as_deref(), Some("2"));
    assert_eq!(obj.body["spec"]["hosts"], json!(["b"]));

    // NACK: counted, and not re-sent; a change to another collection pushes nothing here
    tx.send(request(VS, &second.nonce, Some("bad route")))
        .await
        .unwrap();
    wait_until("nack counted", || h.metrics.nacks.get() == 1).await;
    h.store
        .apply(vec![Change::Put(
            Kind::Gateway,
            serde_json::from_value(json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"}, "spec": {}})).unwrap(),
        )])
        .await
        .unwrap();
    // the next change of the collection is sent, and nothing came in between
    h.store
        .apply(vec![Change::Delete {
            kind: Kind::VirtualService,
            namespace: "default".into(),
            name: "a".into(),
        }])
        .await
        .unwrap();
    let third = next(&mut stream).await;
    assert_eq!(third.system_version_info, "4");
    assert_eq!(names(&third), vec!["default/b"]);
    assert_eq!(h.metrics.pushes.get(), 3);

    drop(tx);
    wait_until("sink disconnected", || h.metrics.connected_sinks.get() == 0).await;
    h.stop.send(true).unwrap();
    h.server.await.unwrap().unwrap();
}

#[tokio::test]
async fn incremental_sink_gets_only_changes_and_removals() {
    let h = start().await;
    h.store
        .apply(vec![
            Change::Put(Kind::VirtualService, vs("a", "a")),
            Change::Put(Kind::VirtualService, vs("b", "b")),
        ])
        .await
        .unwrap();
    let (tx, mut stream) = open(h.addr).await;
    let incremental = |nonce: &str, error: Option<&str>| RequestResources {
        incremental: true,
        ..request(VS, nonce, error)
    };
    tx.send(incremental("", None)).await.unwrap();
    // The first answer is the full state.
    let first = next(&mut stream).await;
    assert!(!first.incremental);
    assert_eq!(names(&first), vec!["default/a", "default/b"]);
    tx.send(incremental(&first.nonce, None)).await.unwrap();

    // One object changed, one removed, one added: only those travel.
    h.store
        .apply(vec![
            Change::Put(Kind::VirtualService, vs("a", "a2")),
            Change::Delete {
                kind: Kind::VirtualService,
                namespace: "default".into(),
                name: "b".into(),
            },
            Change::Put(Kind::VirtualService, vs("c", "c")),
        ])
        .await
        .unwrap();
    let second = next(&mut stream).await;
    assert!(second.incremental);
    assert_eq!(names(&second), vec!["default/a", "default/c"]);
    assert_eq!(second.removed_resources, vec!["default/b"]);
    let a = from_resource(VS, &second.resources[0]).unwrap();
    assert_eq!(a.body["spec"]["hosts"], json!(["a2"]));

    // After a NACK the sink's state is unknown: the next push is the full state again.
    tx.send(incremental(&second.nonce, Some("rejected")))
        .await
        .unwrap();
    wait_until("nack counted", || h.metrics.nacks.get() == 1).await;
    h.store
        .apply(vec![Change::Put(Kind::VirtualService, vs("d", "d"))])
        .await
        .unwrap();
    let third = next(&mut stream).await;
    assert!(!third.incremental);
    assert_eq!(names(&third), vec!["default/a", "default/c", "default/d"]);
    assert!(third.removed_resources.is_empty());

    drop(tx);
    h.stop.send(true).unwrap();
    h.server.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_collection_ends_the_stream_with_an_error() {
    let h = start().await;
    let (tx, mut stream) = open(h.addr).await;
    tx.send(request("istio/nope/v1/things", "", None))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("istio/nope/v1/things"),
        "{}",
        err.message()
    );
    h.stop.send(true).unwrap();
    h.server.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let h = start().await;
    let (tx, mut stream) = open(h.addr).await;
    tx.send(request(VS, "", None)).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.system_version_info, "0");
    assert!(first.resources.is_empty());
    h.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), h.server)
        .await
        .expect("server did not stop with a stream open")
        .unwrap()
        .unwrap();
}
