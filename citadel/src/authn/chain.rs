//! Trying authenticators in order: the first success wins.

use super::caller::{Authenticated, Authenticator, AuthnError, CallerInfo};

/// The configured authenticators, tried in order.
#[derive(Default)]
pub struct Authenticators {
    chain: Vec<Box<dyn Authenticator>>,
}

impl std::fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.chain.iter().map(|a| a.name()))
            .finish()
    }
}

impl Authenticators {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an authenticator.
    pub fn with(mut self, a: impl Authenticator) -> Self {
        self.chain.push(Box::new(a));
        self
    }

    /// The first identity any authenticator accepts; otherwise one reason naming every
    /// authenticator's refusal.
    pub async fn authenticate(&self, caller: &CallerInfo) -> Result<Authenticated, String> {
        let mut reasons = Vec::new();
        for a in &self.chain {
            match a.authenticate(caller).await {
                Ok(id) => return Ok(id),
                Err(AuthnError::NotApplicable(_)) => {}
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if reasons.is_empty() {
            Err(
                "no credential: expected a client certificate or authorization: Bearer <token>"
                    .to_string(),
            )
        } else {
            Err(reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Result<Authenticated, AuthnError>);

    #[tonic::async_trait]
    impl Authenticator for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn authenticate(&self, _: &CallerInfo) -> Result<Authenticated, AuthnError> {
            self.1.clone()
        }
    }

    fn ok(sa: &str, by: &'static str) -> Result<Authenticated, AuthnError> {
        Ok(Authenticated {
            namespace: "default".into(),
            service_account: sa.into(),
            by,
        })
    }

    fn rejected(by: &'static str) -> Result<Authenticated, AuthnError> {
        Err(AuthnError::Rejected {
            authenticator: by,
            reason: "bad".into(),
        })
    }

    #[tokio::test]
    async fn first_success_wins_and_refusals_are_reported() {
        let caller = CallerInfo::default();
        let chain = Authenticators::new()
            .with(Fixed("a", rejected("a")))
            .with(Fixed("b", ok("second", "b")))
            .with(Fixed("c", ok("third", "c")));
        assert_eq!(chain.authenticate(&caller).await.unwrap().by, "b");

        let chain = Authenticators::new()
            .with(Fixed("a", rejected("a")))
            .with(Fixed("b", Err(AuthnError::NotApplicable("b"))))
            .with(Fixed("c", rejected("c")));
        assert_eq!(
            chain.authenticate(&caller).await.unwrap_err(),
            "a: bad; c: bad"
        );

        let chain = Authenticators::new().with(Fixed("b", Err(AuthnError::NotApplicable("b"))));
        assert!(
            chain
                .authenticate(&caller)
                .await
                .unwrap_err()
                .contains("no credential")
        );
    }
}
