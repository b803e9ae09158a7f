//! `envoy.filters.http.jwt_authn`: finds the token in each provider's locations, verifies it
//! (RS256/ES256 and the other asymmetric algorithms of the key) against the provider's JWKS,
//! checks issuer, audiences and expiry, and evaluates the requirement. Invalid token → 401
//! `Jwt verification fails`; no token → passes when the requirement allows it missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use mesh_proto::envoy::envoy::config::core::v3::data_source;
use mesh_proto::envoy::envoy::config::route::v3::route_match;
use mesh_proto::envoy::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtProvider, JwtRequirement, jwt_provider, jwt_requirement, requirement_rule,
};
use serde_json::Value;

use super::DecodeError;
use super::jwks::{JwksCache, parse_jwks};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Envoy's body for a token that no provider accepts.
    #[error("Jwt verification fails")]
    Invalid(String),
    #[error("Jwt is missing")]
    Missing,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    pub provider: String,
    /// `payload_in_metadata` key (Istio: the issuer).
    pub metadata_key: String,
    pub claims: serde_json::Map<String, Value>,
}

impl VerifiedJwt {
    /// Istio's request principal: `iss/sub`.
    pub fn principal(&self) -> String {
        let s = |k: &str| {
            self.claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        format!("{}/{}", s("iss"), s("sub"))
    }
}

#[derive(Debug, Clone)]
enum Keys {
    Local(Arc<JwkSet>),
    Remote { uri: String, ttl: Duration },
}

#[derive(Debug, Clone)]
struct Provider {
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    /// (header, value prefix).
    from_headers: Vec<(String, String)>,
    from_params: Vec<String>,
    forward: bool,
    forward_payload_header: Option<String>,
    payload_in_metadata: String,
}

#[derive(Debug, Clone)]
enum Requirement {
    Provider(String, Vec<String>),
    Any(Vec<Requirement>),
    All(Vec<Requirement>),
    AllowMissing,
    AllowMissingOrFailed,
}

#[derive(Debug, Clone)]
enum PathRule {
    Prefix(String),
    Exact(String),
}

/// A compiled jwt_authn filter.
#[derive(Debug, Clone)]
pub struct JwtFilter {
    providers: BTreeMap<String, Provider>,
    rules: Vec<(PathRule, Requirement)>,
}

enum Outcome {
    Ok(Vec<VerifiedJwt>),
    Missing,
    Failed(String),
}

impl JwtFilter {
    pub fn compile(cfg: &JwtAuthentication, field: &str) -> Result<JwtFilter, DecodeError> {
        let mut providers = BTreeMap::new();
        for (name, p) in &cfg.providers {
            providers.insert(
                name.clone(),
                provider(p, &format!("{field}.providers[{name}]"))?,
            );
        }
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let f = format!("{field}.rules[{i}]");
            let path = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
                Some(route_match::PathSpecifier::Prefix(p)) => PathRule::Prefix(p.clone()),
                Some(route_match::PathSpecifier::Path(p)) => PathRule::Exact(p.clone()),
                None => PathRule::Prefix("/".into()),
                Some(_) => return Err(DecodeError::new(&f, "unsupported rule match")),
            };
            let req = match &r.requirement_type {
                Some(requirement_rule::RequirementType::Requires(q)) => {
                    requirement(q, &providers, &f)?
                }
                _ => return Err(DecodeError::new(&f, "rule without inline requires")),
            };
            rules.push((path, req));
        }
        Ok(JwtFilter { providers, rules })
    }

    /// Verifies the request's tokens. `Ok` carries the verified tokens (empty when none was
    /// required or present); the token headers are removed unless `forward`, and each
    /// `forward_payload_header` is set.
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        uri: &Uri,
        cache: &JwksCache,
    ) -> Result<Vec<VerifiedJwt>, JwtError> {
        let path = uri.path();
        let Some((_, req)) = self.rules.iter().find(|(m, _)| match m {
            PathRule::Prefix(p) => path.starts_with(p.as_str()),
            PathRule::Exact(p) => path == p,
        }) else {
            return Ok(Vec::new());
        };
        let any_token = self
            .providers
            .values()
            .any(|p| p.token(headers, uri).is_some());
        match self.eval(req, headers, uri, cache, any_token).await {
            Outcome::Ok(v) => {
                for jwt in &v {
                    if let Some(p) = self.providers.get(&jwt.provider) {
                        p.after_verification(headers, uri);
                    }
                }
                Ok(v)
            }
            Outcome::Missing => Err(JwtError::Missing),
            Outcome::Failed(reason) => Err(JwtError::Invalid(reason)),
        }
    }

    fn eval<'a>(
        &'a self,
        req: &'a Requirement,
        headers: &'a HeaderMap,
        uri: &'a Uri,
        cache: &'a JwksCache,
        any_token: bool,
    ) -> futures::future::BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match req {
                Requirement::Provider(name, auds) => {
                    let Some(p) = self.providers.get(name) else {
                        return Outcome::Failed(format!("unknown provider {name}"));
                    };
                    let Some(token) = p.token(headers, uri) else {
                        return Outcome::Missing;
                    };
                    match p.verify(&token, auds, cache).await {
                        Ok(claims) => Outcome::Ok(vec![VerifiedJwt {
                            provider: name.clone(),
                            metadata_key: p.payload_in_metadata.clone(),
                            claims,
                        }]),
                        Err(e) => Outcome::Failed(e),
                    }
                }
                Requirement::AllowMissing if !any_token => Outcome::Ok(Vec::new()),
                Requirement::AllowMissing => Outcome::Missing,
                Requirement::AllowMissingOrFailed => Outcome::Ok(Vec::new()),
                Requirement::Any(list) => {
                    let mut failed = None;
                    let mut allowed = false;
                    for r in list {
                        match self.eval(r, headers, uri, cache, any_token).await {
                            Outcome::Ok(v) if !v.is_empty() => return Outcome::Ok(v),
                            Outcome::Ok(_) => allowed = true,
                            Outcome::Failed(e) => failed = Some(e),
                            Outcome::Missing => {}
                        }
                    }
                    match (failed, allowed) {
                        (Some(e), _) => Outcome::Failed(e),
                        (None, true) => Outcome::Ok(Vec::new()),
                        (None, false) => Outcome::Missing,
                    }
                }
                Requirement::All(list) => {
                    let mut all = Vec::new();
                    for r in list {
                        match self.eval(r, headers, uri, cache, any_token).await {
                            Outcome::Ok(v) => all.extend(v),
                            other => return other,
                        }
                    }
                    Outcome::Ok(all)
                }
            }
        })
    }
}

fn requirement(
    q: &JwtRequirement,
    providers: &BTreeMap<String, Provider>,
    field: &str,
) -> Result<Requirement, DecodeError> {
    use jwt_requirement::RequiresType as T;
    let known = |n: &str| {
        if providers.contains_key(n) {
            Ok(())
        } else {
            Err(DecodeError::new(field, format!("unknown provider {n:?}")))
        }
    };
    Ok(match &q.requires_type {
        Some(T::ProviderName(n)) => {
            known(n)?;
            Requirement::Provider(n.clone(), Vec::new())
        }
        Some(T::ProviderAndAudiences(pa)) => {
            known(&pa.provider_name)?;
            Requirement::Provider(pa.provider_name.clone(), pa.audiences.clone())
        }
        Some(T::RequiresAny(l)) => Requirement::Any(
            l.requirements
                .iter()
                .map(|r| requirement(r, providers, field))
                .collect::<Result<_, _>>()?,
        ),
        Some(T::RequiresAll(l)) => Requirement::All(
            l.requirements
                .iter()
                .map(|r| requirement(r, providers, field))
                .collect::<Result<_, _>>()?,
        ),
        Some(T::AllowMissing(_)) => Requirement::AllowMissing,
        Some(T::AllowMissingOrFailed(_)) => Requirement::AllowMissingOrFailed,
        _ => return Err(DecodeError::new(field, "unsupported requirement")),
    })
}

fn provider(p: &JwtProvider, field: &str) -> Result<Provider, DecodeError> {
    let keys = match &p.jwks_source_specifier {
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(ds)) => {
            let text = match &ds.specifier {
                Some(data_source::Specifier::InlineString(s)) => s.clone(),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                _ => return Err(DecodeError::new(field, "local_jwks must be inline")),
            };
            Keys::Local(Arc::new(
                parse_jwks(&text).map_err(|e| DecodeError::new(field, e))?,
            ))
        }
        Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(r)) => {
            let uri = r
                .http_uri
                .as_ref()
                .map(|u| u.uri.clone())
                .filter(|u| !u.is_empty())
                .ok_or_else(|| DecodeError::new(field, "remote_jwks without http_uri.uri"))?;
            let ttl = r
                .cache_duration
                .as_ref()
                .map(|d| Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0)))
                .filter(|d| !d.is_zero())
                .unwrap_or(super::jwks::DEFAULT_REFRESH);
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                return Err(DecodeError::new(
                    field,
                    format!("jwks uri {uri:?} is not http:// or https://"),
                ));
            }
            Keys::Remote { uri, ttl }
        }
        None => return Err(DecodeError::new(field, "provider without jwks")),
    };
    let mut from_headers: Vec<(String, String)> = p
        .from_headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value_prefix.clone()))
        .collect();
    let mut from_params = p.from_params.clone();
    if from_headers.is_empty() && from_params.is_empty() && p.from_cookies.is_empty() {
        // Envoy's default locations.
        from_headers.push(("authorization".into(), "Bearer ".into()));
        from_params.push("access_token".into());
    }
    Ok(Provider {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        keys,
        from_headers,
        from_params,
        forward: p.forward,
        forward_payload_header: (!p.forward_payload_header.is_empty())
            .then(|| p.forward_payload_header.clone()),
        payload_in_metadata: p.payload_in_metadata.clone(),
    })
}

impl Provider {
    fn token(&self, headers: &HeaderMap, uri: &Uri) -> Option<String> {
        for (name, prefix) in &self.from_headers {
            if let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                let v = v.trim();
                if prefix.is_empty() {
                    return Some(v.to_string());
                }
                if let Some(t) = v.strip_prefix(prefix.as_str()) {
                    return Some(t.trim().to_string());
                }
            }
        }
        let query = uri.query()?;
        for param in &self.from_params {
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && k == param
                    && !v.is_empty()
                {
                    return Some(v.to_string());
                }
            }
        }
        None
    }

    async fn verify(
        &self,
        token: &str,
        extra_audiences: &[String],
        cache: &JwksCache,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad token: {e}"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(format!("algorithm {:?} not accepted", header.alg));
        }
        let keys = match &self.keys {
            Keys::Local(k) => k.clone(),
            Keys::Remote { uri, ttl } => cache.get(uri, *ttl).await?,
        };
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => keys.find(kid).into_iter().collect(),
            None => keys.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err("no key in the JWKS matches the token".into());
        }
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.leeway = 60;
        if !self.issuer.is_empty() {
            validation.set_issuer(&[&self.issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let auds: Vec<&String> = if extra_audiences.is_empty() {
            self.audiences.iter().collect()
        } else {
            extra_audiences.iter().collect()
        };
        if auds.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&auds);
            validation.required_spec_claims.insert("aud".into());
        }
        let mut last = String::new();
        for jwk in candidates {
            let key = match jsonwebtoken::DecodingKey::from_jwk(jwk) {
                Ok(k) => k,
                Err(e) => {
                    last = format!("unusable key: {e}");
                    continue;
                }
            };
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Removes the token unless forwarded; writes the payload header.
    fn after_verification(&self, headers: &mut HeaderMap, uri: &Uri) {
        let token = self.token(headers, uri);
        if let (Some(h), Some(t)) = (&self.forward_payload_header, &token)
            && let Some(payload) = t.split('.').nth(1)
            && let Ok(v) = HeaderValue::from_str(payload)
            && let Ok(name) = http::HeaderName::from_bytes(h.as_bytes())
        {
            headers.insert(name, v);
        }
        if !self.forward {
            for (name, prefix) in &self.from_headers {
                let carries = headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim().starts_with(prefix.as_str()));
                if carries {
                    headers.remove(name.as_str());
                }
            }
        }
    }
}
