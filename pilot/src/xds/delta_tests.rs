//! In-process Delta ADS: a real tonic server on 127.0.0.1:0 and the generated client.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use mesh_proto::envoy::google::rpc::Status as RpcStatus;
use mesh_proto::type_url;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::tests::{Harness, REVIEWS, WAIT, start_with};
use crate::galley_client::Snapshot;
use crate::metrics::TypeLabel;

const RATINGS: &str = "ratings.default.svc.cluster.local";

fn reviews() -> String {
    format!("outbound|9080||{REVIEWS}")
}

fn reviews_v1() -> String {
    format!("outbound|9080|v1|{REVIEWS}")
}

fn ratings() -> String {
    format!("outbound|9080||{RATINGS}")
}

/// The mesh: reviews (with subset v1) and, with `with_ratings`, ratings. `subset_policy` changes
/// only the v1 subset's cluster; `extra_endpoints` adds v1 endpoints to reviews.
#[derive(Debug, Clone, Copy, Default)]
struct World {
    without_ratings: bool,
    subset_policy: bool,
    extra_endpoints: u8,
}

impl World {
    fn objects(self) -> Vec<ConfigObject> {
        let mut addresses = vec![
            serde_json::json!({"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "reviews-v1"}}),
        ];
        for i in 0..self.extra_endpoints {
            addresses.push(serde_json::json!({"ip": format!("127.0.1.{i}"), "targetRef": {"kind": "Pod", "name": "reviews-v1b"}}));
        }
        let mut subset = serde_json::json!({"name": "v1", "labels": {"version": "v1"}});
        if self.subset_policy {
            subset["trafficPolicy"] = serde_json::json!({"loadBalancer": {"simple": "RANDOM"}});
        }
        let mut v = vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 9080}]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "default"},
                "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 15006}]}]}),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v1", "namespace": "default", "labels": {"version": "v1"}},
                "spec": {"serviceAccountName": "bookinfo-reviews"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-v1b", "namespace": "default", "labels": {"version": "v1"}},
                "spec": {"serviceAccountName": "bookinfo-reviews"}}),
            serde_json::json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"host": "reviews", "subsets": [subset]}}),
        ];
        if !self.without_ratings {
            v.push(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ratings", "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 9080}]}}));
            v.push(serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ratings", "namespace": "default"},
                "subsets": [{"addresses": [{"ip": "127.0.0.3"}], "ports": [{"name": "http", "port": 15006}]}]}));
        }
        v.into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect()
    }

    fn publish(self, h: &Harness) {
        h.snapshots
            .send_replace(Arc::new(Snapshot::from_objects(self.objects())));
    }
}

struct Client {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    async fn connect(h: &Harness) -> Client {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", h.addr))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Client { tx, rx }
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx
            .send(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: "sidecar~127.0.0.9~productpage-v1.default~default.svc.cluster.local".into(),
                    ..Node::default()
                }),
                ..req
            })
            .await
            .unwrap();
    }

    async fn subscribe(&self, type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    async fn nack(&self, r: &DeltaDiscoveryResponse, error: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: error.into(),
                details: vec![],
            }),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("response in time")
            .unwrap()
            .expect("stream open")
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

fn versions(r: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    r.resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

fn endpoint_count(r: &DeltaDiscoveryResponse, cluster: &str) -> usize {
    r.resources
        .iter()
        .filter(|r| r.name == cluster)
        .map(|r| {
            ClusterLoadAssignment::decode(r.resource.as_ref().unwrap().value.as_slice()).unwrap()
        })
        .map(|c| {
            c.endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum::<usize>()
        })
        .sum()
}

/// Polls `/debug/syncz` state until `ok` holds.
async fn wait_status(h: &Harness, what: &str, ok: impl Fn(&[super::ProxyStatus]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = h.status.list();
        if ok(&st) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {st:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn counter(
    f: &prometheus_client::metrics::family::Family<
        TypeLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    t: &str,
) -> u64 {
    f.get_or_create(&TypeLabel { r#type: t.into() }).get()
}

#[tokio::test]
async fn wildcard_cds_lds_and_named_eds_rds() {
    let h = start_with(World::default().objects()).await;
    let mut c = Client::connect(&h).await;

    c.subscribe(type_url::CLUSTER, &[], &[]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    let mut got = names(&cds);
    got.sort();
    let mut want = vec![ratings(), reviews(), reviews_v1()];
    want.sort();
    assert_eq!(got, want);
    assert!(cds.removed_resources.is_empty());
    assert!(!cds.system_version_info.is_empty() && !cds.nonce.is_empty());
    for r in &cds.resources {
        assert!(!r.version.is_empty());
        assert_eq!(r.resource.as_ref().unwrap().type_url, type_url::CLUSTER);
    }
    c.ack(&cds).await;

    let default_cluster = reviews();
    c.subscribe(type_url::ENDPOINT, &[&default_cluster], &[])
        .await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, type_url::ENDPOINT);
    assert_eq!(names(&eds), vec![reviews()], "only the subscribed name");
    assert_eq!(endpoint_count(&eds, &reviews()), 1);
    c.ack(&eds).await;

    // A name that does not exist is answered with a removal.
    c.subscribe(
        type_url::ENDPOINT,
        &["outbound|1||nope.default.svc.cluster.local"],
        &[],
    )
    .await;
    let missing = c.recv().await;
    assert!(missing.resources.is_empty());
    assert_eq!(
        missing.removed_resources,
        vec!["outbound|1||nope.default.svc.cluster.local".to_string()]
    );
    c.ack(&missing).await;

    c.subscribe(type_url::LISTENER, &[], &[]).await;
    let lds = c.recv().await;
    assert_eq!(lds.type_url, type_url::LISTENER);
    // virtualInbound and virtualOutbound.
    assert_eq!(lds.resources.len(), 2);
    c.ack(&lds).await;

    c.subscribe(type_url::ROUTE, &["http_proxy"], &[]).await;
    let rds = c.recv().await;
    assert_eq!(names(&rds), vec!["http_proxy"]);
    c.ack(&rds).await;

    wait_status(&h, "acks recorded", |st| {
        st.len() == 1
            && st[0].protocol == "delta"
            && st[0].types.len() == 4
            && st[0]
                .types
                .values()
                .all(|t| t.acked_version.is_some() && t.acked_version == t.sent_version)
    })
    .await;
    assert_eq!(h.metrics.connected_proxies.get(), 1);
    assert_eq!(counter(&h.metrics.xds_pushes, "eds"), 2);

    drop(c);
    wait_status(&h, "disconnect recorded", |st| st.is_empty()).await;
    assert_eq!(h.metrics.connected_proxies.get(), 0);
    h.stop.send_replace(true);
}

#[tokio::test]
async fn change_sends_only_changed_resources_and_removals_in_push_order() {
    let h = start_with(World::default().objects()).await;
    let mut c = Client::connect(&h).await;
    c.subscribe(type_url::CLUSTER, &[], &[]).await;
    let cds = c.recv().await;
    c.ack(&cds).await;
    let (reviews_c, ratings_c) = (reviews(), ratings());
    c.subscribe(type_url::ENDPOINT, &[&reviews_c, &ratings_c], &[])
        .await;
    let eds = c.recv().await;
    assert_eq!(eds.resources.len(), 2);
    c.ack(&eds).await;

    // The subset's policy changes one cluster; ratings goes away.
    World {
        without_ratings: true,
        subset_policy: true,
        ..World::default()
    }
    .publish(&h);
    let cds2 = c.recv().await;
    assert_eq!(cds2.type_url, type_url::CLUSTER, "CDS before EDS");
    assert_eq!(names(&cds2), vec![reviews_v1()], "only the changed cluster");
    assert_ne!(
        versions(&cds2)[&reviews_v1()],
        versions(&cds)[&reviews_v1()]
    );
    assert_eq!(cds2.removed_resources, vec![ratings()]);
    assert_ne!(cds2.system_version_info, cds.system_version_info);
    c.ack(&cds2).await;
    let eds2 = c.recv().await;
    assert_eq!(eds2.type_url, type_url::ENDPOINT);
    assert!(
        eds2.resources.is_empty(),
        "reviews endpoints did not change"
    );
    assert_eq!(eds2.removed_resources, vec![ratings()]);
    h.stop.send_replace(true);
}

#[tokio::test]
async fn reconnect_with_initial_versions_resends_only_what_differs() {
    let h = start_with(World::default().objects()).await;
    let mut c = Client::connect(&h).await;
    c.subscribe(type_url::CLUSTER, &[], &[]).await;
    let cds = c.recv().await;
    let held = versions(&cds);
    drop(c);

    // Holding exactly the current versions: an answer with nothing in it.
    let mut c = Client::connect(&h).await;
    c.send(DeltaDiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        initial_resource_versions: held.clone(),
        ..DeltaDiscoveryRequest::default()
    })
    .await;
    let r = c.recv().await;
    assert!(r.resources.is_empty(), "nothing re-sent: {:?}", names(&r));
    assert!(r.removed_resources.is_empty());
    assert_eq!(r.system_version_info, cds.system_version_info);
    drop(c);

    // An outdated version and a resource that no longer exists.
    let mut stale = held;
    stale.insert(reviews(), "old".into());
    stale.insert(
        "outbound|1||gone.default.svc.cluster.local".into(),
        "x".into(),
    );
    let mut c = Client::connect(&h).await;
    c.send(DeltaDiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        initial_resource_versions: stale,
        ..DeltaDiscoveryRequest::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), vec![reviews()]);
    assert_eq!(
        r.removed_resources,
        vec!["outbound|1||gone.default.svc.cluster.local".to_string()]
    );
    h.stop.send_replace(true);
}

#[tokio::test]
async fn nack_is_recorded_and_the_rejected_version_not_resent() {
    let h = start_with(World::default().objects()).await;
    let mut c = Client::connect(&h).await;
    c.subscribe(type_url::CLUSTER, &[], &[]).await;
    let cds = c.recv().await;
    c.ack(&cds).await;
    let (reviews_c, ratings_c) = (reviews(), ratings());
    c.subscribe(type_url::ENDPOINT, &[&reviews_c, &ratings_c], &[])
        .await;
    let eds = c.recv().await;
    c.ack(&eds).await;

    // A new endpoint changes only reviews' endpoints.
    let mut world = World {
        extra_endpoints: 1,
        ..World::default()
    };
    world.publish(&h);
    let eds2 = c.recv().await;
    assert_eq!(eds2.type_url, type_url::ENDPOINT, "only EDS changed");
    assert_eq!(names(&eds2), vec![reviews()]);
    assert_eq!(endpoint_count(&eds2, &reviews()), 2);
    c.nack(&eds2, "bad endpoint").await;
    wait_status(&h, "NACK recorded", |st| {
        st.first()
            .is_some_and(|p| p.types.get("eds").is_some_and(|t| t.nacks == 1))
    })
    .await;
    let st = h.status.list();
    let eds_status = &st[0].types["eds"];
    let nack = eds_status.last_nack.as_ref().unwrap();
    assert_eq!(nack.error, "bad endpoint");
    assert_eq!(nack.version, eds2.system_version_info);
    assert_eq!(
        nack.resources,
        vec![format!("{}@{}", reviews(), eds2.resources[0].version)]
    );
    assert_eq!(
        eds_status.acked_version.as_deref(),
        Some(eds.system_version_info.as_str())
    );
    assert_eq!(counter(&h.metrics.xds_nacks, "eds"), 1);

    // Ratings goes away: EDS removes it but does not re-send reviews' rejected version.
    world.without_ratings = true;
    world.publish(&h);
    let cds2 = c.recv().await;
    assert_eq!(cds2.type_url, type_url::CLUSTER);
    assert_eq!(cds2.removed_resources, vec![ratings()]);
    let eds3 = c.recv().await;
    assert_eq!(eds3.type_url, type_url::ENDPOINT);
    assert!(eds3.resources.is_empty(), "NACKed version re-sent");
    assert_eq!(eds3.removed_resources, vec![ratings()]);

    // Once reviews' endpoints change again, they are sent.
    world.extra_endpoints = 2;
    world.publish(&h);
    let eds4 = c.recv().await;
    assert_eq!(names(&eds4), vec![reviews()]);
    assert_eq!(endpoint_count(&eds4, &reviews()), 3);
    h.stop.send_replace(true);
}

#[tokio::test]
async fn unsubscribe_stops_updates_for_that_name() {
    let h = start_with(World::default().objects()).await;
    let mut c = Client::connect(&h).await;
    let (reviews_c, subset_c) = (reviews(), reviews_v1());
    c.subscribe(type_url::ENDPOINT, &[&reviews_c, &subset_c], &[])
        .await;
    let eds = c.recv().await;
    assert_eq!(eds.resources.len(), 2);
    c.ack(&eds).await;

    // Unsubscribing sends nothing; the missing name in the same request makes the server answer,
    // so the test knows the unsubscribe was seen.
    c.subscribe(
        type_url::ENDPOINT,
        &["outbound|1||nope.default.svc.cluster.local"],
        &[&subset_c],
    )
    .await;
    let r = c.recv().await;
    assert!(r.resources.is_empty());
    assert_eq!(
        r.removed_resources,
        vec!["outbound|1||nope.default.svc.cluster.local".to_string()]
    );
    c.ack(&r).await;

    // The new v1 endpoint changes both the default and the v1 cluster; only one is subscribed.
    World {
        extra_endpoints: 1,
        ..World::default()
    }
    .publish(&h);
    let eds2 = c.recv().await;
    assert_eq!(names(&eds2), vec![reviews()]);
    assert!(eds2.removed_resources.is_empty());
    h.stop.send_replace(true);
}

#[tokio::test]
async fn stream_without_node_is_rejected() {
    let h = start_with(World::default().objects()).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", h.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    h.stop.send_replace(true);
}
