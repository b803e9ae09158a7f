//! The sink on its own (`on_response`) and against an in-process fake Galley (a real tonic
//! `ResourceSource` server).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::istio::mcp::v1alpha1::Resource;
use crate::istio::mcp::v1alpha1::resource_source_server::{ResourceSource, ResourceSourceServer};
use crate::mcp::to_resource;

const WAIT: Duration = Duration::from_secs(10);
const COLLECTIONS: [Kind; 2] = [Kind::Service, Kind::Rule];

/// What the test handler saw: each collection's objects by key, and every event.
#[derive(Debug, Default)]
struct Seen {
    state: BTreeMap<Kind, BTreeMap<String, ConfigObject>>,
    versions: BTreeMap<Kind, String>,
    events: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    /// Refuse updates of this kind.
    refuse: Option<Kind>,
}

impl Handler for Recorder {
    fn apply(&mut self, update: Update) -> Result<(), String> {
        if self.refuse == Some(update.kind) {
            return Err(format!("refusing {}", update.version));
        }
        let mut seen = self.seen.lock().unwrap();
        let objects = seen.state.entry(update.kind).or_default();
        if !update.incremental {
            objects.clear();
        }
        for key in &update.removed {
            objects.remove(key);
        }
        for obj in update.objects {
            objects.insert(obj.key(), obj);
        }
        seen.versions.insert(update.kind, update.version);
        Ok(())
    }

    fn on_event(&mut self, event: &Event<'_>) {
        let text = match event {
            Event::Connected => "connected".to_string(),
            Event::Acked { collection, .. } => format!("ack {collection}"),
            Event::Nacked { collection, .. } => format!("nack {collection}"),
            Event::Synced => "synced".to_string(),
        };
        self.seen.lock().unwrap().events.push(text);
    }
}

impl Recorder {
    fn names(&self, kind: Kind) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .state
            .get(&kind)
            .map_or(vec![], |m| m.keys().cloned().collect())
    }

    fn count(&self, event: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| *e == event)
            .count()
    }
}

fn service(name: &str) -> Resource {
    to_resource(
        &serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": 9080, "name": "http"}]}
        }))
        .unwrap(),
    )
}

fn undecodable(name: &str) -> Resource {
    let mut res = service(name);
    res.body = Some(prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: vec![0xff, 0xff, 0xff],
    });
    res
}

fn resources(kind: Kind, version: &str, res: Vec<Resource>) -> Resources {
    Resources {
        system_version_info: version.into(),
        collection: kind.info().collection.into(),
        resources: res,
        removed_resources: vec![],
        nonce: format!("nonce-{version}"),
        incremental: false,
    }
}

fn sink(recorder: &Recorder) -> Sink<Recorder> {
    Sink::new(
        "http://127.0.0.1:1",
        "test~sink",
        COLLECTIONS,
        recorder.clone(),
    )
}

#[test]
fn initial_requests_name_every_collection_once() {
    let s = Sink::new(
        "http://127.0.0.1:1",
        "test~sink",
        [Kind::Service, Kind::Rule, Kind::Service],
        Recorder::default(),
    );
    let reqs = s.initial_requests();
    let names: Vec<_> = reqs.iter().map(|r| r.collection.as_str()).collect();
    assert_eq!(
        names,
        ["k8s/core/v1/services", "istio/policy/v1beta1/rules"]
    );
    for r in &reqs {
        assert!(r.response_nonce.is_empty());
        assert!(r.error_detail.is_none());
        assert_eq!(r.sink_node.as_ref().unwrap().id, "test~sink");
    }
}

#[test]
fn acks_applied_state_with_its_nonce() {
    let rec = Recorder::default();
    let mut s = sink(&rec);
    let ack = s.on_response(&resources(
        Kind::Service,
        "1",
        vec![service("a"), service("b")],
    ));
    assert_eq!(ack.response_nonce, "nonce-1");
    assert_eq!(ack.collection, "k8s/core/v1/services");
    assert!(ack.error_detail.is_none());
    assert_eq!(rec.names(Kind::Service), ["default/a", "default/b"]);
    // A new full state replaces the collection.
    s.on_response(&resources(Kind::Service, "2", vec![service("b")]));
    assert_eq!(rec.names(Kind::Service), ["default/b"]);
    assert_eq!(rec.count("ack k8s/core/v1/services"), 2);
}

#[test]
fn nack_keeps_previous_state() {
    let rec = Recorder {
        refuse: Some(Kind::Rule),
        ..Default::default()
    };
    let mut s = sink(&rec);
    s.on_response(&resources(Kind::Service, "1", vec![service("a")]));

    // An undecodable resource: NACK naming it, the handler is not called.
    let nack = s.on_response(&resources(
        Kind::Service,
        "2",
        vec![service("b"), undecodable("c")],
    ));
    assert_eq!(nack.response_nonce, "nonce-2");
    let detail = nack.error_detail.expect("NACK");
    assert_eq!(detail.code, tonic::Code::InvalidArgument as i32);
    assert!(detail.message.contains("default/c"), "{}", detail.message);
    assert_eq!(
        rec.names(Kind::Service),
        ["default/a"],
        "previous state kept"
    );
    assert_eq!(rec.seen.lock().unwrap().versions[&Kind::Service], "1");

    // The handler refuses: NACK with its message.
    let nack = s.on_response(&resources(Kind::Rule, "3", vec![]));
    assert_eq!(nack.error_detail.expect("NACK").message, "refusing 3");

    // A collection nobody asked for is NACKed too.
    let nack = s.on_response(&resources(Kind::Gateway, "4", vec![]));
    assert!(
        nack.error_detail
            .expect("NACK")
            .message
            .contains("not requested")
    );
    assert_eq!(rec.count("nack k8s/core/v1/services"), 1);
    assert_eq!(rec.count("nack istio/policy/v1beta1/rules"), 1);
}

#[test]
fn incremental_update_adds_and_removes() {
    let rec = Recorder::default();
    let mut s = sink(&rec);
    s.on_response(&resources(
        Kind::Service,
        "1",
        vec![service("a"), service("b")],
    ));
    let mut inc = resources(Kind::Service, "2", vec![service("c")]);
    inc.incremental = true;
    inc.removed_resources = vec!["default/a".into()];
    assert!(s.on_response(&inc).error_detail.is_none());
    assert_eq!(rec.names(Kind::Service), ["default/b", "default/c"]);
}

#[test]
fn synced_once_every_collection_answered() {
    let rec = Recorder::default();
    let mut s = sink(&rec);
    let synced = s.synced();
    s.on_response(&resources(Kind::Service, "1", vec![]));
    s.on_response(&resources(Kind::Gateway, "1", vec![]));
    assert!(!*synced.borrow());
    assert_eq!(rec.count("synced"), 0);
    // A NACK is an answer too.
    s.on_response(&resources(Kind::Rule, "1", vec![undecodable("x")]));
    assert!(*synced.borrow());
    s.on_response(&resources(Kind::Rule, "2", vec![]));
    assert!(*synced.borrow());
    assert_eq!(rec.count("synced"), 1, "reported once");
}

/// A Galley serving [`COLLECTIONS`]. Stream `n` sends version `n`; the first stream ends once
/// every collection was answered; from stream `bad_from` on, services do not decode.
#[derive(Clone)]
struct FakeGalley {
    replies: mpsc::UnboundedSender<RequestResources>,
    streams: Arc<AtomicUsize>,
    bad_from: usize,
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
        let mut res = Vec::new();
        if collection == Kind::Service.info().collection {
            res.push(service(&format!("svc-{stream}")));
            if stream >= self.bad_from {
                res.push(undecodable("broken"));
            }
        }
        Resources {
            system_version_info: stream.to_string(),
            collection: collection.to_string(),
            resources: res,
            removed_resources: vec![],
            nonce: format!("nonce-{stream}-{collection}"),
            incremental: false,
        }
    }
}

async fn start(
    bad_from: usize,
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
        bad_from,
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

fn spawn_sink(
    addr: String,
    rec: &Recorder,
) -> (
    watch::Receiver<bool>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let s = Sink::new(addr, "test~sink", COLLECTIONS, rec.clone());
    let synced = s.synced();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(s.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    (synced, stop_tx, task)
}

#[tokio::test]
async fn acks_syncs_and_reconnects() {
    let (addr, mut replies, streams) = start(usize::MAX).await;
    let rec = Recorder::default();
    let (mut synced, stop, task) = spawn_sink(addr, &rec);

    let mut acked = Vec::new();
    for _ in 0..COLLECTIONS.len() {
        let r = next_reply(&mut replies).await;
        assert!(r.error_detail.is_none(), "ACK, not NACK: {r:?}");
        assert_eq!(r.response_nonce, format!("nonce-1-{}", r.collection));
        assert_eq!(r.sink_node.as_ref().unwrap().id, "test~sink");
        acked.push(r.collection);
    }
    acked.sort();
    assert_eq!(
        acked,
        ["istio/policy/v1beta1/rules", "k8s/core/v1/services"]
    );
    tokio::time::timeout(WAIT, synced.wait_for(|s| *s))
        .await
        .unwrap()
        .unwrap();

    // Galley ended the first stream: the sink reconnects and takes the new state.
    for _ in 0..COLLECTIONS.len() {
        let r = next_reply(&mut replies).await;
        assert!(r.response_nonce.starts_with("nonce-2-"), "{r:?}");
        assert!(r.error_detail.is_none());
    }
    assert_eq!(streams.load(Ordering::SeqCst), 2);
    assert_eq!(rec.names(Kind::Service), ["default/svc-2"]);
    assert_eq!(rec.count("connected"), 2);
    assert_eq!(rec.count("synced"), 1);

    stop.send_replace(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn nack_over_the_stream_keeps_the_last_good_state() {
    let (addr, mut replies, _streams) = start(2).await;
    let rec = Recorder::default();
    let (_synced, stop, task) = spawn_sink(addr, &rec);
    let services = Kind::Service.info().collection;

    let mut nack = None;
    while nack.is_none() {
        let r = next_reply(&mut replies).await;
        if r.error_detail.is_some() {
            nack = Some(r);
        }
    }
    let nack = nack.unwrap();
    assert_eq!(nack.collection, services);
    assert_eq!(nack.response_nonce, format!("nonce-2-{services}"));
    assert!(
        nack.error_detail
            .unwrap()
            .message
            .contains("default/broken")
    );
    assert_eq!(
        rec.names(Kind::Service),
        ["default/svc-1"],
        "stream 1's state kept"
    );
    assert_eq!(rec.count(&format!("nack {services}")), 1);

    stop.send_replace(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn stops_on_shutdown_while_galley_is_away() {
    let rec = Recorder::default();
    let (synced, stop, task) = spawn_sink("http://127.0.0.1:1".into(), &rec);
    stop.send_replace(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(!*synced.borrow());
    assert_eq!(rec.count("connected"), 0);
}
