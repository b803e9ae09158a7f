//! Helpers for tests that run the real `mixer` binary: an in-process MCP source serving
//! Istio's sample YAML, the mixer process, a real redis-server.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
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
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient;
use mesh_proto::mcp::to_resource;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

pub const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/istio-1.4/samples/bookinfo"
);

/// An MCP source serving a fixed state to every sink that connects.
#[derive(Clone, Default)]
pub struct FakeGalley {
    state: Arc<BTreeMap<String, Vec<ConfigObject>>>,
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
                if !req.response_nonce.is_empty() {
                    continue;
                }
                n += 1;
                let objs = me.state.get(&req.collection).cloned().unwrap_or_default();
                let resp = Resources {
                    system_version_info: "1".into(),
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

/// The documents of a YAML text (`---` separated), namespace `default` where none is given.
pub fn objects_from_yaml(text: &str) -> Vec<ConfigObject> {
    let mut out = Vec::new();
    let mut doc = String::new();
    let mut flush = |doc: &mut String| {
        let v: Value = serde_saphyr::from_str(doc).unwrap_or(Value::Null);
        doc.clear();
        if let Value::Object(mut m) = v {
            let meta = m.entry("metadata").or_insert_with(|| json!({}));
            if meta.get("namespace").is_none() {
                meta["namespace"] = json!("default");
            }
            out.push(serde_json::from_value(Value::Object(m)).unwrap());
        }
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut doc);
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    flush(&mut doc);
    out
}

/// A pod of the bookinfo app.
pub fn pod(name: &str, app: &str, version: &str) -> ConfigObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app, "version": version}},
        "spec": {"serviceAccountName": format!("bookinfo-{app}")},
        "status": {"podIP": "127.0.0.1"}
    }))
    .unwrap()
}

/// Groups objects by their MCP collection.
pub fn by_collection(objs: Vec<ConfigObject>) -> BTreeMap<String, Vec<ConfigObject>> {
    let mut m: BTreeMap<String, Vec<ConfigObject>> = BTreeMap::new();
    for o in objs {
        let kind = Kind::from_type(&o.api_version, &o.kind)
            .unwrap_or_else(|| panic!("unknown kind {} {}", o.api_version, o.kind));
        m.entry(kind.info().collection.to_string())
            .or_default()
            .push(o);
    }
    m
}

/// Serves `state` over MCP; the server stops when the returned sender is dropped.
pub async fn serve_galley(
    state: BTreeMap<String, Vec<ConfigObject>>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let galley = FakeGalley {
        state: Arc::new(state),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ResourceSourceServer::new(galley))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = rx.await;
                },
            ),
    );
    (addr, stop)
}

pub async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

pub async fn poll<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `mixer` binary.
pub struct Mixer {
    pub child: Child,
    pub grpc: SocketAddr,
    pub monitoring: SocketAddr,
    pub client: MixerClient<Channel>,
}

impl Mixer {
    /// Starts the mixer binary against galley at `galley`, waits until it is ready and has
    /// compiled `rules` rules.
    pub async fn start(galley: SocketAddr, rules: usize) -> Mixer {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port().await).parse().unwrap();
        let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port().await).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mixer"))
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--galley-addr")
            .arg(format!("http://{galley}"))
            .arg("--monitoring-addr")
            .arg(monitoring.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let metrics = format!("http://{monitoring}/metrics");
        let want = format!("mixer_config_rules {rules}\n");
        poll("mixer ready with its rules", || {
            let url = metrics.clone();
            let want = want.clone();
            async move {
                match reqwest::get(&url).await {
                    Ok(r) => r.text().await.is_ok_and(|t| t.contains(&want)),
                    Err(_) => false,
                }
            }
        })
        .await;
        let client = MixerClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        Mixer {
            child,
            grpc,
            monitoring,
            client,
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.monitoring))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A Check request for `bag`, asking for `amount` of quota `quota` when given.
pub fn check_request(bag: &Bag, quota: Option<(&str, i64)>, dedup: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(compress(bag)),
        global_word_count: dictionary::words().len() as u32,
        deduplication_id: dedup.into(),
        quotas: quota
            .map(|(name, amount)| {
                (
                    name.to_string(),
                    QuotaParams {
                        amount,
                        best_effort: false,
                    },
                )
            })
            .into_iter()
            .collect(),
    }
}

/// A running redis-server on a free loopback port, without persistence.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = free_port().await;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let url = format!("redis://127.0.0.1:{port}/");
        poll("redis PING", || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url.as_str()) else {
                    return false;
                };
                let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok_and(|p| p == "PONG")
            }
        })
        .await;
        Redis { child, port }
    }
}
