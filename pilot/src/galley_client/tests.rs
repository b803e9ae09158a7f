//! The sink against an in-process fake Galley (a real tonic `ResourceSource` server).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_proto::config::Kind;
use mesh_proto::istio::mcp::v1alpha1::resource_source_server::{
    ResourceSource, ResourceSourceServer,
};
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources};
use mesh_proto::mcp::to_resource;
use mesh_runtime::Readiness;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::metrics::PilotMetrics;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct FakeGalley {
    replies: mpsc::UnboundedSender<RequestResources>,
    streams: Arc<AtomicUsize>,
    /// Send an undecodable `services` state.
    bad_services: bool,
}

#[tonic::async_trait]
impl ResourceSource for FakeGalley {
    type EstablishResourceStreamStream = ReceiverStream<Result<Resources, Status>>;

    async fn establish_resource_stream(
        &self,
        request: Request<Streaming<RequestResources>>,
    ) -> Result<Response<Self::EstablishResourceStreamStream>, Status> {
        let n = self.streams.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let fake = self.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            while let Ok(Some(r)) = inbound.message().await {
                if r.response_nonce.is_empty() {
                    let _ = tx.send(Ok(fake.state(&r.collection, n))).await;
                } else {
                    answered += 1;
                    let _ = fake.replies.send(r);
                    // The first stream ends once every collection was answered.
                    if n == 1 && answered == COLLECTIONS.len() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl FakeGalley {
    fn state(&self, collection: &str, stream: usize) -> Resources {
        let mut resources = Vec::new();
        if collection == Kind::Service.info().collection {
            let mut res = to_resource(
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "reviews", "namespace": "default"},
                    "spec": {"ports": [{"port": 9080}]}
                }))
                .unwrap(),
            );
            if self.bad_services {
                res.body = Some(prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                    value: vec![0xff, 0xff],
                });
            }
            resources.push(res);
        }
        Resources {
            system_version_info: stream.to_string(),
            collection: collection.to_string(),
            resources,
            removed_resources: vec![],
            nonce: format!("nonce-{stream}-{collection}"),
            incremental: false,
        }
    }
}

async fn start(
    bad_services: bool,
) -> (
    String,
    mpsc::UnboundedReceiver<RequestResources>,
    Arc<AtomicUsize>,
) {
    let (replies, rx) = mpsc::unbounded_channel();
    let streams = Arc::new(AtomicUsize::new(0));
    let fake = FakeGalley {
        replies,
        streams: streams.clone(),
        bad_services,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ResourceSourceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), rx, streams)
}

async fn next_reply(rx: &mut mpsc::UnboundedReceiver<RequestResources>) -> RequestResources {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("reply in time")
        .expect("open")
}

#[tokio::test]
async fn syncs_acks_and_reconnects() {
    let (addr, mut replies, streams) = start(false).await;
    let (tx, mut snaps) = watch::channel(Arc::new(Snapshot::default()));
    let readiness = Readiness::new(&[READY_CONDITION]);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let client = GalleyClient::new(addr, tx, readiness.clone(), PilotMetrics::default());
    let task = tokio::spawn(client.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let mut acked = std::collections::BTreeSet::new();
    for _ in 0..COLLECTIONS.len() {
        let r = next_reply(&mut replies).await;
        assert!(r.error_detail.is_none(), "ACK, not NACK: {r:?}");
        assert_eq!(r.response_nonce, format!("nonce-1-{}", r.collection));
        acked.insert(r.collection);
    }
    assert_eq!(acked.len(), COLLECTIONS.len());
    let snap = snaps
        .wait_for(|s| s.objects(Kind::Service).count() == 1)
        .await
        .unwrap()
        .clone();
    assert_eq!(snap.collections.len(), COLLECTIONS.len());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !readiness.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The first stream ended: the client reconnects and is served again.
    let r = next_reply(&mut replies).await;
    assert!(r.response_nonce.starts_with("nonce-2-"), "{r:?}");
    assert!(streams.load(Ordering::SeqCst) >= 2);
    assert_eq!(snaps.borrow().objects(Kind::Service).count(), 1);

    stop_tx.send_replace(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn undecodable_state_is_nacked() {
    let (addr, mut replies, _streams) = start(true).await;
    let (tx, snaps) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let client = GalleyClient::new(
        addr,
        tx,
        Readiness::new(&[READY_CONDITION]),
        PilotMetrics::default(),
    );
    let task = tokio::spawn(client.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let services = Kind::Service.info().collection;
    let mut nack = None;
    for _ in 0..COLLECTIONS.len() {
        let r = next_reply(&mut replies).await;
        if r.collection == services {
            nack = Some(r);
        }
    }
    let nack = nack.expect("reply for services");
    let detail = nack.error_detail.expect("NACK");
    assert!(detail.message.contains("default/reviews"), "{detail:?}");
    assert!(!snaps.borrow().collections.contains_key(&Kind::Service));
    stop_tx.send_replace(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
