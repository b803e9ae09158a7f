//! Property tests: whatever bytes arrive as a Listener, Cluster, RouteConfiguration or
//! ClusterLoadAssignment (random, or a valid resource mutated), decoding answers `Ok` or
//! `Err`, never panics.

use mesh_proto::envoy::envoy::config::listener::v3::{
    Filter, FilterChain, Listener as EnvoyListener, filter,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;
use proptest::prelude::*;
use prost::{Message, Name};

use super::*;
use crate::xds::testdata;

/// Valid resources of each type, to mutate.
fn seeds() -> Vec<Any> {
    vec![
        testdata::listener_any("virtualOutbound", "http_proxy"),
        testdata::cluster_any(
            "outbound|9080||reviews.default.svc.cluster.local",
            Some("spiffe://cluster.local/ns/default/sa/reviews"),
        ),
        testdata::cluster_any("outbound|9080||plain.default.svc.cluster.local", None),
        testdata::route_any("http_proxy", "reviews", "/", "outbound|9080||reviews"),
        testdata::weighted_route_any("r", "ratings:9080", &[("a", 25), ("b", 75)]),
        testdata::bad_regex_route_any("bad"),
        testdata::cla_any("outbound|9080||reviews", &["127.0.0.1:9080", "10.0.0.1:80"]),
    ]
}

/// Runs the decoder for `any`'s type (all four for an unknown type).
fn decode_any(any: &Any) {
    match any.type_url.as_str() {
        type_url::LISTENER => drop(listener(any)),
        type_url::CLUSTER => drop(cluster(any)),
        type_url::ROUTE => drop(route_table(any)),
        type_url::ENDPOINT => drop(load_assignment(any)),
        _ => {
            drop(listener(any));
            drop(cluster(any));
            drop(route_table(any));
            drop(load_assignment(any));
        }
    }
}

fn type_urls() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(type_url::LISTENER),
        Just(type_url::CLUSTER),
        Just(type_url::ROUTE),
        Just(type_url::ENDPOINT),
    ]
}

/// Filter configs whose decoders run nested inside a listener.
fn filter_urls() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(type_url::HTTP_CONNECTION_MANAGER.to_string()),
        Just(crate::tcp::TCP_PROXY_FILTER.to_string()),
        Just(
            mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy::type_url()
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(url in type_urls(), value in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_any(&Any { type_url: url.to_string(), value });
    }

    #[test]
    fn mutated_resources_never_panic(
        seed in 0usize..7,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<Option<usize>>(),
    ) {
        let mut any = seeds()[seed].clone();
        for (at, byte) in flips {
            if !any.value.is_empty() {
                let n = any.value.len();
                any.value[at % n] = byte;
            }
        }
        if let Some(c) = cut {
            let n = any.value.len() + 1;
            any.value.truncate(c % n);
        }
        decode_any(&any);
    }

    /// Arbitrary bytes as the HTTP connection manager or tcp_proxy of a listener (also the
    /// inbound listener, whose HCM holds the JWT and RBAC filters).
    #[test]
    fn random_filter_configs_never_panic(
        inbound in any::<bool>(),
        url in filter_urls(),
        value in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let l = EnvoyListener {
            name: if inbound { crate::authz::INBOUND_LISTENER.into() } else { "0.0.0.0_9000".into() },
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "f".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any { type_url: url, value })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let any = Any { type_url: type_url::LISTENER.into(), value: l.encode_to_vec() };
        drop(listener(&any));
    }
}
