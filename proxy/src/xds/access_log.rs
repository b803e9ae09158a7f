//! The access logs a listener asks for: Envoy's file access logger
//! (`envoy.extensions.access_loggers.file.v3.FileAccessLog`) in the `access_log` of its HTTP
//! connection managers and `tcp_proxy` filters, decoded into a path and a [`LogFormat`].
//!
//! Formats: `log_format` with `json_format`, `text_format_source` (inline) or `text_format`, and
//! the deprecated `format` / `json_format` / `typed_json_format`; none = Envoy's default text.
//! Loggers of other types are left out (noted in the log); a file logger without a path, or
//! whose text comes from a file, rejects the listener.

use mesh_proto::envoy::envoy::config::accesslog::v3::{AccessLog, access_log};
use mesh_proto::envoy::envoy::config::core::v3::{data_source, substitution_format_string};
use mesh_proto::envoy::envoy::config::listener::v3::{Listener as EnvoyListener, filter};
use mesh_proto::envoy::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use mesh_proto::envoy::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use mesh_proto::envoy::google::protobuf::{Any, Struct, value};
use mesh_proto::type_url;
use prost::{Message, Name};
use serde::Serialize;

use super::decode::DecodeError;
use crate::http::LogFormat;

/// One file access logger: where and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLogSpec {
    /// `/dev/stdout` or a file path.
    pub path: String,
    pub format: LogFormat,
}

/// The access loggers of one listener: of its HTTP connection manager and of its `tcp_proxy`
/// (the first of each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListenerLogs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<AccessLogSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<AccessLogSpec>,
}

impl ListenerLogs {
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.tcp.is_none()
    }
}

fn invalid(resource: &str, field: String, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        resource: resource.to_string(),
        field,
        reason: reason.into(),
    }
}

fn json_fields(s: &Struct) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = s
        .fields
        .iter()
        .map(|(k, v)| {
            let text = match &v.kind {
                Some(value::Kind::StringValue(s)) => s.clone(),
                Some(value::Kind::NumberValue(n)) => n.to_string(),
                Some(value::Kind::BoolValue(b)) => b.to_string(),
                _ => String::new(),
            };
            (k.clone(), text)
        })
        .collect();
    fields.sort();
    fields
}

/// One `FileAccessLog`.
fn file_log(res: &str, field: &str, any: &Any) -> Result<AccessLogSpec, DecodeError> {
    let f = FileAccessLog::decode(any.value.as_slice()).map_err(|e| DecodeError::Protobuf {
        resource: format!("{res} {field}"),
        reason: e.to_string(),
    })?;
    if f.path.is_empty() {
        return Err(invalid(res, format!("{field}.path"), "empty"));
    }
    #[allow(deprecated)]
    let format = match &f.access_log_format {
        None => LogFormat::text(""),
        Some(file_access_log::AccessLogFormat::Format(s)) => LogFormat::text(s),
        Some(
            file_access_log::AccessLogFormat::JsonFormat(s)
            | file_access_log::AccessLogFormat::TypedJsonFormat(s),
        ) => LogFormat::json(json_fields(s)),
        Some(file_access_log::AccessLogFormat::LogFormat(sfs)) => match &sfs.format {
            None => LogFormat::text(""),
            Some(substitution_format_string::Format::TextFormat(s)) => LogFormat::text(s),
            Some(substitution_format_string::Format::JsonFormat(s)) => {
                LogFormat::json(json_fields(s))
            }
            Some(substitution_format_string::Format::TextFormatSource(ds)) => match &ds.specifier {
                Some(data_source::Specifier::InlineString(s)) => LogFormat::text(s),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    LogFormat::text(&String::from_utf8_lossy(b))
                }
                _ => {
                    return Err(invalid(
                        res,
                        format!("{field}.log_format.text_format_source"),
                        "only inline_string and inline_bytes are supported",
                    ));
                }
            },
        },
    };
    Ok(AccessLogSpec {
        path: f.path,
        format,
    })
}

/// The first file access logger of `logs`.
fn first_file_log(
    res: &str,
    field: &str,
    logs: &[AccessLog],
) -> Result<Option<AccessLogSpec>, DecodeError> {
    let file_url = FileAccessLog::type_url();
    for (i, l) in logs.iter().enumerate() {
        let Some(access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            continue;
        };
        if any.type_url == file_url {
            return file_log(res, &format!("{field}.access_log[{i}].typed_config"), any).map(Some);
        }
        tracing::debug!(resource = res, logger = %l.name, type_url = %any.type_url, "access logger type not supported; left out");
    }
    Ok(None)
}

/// The access loggers of a `Listener` resource.
pub fn listener_logs(any: &Any) -> Result<ListenerLogs, DecodeError> {
    let l = EnvoyListener::decode(any.value.as_slice()).map_err(|e| DecodeError::Protobuf {
        resource: "listener".into(),
        reason: e.to_string(),
    })?;
    let res = format!("listener {}", l.name);
    let tcp_url = TcpProxy::type_url();
    let mut out = ListenerLogs::default();
    let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
    for (ci, chain) in chains.enumerate() {
        for (fi, f) in chain.filters.iter().enumerate() {
            let Some(filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
                continue;
            };
            let field = format!("filter_chains[{ci}].filters[{fi}]");
            let protobuf = |e: prost::DecodeError| DecodeError::Protobuf {
                resource: format!("{res} {field}"),
                reason: e.to_string(),
            };
            if tc.type_url == type_url::HTTP_CONNECTION_MANAGER {
                let hcm = HttpConnectionManager::decode(tc.value.as_slice()).map_err(protobuf)?;
                if out.http.is_none() {
                    out.http = first_file_log(&res, &field, &hcm.access_log)?;
                }
            } else if tc.type_url == tcp_url {
                let tcp = TcpProxy::decode(tc.value.as_slice()).map_err(protobuf)?;
                if out.tcp.is_none() {
                    out.tcp = first_file_log(&res, &field, &tcp.access_log)?;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::envoy::envoy::config::core::v3::{DataSource, SubstitutionFormatString};
    use mesh_proto::envoy::envoy::config::listener::v3::{Filter, FilterChain};
    use mesh_proto::envoy::google::protobuf::Value;

    fn pack<M: Message>(url: String, m: &M) -> Any {
        Any {
            type_url: url,
            value: m.encode_to_vec(),
        }
    }

    fn logger(path: &str, format: substitution_format_string::Format) -> AccessLog {
        AccessLog {
            name: "envoy.access_loggers.file".into(),
            filter: None,
            config_type: Some(access_log::ConfigType::TypedConfig(pack(
                FileAccessLog::type_url(),
                &FileAccessLog {
                    path: path.into(),
                    access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
                        SubstitutionFormatString {
                            format: Some(format),
                            ..Default::default()
                        },
                    )),
                },
            ))),
        }
    }

    fn listener(hcm_logs: Vec<AccessLog>, tcp_logs: Vec<AccessLog>) -> Any {
        let hcm = HttpConnectionManager {
            access_log: hcm_logs,
            ..Default::default()
        };
        let tcp = TcpProxy {
            access_log: tcp_logs,
            ..Default::default()
        };
        let l = EnvoyListener {
            name: "virtualOutbound".into(),
            filter_chains: vec![FilterChain {
                filters: vec![
                    Filter {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(pack(
                            type_url::HTTP_CONNECTION_MANAGER.into(),
                            &hcm,
                        ))),
                    },
                    Filter {
                        name: "envoy.filters.network.tcp_proxy".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(pack(
                            TcpProxy::type_url(),
                            &tcp,
                        ))),
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        pack(type_url::LISTENER.into(), &l)
    }

    #[test]
    fn json_and_text_file_loggers() {
        let json = Struct {
            fields: [
                (
                    "request_id".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue("%REQ(X-REQUEST-ID)%".into())),
                    },
                ),
                (
                    "code".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue("%RESPONSE_CODE%".into())),
                    },
                ),
            ]
            .into(),
        };
        let text = DataSource {
            specifier: Some(data_source::Specifier::InlineString(
                "%REQ(:METHOD)%\n".into(),
            )),
            ..Default::default()
        };
        let logs = listener_logs(&listener(
            vec![logger(
                "/dev/stdout",
                substitution_format_string::Format::JsonFormat(json),
            )],
            vec![logger(
                "/tmp/tcp.log",
                substitution_format_string::Format::TextFormatSource(text),
            )],
        ))
        .unwrap();
        let http = logs.http.unwrap();
        assert_eq!(http.path, "/dev/stdout");
        assert_eq!(
            http.format,
            LogFormat::json([
                ("code".to_string(), "%RESPONSE_CODE%".to_string()),
                ("request_id".to_string(), "%REQ(X-REQUEST-ID)%".to_string()),
            ])
        );
        let tcp = logs.tcp.unwrap();
        assert_eq!(tcp.path, "/tmp/tcp.log");
        assert_eq!(tcp.format, LogFormat::text("%REQ(:METHOD)%\n"));
        assert!(listener_logs(&listener(vec![], vec![])).unwrap().is_empty());
    }

    #[test]
    #[allow(deprecated)]
    fn empty_path_and_file_sources_are_rejected() {
        let fmt = || substitution_format_string::Format::TextFormat("x".into());
        let err = listener_logs(&listener(vec![logger("", fmt())], vec![])).unwrap_err();
        assert!(
            err.to_string().contains("access_log[0].typed_config.path"),
            "{err}"
        );
        let from_file = substitution_format_string::Format::TextFormatSource(DataSource {
            specifier: Some(data_source::Specifier::Filename("/etc/fmt".into())),
            ..Default::default()
        });
        assert!(listener_logs(&listener(vec![logger("/x", from_file)], vec![])).is_err());
    }
}
