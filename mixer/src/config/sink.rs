//! The MCP sink: one `EstablishResourceStream` to galley asking for every collection Mixer
//! uses, each full-state response applied (ACK) or rejected whole (NACK), reconnecting with
//! backoff. Ready (`galley-synced`) once every collection has answered once.

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_proto::config::Kind;
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use mesh_proto::istio::mcp::v1alpha1::{RequestResources, Resources, SinkNode};
use mesh_runtime::Readiness;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::policy::{Policy, PolicyHandle};
use super::state::ConfigState;
use crate::metrics::MixerMetrics;

/// The kinds Mixer subscribes to: its own config, and pods for workload attributes.
pub const COLLECTIONS: [Kind; 5] = [
    Kind::Rule,
    Kind::Handler,
    Kind::Instance,
    Kind::AttributeManifest,
    Kind::Pod,
];

/// The readiness condition the sink sets.
pub const READY_CONDITION: &str = "galley-synced";

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a session with galley ended.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot connect to galley at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("galley stream failed: {0}")]
    Stream(#[from] tonic::Status),
}

/// The sink's state: the config received so far and where it is published.
pub struct Sink {
    node_id: String,
    state: ConfigState,
    policy: PolicyHandle,
    metrics: MixerMetrics,
    readiness: Readiness,
    answered: BTreeSet<String>,
}

impl Sink {
    pub fn new(policy: PolicyHandle, metrics: MixerMetrics, readiness: Readiness) -> Self {
        Sink {
            node_id: format!("mixer~{}", std::process::id()),
            state: ConfigState::default(),
            policy,
            metrics,
            readiness,
            answered: BTreeSet::new(),
        }
    }

    /// The config received so far.
    pub fn state(&self) -> &ConfigState {
        &self.state
    }

    fn node(&self) -> Option<SinkNode> {
        Some(SinkNode {
            id: self.node_id.clone(),
            annotations: Default::default(),
        })
    }

    /// The opening request of every collection (no nonce).
    pub fn initial_requests(&self) -> Vec<RequestResources> {
        COLLECTIONS
            .iter()
            .map(|k| RequestResources {
                sink_node: self.node(),
                collection: k.info().collection.to_string(),
                ..Default::default()
            })
            .collect()
    }

    /// Applies one response and returns the ACK (or NACK, keeping the previous config).
    pub fn on_response(&mut self, resp: &Resources) -> RequestResources {
        let mut reply = RequestResources {
            sink_node: self.node(),
            collection: resp.collection.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        };
        match self.state.apply(resp) {
            Ok(()) => {
                let policy = Policy::compile(&self.state);
                for problem in &policy.problems {
                    tracing::warn!(problem = %problem, "rule left out");
                }
                self.metrics.set_rules(policy.rules.len());
                tracing::info!(
                    collection = %resp.collection,
                    version = %resp.system_version_info,
                    resources = resp.resources.len(),
                    rules = policy.rules.len(),
                    "config applied"
                );
                self.policy.set(policy);
                self.metrics.config_update(&resp.collection, "ack");
            }
            Err(e) => {
                tracing::warn!(
                    collection = %resp.collection,
                    version = %resp.system_version_info,
                    error = %e,
                    "config rejected"
                );
                self.metrics.config_update(&resp.collection, "nack");
                reply.error_detail = Some(RpcStatus {
                    code: tonic::Code::InvalidArgument as i32,
                    message: e.to_string(),
                    details: Vec::new(),
                });
            }
        }
        self.answered.insert(resp.collection.clone());
        if COLLECTIONS
            .iter()
            .all(|k| self.answered.contains(k.info().collection))
        {
            self.readiness.set(READY_CONDITION, true);
        }
        reply
    }

    /// One stream to galley, until it ends. Returns whether any response arrived.
    async fn session(&mut self, addr: &str, got_response: &mut bool) -> Result<(), SinkError> {
        let connect_err = |source| SinkError::Connect {
            addr: addr.to_string(),
            source,
        };
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(connect_err)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(connect_err)?;
        let mut client = ResourceSourceClient::new(channel);
        let initial = self.initial_requests();
        let (tx, rx) = mpsc::channel(initial.len() + 16);
        for r in initial {
            // The receiver is alive: it is handed to the client just below.
            let _ = tx.send(r).await;
        }
        let mut stream = client
            .establish_resource_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!(galley = addr, "subscribed to galley");
        while let Some(resp) = stream.message().await? {
            *got_response = true;
            let reply = self.on_response(&resp);
            if tx.send(reply).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Keeps a stream to galley open until `shutdown`, reconnecting with exponential backoff. The
/// last config received stays in force while galley is away.
pub async fn run_sink(
    galley_addr: String,
    mut sink: Sink,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut got_response = false;
        tokio::select! {
            _ = &mut shutdown => return,
            r = sink.session(&galley_addr, &mut got_response) => match r {
                Ok(()) => tracing::warn!(galley = %galley_addr, "galley closed the stream"),
                Err(e) => tracing::warn!(galley = %galley_addr, error = %error_chain(&e), "galley stream ended"),
            },
        }
        if got_response {
            backoff = MIN_BACKOFF;
        }
        tracing::debug!(
            delay_ms = backoff.as_millis() as u64,
            "reconnecting to galley"
        );
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `e` and its sources, `: `-joined (tonic's transport errors hide the cause in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::ConfigObject;
    use mesh_proto::istio::mcp::v1alpha1::Resource;
    use mesh_proto::mcp::to_resource;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> ConfigObject {
        serde_json::from_value(v).unwrap()
    }

    fn full(kind: Kind, version: &str, objs: &[ConfigObject]) -> Resources {
        Resources {
            system_version_info: version.into(),
            collection: kind.info().collection.into(),
            resources: objs.iter().map(to_resource).collect(),
            removed_resources: vec![],
            nonce: format!("nonce-{version}"),
            incremental: false,
        }
    }

    fn handler() -> ConfigObject {
        obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "handler",
            "metadata": {"name": "denyreviewsv3handler", "namespace": "default"},
            "spec": {"compiledAdapter": "denier", "params": {"status": {"code": 7, "message": "Not allowed"}}}
        }))
    }

    fn rule() -> ConfigObject {
        obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "rule",
            "metadata": {"name": "denyreviewsv3", "namespace": "default"},
            "spec": {
                "match": "destination.labels[\"app\"] == \"ratings\" && source.labels[\"app\"]==\"reviews\" && source.labels[\"version\"] == \"v3\"",
                "actions": [{"handler": "denyreviewsv3handler", "instances": ["denyreviewsv3request"]}]
            }
        }))
    }

    fn sink() -> (Sink, PolicyHandle, Readiness) {
        let policy = PolicyHandle::default();
        let readiness = Readiness::new(&[READY_CONDITION]);
        let s = Sink::new(policy.clone(), MixerMetrics::default(), readiness.clone());
        (s, policy, readiness)
    }

    #[test]
    fn initial_requests_name_every_collection() {
        let (s, _, _) = sink();
        let names: Vec<String> = s
            .initial_requests()
            .into_iter()
            .map(|r| {
                assert!(r.response_nonce.is_empty());
                r.collection
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "istio/policy/v1beta1/rules",
                "istio/policy/v1beta1/handlers",
                "istio/policy/v1beta1/instances",
                "istio/policy/v1beta1/attributemanifests",
                "k8s/core/v1/pods",
            ]
        );
    }

    #[test]
    fn applies_acks_and_becomes_ready() {
        let (mut s, policy, readiness) = sink();
        let ack = s.on_response(&full(Kind::Handler, "1", &[handler()]));
        assert_eq!(ack.response_nonce, "nonce-1");
        assert_eq!(ack.collection, "istio/policy/v1beta1/handlers");
        assert!(ack.error_detail.is_none());
        s.on_response(&full(Kind::Rule, "2", &[rule()]));
        let p = policy.current();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].key, "default/denyreviewsv3");
        assert!(!readiness.is_ready());
        s.on_response(&full(Kind::Instance, "2", &[]));
        s.on_response(&full(Kind::AttributeManifest, "2", &[]));
        assert!(!readiness.is_ready());
        s.on_response(&full(Kind::Pod, "2", &[]));
        assert!(readiness.is_ready());

        // A new full state without the rule removes it.
        s.on_response(&full(Kind::Rule, "3", &[]));
        assert!(policy.current().rules.is_empty());
    }

    #[test]
    fn nacks_bad_resources_and_keeps_previous_config() {
        let (mut s, policy, _) = sink();
        s.on_response(&full(Kind::Handler, "1", &[handler()]));
        s.on_response(&full(Kind::Rule, "2", &[rule()]));
        let mut bad = full(Kind::Rule, "3", &[]);
        bad.resources.push(Resource {
            metadata: None,
            body: None,
        });
        let nack = s.on_response(&bad);
        assert_eq!(nack.response_nonce, "nonce-3");
        let detail = nack.error_detail.unwrap();
        assert_eq!(detail.code, tonic::Code::InvalidArgument as i32);
        assert!(detail.message.contains("metadata"), "{}", detail.message);
        assert_eq!(policy.current().rules.len(), 1, "previous config kept");

        let typed_bad = obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "rule",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"actions": "not-a-list"}
        }));
        let nack = s.on_response(&full(Kind::Rule, "4", &[typed_bad]));
        assert!(nack.error_detail.unwrap().message.contains("spec.actions"));
        assert_eq!(policy.current().rules.len(), 1);
    }

    #[test]
    fn incremental_updates_add_and_remove() {
        let (mut s, _, _) = sink();
        s.on_response(&full(Kind::Handler, "1", &[handler()]));
        let mut inc = full(Kind::Handler, "2", &[]);
        inc.incremental = true;
        inc.removed_resources = vec!["default/denyreviewsv3handler".into()];
        s.on_response(&inc);
        assert!(s.state().handlers.is_empty());
    }
}
