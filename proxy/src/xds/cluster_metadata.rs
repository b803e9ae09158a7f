//! Pilot's (Istio's) cluster metadata `filter_metadata["istio"] = {"services": [{"host",
//! "name", "namespace"}]}` → the cluster's [`Service`] for the telemetry labels
//! (`destination_service`, `_name`, `_namespace`), decoded once per CDS update so the request
//! path only clones it (reference counts, no allocation).

use std::sync::Arc;

use mesh_proto::envoy::envoy::config::cluster::v3::Cluster as EnvoyCluster;
use mesh_proto::envoy::google::protobuf::{Struct, value};

use crate::http::Service;

/// The `filter_metadata` key Istio uses.
pub const ISTIO_METADATA: &str = "istio";

fn string<'a>(s: &'a Struct, key: &str) -> Option<&'a str> {
    match s.fields.get(key)?.kind.as_ref()? {
        value::Kind::StringValue(v) if !v.is_empty() => Some(v),
        _ => None,
    }
}

/// The first service of the cluster's `istio` metadata (`None`: no metadata, or no host).
/// A missing name or namespace falls back to the host's labels, as [`Service::from_fqdn`].
pub fn istio_service(c: &EnvoyCluster) -> Option<Service> {
    let istio = c.metadata.as_ref()?.filter_metadata.get(ISTIO_METADATA)?;
    let value::Kind::ListValue(list) = istio.fields.get("services")?.kind.as_ref()? else {
        return None;
    };
    let value::Kind::StructValue(svc) = list.values.first()?.kind.as_ref()? else {
        return None;
    };
    let host = string(svc, "host")?;
    let derived = Service::from_fqdn(host);
    Some(Service {
        name: string(svc, "name").map_or(derived.name, Arc::from),
        namespace: string(svc, "namespace").map_or(derived.namespace, Arc::from),
        fqdn: derived.fqdn,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mesh_proto::envoy::envoy::config::core::v3::Metadata;
    use mesh_proto::envoy::google::protobuf::{ListValue, Value};

    use super::*;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(value::Kind::StringValue(v.into())),
        }
    }

    fn cluster(fields: &[(&str, &str)]) -> EnvoyCluster {
        let entry = Struct {
            fields: fields.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
        };
        let services = Value {
            kind: Some(value::Kind::ListValue(ListValue {
                values: vec![Value {
                    kind: Some(value::Kind::StructValue(entry)),
                }],
            })),
        };
        EnvoyCluster {
            name: "outbound|8080||echo.capture.test".into(),
            metadata: Some(Metadata {
                filter_metadata: HashMap::from([(
                    ISTIO_METADATA.to_string(),
                    Struct {
                        fields: HashMap::from([("services".to_string(), services)]),
                    },
                )]),
                ..Metadata::default()
            }),
            ..EnvoyCluster::default()
        }
    }

    #[test]
    fn the_service_entrys_namespace_wins_over_the_host_labels() {
        let c = cluster(&[
            ("host", "echo.capture.test"),
            ("name", "echo.capture.test"),
            ("namespace", "tenant-a"),
        ]);
        let svc = istio_service(&c).unwrap();
        assert_eq!(&*svc.fqdn, "echo.capture.test");
        assert_eq!(&*svc.name, "echo.capture.test");
        assert_eq!(&*svc.namespace, "tenant-a");
        // Only a host: name and namespace from its labels, as without metadata.
        let svc =
            istio_service(&cluster(&[("host", "reviews.default.svc.cluster.local")])).unwrap();
        assert_eq!((&*svc.name, &*svc.namespace), ("reviews", "default"));
        // No metadata, or no host: none (the caller derives from the cluster name).
        assert!(istio_service(&EnvoyCluster::default()).is_none());
        assert!(istio_service(&cluster(&[("name", "x")])).is_none());
    }
}
