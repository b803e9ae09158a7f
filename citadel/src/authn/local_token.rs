//! Local mode: tokens signed by Citadel's own issuer key (see [`crate::token`]).

use crate::token::{IssuerKey, TokenError};

use super::caller::{Authenticated, Authenticator, AuthnError, CallerInfo};

const NAME: &str = "local-token";

/// Accepts `authorization: Bearer <token>` issued by [`crate::token::issue`].
#[derive(Debug)]
pub struct LocalTokenAuthenticator {
    key: IssuerKey,
}

impl LocalTokenAuthenticator {
    pub fn new(key: IssuerKey) -> Self {
        LocalTokenAuthenticator { key }
    }
}

#[tonic::async_trait]
impl Authenticator for LocalTokenAuthenticator {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn authenticate(&self, caller: &CallerInfo) -> Result<Authenticated, AuthnError> {
        let token = caller
            .bearer
            .as_deref()
            .ok_or(AuthnError::NotApplicable(NAME))?;
        let sa = self
            .key
            .verify(token)
            .map_err(|e: TokenError| AuthnError::Rejected {
                authenticator: NAME,
                reason: e.to_string(),
            })?;
        Ok(Authenticated {
            namespace: sa.namespace,
            service_account: sa.name,
            by: NAME,
        })
    }
}
