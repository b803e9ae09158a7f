//! Access logs from the mesh config: when `accessLogFile` is set, every HTTP connection manager
//! and every `tcp_proxy` a proxy gets carries Envoy's file access logger, as Istio configures it:
//!
//! ```text
//! access_log: [{name: envoy.access_loggers.file,
//!               typed_config: FileAccessLog{path, log_format: {json_format: {key: "%OP%", ..}}
//!                                                            | {text_format_source: {inline_string}}}}]
//! ```
//!
//! The keys and operators of the JSON format are Istio's default (plus the peer URI SANs); TEXT
//! uses Istio's default format string. A custom `accessLogFormat` replaces either (a JSON one
//! must be an object of strings, else the default is used, as Istio does).

use mesh_proto::config::{AccessLogEncoding, MeshConfig};
use mesh_proto::envoy::envoy::config::accesslog::v3::{AccessLog, access_log};
use mesh_proto::envoy::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener, filter};
use mesh_proto::envoy::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use mesh_proto::envoy::google::protobuf::{Struct, Value, value};
use mesh_proto::type_url;
use prost::{Message, Name};

use super::resources::pack;

/// Envoy's file access logger.
pub const FILE_ACCESS_LOG: &str = "envoy.access_loggers.file";

/// Istio's default TEXT access log format.
pub const DEFAULT_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \"%DYNAMIC_METADATA(istio.mixer:status)%\" \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON access log keys and their operators, plus the peers' SPIFFE ids.
pub const DEFAULT_JSON_FORMAT: &[(&str, &str)] = mesh_proto::config::ACCESS_LOG_JSON_FORMAT;

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

/// The JSON format: a custom `accessLogFormat` object of strings, else Istio's default.
fn json_format(custom: &str) -> Struct {
    if !custom.trim().is_empty() {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(custom) {
            Ok(map) if map.values().all(serde_json::Value::is_string) => {
                return Struct {
                    fields: map
                        .iter()
                        .map(|(k, v)| (k.clone(), string_value(v.as_str().unwrap_or_default())))
                        .collect(),
                };
            }
            _ => tracing::warn!(
                format = custom,
                "accessLogFormat is not a JSON object of strings; using the default JSON format"
            ),
        }
    }
    Struct {
        fields: DEFAULT_JSON_FORMAT
            .iter()
            .map(|(k, v)| (k.to_string(), string_value(v)))
            .collect(),
    }
}

/// The `access_log` list the mesh config asks for: empty when `accessLogFile` is not set.
pub fn access_logs(mesh: &MeshConfig) -> Vec<AccessLog> {
    if !mesh.access_log_enabled() {
        return Vec::new();
    }
    let format = match mesh.access_log_encoding {
        AccessLogEncoding::Json => {
            substitution_format_string::Format::JsonFormat(json_format(&mesh.access_log_format))
        }
        AccessLogEncoding::Text => {
            let text = if mesh.access_log_format.is_empty() {
                DEFAULT_TEXT_FORMAT.to_string()
            } else {
                mesh.access_log_format.clone()
            };
            substitution_format_string::Format::TextFormatSource(DataSource {
                specifier: Some(data_source::Specifier::InlineString(text)),
                ..DataSource::default()
            })
        }
    };
    let file = FileAccessLog {
        path: mesh.access_log_file.clone(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(format),
                ..SubstitutionFormatString::default()
            },
        )),
    };
    vec![AccessLog {
        name: FILE_ACCESS_LOG.to_string(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(pack(
            &FileAccessLog::type_url(),
            &file,
        ))),
    }]
}

/// Sets `logs` as the `access_log` of every HTTP connection manager and `tcp_proxy` in
/// `listeners` (nothing to do when `logs` is empty).
pub fn add_access_logs(listeners: &mut [Listener], logs: &[AccessLog]) {
    if logs.is_empty() {
        return;
    }
    let tcp_url = TcpProxy::type_url();
    for l in listeners {
        let chains = l
            .filter_chains
            .iter_mut()
            .chain(l.default_filter_chain.iter_mut());
        for chain in chains {
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                    continue;
                };
                if any.type_url == type_url::HTTP_CONNECTION_MANAGER {
                    if let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                        hcm.access_log = logs.to_vec();
                        any.value = hcm.encode_to_vec();
                    }
                } else if any.type_url == tcp_url
                    && let Ok(mut tcp) = TcpProxy::decode(any.value.as_slice())
                {
                    tcp.access_log = logs.to_vec();
                    any.value = tcp.encode_to_vec();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_log(l: &AccessLog) -> FileAccessLog {
        assert_eq!(l.name, FILE_ACCESS_LOG);
        let Some(access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            panic!("no typed_config");
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
        );
        FileAccessLog::decode(any.value.as_slice()).unwrap()
    }

    fn format(f: &FileAccessLog) -> substitution_format_string::Format {
        match &f.access_log_format {
            Some(file_access_log::AccessLogFormat::LogFormat(s)) => s.format.clone().unwrap(),
            other => panic!("not log_format: {other:?}"),
        }
    }

    fn objects() -> Vec<mesh_proto::config::ConfigObject> {
        serde_json::from_value(serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"ports": [{"name": "http", "port": 9080}, {"name": "tcp-db", "port": 27017}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
             "metadata": {"name": "gw", "namespace": "default"},
             "spec": {"selector": {"istio": "ingressgateway"},
                      "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
             "metadata": {"name": "vs", "namespace": "default"},
             "spec": {"hosts": ["*"], "gateways": ["gw"], "http": [
                 {"route": [{"destination": {"host": "reviews", "port": {"number": 9080}}}]}]}}
        ]))
        .unwrap()
    }

    /// (listener, filter name, access logs) of every HCM and tcp_proxy in `cfg`.
    fn emitted(cfg: &super::super::ProxyConfig) -> Vec<(String, String, Vec<AccessLog>)> {
        let mut out = Vec::new();
        for l in &cfg.listeners {
            for chain in &l.filter_chains {
                for f in &chain.filters {
                    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                        continue;
                    };
                    if any.type_url == type_url::HTTP_CONNECTION_MANAGER {
                        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                        out.push((l.name.clone(), f.name.clone(), hcm.access_log));
                    } else if any.type_url == TcpProxy::type_url() {
                        let tcp = TcpProxy::decode(any.value.as_slice()).unwrap();
                        out.push((l.name.clone(), f.name.clone(), tcp.access_log));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_listener_of_sidecars_and_gateways_logs_when_on() {
        use super::super::{Options, ProxyInfo, translate};
        use crate::galley_client::Snapshot;
        use crate::model::Registry;
        let mesh = MeshConfig {
            access_log_file: "/dev/stdout".into(),
            access_log_encoding: AccessLogEncoding::Json,
            ..MeshConfig::default()
        };
        let snap = Snapshot::from_objects(objects());
        let opts = Options {
            trust_domain: "cluster.local".into(),
        };
        let sidecar =
            ProxyInfo::from_id("sidecar~127.0.0.9~reviews-v1.default~default.svc.cluster.local")
                .unwrap();
        let mut router =
            ProxyInfo::from_id("router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local")
                .unwrap();
        router
            .labels
            .insert("istio".into(), "ingressgateway".into());

        let on = Registry::from_snapshot(&snap.with_mesh_config(&mesh), "cluster.local");
        let side = emitted(&translate(&on, &sidecar, &opts));
        let names: Vec<&str> = side.iter().map(|(l, _, _)| l.as_str()).collect();
        assert!(names.contains(&"virtualOutbound"), "{names:?}");
        assert!(names.contains(&"virtualInbound"), "{names:?}");
        assert!(names.contains(&"0.0.0.0_27017"), "{names:?}");
        let gw = emitted(&translate(&on, &router, &opts));
        assert_eq!(gw.len(), 1, "{gw:?}");
        assert_eq!(gw[0].0, "0.0.0.0_80");
        for (l, f, logs) in side.iter().chain(&gw) {
            assert_eq!(logs.len(), 1, "{l} {f}");
            assert_eq!(file_log(&logs[0]).path, "/dev/stdout", "{l} {f}");
        }

        let off = Registry::from_snapshot(&snap, "cluster.local");
        for (l, f, logs) in emitted(&translate(&off, &sidecar, &opts))
            .iter()
            .chain(&emitted(&translate(&off, &router, &opts)))
        {
            assert!(logs.is_empty(), "{l} {f}");
        }
    }

    #[test]
    fn off_without_access_log_file() {
        assert!(access_logs(&MeshConfig::default()).is_empty());
    }

    #[test]
    fn json_has_istios_keys() {
        let mesh = MeshConfig {
            access_log_file: "/dev/stdout".into(),
            access_log_encoding: AccessLogEncoding::Json,
            ..MeshConfig::default()
        };
        let logs = access_logs(&mesh);
        assert_eq!(logs.len(), 1);
        let f = file_log(&logs[0]);
        assert_eq!(f.path, "/dev/stdout");
        let substitution_format_string::Format::JsonFormat(s) = format(&f) else {
            panic!("not json");
        };
        let op = |k: &str| match &s.fields[k].kind {
            Some(value::Kind::StringValue(v)) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(op("request_id"), "%REQ(X-REQUEST-ID)%");
        assert_eq!(op("method"), "%REQ(:METHOD)%");
        assert_eq!(op("path"), "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%");
        assert_eq!(op("response_code"), "%RESPONSE_CODE%");
        assert_eq!(op("downstream_peer_uri_san"), "%DOWNSTREAM_PEER_URI_SAN%");

        let custom = MeshConfig {
            access_log_format: r#"{"code": "%RESPONSE_CODE%"}"#.into(),
            ..mesh.clone()
        };
        let substitution_format_string::Format::JsonFormat(s) =
            format(&file_log(&access_logs(&custom)[0]))
        else {
            panic!("not json");
        };
        assert_eq!(s.fields.len(), 1);
        let bad = MeshConfig {
            access_log_format: "[%START_TIME%]".into(),
            ..mesh
        };
        let substitution_format_string::Format::JsonFormat(s) =
            format(&file_log(&access_logs(&bad)[0]))
        else {
            panic!("not json");
        };
        assert_eq!(s.fields.len(), DEFAULT_JSON_FORMAT.len());
    }

    #[test]
    fn text_uses_istios_format_or_the_custom_one() {
        let mesh = MeshConfig {
            access_log_file: "/var/log/a.log".into(),
            ..MeshConfig::default()
        };
        let text = |m: &MeshConfig| match format(&file_log(&access_logs(m)[0])) {
            substitution_format_string::Format::TextFormatSource(DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..
            }) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(&mesh), DEFAULT_TEXT_FORMAT);
        let custom = MeshConfig {
            access_log_format: "%REQ(:METHOD)% %RESPONSE_CODE%\n".into(),
            ..mesh
        };
        assert_eq!(text(&custom), "%REQ(:METHOD)% %RESPONSE_CODE%\n");
    }
}
