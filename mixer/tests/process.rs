//! The whole Mixer (`mixer::run`) against a fake galley: config over MCP, readiness, Check.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::attributes::{Bag, compress};
use mesh_proto::config::{ConfigObject, Kind};
use mesh_proto::dictionary;
use mesh_proto::istio::mcp::v1alpha1::resource_source_server::{
    ResourceSource, ResourceSourceServer,
};
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources};
use mesh_proto::istio::mixer::v1::CheckRequest;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient;
use mesh_proto::mcp::to_resource;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Default)]
struct FakeGalley {
    state: Arc<BTreeMap<String, Vec<ConfigObject>>>,
    seen: Arc<Mutex<Vec<RequestResources>>>,
}

#[tonic::async_trait]
impl ResourceSource for FakeGalley {
    type EstablishResourceStreamStream = ReceiverStream<Result<Resources, Status>>;

    async fn establish_resource_stream(
        &self,
        request: Request<Streaming<RequestResources>>,
    ) -> Result<Response<Self::EstablishResourceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok(Some(req)) = inbound.message().await {
                me.seen.lock().push(req.clone());
                if !req.response_nonce.is_empty() {
                    continue;
                }
                n += 1;
                let objs = me.state.get(&req.collection).cloned().unwrap_or_default();
                let resp = Resources {
                    system_version_info: "7".into(),
                    collection: req.collection.clone(),
                    resources: objs.iter().map(to_resource).collect(),
                    removed_resources: vec![],
                    nonce: format!("n{n}"),
                    incremental: false,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn obj(v: serde_json::Value) -> ConfigObject {
    serde_json::from_value(v).unwrap()
}

fn galley_state() -> BTreeMap<String, Vec<ConfigObject>> {
    let mut m = BTreeMap::new();
    m.insert(
        Kind::Handler.info().collection.to_string(),
        vec![obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "handler",
            "metadata": {"name": "denyreviewsv3handler", "namespace": "default"},
            "spec": {"compiledAdapter": "denier", "params": {"status": {"code": 7, "message": "Not allowed"}}}
        }))],
    );
    m.insert(
        Kind::Rule.info().collection.to_string(),
        vec![obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "rule",
            "metadata": {"name": "denyreviewsv3", "namespace": "default"},
            "spec": {
                "match": "destination.labels[\"app\"] == \"ratings\" && source.labels[\"app\"]==\"reviews\" && source.labels[\"version\"] == \"v3\"",
                "actions": [{"handler": "denyreviewsv3handler", "instances": ["denyreviewsv3request"]}]
            }
        }))],
    );
    let pod = |name: &str, app: &str, version: &str| {
        obj(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app, "version": version}},
            "spec": {"serviceAccountName": format!("bookinfo-{app}")},
            "status": {"podIP": "127.0.0.1"}
        }))
    };
    m.insert(
        Kind::Pod.info().collection.to_string(),
        vec![
            pod("ratings-v1", "ratings", "v1"),
            pod("reviews-v3", "reviews", "v3"),
            pod("reviews-v2", "reviews", "v2"),
        ],
    );
    m
}

async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn poll<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn runs_against_galley_and_denies_by_pod_labels() {
    let galley = FakeGalley {
        state: Arc::new(galley_state()),
        ..Default::default()
    };
    let galley_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let galley_addr = galley_listener.local_addr().unwrap();
    let (gstop, grx) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ResourceSourceServer::new(galley.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(galley_listener),
                async move {
                    let _ = grx.await;
                },
            ),
    );

    let config = mixer::Config {
        grpc_addr: free_addr().await,
        galley_addr: format!("http://{galley_addr}"),
        monitoring_addr: free_addr().await,
    };
    let (stop, rx) = oneshot::channel::<()>();
    let mixer_task = tokio::spawn(mixer::run(config.clone(), async move {
        let _ = rx.await;
    }));

    let readyz = format!("http://{}/readyz", config.monitoring_addr);
    poll("readyz", || {
        let url = readyz.clone();
        async move { matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200) }
    })
    .await;
    // Every collection (the legacy ones included) was ACKed with the nonce galley sent.
    let collections = mixer::config::subscriptions().len();
    assert_eq!(collections, 20);
    poll("acks", || {
        let seen = galley.seen.clone();
        async move {
            seen.lock()
                .iter()
                .filter(|r| !r.response_nonce.is_empty() && r.error_detail.is_none())
                .count()
                == collections
        }
    })
    .await;

    let mut client = MixerClient::connect(format!("http://{}", config.grpc_addr))
        .await
        .unwrap();
    let bag = |source_pod: &str| {
        Bag::new()
            .with("source.uid", format!("kubernetes://{source_pod}.default"))
            .with("destination.uid", "kubernetes://ratings-v1.default")
            .with(
                "destination.service.host",
                "ratings.default.svc.cluster.local",
            )
    };
    let check = |b: Bag| CheckRequest {
        attributes: Some(compress(&b)),
        global_word_count: dictionary::words().len() as u32,
        ..Default::default()
    };
    let denied = client
        .check(check(bag("reviews-v3")))
        .await
        .unwrap()
        .into_inner();
    let status = denied.precondition.unwrap().status.unwrap();
    assert_eq!(status.code, 7, "{status:?}");
    let allowed = client
        .check(check(bag("reviews-v2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.precondition.unwrap().status.unwrap().code, 0);

    let metrics = reqwest::get(format!("http://{}/metrics", config.monitoring_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mixer_config_rules 1"), "{metrics}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), mixer_task)
        .await
        .expect("mixer stops on shutdown")
        .unwrap()
        .unwrap();
    let _ = gstop.send(());
}

#[tokio::test]
async fn taken_port_is_a_start_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = mixer::Config {
        grpc_addr: taken.local_addr().unwrap(),
        galley_addr: "http://127.0.0.1:1".into(),
        monitoring_addr: free_addr().await,
    };
    let err = mixer::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot listen for grpc on"),
        "{err}"
    );
}
