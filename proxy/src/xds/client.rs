//! The ADS client: one stream to Pilot carrying CDS, EDS, LDS and RDS, Delta
//! ([`super::delta`]) or state of the world (here), falling back from Delta to SotW when
//! Pilot does not implement it.
//!
//! Subscribes to clusters and listeners (wildcard), then to the endpoints of the accepted
//! clusters and the route configurations the accepted listeners name, as Envoy does. Each
//! response is applied whole or NACKed; the last good snapshot keeps serving while Pilot is
//! away, and the stream is re-opened with backoff.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_proto::envoy::google::rpc::Status;
use mesh_runtime::Readiness;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::admin::ProxyMetrics;

use super::connect::{XdsTlsConfig, connect};
use super::delta::DeltaSession;
use super::snapshot::SharedConfig;
use super::state::{ResourceType, XdsState};

const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often xDS over mTLS looks for the workload certificate before the first one is held.
const IDENTITY_POLL: Duration = Duration::from_millis(50);

/// Why an ADS stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("invalid xds address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot connect to pilot: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("ads stream failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("ads stream closed by pilot")]
    Closed,
    #[error("no workload certificate yet for xds over mtls")]
    NoIdentity,
}

/// Per-type bookkeeping on one stream.
#[derive(Debug, Default, Clone)]
struct Subscription {
    names: Vec<String>,
    requested: bool,
    version: String,
    nonce: String,
}

/// Applies responses and produces the requests to send back. Holds no I/O, so the ACK/NACK
/// protocol is testable without a network.
#[derive(Debug)]
pub struct AdsSession {
    node: Node,
    pub state: XdsState,
    subs: HashMap<ResourceType, Subscription>,
}

impl AdsSession {
    pub fn new(node: Node) -> Self {
        AdsSession {
            node,
            state: XdsState::default(),
            subs: HashMap::new(),
        }
    }

    /// Starts a (new) stream: wildcard CDS and LDS, re-sending the versions already held.
    pub fn initial_requests(&mut self) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        for sub in self.subs.values_mut() {
            sub.nonce.clear();
            sub.requested = false;
        }
        for ty in [ResourceType::Cluster, ResourceType::Listener] {
            out.push(self.request(ty, None));
        }
        // Re-subscribe to the names already known (a reconnect keeps the last config).
        out.extend(self.follow_up(ResourceType::Cluster));
        out.extend(self.follow_up(ResourceType::Listener));
        out
    }

    fn request(&mut self, ty: ResourceType, error: Option<String>) -> DiscoveryRequest {
        let sub = self.subs.entry(ty).or_default();
        sub.requested = true;
        DiscoveryRequest {
            version_info: sub.version.clone(),
            node: Some(self.node.clone()),
            resource_names: sub.names.clone(),
            type_url: ty.type_url().to_string(),
            response_nonce: sub.nonce.clone(),
            error_detail: error.map(|message| Status {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }

    /// EDS after CDS, RDS and SDS (the secrets gateway listeners name) after LDS, when the
    /// set of names changed.
    fn follow_up(&mut self, ty: ResourceType) -> Vec<DiscoveryRequest> {
        let deps: Vec<(ResourceType, BTreeSet<String>)> = match ty {
            ResourceType::Cluster => vec![(ResourceType::Endpoint, self.state.cluster_names())],
            ResourceType::Listener => vec![
                (ResourceType::Route, self.state.route_names()),
                (ResourceType::Secret, self.state.secret_names()),
            ],
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        for (dep, names) in deps {
            let names: Vec<String> = names.into_iter().collect();
            let sub = self.subs.entry(dep).or_default();
            if names.is_empty() || (sub.requested && sub.names == names) {
                continue;
            }
            sub.names = names;
            out.push(self.request(dep, None));
        }
        out
    }

    /// Handles one response: the requests to send (subscription changes first, then the
    /// ACK/NACK) and whether a new snapshot was produced.
    pub fn on_response(
        &mut self,
        resp: &DiscoveryResponse,
    ) -> (
        Vec<DiscoveryRequest>,
        Result<(ResourceType, super::snapshot::Config), String>,
    ) {
        let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
            let req = DiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: Some(Status {
                    code: tonic::Code::InvalidArgument as i32,
                    message: format!("unsupported type_url {}", resp.type_url),
                    details: Vec::new(),
                }),
                ..Default::default()
            };
            return (
                vec![req],
                Err(format!("unsupported type_url {}", resp.type_url)),
            );
        };
        match self
            .state
            .apply(&resp.type_url, &resp.version_info, &resp.resources)
        {
            Ok((ty, config)) => {
                let mut out = Vec::new();
                out.extend(self.follow_up(ty));
                let sub = self.subs.entry(ty).or_default();
                sub.version = resp.version_info.clone();
                sub.nonce = resp.nonce.clone();
                out.push(self.request(ty, None));
                (out, Ok((ty, config)))
            }
            Err(e) => {
                let sub = self.subs.entry(ty).or_default();
                sub.nonce = resp.nonce.clone();
                let msg = e.to_string();
                (vec![self.request(ty, Some(msg.clone()))], Err(msg))
            }
        }
    }
}

/// Which ADS protocol the client speaks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum XdsProtocol {
    /// `DeltaAggregatedResources` (incremental), falling back to SotW when Pilot answers
    /// `UNIMPLEMENTED`.
    #[default]
    Delta,
    /// `StreamAggregatedResources` (state of the world).
    Sotw,
}

/// Where and how the client reaches Pilot.
#[derive(Debug, Clone)]
pub struct XdsClientConfig {
    /// `http://host:port` (plaintext) or `https://host:port` (mTLS, needs `tls`).
    pub addr: String,
    pub protocol: XdsProtocol,
    /// mTLS with the workload certificate; plaintext when `None`.
    pub tls: Option<XdsTlsConfig>,
}

/// Runs the ADS client (Delta, falling back to SotW, plaintext) until `shutdown` resolves.
pub async fn run(
    xds_addr: String,
    node: Node,
    config: SharedConfig,
    readiness: Readiness,
    metrics: ProxyMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let client = XdsClientConfig {
        addr: xds_addr,
        protocol: XdsProtocol::Delta,
        tls: None,
    };
    run_client(client, node, config, readiness, metrics, shutdown).await;
}

/// The session of the protocol in use; the accepted state moves along on a fallback.
enum Session {
    Delta(DeltaSession),
    Sotw(AdsSession),
}

/// Runs the ADS client until `shutdown` resolves: one stream at a time, re-opened with backoff
/// (reset once a stream got a response) while the last good config keeps serving.
pub async fn run_client(
    client: XdsClientConfig,
    node: Node,
    config: SharedConfig,
    readiness: Readiness,
    metrics: ProxyMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut session = match client.protocol {
        XdsProtocol::Delta => Session::Delta(DeltaSession::new(node.clone())),
        XdsProtocol::Sotw => Session::Sotw(AdsSession::new(node.clone())),
    };
    let addr = client.addr.clone();
    let run = async {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = match &mut session {
                Session::Delta(s) => {
                    super::delta_stream::stream_once(&client, s, &config, &readiness, &metrics)
                        .await
                }
                Session::Sotw(s) => stream_once(&client, s, &config, &readiness, &metrics).await,
            };
            match result {
                Ok(()) => {}
                Err((false, StreamError::Rpc(status)))
                    if status.code() == tonic::Code::Unimplemented =>
                {
                    if let Session::Delta(d) = &mut session {
                        tracing::warn!(xds_addr = %addr, message = %status.message(), "pilot does not serve delta xds; falling back to state of the world");
                        let mut sotw = AdsSession::new(node.clone());
                        sotw.state = std::mem::take(&mut d.state);
                        session = Session::Sotw(sotw);
                        continue;
                    }
                    tracing::warn!(xds_addr = %addr, message = %status.message(), retry_in_ms = backoff.as_millis() as u64, "pilot does not serve ads");
                }
                Err((_, StreamError::NoIdentity)) => {
                    // Citadel has not issued the certificate yet: look again soon, without
                    // growing the backoff (the identity task retries Citadel itself).
                    tracing::debug!(xds_addr = %addr, "waiting for the workload certificate before xds");
                    tokio::time::sleep(IDENTITY_POLL).await;
                    continue;
                }
                Err((got_response, e)) => {
                    if got_response {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::warn!(xds_addr = %addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "xds stream ended; keeping the last config");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    };
    tokio::select! {
        _ = run => {}
        _ = shutdown => {}
    }
}

/// One SotW stream; the error says whether any response arrived (to reset the backoff).
async fn stream_once(
    client: &XdsClientConfig,
    session: &mut AdsSession,
    config: &SharedConfig,
    readiness: &Readiness,
    metrics: &ProxyMetrics,
) -> Result<(), (bool, StreamError)> {
    let addr = client.addr.as_str();
    let channel = connect(addr, client.tls.as_ref())
        .await
        .map_err(|e| (false, e))?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    for req in session.initial_requests() {
        // The channel has room for the initial requests; a send error means the stream is gone.
        if tx.send(req).await.is_err() {
            return Err((false, StreamError::Closed));
        }
    }
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| (false, e.into()))?
        .into_inner();
    metrics.xds_connects.inc();
    tracing::info!(xds_addr = %addr, protocol = "sotw", "ads stream open");
    let mut got = false;
    while let Some(msg) = inbound.next().await {
        let resp = msg.map_err(|e| (got, e.into()))?;
        got = true;
        let (requests, result) = session.on_response(&resp);
        match result {
            Ok((ty, snapshot)) => {
                tracing::info!(r#type = ty.short(), version = %resp.version_info, resources = resp.resources.len(), "xds applied");
                metrics.xds(ty.short(), "ack");
                config.store(snapshot);
                if session.state.initial_config_applied() {
                    readiness.set("xds", true);
                }
            }
            Err(reason) => {
                let ty =
                    ResourceType::from_type_url(&resp.type_url).map_or("unknown", |t| t.short());
                tracing::warn!(r#type = ty, version = %resp.version_info, %reason, "xds rejected (NACK); keeping the last config");
                metrics.xds(ty, "nack");
            }
        }
        for req in requests {
            if tx.send(req).await.is_err() {
                return Err((got, StreamError::Closed));
            }
        }
    }
    Err((got, StreamError::Closed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::testdata::*;
    use mesh_proto::type_url;

    fn response(
        url: &str,
        version: &str,
        nonce: &str,
        resources: Vec<mesh_proto::envoy::google::protobuf::Any>,
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: url.into(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn subscribes_acks_and_nacks_keeping_the_last_good_config() {
        let mut s = AdsSession::new(Node::default());
        let init = s.initial_requests();
        let urls: Vec<&str> = init.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(urls, [type_url::CLUSTER, type_url::LISTENER]);
        assert!(
            init.iter()
                .all(|r| r.resource_names.is_empty() && r.response_nonce.is_empty())
        );

        // CDS: the EDS subscription for the cluster follows, then the ACK.
        let (reqs, res) = s.on_response(&response(
            type_url::CLUSTER,
            "c1",
            "n1",
            vec![cluster_any(
                "outbound|9080||reviews.default.svc.cluster.local",
                Some("spiffe://cluster.local/ns/default/sa/reviews"),
            )],
        ));
        assert!(res.is_ok());
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].type_url, type_url::ENDPOINT);
        assert_eq!(
            reqs[0].resource_names,
            ["outbound|9080||reviews.default.svc.cluster.local"]
        );
        assert_eq!(
            (
                reqs[1].type_url.as_str(),
                reqs[1].version_info.as_str(),
                reqs[1].response_nonce.as_str()
            ),
            (type_url::CLUSTER, "c1", "n1")
        );
        assert!(reqs[1].error_detail.is_none());
        assert!(!s.state.initial_config_applied());

        // LDS: RDS subscription for http_proxy, then ACK.
        let (reqs, res) = s.on_response(&response(
            type_url::LISTENER,
            "l1",
            "n2",
            vec![listener_any("virtualOutbound", "http_proxy")],
        ));
        assert!(res.is_ok());
        assert_eq!(reqs[0].type_url, type_url::ROUTE);
        assert_eq!(reqs[0].resource_names, ["http_proxy"]);
        assert!(s.state.initial_config_applied());

        let (_, res) = s.on_response(&response(
            type_url::ROUTE,
            "r1",
            "n3",
            vec![route_any(
                "http_proxy",
                "reviews",
                "/",
                "outbound|9080||reviews.default.svc.cluster.local",
            )],
        ));
        assert!(res.is_ok());
        let (reqs, res) = s.on_response(&response(
            type_url::ENDPOINT,
            "e1",
            "n4",
            vec![cla_any(
                "outbound|9080||reviews.default.svc.cluster.local",
                &["127.0.0.1:9081", "127.0.0.1:9082"],
            )],
        ));
        let (_, cfg) = res.unwrap();
        assert_eq!(reqs.len(), 1, "no new subscription, just the ACK");
        assert_eq!(reqs[0].version_info, "e1");
        let table = cfg.route_table_for("virtualOutbound").unwrap();
        let sel =
            crate::routing::select(table, "reviews", "/x", &http::HeaderMap::new(), 0).unwrap();
        let cluster = &cfg.clusters[sel.cluster.unwrap()];
        assert_eq!(
            cluster.tls.as_ref().unwrap().expected_sans,
            ["spiffe://cluster.local/ns/default/sa/reviews"]
        );
        assert_eq!(cfg.endpoints_of(cluster).unwrap().addrs.len(), 2);
        assert_eq!(cfg.versions.endpoints, "e1");

        // A bad RDS update (invalid regex) is NACKed with the reason; the old routes stay.
        let (reqs, res) = s.on_response(&response(
            type_url::ROUTE,
            "r2",
            "n5",
            vec![bad_regex_route_any("http_proxy")],
        ));
        let reason = res.unwrap_err();
        assert!(reason.contains("bad regex"), "{reason}");
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            reqs[0].version_info, "r1",
            "NACK carries the last good version"
        );
        assert_eq!(reqs[0].response_nonce, "n5");
        assert!(
            reqs[0]
                .error_detail
                .as_ref()
                .unwrap()
                .message
                .contains("bad regex")
        );
        let cfg = s.state.snapshot();
        assert_eq!(cfg.versions.routes, "r1");
        assert!(cfg.route_table_for("virtualOutbound").is_some());

        // A resource of the wrong type inside a response is rejected too.
        let (reqs, res) = s.on_response(&response(
            type_url::CLUSTER,
            "c2",
            "n6",
            vec![listener_any("x", "y")],
        ));
        assert!(res.unwrap_err().contains("expected"));
        assert_eq!(reqs[0].version_info, "c1");

        // Removing the cluster drops its endpoints.
        let (_, res) = s.on_response(&response(type_url::CLUSTER, "c3", "n7", vec![]));
        let (_, cfg) = res.unwrap();
        assert!(cfg.clusters.is_empty() && cfg.endpoints.is_empty());

        // A reconnect re-sends what is held, with the versions applied.
        let again = s.initial_requests();
        assert_eq!(again[1].version_info, "l1");
        assert!(
            again
                .iter()
                .any(|r| r.type_url == type_url::ROUTE && r.resource_names == ["http_proxy"])
        );
    }
}
