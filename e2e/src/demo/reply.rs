//! The JSON every demo service answers with.

use serde::{Deserialize, Serialize};

/// `{"service":S,"version":V,"calls":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub service: String,
    pub version: String,
    #[serde(default)]
    pub calls: Vec<CallResult>,
}

/// One call's outcome: the callee's own reply, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CallResult {
    Ok(Reply),
    /// `{"service":callee,"status":CODE}`; status 0 with `error` when no response came back.
    Failed {
        service: String,
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl CallResult {
    /// The callee's name.
    pub fn service(&self) -> &str {
        match self {
            CallResult::Ok(r) => &r.service,
            CallResult::Failed { service, .. } => service,
        }
    }

    /// The callee's reply when the call succeeded.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            CallResult::Ok(r) => Some(r),
            CallResult::Failed { .. } => None,
        }
    }
}

impl Reply {
    /// Every call in the tree, nested ones included, succeeded.
    pub fn all_ok(&self) -> bool {
        self.calls
            .iter()
            .all(|c| c.reply().is_some_and(Reply::all_ok))
    }

    /// The reply from the call to `service`, if it was made and succeeded.
    pub fn call(&self, service: &str) -> Option<&Reply> {
        self.calls
            .iter()
            .find(|c| c.service() == service)
            .and_then(CallResult::reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_shape() {
        let r = Reply {
            service: "productpage".into(),
            version: "v1".into(),
            calls: vec![
                CallResult::Ok(Reply {
                    service: "details".into(),
                    version: "v1".into(),
                    calls: vec![],
                }),
                CallResult::Failed {
                    service: "reviews".into(),
                    status: 503,
                    error: None,
                },
            ],
        };
        assert!(!r.all_ok(), "reviews failed");
        assert!(r.calls[0].reply().is_some_and(Reply::all_ok));
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"service":"productpage","version":"v1","calls":[{"service":"details","version":"v1","calls":[]},{"service":"reviews","status":503}]}"#
        );
        let back: Reply = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.call("details").unwrap().version, "v1");
        assert!(back.call("reviews").is_none());
    }
}
