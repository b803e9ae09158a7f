//! DestinationRule `trafficPolicy.tls` modes SIMPLE and MUTUAL: TLS origination with the
//! rule's own files, in Envoy's terms (`tls_certificates` and `validation_context.trusted_ca`
//! as filename data sources, `sni`, `match_typed_subject_alt_names`; `insecureSkipVerify` →
//! `trust_chain_verification: ACCEPT_UNTRUSTED`). ISTIO_MUTUAL and DISABLE stay in `cluster`.

use mesh_proto::config::{ClientTls, TrafficPolicy};
use mesh_proto::envoy::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    TlsParameters, UpstreamTlsContext, certificate_validation_context, common_tls_context,
    subject_alt_name_matcher, tls_parameters,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_proto::type_url;
use serde_json::Value;

use super::super::resources::pack;

/// The `tls` settings that apply to `port`: the subset's policy, then the rule's; in each, a
/// `portLevelSettings` entry for the port wins over the policy's own `tls`.
pub fn client_tls(
    local: Option<&TrafficPolicy>,
    top: Option<&TrafficPolicy>,
    port: u16,
) -> Option<ClientTls> {
    let of = |p: &TrafficPolicy| -> Option<ClientTls> {
        let port_level = p
            .port_level_settings
            .iter()
            .find(|s| s.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(port)))
            .and_then(|s| s.get("tls"))
            .and_then(|t| serde_json::from_value::<ClientTls>(t.clone()).ok());
        port_level.or_else(|| p.tls.clone())
    };
    local.and_then(of).or_else(|| top.and_then(of))
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..DataSource::default()
    }
}

/// A SAN matcher: URIs (`scheme://...`) as URI, IP addresses as IP, the rest as DNS names.
fn san_matcher(san: &str) -> SubjectAltNameMatcher {
    let san_type = if san.contains("://") {
        subject_alt_name_matcher::SanType::Uri
    } else if san.parse::<std::net::IpAddr>().is_ok() {
        subject_alt_name_matcher::SanType::IpAddress
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

/// `envoy.transport_sockets.tls` for SIMPLE/MUTUAL. The SNI is the rule's `sni`, else `host`
/// (the service's host name; none for a wildcard host). MUTUAL presents `clientCertificate` /
/// `privateKey`; the server chain is verified to `caCertificates` (the proxy falls back to the
/// system roots when none is given), names to `subjectAltNames`.
pub fn origination_socket(t: &ClientTls, host: &str) -> TransportSocket {
    let mutual = t.mode.as_deref() == Some("MUTUAL");
    let tls_certificates = match (mutual, &t.client_certificate, &t.private_key) {
        (true, Some(cert), Some(key)) => vec![TlsCertificate {
            certificate_chain: Some(file(cert)),
            private_key: Some(file(key)),
            ..TlsCertificate::default()
        }],
        (true, _, _) => {
            tracing::warn!(
                host,
                "DestinationRule tls mode MUTUAL without clientCertificate/privateKey: no client certificate"
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    let insecure = t.insecure_skip_verify == Some(true);
    let validation = CertificateValidationContext {
        trusted_ca: t
            .ca_certificates
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(file),
        match_typed_subject_alt_names: t.subject_alt_names.iter().map(|s| san_matcher(s)).collect(),
        trust_chain_verification: if insecure {
            certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
        } else {
            certificate_validation_context::TrustChainVerification::VerifyTrustChain as i32
        },
        ..CertificateValidationContext::default()
    };
    let sni = match t.sni.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s.to_string(),
        None if host.contains('*') => String::new(),
        None => host.to_string(),
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                ..TlsParameters::default()
            }),
            tls_certificates,
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            ..CommonTlsContext::default()
        }),
        sni,
        ..UpstreamTlsContext::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::UPSTREAM_TLS_CONTEXT,
            &ctx,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn decode(ts: &TransportSocket) -> UpstreamTlsContext {
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("no typed config")
        };
        assert_eq!(any.type_url, type_url::UPSTREAM_TLS_CONTEXT);
        UpstreamTlsContext::decode(any.value.as_slice()).unwrap()
    }

    fn tls(v: serde_json::Value) -> ClientTls {
        serde_json::from_value(v).unwrap()
    }

    fn validation(ctx: &UpstreamTlsContext) -> &CertificateValidationContext {
        match ctx
            .common_tls_context
            .as_ref()
            .unwrap()
            .validation_context_type
            .as_ref()
        {
            Some(common_tls_context::ValidationContextType::ValidationContext(v)) => v,
            other => panic!("validation context {other:?}"),
        }
    }

    fn filename(d: &Option<DataSource>) -> Option<&str> {
        match d.as_ref()?.specifier.as_ref()? {
            data_source::Specifier::Filename(f) => Some(f),
            _ => None,
        }
    }

    #[test]
    fn mutual_carries_the_files_sni_and_sans() {
        let t = tls(serde_json::json!({
            "mode": "MUTUAL", "clientCertificate": "/etc/certs/client.pem",
            "privateKey": "/etc/certs/key.pem", "caCertificates": "/etc/certs/ca.pem",
            "sni": "api.example.com",
            "subjectAltNames": ["api.example.com", "spiffe://x/y", "10.0.0.1"]}));
        let ctx = decode(&origination_socket(&t, "ext.default.svc.cluster.local"));
        assert_eq!(ctx.sni, "api.example.com");
        let common = ctx.common_tls_context.as_ref().unwrap();
        assert!(
            common.tls_certificate_sds_secret_configs.is_empty(),
            "no SDS"
        );
        assert!(common.alpn_protocols.is_empty(), "not the mesh's ALPN");
        let cert = &common.tls_certificates[0];
        assert_eq!(
            filename(&cert.certificate_chain),
            Some("/etc/certs/client.pem")
        );
        assert_eq!(filename(&cert.private_key), Some("/etc/certs/key.pem"));
        let v = validation(&ctx);
        assert_eq!(filename(&v.trusted_ca), Some("/etc/certs/ca.pem"));
        let types: Vec<i32> = v
            .match_typed_subject_alt_names
            .iter()
            .map(|m| m.san_type)
            .collect();
        use subject_alt_name_matcher::SanType;
        assert_eq!(
            types,
            vec![
                SanType::Dns as i32,
                SanType::Uri as i32,
                SanType::IpAddress as i32
            ]
        );
        assert_eq!(
            v.trust_chain_verification,
            certificate_validation_context::TrustChainVerification::VerifyTrustChain as i32
        );
    }

    #[test]
    fn simple_has_no_client_certificate_and_defaults_sni_to_the_host() {
        let t = tls(
            serde_json::json!({"mode": "SIMPLE", "clientCertificate": "/c.pem",
            "privateKey": "/k.pem", "insecureSkipVerify": true}),
        );
        let ctx = decode(&origination_socket(&t, "api.example.com"));
        assert_eq!(ctx.sni, "api.example.com");
        let common = ctx.common_tls_context.as_ref().unwrap();
        assert!(
            common.tls_certificates.is_empty(),
            "SIMPLE presents no cert"
        );
        let v = validation(&ctx);
        assert!(v.trusted_ca.is_none(), "no CA: system roots (proxy)");
        assert_eq!(
            v.trust_chain_verification,
            certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
        );
        // A wildcard host gives no SNI.
        let t = tls(serde_json::json!({"mode": "SIMPLE"}));
        assert_eq!(decode(&origination_socket(&t, "*.example.com")).sni, "");
    }

    #[test]
    fn port_level_tls_wins_then_subset_over_rule() {
        let top: TrafficPolicy = serde_json::from_value(serde_json::json!({
            "tls": {"mode": "ISTIO_MUTUAL"},
            "portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "a"}}]
        }))
        .unwrap();
        let local: TrafficPolicy =
            serde_json::from_value(serde_json::json!({"tls": {"mode": "MUTUAL"}})).unwrap();
        assert_eq!(
            client_tls(None, Some(&top), 443).unwrap().sni.as_deref(),
            Some("a")
        );
        assert_eq!(
            client_tls(None, Some(&top), 80).unwrap().mode.as_deref(),
            Some("ISTIO_MUTUAL")
        );
        assert_eq!(
            client_tls(Some(&local), Some(&top), 443)
                .unwrap()
                .mode
                .as_deref(),
            Some("MUTUAL")
        );
        assert!(client_tls(None, None, 80).is_none());
    }

    #[test]
    fn clusters_of_a_destination_rule_per_mode() {
        let objs: Vec<mesh_proto::config::ConfigObject> = serde_json::from_value(serde_json::json!([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
             "spec": {"ports": [{"name": "https", "port": 443}]}},
            {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
             "metadata": {"name": "ext", "namespace": "default"},
             "spec": {"host": "ext", "trafficPolicy": {"tls": {"mode": "MUTUAL",
                 "clientCertificate": "/etc/c.pem", "privateKey": "/etc/k.pem",
                 "caCertificates": "/etc/ca.pem", "sni": "ext.example.com"}},
              "subsets": [{"name": "mesh", "labels": {"v": "1"},
                           "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
                          {"name": "plain", "labels": {"v": "2"},
                           "trafficPolicy": {"tls": {"mode": "DISABLE"}}}]}}
        ]))
        .unwrap();
        let reg = crate::model::Registry::from_snapshot(
            &crate::galley_client::Snapshot::from_objects(objs),
            "cluster.local",
        );
        let clusters = super::super::clusters(&reg, "cluster.local");
        let socket = |name: &str| {
            clusters
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no cluster {name}"))
                .transport_socket
                .as_ref()
                .map(decode)
        };
        let mutual = socket("outbound|443||ext.default.svc.cluster.local").unwrap();
        assert_eq!(mutual.sni, "ext.example.com");
        let cert = &mutual.common_tls_context.as_ref().unwrap().tls_certificates[0];
        assert_eq!(filename(&cert.certificate_chain), Some("/etc/c.pem"));
        assert_eq!(
            filename(&validation(&mutual).trusted_ca),
            Some("/etc/ca.pem")
        );
        let mesh = socket("outbound|443|mesh|ext.default.svc.cluster.local").unwrap();
        let common = mesh.common_tls_context.as_ref().unwrap();
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
        assert_eq!(
            mesh.sni,
            "outbound_.443_.mesh_.ext.default.svc.cluster.local"
        );
        assert!(socket("outbound|443|plain|ext.default.svc.cluster.local").is_none());
    }
}
