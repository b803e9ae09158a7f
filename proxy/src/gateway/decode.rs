//! A gateway listener's `DownstreamTlsContext`s → [`GatewayTlsSpec`]. Every error names the
//! field (`filter_chains[0].transport_socket...`) and the reason; the listener update is then
//! NACKed.

use std::path::{Path, PathBuf};

use mesh_proto::envoy::envoy::config::core::v3::{DataSource, data_source, transport_socket};
use mesh_proto::envoy::envoy::config::listener::v3::Listener as EnvoyListener;
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext, SdsSecretConfig, common_tls_context,
    subject_alt_name_matcher, tls_parameters::TlsProtocol,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use mesh_proto::type_url;
use parking_lot::RwLock;
use prost::Message;
use serde::Serialize;

use super::secret::SecretPart;

/// Where `credentialName` secrets live unless `--gateway-credential-dir` says otherwise.
pub const DEFAULT_CREDENTIAL_DIR: &str = "/etc/istio/gateway-credentials";
/// Istio's SDS name of a credential's CA: `<credentialName>-cacert`.
pub const CACERT_SUFFIX: &str = "-cacert";

static CREDENTIAL_DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Sets the directory SDS secret names resolve under (the proxy's `--gateway-credential-dir`).
pub fn set_credential_dir(dir: &Path) {
    *CREDENTIAL_DIR.write() = Some(dir.to_path_buf());
}

/// The directory SDS secret names resolve under.
pub fn credential_dir() -> PathBuf {
    CREDENTIAL_DIR
        .read()
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CREDENTIAL_DIR))
}

/// PEM data: a file (re-read when it changes), inline bytes, or a part of an SDS secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PemSource {
    File(PathBuf),
    #[serde(serialize_with = "inline_len")]
    Inline(Vec<u8>),
    /// Part `part` of SDS secret `name`: Pilot's secret when it sent one (it wins), else the
    /// file `fallback` under `--gateway-credential-dir`; neither yet: the chain waits.
    Secret {
        name: String,
        part: SecretPart,
        fallback: PathBuf,
    },
}

impl GatewayTlsSpec {
    /// The SDS secret names the chains read.
    pub fn secret_names(&self) -> std::collections::BTreeSet<String> {
        self.chains
            .iter()
            .flat_map(|c| {
                [
                    Some(&c.cert_chain),
                    Some(&c.private_key),
                    c.client_ca.as_ref(),
                ]
            })
            .flatten()
            .filter_map(|s| match s {
                PemSource::Secret { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

fn inline_len<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("<{} bytes inline>", v.len()))
}

/// What one filter chain terminates TLS with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSpec {
    /// `filter_chain_match.server_names` (empty: any name, and clients without SNI).
    pub server_names: Vec<String>,
    pub cert_chain: PemSource,
    pub private_key: PemSource,
    /// CA the client certificates are verified to (`validation_context.trusted_ca`).
    pub client_ca: Option<PemSource>,
    /// A client certificate is required (MUTUAL); with a CA but not required, one is asked
    /// for and verified when sent.
    pub require_client_certificate: bool,
    /// DNS names, IP addresses or URIs (`scheme://...`) one of which a client certificate
    /// must carry (empty: any).
    pub client_sans: Vec<String>,
    /// ALPN offered, in server preference (`h2`, `http/1.1` when Pilot sent none).
    pub alpn: Vec<String>,
    pub tls12: bool,
    pub tls13: bool,
    /// A `protocol: TLS` server's chain: its `tcp_proxy` (the decrypted bytes go to a cluster
    /// of it); `None`: an HTTPS chain (HTTP is served on the decrypted stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<std::sync::Arc<crate::tcp::TcpChain>>,
}

/// The TLS side of a gateway listener: one [`ChainSpec`] per filter chain with a
/// `DownstreamTlsContext`, in listener order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayTlsSpec {
    pub chains: Vec<ChainSpec>,
}

type FieldError = (String, String);

fn err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    (field.into(), reason.into())
}

/// The TLS spec of a listener whose filter chains terminate TLS (`None`: a plaintext
/// listener), resolving SDS names under [`credential_dir`]. The inbound listener
/// (`virtualInbound`, mesh mTLS) is not a gateway listener and gives `None`.
pub fn listener_tls(l: &EnvoyListener) -> Result<Option<GatewayTlsSpec>, FieldError> {
    listener_tls_in(l, &credential_dir())
}

/// [`listener_tls`] with SDS names resolved under `dir`.
pub fn listener_tls_in(
    l: &EnvoyListener,
    dir: &Path,
) -> Result<Option<GatewayTlsSpec>, FieldError> {
    if l.name == crate::authz::INBOUND_LISTENER {
        return Ok(None);
    }
    let mut chains = Vec::new();
    for (ci, chain) in l.filter_chains.iter().enumerate() {
        let Some(ts) = &chain.transport_socket else {
            continue;
        };
        let field = format!("filter_chains[{ci}].transport_socket");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            continue;
        };
        if any.type_url != type_url::DOWNSTREAM_TLS_CONTEXT {
            // raw_buffer and the like: plaintext.
            continue;
        }
        let ctx = DownstreamTlsContext::decode(any.value.as_slice())
            .map_err(|e| err(&field, format!("cannot decode: {e}")))?;
        let server_names = chain
            .filter_chain_match
            .as_ref()
            .map(|m| m.server_names.clone())
            .unwrap_or_default();
        let tcp = chain_tcp(ci, chain, &server_names)?;
        let mut spec = chain_spec(&field, &ctx, server_names, dir)?;
        if let Some(tcp) = tcp {
            // Opaque bytes: only the protocols Pilot named (none by default).
            spec.alpn = ctx
                .common_tls_context
                .as_ref()
                .map(|c| c.alpn_protocols.clone())
                .unwrap_or_default();
            spec.tcp = Some(std::sync::Arc::new(tcp));
        }
        chains.push(spec);
    }
    Ok((!chains.is_empty()).then_some(GatewayTlsSpec { chains }))
}

/// The `tcp_proxy` of a TLS-terminating chain (`None`: the chain serves HTTP).
fn chain_tcp(
    ci: usize,
    chain: &mesh_proto::envoy::envoy::config::listener::v3::FilterChain,
    server_names: &[String],
) -> Result<Option<crate::tcp::TcpChain>, FieldError> {
    use mesh_proto::envoy::envoy::config::listener::v3::filter;
    for (fi, f) in chain.filters.iter().enumerate() {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        let decoded = crate::tcp::decode_tcp_proxy(any).map_err(|(field, reason)| {
            err(format!("filter_chains[{ci}].filters[{fi}].{field}"), reason)
        })?;
        if let Some(t) = decoded
            && let Some(c) = t.chains.into_iter().next()
        {
            return Ok(Some(crate::tcp::TcpChain {
                server_names: server_names.to_vec(),
                clusters: c.clusters,
            }));
        }
    }
    Ok(None)
}

fn pem_source(field: &str, d: &Option<DataSource>) -> Result<PemSource, FieldError> {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::Filename(f)) if !f.is_empty() => {
            Ok(PemSource::File(PathBuf::from(f)))
        }
        Some(data_source::Specifier::InlineBytes(b)) => Ok(PemSource::Inline(b.clone())),
        Some(data_source::Specifier::InlineString(s)) => {
            Ok(PemSource::Inline(s.as_bytes().to_vec()))
        }
        Some(data_source::Specifier::EnvironmentVariable(_)) => Err(err(
            field,
            "environment variable data sources are not supported",
        )),
        _ => Err(err(field, "missing")),
    }
}

/// An SDS secret name as a directory under `dir` (`kubernetes://name` as Istio 1.8+ writes
/// it, or the bare name); names that could leave the directory are refused.
fn secret_dir(field: &str, dir: &Path, name: &str) -> Result<PathBuf, FieldError> {
    let name = name.strip_prefix("kubernetes://").unwrap_or(name);
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0')
    {
        return Err(err(
            field,
            format!("SDS secret name {name:?} is not a credential name"),
        ));
    }
    Ok(dir.join(name))
}

fn sds_name(field: &str, s: &SdsSecretConfig) -> Result<String, FieldError> {
    if s.name.is_empty() {
        return Err(err(field, "empty SDS secret name"));
    }
    Ok(s.name.clone())
}

fn version(v: i32) -> Option<TlsProtocol> {
    TlsProtocol::try_from(v).ok()
}

fn chain_spec(
    field: &str,
    ctx: &DownstreamTlsContext,
    server_names: Vec<String>,
    dir: &Path,
) -> Result<ChainSpec, FieldError> {
    let field = format!("{field}.common_tls_context");
    let common = ctx
        .common_tls_context
        .as_ref()
        .ok_or_else(|| err(&field, "missing"))?;
    let (cert_chain, private_key) = match (
        common.tls_certificates.as_slice(),
        common.tls_certificate_sds_secret_configs.as_slice(),
    ) {
        ([c, ..], _) => (
            pem_source(
                &format!("{field}.tls_certificates[0].certificate_chain"),
                &c.certificate_chain,
            )?,
            pem_source(
                &format!("{field}.tls_certificates[0].private_key"),
                &c.private_key,
            )?,
        ),
        ([], [s, ..]) => {
            let f = format!("{field}.tls_certificate_sds_secret_configs[0]");
            let name = sds_name(&f, s)?;
            let d = secret_dir(&f, dir, &name)?;
            let part = |part: SecretPart| PemSource::Secret {
                name: name.clone(),
                part,
                fallback: d.join(part.file_name()),
            };
            (part(SecretPart::CertChain), part(SecretPart::PrivateKey))
        }
        ([], []) => return Err(err(&field, "no certificate (tls_certificates or SDS)")),
    };
    let mut client_ca = None;
    let mut client_sans = Vec::new();
    let mut validation = |f: &str, v: &CertificateValidationContext| -> Result<(), FieldError> {
        if v.trusted_ca.is_some() {
            client_ca = Some(pem_source(&format!("{f}.trusted_ca"), &v.trusted_ca)?);
        }
        for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
            let mf = format!("{f}.match_typed_subject_alt_names[{i}]");
            use subject_alt_name_matcher::SanType;
            let uri = match SanType::try_from(m.san_type) {
                Ok(SanType::Dns | SanType::IpAddress) => false,
                Ok(SanType::Uri) => true,
                _ => {
                    return Err(err(
                        &mf,
                        "only DNS, IP_ADDRESS and URI names are checked on gateway client certificates",
                    ));
                }
            };
            match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
                Some(MatchPattern::Exact(s)) if !s.is_empty() && uri == s.contains("://") => {
                    client_sans.push(s.clone())
                }
                _ => {
                    return Err(err(
                        &mf,
                        "only exact matchers are supported (URIs with a scheme)",
                    ));
                }
            }
        }
        Ok(())
    };
    let vf = format!("{field}.validation_context_type");
    match &common.validation_context_type {
        None => {}
        Some(common_tls_context::ValidationContextType::ValidationContext(v)) => {
            validation(&format!("{field}.validation_context"), v)?;
        }
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            client_ca = Some(sds_ca(&vf, dir, s)?);
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            if let Some(v) = &c.default_validation_context {
                validation(&format!("{field}.combined_validation_context"), v)?;
            }
            if let Some(s) = &c.validation_context_sds_secret_config {
                client_ca = Some(sds_ca(&vf, dir, s)?);
            }
        }
        Some(_) => return Err(err(&vf, "unsupported validation context")),
    }
    let require_client_certificate = ctx.require_client_certificate.is_some_and(|b| b.value);
    if require_client_certificate && client_ca.is_none() {
        return Err(err(
            &field,
            "require_client_certificate without a CA to verify client certificates",
        ));
    }
    let alpn = if common.alpn_protocols.is_empty() {
        vec!["h2".to_string(), "http/1.1".to_string()]
    } else {
        common.alpn_protocols.clone()
    };
    let (min, max) = common.tls_params.as_ref().map_or((0, 0), |p| {
        (
            p.tls_minimum_protocol_version,
            p.tls_maximum_protocol_version,
        )
    });
    let min = version(min).unwrap_or(TlsProtocol::TlsAuto);
    let max = version(max).unwrap_or(TlsProtocol::TlsAuto);
    // Envoy's defaults: 1.2 minimum, 1.3 maximum. Only 1.2 and 1.3 exist in rustls.
    let min_rank = match min {
        TlsProtocol::TlSv13 => 13,
        _ => 12,
    };
    let max_rank = match max {
        TlsProtocol::TlSv10 | TlsProtocol::TlSv11 => {
            return Err(err(
                format!("{field}.tls_params"),
                "TLS versions below 1.2 are not supported",
            ));
        }
        TlsProtocol::TlSv12 => 12,
        _ => 13,
    };
    if min_rank > max_rank {
        return Err(err(
            format!("{field}.tls_params"),
            "minimum protocol version above the maximum",
        ));
    }
    Ok(ChainSpec {
        server_names,
        cert_chain,
        private_key,
        client_ca,
        require_client_certificate,
        client_sans,
        alpn,
        tls12: min_rank <= 12,
        tls13: max_rank >= 13,
        tcp: None,
    })
}

/// A validation SDS name: the secret `name` itself, falling back to
/// `<dir>/<credential>/ca.crt` for `<credential>-cacert` (`<dir>/<name>/ca.crt` for any other).
fn sds_ca(field: &str, dir: &Path, s: &SdsSecretConfig) -> Result<PemSource, FieldError> {
    let name = sds_name(field, s)?;
    let base = name.strip_suffix(CACERT_SUFFIX).unwrap_or(&name);
    let fallback = secret_dir(field, dir, base)?.join(SecretPart::TrustedCa.file_name());
    Ok(PemSource::Secret {
        name,
        part: SecretPart::TrustedCa,
        fallback,
    })
}
