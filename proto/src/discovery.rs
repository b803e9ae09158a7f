//! The discovery-stream engine shared by Galley (MCP) and Pilot (xDS).
//!
//! Both protocols follow the same rules per resource type on one stream: the server sends a
//! version with a fresh nonce; the client answers with that nonce and either the version it applied
//! (ACK) or an error (NACK, keeping its previous version). A request whose nonce is not the last one
//! sent is stale and ignored. A request with no nonce opens (or re-opens) the subscription.
//! A NACKed version is remembered and not sent again until the content changes.

use rand::Rng;

/// What a client request means for one resource type on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// First request for this type on the stream (no nonce): send the current state.
    Initial,
    /// The client applied `version`.
    Ack { version: String },
    /// The client rejected `version` and keeps what it had.
    Nack { version: String, error: String },
    /// Answers a nonce that is not the latest sent: ignore.
    Stale,
}

/// Per-stream, per-type bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeState {
    /// The version last sent and the nonce it carried.
    pub sent: Option<(String, String)>,
    /// The version the client last acknowledged.
    pub acked_version: Option<String>,
    /// The last version the client rejected, with its error.
    pub nacked: Option<(String, String)>,
    /// Number of NACKs seen.
    pub nack_count: u64,
}

impl TypeState {
    /// Classifies a request and updates the state to match.
    pub fn on_request(&mut self, response_nonce: &str, error: Option<&str>) -> Request {
        if response_nonce.is_empty() {
            return Request::Initial;
        }
        let Some((version, nonce)) = self.sent.clone() else {
            return Request::Stale;
        };
        if nonce != response_nonce {
            return Request::Stale;
        }
        match error {
            Some(err) => {
                self.nack_count += 1;
                self.nacked = Some((version.clone(), err.to_string()));
                Request::Nack {
                    version,
                    error: err.to_string(),
                }
            }
            None => {
                self.acked_version = Some(version.clone());
                Request::Ack { version }
            }
        }
    }

    /// Whether `version` should be sent: not when it is what was last sent, nor when the
    /// client already rejected exactly this version.
    pub fn should_send(&self, version: &str) -> bool {
        let already_sent = self.sent.as_ref().is_some_and(|(v, _)| v == version);
        let rejected = self.nacked.as_ref().is_some_and(|(v, _)| v == version);
        !already_sent && !rejected
    }

    /// Records that `version` is being sent and returns the nonce to put on it.
    pub fn on_send(&mut self, version: &str) -> String {
        let nonce = new_nonce();
        self.sent = Some((version.to_string(), nonce.clone()));
        nonce
    }

    /// Forgets what was sent, so the next `should_send` is true (used on `Initial`).
    pub fn reset(&mut self) {
        self.sent = None;
    }
}

/// A fresh random nonce.
pub fn new_nonce() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_nack_and_stale() {
        let mut st = TypeState::default();
        assert_eq!(st.on_request("", None), Request::Initial);
        assert!(st.should_send("1"));
        let n1 = st.on_send("1");
        assert!(!st.should_send("1"));
        assert_eq!(st.on_request("bogus", None), Request::Stale);
        assert_eq!(
            st.on_request(&n1, None),
            Request::Ack {
                version: "1".into()
            }
        );
        assert_eq!(st.acked_version.as_deref(), Some("1"));
        let n2 = st.on_send("2");
        assert_eq!(st.on_request(&n1, None), Request::Stale);
        assert_eq!(
            st.on_request(&n2, Some("bad route")),
            Request::Nack {
                version: "2".into(),
                error: "bad route".into()
            }
        );
        assert_eq!(st.acked_version.as_deref(), Some("1"));
        st.reset();
        assert!(!st.should_send("2"), "a NACKed version is not re-sent");
        assert!(st.should_send("3"));
        assert_eq!(st.nack_count, 1);
    }
}
