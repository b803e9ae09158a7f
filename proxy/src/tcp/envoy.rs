//! `envoy.filters.network.tcp_proxy` → [`TcpProxy`].

use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as EnvoyTcpProxy, tcp_proxy::ClusterSpecifier,
};
use mesh_proto::envoy::google::protobuf::Any;
use prost::{Message, Name};

use super::model::TcpProxy;

/// The filter's name in a listener's filter chain.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// Decodes a `TcpProxy` typed config; `Ok(None)` when `any` is another type. Errors are
/// `(field, reason)`.
pub fn decode_tcp_proxy(any: &Any) -> Result<Option<TcpProxy>, (String, String)> {
    if any.type_url != EnvoyTcpProxy::type_url() {
        return Ok(None);
    }
    let tp = EnvoyTcpProxy::decode(any.value.as_slice())
        .map_err(|e| ("typed_config".to_string(), e.to_string()))?;
    let clusters = match tp.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => vec![(c, 1)],
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let mut out = Vec::with_capacity(w.clusters.len());
            for (i, c) in w.clusters.into_iter().enumerate() {
                if c.name.is_empty() {
                    return Err((
                        format!("weighted_clusters.clusters[{i}].name"),
                        "empty".into(),
                    ));
                }
                if c.weight > 0 {
                    out.push((c.name, c.weight));
                }
            }
            if out.is_empty() {
                return Err((
                    "weighted_clusters".into(),
                    "no cluster with a positive weight".into(),
                ));
            }
            out
        }
        _ => return Err(("cluster".into(), "no cluster".into())),
    };
    Ok(Some(TcpProxy::single(clusters)))
}
