//! Kubernetes service-account JWTs, checked by the API server's TokenReview (audience
//! `istio-ca`), as Istio's CA does.
//!
//! Neither error texts nor logs carry the token: the review echoes it back, so the response
//! body is decoded here (kube's typed `Api::create` would log an undecodable body at `warn`) and
//! neither it nor a decoding error that might quote it is put into a reason.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Resource;
use kube::api::PostParams;

use super::caller::{Authenticated, Authenticator, AuthnError, CallerInfo};

const NAME: &str = "kube-tokenreview";

/// The audience Istio's CA asks the API server to check.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// Username prefix of a service account in a TokenReview.
const SA_PREFIX: &str = "system:serviceaccount:";

/// Accepts `authorization: Bearer <service-account JWT>` the API server vouches for.
pub struct TokenReviewAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// Reviews tokens through `client` for the `istio-ca` audience.
    pub fn new(client: kube::Client) -> Self {
        TokenReviewAuthenticator {
            client,
            audiences: vec![ISTIO_CA_AUDIENCE.to_string()],
        }
    }
}

fn rejected(reason: impl Into<String>) -> AuthnError {
    AuthnError::Rejected {
        authenticator: NAME,
        reason: reason.into(),
    }
}

/// What a failed TokenReview call says, without anything from the response body.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("API server refused the review: {} {}", s.code, s.reason),
        kube::Error::SerdeError(_) => "cannot decode the TokenReview response".to_string(),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("cannot reach the API server: {e}")
        }
        _ => "TokenReview call failed".to_string(),
    }
}

/// `system:serviceaccount:<ns>:<sa>` → (ns, sa).
pub fn parse_service_account_username(username: &str) -> Option<(&str, &str)> {
    let (ns, sa) = username.strip_prefix(SA_PREFIX)?.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn authenticate(&self, caller: &CallerInfo) -> Result<Authenticated, AuthnError> {
        let token = caller
            .bearer
            .as_deref()
            .ok_or(AuthnError::NotApplicable(NAME))?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let body =
            serde_json::to_vec(&review).map_err(|_| rejected("cannot encode the TokenReview"))?;
        let request = kube::core::Request::new(TokenReview::url_path(&(), None))
            .create(&PostParams::default(), body)
            .map_err(|_| rejected("cannot build the TokenReview request"))?;
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(|e| rejected(describe(&e)))?;
        let reviewed: TokenReview = serde_json::from_str(&text)
            .map_err(|_| rejected("cannot decode the TokenReview response"))?;
        let status = reviewed
            .status
            .ok_or_else(|| rejected("TokenReview has no status"))?;
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "token not authenticated".to_string());
            return Err(rejected(why));
        }
        // An API server that ignores audiences returns none; one that checks them returns the
        // ones the token is valid for, which must include ours.
        if let Some(audiences) = &status.audiences
            && !audiences.iter().any(|a| self.audiences.contains(a))
        {
            return Err(rejected(format!(
                "token audiences {audiences:?} do not include {ISTIO_CA_AUDIENCE}"
            )));
        }
        let username = status
            .user
            .and_then(|u| u.username)
            .ok_or_else(|| rejected("TokenReview names no user"))?;
        let (namespace, service_account) = parse_service_account_username(&username)
            .ok_or_else(|| rejected(format!("{username} is not a service account")))?;
        Ok(Authenticated {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            by: NAME,
        })
    }
}

#[cfg(test)]
mod tests;
