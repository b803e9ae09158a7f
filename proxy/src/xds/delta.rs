//! The Delta (incremental) ADS protocol on the client side, without I/O.
//!
//! Clusters and listeners are subscribed as wildcards; endpoints and route configurations by
//! name, as the accepted clusters and listeners reference them (`resource_names_subscribe` /
//! `resource_names_unsubscribe`). Each response's added and removed resources are merged into
//! the resources held of that type and the whole type is applied through [`XdsState::apply`],
//! so Delta and SotW build exactly the same snapshot (same decoding, same rejection of a bad
//! resource). ACKs carry the response nonce, NACKs the nonce and `error_detail`; a NACKed
//! response changes nothing. On a new stream every type held is re-subscribed with
//! `initial_resource_versions`, so the server sends only what changed.
//!
//! Warming: endpoints and route configurations subscribed and not yet answered hold back the
//! publication of a new snapshot (the caller asks [`DeltaSession::is_warm`]), so a new cluster
//! or listener goes live together with what it needs, as Envoy's cluster and listener warming
//! does.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::envoy::google::rpc::Status;

use super::snapshot::Config;
use super::state::{ResourceType, XdsState};

/// One resource held: the version the server gave it and its body.
#[derive(Debug, Clone)]
struct Held {
    version: String,
    body: Any,
}

/// What one response did.
#[derive(Debug)]
pub struct DeltaOutcome {
    /// Requests to send, in order: subscription changes, then the ACK or NACK.
    pub requests: Vec<DeltaDiscoveryRequest>,
    /// The type applied and its new snapshot, or why the response was rejected.
    pub result: Result<(ResourceType, Config), String>,
    /// Resources added (or replaced) and removed by the response.
    pub added: usize,
    pub removed: usize,
}

/// The client's Delta state: accepted resources (kept across streams) and this stream's
/// subscriptions.
#[derive(Debug)]
pub struct DeltaSession {
    node: Node,
    pub state: XdsState,
    /// Per type, the resources held by name (their versions go out as
    /// `initial_resource_versions` on a new stream).
    held: HashMap<ResourceType, BTreeMap<String, Held>>,
    /// EDS and RDS names subscribed on the current stream.
    subscribed: HashMap<ResourceType, BTreeSet<String>>,
    /// Names subscribed and not answered yet (neither sent nor reported removed).
    warming: BTreeSet<(ResourceType, String)>,
}

impl DeltaSession {
    pub fn new(node: Node) -> Self {
        DeltaSession {
            node,
            state: XdsState::default(),
            held: HashMap::new(),
            subscribed: HashMap::new(),
            warming: BTreeSet::new(),
        }
    }

    /// The first requests of a (new) stream: CDS and LDS wildcards, then the endpoints and
    /// route configurations the held clusters and listeners need, each with the versions held.
    pub fn initial_requests(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.subscribed.clear();
        self.warming.clear();
        let mut out = Vec::new();
        for ty in [ResourceType::Cluster, ResourceType::Listener] {
            out.push(DeltaDiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: ty.type_url().to_string(),
                initial_resource_versions: self.versions(ty),
                ..Default::default()
            });
            out.extend(self.follow_up(ty, true));
        }
        out
    }

    /// The version held of each resource of `ty`.
    pub fn versions(&self, ty: ResourceType) -> HashMap<String, String> {
        self.held.get(&ty).map_or_else(HashMap::new, |m| {
            m.iter()
                .map(|(n, h)| (n.clone(), h.version.clone()))
                .collect()
        })
    }

    /// Whether every endpoint and route configuration subscribed has been answered.
    pub fn is_warm(&self) -> bool {
        self.warming.is_empty()
    }

    /// Gives up waiting for the names still warming (they count as absent until they come).
    pub fn end_warming(&mut self) -> Vec<String> {
        let names = self
            .warming
            .iter()
            .map(|(t, n)| format!("{}:{n}", t.short()))
            .collect();
        self.warming.clear();
        names
    }

    /// Subscription changes of EDS after CDS, RDS and SDS (the secrets gateway listeners
    /// name) after LDS; with `initial` (a new stream) the versions held go along.
    fn follow_up(&mut self, ty: ResourceType, initial: bool) -> Vec<DeltaDiscoveryRequest> {
        let deps = match ty {
            ResourceType::Cluster => vec![(ResourceType::Endpoint, self.state.cluster_names())],
            ResourceType::Listener => vec![
                (ResourceType::Route, self.state.route_names()),
                (ResourceType::Secret, self.state.secret_names()),
            ],
            _ => return Vec::new(),
        };
        deps.into_iter()
            .filter_map(|(dep, want)| self.follow_up_of(dep, want, initial))
            .collect()
    }

    /// The subscription change of `dep` to `want`, if any.
    fn follow_up_of(
        &mut self,
        dep: ResourceType,
        want: BTreeSet<String>,
        initial: bool,
    ) -> Option<DeltaDiscoveryRequest> {
        // What is no longer referenced is no longer held (the state dropped it too).
        if let Some(held) = self.held.get_mut(&dep) {
            held.retain(|n, _| want.contains(n));
        }
        self.warming.retain(|(t, n)| *t != dep || want.contains(n));
        let sub = self.subscribed.entry(dep).or_default();
        let subscribe: Vec<String> = want.difference(sub).cloned().collect();
        let unsubscribe: Vec<String> = sub.difference(&want).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        *sub = want;
        let held = self.held.get(&dep);
        for n in &subscribe {
            if !held.is_some_and(|h| h.contains_key(n)) {
                self.warming.insert((dep, n.clone()));
            }
        }
        Some(DeltaDiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: dep.type_url().to_string(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            initial_resource_versions: if initial {
                self.versions(dep)
            } else {
                HashMap::new()
            },
            ..Default::default()
        })
    }

    fn answer(
        &self,
        resp: &DeltaDiscoveryResponse,
        error: Option<String>,
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: error.map(|message| Status {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }

    /// Handles one response: merges it into the type's resources, applies the type whole,
    /// and answers (subscription changes first, then the ACK; or a NACK keeping everything).
    pub fn on_response(&mut self, resp: &DeltaDiscoveryResponse) -> DeltaOutcome {
        let (added, removed) = (resp.resources.len(), resp.removed_resources.len());
        let reject = |s: &mut Self, reason: String| DeltaOutcome {
            requests: vec![s.answer(resp, Some(reason.clone()))],
            result: Err(reason),
            added,
            removed,
        };
        let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
            return reject(self, format!("unsupported type_url {}", resp.type_url));
        };
        // Whatever happens, the names in the response have been answered.
        for n in resp
            .resources
            .iter()
            .map(|r| &r.name)
            .chain(&resp.removed_resources)
        {
            self.warming.remove(&(ty, n.clone()));
        }
        let mut next = self.held.get(&ty).cloned().unwrap_or_default();
        for n in &resp.removed_resources {
            next.remove(n);
        }
        let mut seen = BTreeSet::new();
        for r in &resp.resources {
            if !seen.insert(r.name.as_str()) {
                return reject(self, format!("duplicate resource {}", r.name));
            }
            let Some(body) = r.resource.clone() else {
                return reject(self, format!("resource {} carries no body", r.name));
            };
            next.insert(
                r.name.clone(),
                Held {
                    version: r.version.clone(),
                    body,
                },
            );
        }
        let bodies: Vec<Any> = next.values().map(|h| h.body.clone()).collect();
        match self
            .state
            .apply(&resp.type_url, &resp.system_version_info, &bodies)
        {
            Ok((ty, config)) => {
                self.held.insert(ty, next);
                let mut requests: Vec<_> = self.follow_up(ty, false);
                requests.push(self.answer(resp, None));
                DeltaOutcome {
                    requests,
                    result: Ok((ty, config)),
                    added,
                    removed,
                }
            }
            Err(e) => reject(self, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::testdata::*;
    use mesh_proto::envoy::envoy::service::discovery::v3::Resource;
    use mesh_proto::type_url;

    const C: &str = "outbound|9080||reviews.default.svc.cluster.local";
    const D: &str = "outbound|9080||details.default.svc.cluster.local";

    fn res(name: &str, version: &str, body: Any) -> Resource {
        Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(body),
            ..Default::default()
        }
    }

    fn delta(
        url: &str,
        nonce: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: format!("sys-{nonce}"),
            resources,
            type_url: url.into(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn subscribes_by_reference_acks_nacks_and_resumes_with_versions() {
        let mut s = DeltaSession::new(Node::default());
        let init = s.initial_requests();
        let urls: Vec<&str> = init.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(urls, [type_url::CLUSTER, type_url::LISTENER]);
        assert!(init.iter().all(|r| r.resource_names_subscribe.is_empty()
            && r.initial_resource_versions.is_empty()
            && r.response_nonce.is_empty()));
        assert!(s.is_warm());

        // CDS: EDS subscription for both clusters, then the ACK; not warm until EDS answers.
        let out = s.on_response(&delta(
            type_url::CLUSTER,
            "n1",
            vec![
                res(C, "c1", cluster_any(C, None)),
                res(D, "d1", cluster_any(D, None)),
            ],
            &[],
        ));
        assert!(out.result.is_ok());
        assert_eq!(out.requests.len(), 2);
        assert_eq!(out.requests[0].type_url, type_url::ENDPOINT);
        assert_eq!(out.requests[0].resource_names_subscribe, [D, C]);
        assert_eq!(out.requests[1].response_nonce, "n1");
        assert!(out.requests[1].error_detail.is_none());
        assert!(!s.is_warm());

        let out = s.on_response(&delta(
            type_url::LISTENER,
            "n2",
            vec![res(
                "virtualOutbound",
                "l1",
                listener_any("virtualOutbound", "http_proxy"),
            )],
            &[],
        ));
        assert_eq!(out.requests[0].resource_names_subscribe, ["http_proxy"]);
        assert!(s.state.initial_config_applied());

        // EDS answers one name with a resource, the other as absent.
        let out = s.on_response(&delta(
            type_url::ENDPOINT,
            "n3",
            vec![res(C, "e1", cla_any(C, &["127.0.0.1:9081"]))],
            &[D],
        ));
        assert_eq!(out.requests.len(), 1, "just the ACK");
        assert!(!s.is_warm(), "http_proxy still warming");
        let out = s.on_response(&delta(
            type_url::ROUTE,
            "n4",
            vec![res(
                "http_proxy",
                "r1",
                route_any("http_proxy", "reviews", "/", C),
            )],
            &[],
        ));
        let (_, cfg) = out.result.unwrap();
        assert!(s.is_warm());
        assert!(cfg.route_table_for("virtualOutbound").is_some());
        assert_eq!(cfg.endpoints[C].addrs.len(), 1);
        assert_eq!(cfg.versions.routes, "sys-n4");

        // An endpoint change: only that CLA; the other types stay.
        let out = s.on_response(&delta(
            type_url::ENDPOINT,
            "n5",
            vec![res(
                C,
                "e2",
                cla_any(C, &["127.0.0.1:9081", "127.0.0.1:9082"]),
            )],
            &[],
        ));
        let (_, cfg) = out.result.unwrap();
        assert_eq!(cfg.endpoints[C].addrs.len(), 2);
        assert_eq!(cfg.clusters.len(), 2);

        // A bad route is NACKed with the reason; the held version stays.
        let out = s.on_response(&delta(
            type_url::ROUTE,
            "n6",
            vec![res("http_proxy", "r2", bad_regex_route_any("http_proxy"))],
            &[],
        ));
        assert!(out.result.unwrap_err().contains("bad regex"));
        assert_eq!(out.requests.len(), 1);
        assert_eq!(out.requests[0].response_nonce, "n6");
        assert!(
            out.requests[0]
                .error_detail
                .as_ref()
                .unwrap()
                .message
                .contains("bad regex")
        );
        assert_eq!(s.versions(ResourceType::Route)["http_proxy"], "r1");
        assert_eq!(s.state.snapshot().versions.routes, "sys-n4");

        // Removing a cluster unsubscribes its endpoints.
        let out = s.on_response(&delta(type_url::CLUSTER, "n7", vec![], &[D]));
        let (_, cfg) = out.result.unwrap();
        assert_eq!(cfg.clusters.len(), 1);
        assert_eq!(out.requests[0].resource_names_unsubscribe, [D]);
        assert!(out.requests[0].resource_names_subscribe.is_empty());

        // A new stream re-subscribes with the versions held.
        let again = s.initial_requests();
        let by_type = |t: &str| again.iter().find(|r| r.type_url == t).unwrap();
        assert_eq!(
            by_type(type_url::CLUSTER).initial_resource_versions,
            HashMap::from([(C.to_string(), "c1".to_string())])
        );
        let eds = by_type(type_url::ENDPOINT);
        assert_eq!(eds.resource_names_subscribe, [C]);
        assert_eq!(eds.initial_resource_versions[C], "e2");
        assert_eq!(
            by_type(type_url::ROUTE).initial_resource_versions["http_proxy"],
            "r1"
        );
        assert!(s.is_warm(), "names held are not warming");
    }

    #[test]
    fn malformed_responses_are_nacked() {
        let mut s = DeltaSession::new(Node::default());
        s.initial_requests();
        let out = s.on_response(&delta("type.googleapis.com/x.Y", "n1", vec![], &[]));
        assert!(out.result.is_err());
        assert!(out.requests[0].error_detail.is_some());
        let out = s.on_response(&delta(
            type_url::CLUSTER,
            "n2",
            vec![
                res(C, "1", cluster_any(C, None)),
                res(C, "2", cluster_any(C, None)),
            ],
            &[],
        ));
        assert!(out.result.unwrap_err().contains("duplicate"));
        let out = s.on_response(&delta(
            type_url::CLUSTER,
            "n3",
            vec![Resource {
                name: C.into(),
                ..Default::default()
            }],
            &[],
        ));
        assert!(out.result.unwrap_err().contains("no body"));
        assert!(s.versions(ResourceType::Cluster).is_empty());
        assert!(!s.state.initial_config_applied());
    }
}
