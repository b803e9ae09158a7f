//! Istio's cluster metadata: `metadata.filter_metadata["istio"] = {"services": [{"host",
//! "name", "namespace"}]}` on each outbound cluster, read by the proxy's telemetry for
//! `destination_service_name` / `destination_service_namespace` (the service's own namespace,
//! a ServiceEntry's too, rather than a guess from the host name).
//!
//! `google.protobuf.Struct` keeps its fields in a `HashMap`, which prost encodes in iteration
//! order, and every new map iterates differently: the service entry is cloned from one
//! process-wide template and only its values are replaced, so every cluster encodes its keys
//! in the same order and the content-derived versions stay stable.

use std::collections::HashMap;
use std::sync::LazyLock;

use mesh_proto::envoy::envoy::config::core::v3::Metadata;
use mesh_proto::envoy::google::protobuf::{ListValue, Struct, Value, value};

use crate::model::Service;

/// The `filter_metadata` key.
pub const ISTIO_METADATA: &str = "istio";

const KEYS: [&str; 3] = ["host", "name", "namespace"];

static SERVICE_TEMPLATE: LazyLock<Struct> = LazyLock::new(|| Struct {
    fields: KEYS
        .iter()
        .map(|k| (k.to_string(), Value::default()))
        .collect(),
});

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

/// The metadata of `svc`'s clusters: host = the FQDN (a ServiceEntry's host), name = the
/// Service's name (a ServiceEntry's: the host), namespace = where it is defined.
pub fn service_metadata(svc: &Service) -> Metadata {
    let mut entry = SERVICE_TEMPLATE.clone();
    for (k, v) in KEYS.iter().zip([&svc.fqdn, &svc.name, &svc.namespace]) {
        if let Some(slot) = entry.fields.get_mut(*k) {
            *slot = string(v);
        }
    }
    let services = Value {
        kind: Some(value::Kind::ListValue(ListValue {
            values: vec![Value {
                kind: Some(value::Kind::StructValue(entry)),
            }],
        })),
    };
    Metadata {
        filter_metadata: HashMap::from([(
            ISTIO_METADATA.to_string(),
            Struct {
                fields: HashMap::from([("services".to_string(), services)]),
            },
        )]),
        ..Metadata::default()
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::config::ConfigObject;
    use prost::Message;

    use super::*;
    use crate::galley_client::Snapshot;
    use crate::model::Registry;
    use crate::translate::cluster::clusters;

    fn registry() -> Registry {
        let objs: Vec<ConfigObject> = serde_json::from_value(serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "bookinfo"},
             "spec": {"ports": [{"name": "http", "port": 9080}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "ServiceEntry",
             "metadata": {"name": "echo", "namespace": "tenant-a"},
             "spec": {"hosts": ["echo.capture.test"], "location": "MESH_EXTERNAL",
                      "resolution": "STATIC",
                      "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                      "endpoints": [{"address": "10.0.0.1"}]}}
        ]))
        .unwrap();
        Registry::from_snapshot(&Snapshot::from_objects(objs), "cluster.local")
    }

    /// `(host, name, namespace)` of a cluster's `istio` metadata.
    fn service_of(c: &mesh_proto::envoy::envoy::config::cluster::v3::Cluster) -> [String; 3] {
        let md = &c.metadata.as_ref().expect("metadata").filter_metadata[ISTIO_METADATA];
        let Some(value::Kind::ListValue(list)) = &md.fields["services"].kind else {
            panic!("services is not a list");
        };
        assert_eq!(list.values.len(), 1);
        let Some(value::Kind::StructValue(s)) = &list.values[0].kind else {
            panic!("not a struct");
        };
        KEYS.map(|k| match &s.fields[k].kind {
            Some(value::Kind::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        })
    }

    #[test]
    fn clusters_carry_the_services_own_host_name_and_namespace() {
        let cs = clusters(&registry(), "cluster.local");
        let reviews = cs
            .iter()
            .find(|c| c.name == "outbound|9080||reviews.bookinfo.svc.cluster.local")
            .unwrap();
        assert_eq!(
            service_of(reviews),
            ["reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo"]
        );
        // A ServiceEntry host: name = the host, namespace = the ServiceEntry's (not "capture").
        let echo = cs
            .iter()
            .find(|c| c.name == "outbound|8080||echo.capture.test")
            .unwrap();
        assert_eq!(
            service_of(echo),
            ["echo.capture.test", "echo.capture.test", "tenant-a"]
        );
    }

    #[test]
    fn the_encoding_is_the_same_on_every_translation() {
        let reg = registry();
        let first: Vec<Vec<u8>> = clusters(&reg, "cluster.local")
            .iter()
            .map(Message::encode_to_vec)
            .collect();
        for _ in 0..20 {
            let again: Vec<Vec<u8>> = clusters(&reg, "cluster.local")
                .iter()
                .map(Message::encode_to_vec)
                .collect();
            assert_eq!(
                again, first,
                "cluster encodings (and so versions) must not churn"
            );
        }
    }
}
