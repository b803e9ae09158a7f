//! Istio's `PassthroughCluster`: a captured connection to a destination outside the registry
//! (outbound traffic policy ALLOW_ANY) goes to its original destination as it is, counted in
//! the TCP metrics with `destination_service_name` `PassthroughCluster`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::{
    Outcome, Party, ProxyContext, Reporter, Service, Workload, flags, request_labels,
};

use super::counted::Counted;
use super::metrics::TcpLabels;
use super::outbound::Io;

/// How long dialling the original destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The passthrough's `destination_service*` labels: the address dialled, as Istio reports it.
fn passthrough_service(dst: SocketAddr) -> Service {
    Service {
        fqdn: Arc::from(dst.to_string()),
        name: Arc::from(crate::capture::PASSTHROUGH_CLUSTER),
        namespace: Arc::from("unknown"),
    }
}

/// Splices `down` (whose first bytes, already read, are `head`) with a new connection to
/// `dst`, until either side closes.
pub(crate) async fn passthrough<S: Io>(
    ctx: &ProxyContext,
    down: S,
    head: Vec<u8>,
    remote: SocketAddr,
    dst: SocketAddr,
) {
    let service = passthrough_service(dst);
    let unknown = Workload::unknown();
    let labels = |response_flags: &'static str| -> TcpLabels {
        request_labels(
            Reporter::Source,
            &Party {
                workload: &ctx.workload,
                principal: "",
            },
            &Party {
                workload: &unknown,
                principal: "",
            },
            &service,
            Outcome {
                response_code: 0,
                response_flags,
                mtls: false,
            },
        )
        .into()
    };
    let metrics = &ctx.metrics.tcp;
    let mut up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, %dst, error = %e, "passthrough connect failed");
            ctx.metrics.upstream_error("connect");
            let l = labels(flags::UPSTREAM_CONNECT_FAILURE);
            metrics.opened(&l);
            metrics.closed(&l);
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, %dst, "passthrough connect timed out");
            ctx.metrics.upstream_error("connect");
            let l = labels(flags::UPSTREAM_CONNECT_FAILURE);
            metrics.opened(&l);
            metrics.closed(&l);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let l = labels(flags::NONE);
    metrics.opened(&l);
    let (sent, received) = metrics.bytes(&l);
    if !head.is_empty() {
        received.inc_by(head.len() as u64);
        if let Err(e) = up.write_all(&head).await {
            tracing::debug!(%dst, error = %e, "passthrough upstream closed early");
            metrics.closed(&l);
            return;
        }
    }
    let mut down = Counted {
        inner: down,
        received,
        sent,
    };
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((to_up, to_down)) => {
            tracing::debug!(%dst, to_up, to_down, "passthrough connection closed");
        }
        Err(e) => tracing::debug!(%dst, error = %e, "passthrough connection ended with an error"),
    }
    metrics.closed(&l);
}
