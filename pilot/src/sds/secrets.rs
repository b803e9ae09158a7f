//! The secrets of one proxy: the SDS names its listeners' `DownstreamTlsContext`s reference,
//! each built from the credential of that name in the proxy's namespace.

use std::collections::BTreeSet;

use mesh_proto::envoy::envoy::config::core::v3::{DataSource, data_source, transport_socket};
use mesh_proto::envoy::envoy::config::listener::v3::Listener;
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext, Secret, TlsCertificate, common_tls_context,
    secret,
};
use mesh_proto::type_url;
use prost::Message;

use super::metrics::SdsMetrics;
use super::store::Credentials;
use crate::translate::{ProxyInfo, ProxyType, TypeResources};

/// Istio's SDS name suffix of a credential's CA.
pub const CACERT_SUFFIX: &str = "-cacert";
/// The prefix Istio 1.8+ puts before a `credentialName`.
const KUBERNETES_PREFIX: &str = "kubernetes://";
/// The workload's own certificate and root (served by the proxy's identity, never by Pilot).
const WORKLOAD_SECRETS: [&str; 2] = ["default", "ROOTCA"];

/// The SDS secret names the `DownstreamTlsContext`s of `listeners` reference (certificate
/// and validation context), sorted. Undecodable listeners are skipped (Pilot encoded them).
pub fn referenced_names(listeners: &TypeResources) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in &listeners.resources {
        let Ok(l) = Listener::decode(r.resource.value.as_slice()) else {
            continue;
        };
        for chain in &l.filter_chains {
            let Some(transport_socket::ConfigType::TypedConfig(any)) = chain
                .transport_socket
                .as_ref()
                .and_then(|t| t.config_type.as_ref())
            else {
                continue;
            };
            if any.type_url != type_url::DOWNSTREAM_TLS_CONTEXT {
                continue;
            }
            let Ok(ctx) = DownstreamTlsContext::decode(any.value.as_slice()) else {
                continue;
            };
            let Some(common) = ctx.common_tls_context else {
                continue;
            };
            out.extend(
                common
                    .tls_certificate_sds_secret_configs
                    .iter()
                    .map(|s| s.name.clone()),
            );
            match common.validation_context_type {
                Some(
                    common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s),
                ) => {
                    out.insert(s.name);
                }
                Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
                    out.extend(c.validation_context_sds_secret_config.map(|s| s.name));
                }
                _ => {}
            }
        }
    }
    out.retain(|n| !n.is_empty() && !WORKLOAD_SECRETS.contains(&n.as_str()));
    out
}

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..DataSource::default()
    })
}

/// The secret `name` (as referenced) for a proxy in `namespace`, if its credential exists.
fn secret(namespace: &str, name: &str, creds: &Credentials) -> Option<Secret> {
    let bare = name.strip_prefix(KUBERNETES_PREFIX).unwrap_or(name);
    let kind = match bare.strip_suffix(CACERT_SUFFIX) {
        Some(base) => {
            // `<credential>-cacert`: the credential's `ca.crt`, else a credential of that
            // full name holding one.
            let ca = creds
                .get(namespace, base)
                .and_then(|c| c.ca.as_deref())
                .or_else(|| creds.get(namespace, bare).and_then(|c| c.ca.as_deref()))?;
            secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: inline(ca),
                ..CertificateValidationContext::default()
            })
        }
        None => {
            let c = creds.get(namespace, bare)?;
            secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(c.cert_chain.as_deref()?),
                private_key: inline(c.private_key.as_deref()?),
                ..TlsCertificate::default()
            })
        }
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(kind),
    })
}

/// The `Secret` resources of `proxy`: for a router, one per name its `listeners` reference
/// whose credential exists in its namespace (the others are logged and counted); nothing for
/// any other proxy.
pub fn secrets_for(
    proxy: &ProxyInfo,
    listeners: &TypeResources,
    creds: &Credentials,
    metrics: &SdsMetrics,
) -> TypeResources {
    if proxy.proxy_type != ProxyType::Router {
        return TypeResources::default();
    }
    let mut items = Vec::new();
    for name in referenced_names(listeners) {
        match secret(&proxy.namespace, &name, creds) {
            Some(s) => {
                metrics.served.inc();
                items.push((name, s));
            }
            None => {
                metrics.missing.inc();
                tracing::warn!(proxy = %proxy.id, namespace = %proxy.namespace, secret = %name,
                    "gateway credential not found; secret not sent (the listener keeps waiting)");
            }
        }
    }
    TypeResources::encode(type_url::SECRET, items)
}
