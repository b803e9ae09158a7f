//! Gateway servers that terminate TLS (`port.protocol: HTTPS`, `tls.mode: SIMPLE|MUTUAL`) and
//! plain HTTP servers with `tls.httpsRedirect`.
//!
//! An HTTPS server becomes one filter chain of the port's `0.0.0.0_<port>` listener:
//! `filter_chain_match.server_names` = the server's hosts (without their `namespace/` part; a
//! `*` host matches every name), `transport_socket` `envoy.transport_sockets.tls` with a
//! `DownstreamTlsContext` (ALPN `h2`, `http/1.1`; TLS 1.2–1.3 unless the server narrows it),
//! and the same HTTP connection manager (RDS `http.<port>`) as a plain gateway listener.
//! Certificates: `serverCertificate`/`privateKey` (and `caCertificates` for MUTUAL) as
//! filename data sources, as Envoy reads them; or `credentialName` as SDS secrets named
//! `<credentialName>` (and `<credentialName>-cacert` for MUTUAL), Istio's names, which the
//! gateway proxy resolves to files under its `--gateway-credential-dir`. MUTUAL requires a
//! client certificate verified to the CA (`subjectAltNames` narrow the accepted ones).

use mesh_proto::config::Server;
use mesh_proto::envoy::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use mesh_proto::envoy::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use mesh_proto::envoy::envoy::config::route::v3::{
    RedirectAction, Route, RouteMatch, redirect_action, route, route_match,
};
use mesh_proto::envoy::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, common_tls_context,
    subject_alt_name_matcher, tls_parameters,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_proto::envoy::google::protobuf::BoolValue;
use mesh_proto::type_url;
use prost::Name;
use serde::Deserialize;

use super::cluster::ads_config_source;
use super::inbound::TLS_INSPECTOR;
use super::resources::pack;
use crate::model::GatewayEntry;

/// The transport socket's well-known name.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// The SDS name suffix Istio gives a credential's CA (`<credentialName>-cacert`).
pub const CACERT_SUFFIX: &str = "-cacert";

/// A Gateway server's `tls` block (the fields the mesh reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
}

impl ServerTls {
    /// The server's `tls`, if it has one that reads.
    pub fn of(server: &Server) -> Option<ServerTls> {
        serde_json::from_value(server.tls.clone()?).ok()
    }

    fn mode_is(&self, m: &str) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(m))
    }
}

/// Whether `server` terminates TLS and serves HTTP: `protocol: HTTPS` with `tls.mode` SIMPLE
/// or MUTUAL (SIMPLE when unset).
pub fn terminates_https(server: &Server) -> bool {
    server.port.protocol.eq_ignore_ascii_case("https")
        && ServerTls::of(server)
            .is_some_and(|t| t.mode.is_none() || t.mode_is("simple") || t.mode_is("mutual"))
}

/// A server host without its `namespace/` part.
pub(super) fn bare_host(h: &str) -> &str {
    h.split_once('/').map_or(h, |(_, host)| host)
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..DataSource::default()
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn protocol(v: &Option<String>) -> Option<tls_parameters::TlsProtocol> {
    use tls_parameters::TlsProtocol as P;
    Some(match v.as_deref()?.to_ascii_uppercase().as_str() {
        "TLSV1_0" => P::TlSv10,
        "TLSV1_1" => P::TlSv11,
        "TLSV1_2" => P::TlSv12,
        "TLSV1_3" => P::TlSv13,
        _ => return None,
    })
}

/// A client-certificate SAN matcher: URIs (`scheme://...`) as URI, the rest as DNS names.
fn san_matcher(san: &str) -> SubjectAltNameMatcher {
    let san_type = if san.contains("://") {
        subject_alt_name_matcher::SanType::Uri
    } else {
        subject_alt_name_matcher::SanType::Dns
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(san.to_string())),
            ignore_case: false,
        }),
        oid: String::new(),
    }
}

/// Why a server's TLS cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ServerTlsError(String);

/// The `DownstreamTlsContext` of a terminating server.
pub fn downstream_tls_context(tls: &ServerTls) -> Result<DownstreamTlsContext, ServerTlsError> {
    let mutual = tls.mode_is("mutual");
    let sds = |name: String| SdsSecretConfig {
        name,
        sds_config: Some(ads_config_source()),
    };
    let mut common = CommonTlsContext {
        alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: protocol(&tls.min_protocol_version)
                .unwrap_or(tls_parameters::TlsProtocol::TlSv12)
                as i32,
            tls_maximum_protocol_version: protocol(&tls.max_protocol_version)
                .unwrap_or(tls_parameters::TlsProtocol::TlSv13)
                as i32,
            ..TlsParameters::default()
        }),
        ..CommonTlsContext::default()
    };
    let sans: Vec<SubjectAltNameMatcher> = tls
        .subject_alt_names
        .iter()
        .map(|s| san_matcher(s))
        .collect();
    match (
        non_empty(&tls.credential_name),
        non_empty(&tls.server_certificate),
        non_empty(&tls.private_key),
    ) {
        (Some(credential), _, _) => {
            common.tls_certificate_sds_secret_configs = vec![sds(credential.to_string())];
            if mutual {
                let name = format!("{credential}{CACERT_SUFFIX}");
                common.validation_context_type = Some(if sans.is_empty() {
                    common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                        sds(name),
                    )
                } else {
                    common_tls_context::ValidationContextType::CombinedValidationContext(
                        common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(CertificateValidationContext {
                                match_typed_subject_alt_names: sans,
                                ..CertificateValidationContext::default()
                            }),
                            validation_context_sds_secret_config: Some(sds(name)),
                            ..Default::default()
                        },
                    )
                });
            }
        }
        (None, Some(cert), Some(key)) => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..TlsCertificate::default()
            }];
            if mutual {
                let ca = non_empty(&tls.ca_certificates).ok_or_else(|| {
                    ServerTlsError("tls.mode MUTUAL needs caCertificates".to_string())
                })?;
                common.validation_context_type = Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: Some(file(ca)),
                            match_typed_subject_alt_names: sans,
                            ..CertificateValidationContext::default()
                        },
                    ),
                );
            }
        }
        _ => {
            return Err(ServerTlsError(
                "tls needs credentialName, or serverCertificate and privateKey".to_string(),
            ));
        }
    }
    Ok(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: mutual.then_some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    })
}

/// One filter chain of a gateway HTTP listener: matched on `server_names` (none: any name),
/// TLS terminated when `tls` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayChain {
    pub server_names: Vec<String>,
    pub tls: Option<DownstreamTlsContext>,
}

/// The filter chains of port `port`'s HTTP listener: one per HTTPS server of `gateways` on the
/// port (in gateway, then server order); a server name already claimed by an earlier server
/// stays with it (Envoy refuses two chains with the same match). Plain HTTP servers on a port
/// that also has HTTPS servers are left out (the port speaks TLS). No HTTPS server: one plain
/// chain. A server whose TLS cannot be translated is left out with a warning.
pub fn port_chains(gateways: &[&GatewayEntry], port: u32) -> Vec<GatewayChain> {
    let mut chains: Vec<GatewayChain> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    let mut catch_all = false;
    for gw in gateways {
        for server in gw
            .spec
            .servers
            .iter()
            .filter(|s| s.port.number == port && terminates_https(s))
        {
            let Some(tls) = ServerTls::of(server) else {
                continue;
            };
            let ctx = match downstream_tls_context(&tls) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(gateway = %format!("{}/{}", gw.namespace, gw.name), port, error = %e, "gateway server left out");
                    continue;
                }
            };
            let hosts: Vec<&str> = server.hosts.iter().map(|h| bare_host(h)).collect();
            let server_names: Vec<String> = if hosts.is_empty() || hosts.contains(&"*") {
                if catch_all {
                    continue;
                }
                catch_all = true;
                Vec::new()
            } else {
                let fresh: Vec<String> = hosts
                    .iter()
                    .filter(|h| !taken.iter().any(|t| t == *h))
                    .map(|h| h.to_string())
                    .collect();
                if fresh.is_empty() {
                    continue;
                }
                taken.extend(fresh.iter().cloned());
                fresh
            };
            chains.push(GatewayChain {
                server_names,
                tls: Some(ctx),
            });
        }
    }
    if chains.is_empty() {
        chains.push(GatewayChain {
            server_names: Vec::new(),
            tls: None,
        });
    }
    chains
}

/// Gives `listener` (built with one plain filter chain) `chains`: each a copy of its filters
/// with the chain's match and transport socket; a `tls_inspector` listener filter when any chain
/// terminates TLS (Envoy reads the SNI with it).
pub fn apply_chains(listener: &mut Listener, chains: Vec<GatewayChain>) {
    let filters = listener
        .filter_chains
        .first()
        .map(|c| c.filters.clone())
        .unwrap_or_default();
    let tls_any = chains.iter().any(|c| c.tls.is_some());
    listener.filter_chains = chains
        .into_iter()
        .map(|c| FilterChain {
            filter_chain_match: (!c.server_names.is_empty()).then(|| FilterChainMatch {
                server_names: c.server_names,
                ..FilterChainMatch::default()
            }),
            filters: filters.clone(),
            transport_socket: c.tls.map(|ctx| TransportSocket {
                name: TLS_TRANSPORT_SOCKET.to_string(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
                    type_url::DOWNSTREAM_TLS_CONTEXT,
                    &ctx,
                ))),
            }),
            ..FilterChain::default()
        })
        .collect();
    if tls_any {
        listener.listener_filters.push(ListenerFilter {
            name: TLS_INSPECTOR.to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                &TlsInspector::type_url(),
                &TlsInspector::default(),
            ))),
            ..ListenerFilter::default()
        });
    }
}

/// Whether a server host pattern (`*`, `*.example.com`, `example.com`) covers `host` (a
/// VirtualService host, itself maybe a wildcard).
pub(super) fn covers(pattern: &str, host: &str) -> bool {
    let pattern = bare_host(pattern);
    pattern == "*"
        || pattern.eq_ignore_ascii_case(host)
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
}

/// Whether requests for `host` on `port` are to be redirected to https: a plain HTTP server of
/// `gateways` on that port with `tls.httpsRedirect: true` whose hosts cover `host`.
pub fn https_redirect(gateways: &[&GatewayEntry], port: u32, host: &str) -> bool {
    gateways.iter().any(|gw| {
        gw.spec.servers.iter().any(|s| {
            s.port.number == port
                && !terminates_https(s)
                && ServerTls::of(s).is_some_and(|t| t.https_redirect)
                && s.hosts.iter().any(|p| covers(p, host))
        })
    })
}

/// The route a redirected virtual host has instead of its own: any path → 301 to https (the
/// same request, scheme changed), as Envoy's `require_tls: ALL` answers plaintext requests.
pub fn https_redirect_route() -> Route {
    Route {
        name: "https_redirect".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
                true,
            )),
            response_code: redirect_action::RedirectResponseCode::MovedPermanently as i32,
            ..RedirectAction::default()
        })),
        ..Route::default()
    }
}

#[cfg(test)]
#[path = "gateway_tls_tests.rs"]
mod tests;
