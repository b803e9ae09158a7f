//! One Delta ADS stream (`DeltaAggregatedResources`): sends the session's requests, applies
//! each response and publishes the snapshot once what it references has warmed.

use std::time::Duration;

use mesh_proto::envoy::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_runtime::Readiness;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::admin::{ProxyMetrics, XdsLabels};

use super::client::{StreamError, XdsClientConfig};
use super::connect::connect;
use super::delta::DeltaSession;
use super::snapshot::SharedConfig;

/// How long a new cluster or listener waits for its endpoints or routes before the snapshot
/// is published without them (Envoy's `initial_fetch_timeout` is 15 s).
pub const WARMING_TIMEOUT: Duration = Duration::from_secs(10);

fn publish(session: &DeltaSession, config: &SharedConfig, readiness: &Readiness) {
    config.store(session.state.snapshot());
    if session.state.initial_config_applied() {
        readiness.set("xds", true);
    }
}

/// One stream; the error says whether any response arrived (to reset the backoff).
pub(super) async fn stream_once(
    client: &XdsClientConfig,
    session: &mut DeltaSession,
    config: &SharedConfig,
    readiness: &Readiness,
    metrics: &ProxyMetrics,
) -> Result<(), (bool, StreamError)> {
    let addr = client.addr.as_str();
    let channel = connect(addr, client.tls.as_ref())
        .await
        .map_err(|e| (false, e))?;
    let mut ads =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    for req in session.initial_requests() {
        // The channel has room for the initial requests; a send error means the stream is gone.
        if tx.send(req).await.is_err() {
            return Err((false, StreamError::Closed));
        }
    }
    let mut inbound = ads
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| (false, e.into()))?
        .into_inner();
    metrics.xds_connects.inc();
    tracing::info!(xds_addr = %addr, protocol = "delta", tls = client.tls.is_some(), "ads stream open");
    let mut got = false;
    // Applied but not published yet (waiting for warming), since when.
    let mut unpublished: Option<Instant> = None;
    loop {
        let next = match unpublished {
            Some(since) => tokio::select! {
                m = inbound.next() => m,
                () = tokio::time::sleep_until(since + WARMING_TIMEOUT) => {
                    let missing = session.end_warming();
                    tracing::warn!(?missing, "xds warming timed out; publishing without them");
                    publish(session, config, readiness);
                    unpublished = None;
                    continue;
                }
            },
            None => inbound.next().await,
        };
        let Some(msg) = next else { break };
        let resp = msg.map_err(|e| (got, e.into()))?;
        got = true;
        let out = session.on_response(&resp);
        let ty = out.result.as_ref().map_or_else(
            |_| {
                super::state::ResourceType::from_type_url(&resp.type_url)
                    .map_or("unknown", |t| t.short())
            },
            |(t, _)| t.short(),
        );
        for (result, n) in [("added", out.added), ("removed", out.removed)] {
            metrics
                .xds_delta_resources
                .get_or_create(&XdsLabels { r#type: ty, result })
                .inc_by(n as u64);
        }
        match out.result {
            Ok(_) => {
                tracing::info!(r#type = ty, version = %resp.system_version_info,
                    added = out.added, removed = out.removed, "xds delta applied");
                metrics.xds(ty, "ack");
                unpublished.get_or_insert_with(Instant::now);
            }
            Err(reason) => {
                tracing::warn!(r#type = ty, version = %resp.system_version_info, %reason,
                    "xds delta rejected (NACK); keeping the last config");
                metrics.xds(ty, "nack");
            }
        }
        if unpublished.is_some() && session.is_warm() {
            publish(session, config, readiness);
            unpublished = None;
        }
        for req in out.requests {
            if tx.send(req).await.is_err() {
                return Err((got, StreamError::Closed));
            }
        }
    }
    Err((got, StreamError::Closed))
}
