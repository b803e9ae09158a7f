//! Pilot's debug API (`/debug/syncz`, `/debug/config_dump?proxyID=`) and where to find it.

use std::path::Path;

use serde_json::Value;

use crate::state::{MeshState, StateError};

/// Talking to Pilot, or finding the proxy, failed.
#[derive(Debug, thiserror::Error)]
pub enum PilotError {
    #[error(
        "no Pilot address: pass --pilot URL or set MESH_PILOT, or start a mesh with `meshctl up` ({0})"
    )]
    NoPilot(#[source] StateError),
    #[error("cannot reach pilot at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("pilot answered {status} for {url}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("pilot's answer for {url} is not JSON: {message}")]
    Decode { url: String, message: String },
    #[error("no proxy {name:?} is connected to pilot; connected: {}", list(.connected))]
    NoSuchProxy {
        name: String,
        connected: Vec<String>,
    },
    #[error("{name:?} names more than one proxy: {}; give more of the name", list(.candidates))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Pilot's debug URL: the flag/env value, else `pilot.debug` in `STATE/mesh.json`.
pub fn pilot_url(flag: Option<String>, state_dir: &Path) -> Result<String, PilotError> {
    match flag {
        Some(url) if !url.is_empty() => Ok(with_scheme(url.trim_end_matches('/'))),
        _ => Ok(with_scheme(
            MeshState::read(state_dir)
                .map_err(PilotError::NoPilot)?
                .pilot
                .debug
                .trim_end_matches('/'),
        )),
    }
}

/// `127.0.0.1:8080` → `http://127.0.0.1:8080`.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// A client of one Pilot's debug endpoints.
#[derive(Debug, Clone)]
pub struct PilotDebug {
    base: String,
    http: reqwest::Client,
}

impl PilotDebug {
    /// A client for Pilot's debug server at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: &str) -> PilotDebug {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        PilotDebug {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Pilot's name in tables: its debug address without the scheme.
    pub fn name(&self) -> &str {
        self.base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, rest)| rest)
    }

    /// `/debug/syncz`: every connected proxy and its per-type sync state.
    pub async fn syncz(&self) -> Result<Value, PilotError> {
        self.get_json(format!("{}/debug/syncz", self.base)).await
    }

    /// `/debug/config_dump?proxyID=ID`: the config of the connected proxy `id`.
    pub async fn config_dump(&self, id: &str) -> Result<Value, PilotError> {
        self.get_json(format!(
            "{}/debug/config_dump?proxyID={}",
            self.base,
            encode_query(id)
        ))
        .await
    }

    async fn get_json(&self, url: String) -> Result<Value, PilotError> {
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| PilotError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|source| PilotError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let json = serde_json::from_str::<Value>(&body);
        if status != 200 {
            // Pilot's errors are `{"error": "..."}`.
            let message = match &json {
                Ok(v) => v["error"].as_str().map_or(body.clone(), str::to_string),
                Err(_) => body,
            };
            return Err(PilotError::Status {
                url,
                status,
                message,
            });
        }
        json.map_err(|e| PilotError::Decode {
            url,
            message: e.to_string(),
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pilot_from_flag_or_mesh_json() {
        let dir = tempfile::tempdir().unwrap();
        let err = pilot_url(None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("--pilot"), "{err}");
        assert_eq!(
            pilot_url(Some("127.0.0.1:8080/".into()), dir.path()).unwrap(),
            "http://127.0.0.1:8080"
        );
        std::fs::write(
            dir.path().join("mesh.json"),
            serde_json::json!({
                "pid": 1, "state_dir": "/s", "config_dir": "/c", "ingress": "http://i",
                "galley": {"api": "http://g", "mcp": "http://m", "monitoring": "http://gm"},
                "pilot": {"xds": "http://x", "debug": "http://127.0.0.1:6", "monitoring": "http://pm"},
                "citadel": {"grpc": "http://c", "monitoring": "http://cm"},
                "mixer": {"grpc": "http://mx", "monitoring": "http://mm"},
                "proxies": {}, "apps": {}, "processes": []
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(pilot_url(None, dir.path()).unwrap(), "http://127.0.0.1:6");
        assert_eq!(PilotDebug::new("http://127.0.0.1:6/").name(), "127.0.0.1:6");
        assert_eq!(
            encode_query("sidecar~1.2.3.4~a b&c"),
            "sidecar~1.2.3.4~a%20b%26c"
        );
    }
}
