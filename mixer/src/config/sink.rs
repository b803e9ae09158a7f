//! Mixer's side of the MCP sink ([`mesh_proto::mcp::sink`]): every update is applied to the
//! [`ConfigState`] and the policy recompiled; a state whose specs do not parse is NACKed whole.
//! Updates are counted by collection and result; readiness (`galley-synced`) is set once every
//! collection has answered once.

use mesh_proto::config::Kind;
use mesh_proto::mcp::sink::{Event, Handler, Update};
use mesh_runtime::Readiness;

use super::policy::{Policy, PolicyHandle};
use super::state::ConfigState;
use crate::metrics::MixerMetrics;

/// The generic MCP sink, fed to Mixer's config.
pub type Sink = mesh_proto::mcp::sink::Sink<ConfigSink>;

/// The kinds Mixer subscribes to besides the legacy ones ([`subscriptions`]): its own config,
/// and pods for workload attributes.
pub const COLLECTIONS: [Kind; 5] = [
    Kind::Rule,
    Kind::Handler,
    Kind::Instance,
    Kind::AttributeManifest,
    Kind::Pod,
];

/// Every collection Mixer's sink requests, in order: [`COLLECTIONS`], then the legacy
/// `kind: <adapter>` / `kind: <template>` collections (`istio/config/v1alpha2/legacy/...`,
/// [`super::legacy`]).
pub fn subscriptions() -> Vec<Kind> {
    COLLECTIONS.into_iter().chain(Kind::legacy()).collect()
}

/// The readiness condition the sink sets.
pub const READY_CONDITION: &str = "galley-synced";

/// The config received so far and where it is published.
#[derive(Debug)]
pub struct ConfigSink {
    state: ConfigState,
    policy: PolicyHandle,
    metrics: MixerMetrics,
    readiness: Readiness,
}

impl ConfigSink {
    /// The config received so far.
    pub fn state(&self) -> &ConfigState {
        &self.state
    }
}

/// A sink for galley at `galley_addr` that publishes the compiled policy on `policy`.
pub fn new_sink(
    galley_addr: impl Into<String>,
    policy: PolicyHandle,
    metrics: MixerMetrics,
    readiness: Readiness,
) -> Sink {
    let handler = ConfigSink {
        state: ConfigState::default(),
        policy,
        metrics,
        readiness,
    };
    Sink::new(
        galley_addr,
        format!("mixer~{}", std::process::id()),
        subscriptions(),
        handler,
    )
}

impl Handler for ConfigSink {
    fn apply(&mut self, update: Update) -> Result<(), String> {
        let collection = update.kind.info().collection;
        self.state.apply(update).map_err(|e| e.to_string())?;
        let policy = Policy::compile(&self.state);
        for problem in &policy.problems {
            tracing::warn!(problem = %problem, "rule left out");
        }
        self.metrics.set_rules(policy.rules.len());
        tracing::info!(collection, rules = policy.rules.len(), "policy compiled");
        self.policy.set(policy);
        Ok(())
    }

    fn on_event(&mut self, event: &Event<'_>) {
        match event {
            Event::Acked { collection, .. } => self.metrics.config_update(collection, "ack"),
            Event::Nacked { collection, .. } => self.metrics.config_update(collection, "nack"),
            Event::Synced => self.readiness.set(READY_CONDITION, true),
            Event::Connected => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::ConfigObject;
    use mesh_proto::istio::mcp::v1alpha1::{Resource, Resources};
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

    fn sink() -> (Sink, PolicyHandle, Readiness, MixerMetrics) {
        let policy = PolicyHandle::default();
        let readiness = Readiness::new(&[READY_CONDITION]);
        let metrics = MixerMetrics::default();
        let s = new_sink(
            "http://127.0.0.1:1",
            policy.clone(),
            metrics.clone(),
            readiness.clone(),
        );
        (s, policy, readiness, metrics)
    }

    #[test]
    fn initial_requests_name_every_collection() {
        let (s, _, _, _) = sink();
        let names: Vec<String> = s
            .initial_requests()
            .into_iter()
            .map(|r| {
                assert!(r.response_nonce.is_empty());
                assert!(r.sink_node.unwrap().id.starts_with("mixer~"));
                r.collection
            })
            .collect();
        assert_eq!(
            names[..5],
            [
                "istio/policy/v1beta1/rules",
                "istio/policy/v1beta1/handlers",
                "istio/policy/v1beta1/instances",
                "istio/policy/v1beta1/attributemanifests",
                "k8s/core/v1/pods",
            ]
        );
        assert_eq!(names[5..].to_vec(), crate::config::legacy::collections());
    }

    #[test]
    fn applies_acks_and_becomes_ready() {
        let (mut s, policy, readiness, _) = sink();
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
        assert!(
            !readiness.is_ready(),
            "the legacy collections have not answered"
        );
        for kind in Kind::legacy() {
            s.on_response(&full(kind, "2", &[]));
        }
        assert!(readiness.is_ready());

        // A new full state without the rule removes it.
        s.on_response(&full(Kind::Rule, "3", &[]));
        assert!(policy.current().rules.is_empty());
    }

    #[test]
    fn nacks_bad_resources_and_keeps_previous_config() {
        let (mut s, policy, _, _) = sink();
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
    fn legacy_collections_are_applied_and_resolved() {
        use mesh_proto::config::LegacyKind as L;
        let (mut s, policy, _, _) = sink();
        let denier = obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "denier",
            "metadata": {"name": "denyreviewsv3handler", "namespace": "default"},
            "spec": {"status": {"code": 7, "message": "Not allowed"}}
        }));
        let nothing = obj(json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "checknothing",
            "metadata": {"name": "denyreviewsv3request", "namespace": "default"}
        }));
        let mut legacy_rule = rule();
        legacy_rule.body["spec"]["actions"] = json!([{
            "handler": "denyreviewsv3handler.denier",
            "instances": ["denyreviewsv3request.checknothing"]
        }]);
        let ack = s.on_response(&full(
            Kind::Legacy(L::Denier),
            "1",
            std::slice::from_ref(&denier),
        ));
        assert!(ack.error_detail.is_none(), "{:?}", ack.error_detail);
        assert_eq!(ack.collection, "istio/config/v1alpha2/legacy/deniers");
        s.on_response(&full(Kind::Legacy(L::CheckNothing), "1", &[nothing]));
        s.on_response(&full(Kind::Rule, "1", &[legacy_rule]));
        let p = policy.current();
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.rules.len(), 1);
        assert!(
            s.handler()
                .state()
                .handler("default/denyreviewsv3handler")
                .is_some()
        );

        // An object of another kind in a legacy update is refused, the state kept.
        let mut state = s.handler().state().clone();
        let wrong = state.apply(Update {
            kind: Kind::Legacy(L::Stdio),
            version: "2".into(),
            incremental: false,
            objects: vec![denier],
            removed: vec![],
        });
        assert!(wrong.is_err());
        assert!(state.handler("default/denyreviewsv3handler").is_some());

        // A new full state without the handler removes it: the rule is left out.
        s.on_response(&full(Kind::Legacy(L::Denier), "3", &[]));
        assert!(
            s.handler()
                .state()
                .handler("default/denyreviewsv3handler")
                .is_none()
        );
        assert!(policy.current().rules.is_empty());
    }

    #[test]
    fn incremental_updates_add_and_remove() {
        let (mut s, _, _, _) = sink();
        s.on_response(&full(Kind::Handler, "1", &[handler()]));
        let mut inc = full(Kind::Handler, "2", &[]);
        inc.incremental = true;
        inc.removed_resources = vec!["default/denyreviewsv3handler".into()];
        s.on_response(&inc);
        assert!(s.handler().state().handlers.is_empty());
    }

    #[test]
    fn counts_updates_by_collection_and_result() {
        let registry = mesh_runtime::Metrics::default();
        let metrics = MixerMetrics::register(&registry);
        let mut s = new_sink(
            "http://127.0.0.1:1",
            PolicyHandle::default(),
            metrics,
            Readiness::new(&[READY_CONDITION]),
        );
        s.on_response(&full(Kind::Handler, "1", &[handler()]));
        let mut bad = full(Kind::Rule, "2", &[]);
        bad.resources.push(Resource {
            metadata: None,
            body: None,
        });
        s.on_response(&bad);
        let text = registry.encode();
        assert!(
            text.contains(
                r#"mixer_config_updates_total{collection="istio/policy/v1beta1/handlers",result="ack"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mixer_config_updates_total{collection="istio/policy/v1beta1/rules",result="nack"} 1"#
            ),
            "{text}"
        );
    }
}
