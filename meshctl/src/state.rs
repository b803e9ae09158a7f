//! The local mesh's state directory and `STATE/mesh.json`, which says where everything listens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file `meshctl up` writes once the mesh is ready.
pub const MESH_JSON: &str = "mesh.json";

/// `$HOME/.mesh`, or `./.mesh` without a home directory.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".mesh"),
        _ => PathBuf::from(".mesh"),
    }
}

/// Every address of a running local mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    /// `meshctl up`'s own pid.
    pub pid: u32,
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    /// The ingress gateway's HTTP URL (Gateway port 80).
    pub ingress: String,
    /// `host:port` where the ingress gateway serves Gateway port 443 (HTTPS servers, TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_https: Option<String>,
    pub galley: GalleyAddrs,
    pub pilot: PilotAddrs,
    pub citadel: GrpcAddrs,
    pub mixer: GrpcAddrs,
    /// Every proxy (sidecars and the ingress gateway) by pod name.
    pub proxies: BTreeMap<String, ProxyAddrs>,
    /// Every demo application instance by pod name.
    pub apps: BTreeMap<String, AppAddrs>,
    /// Every child process.
    pub processes: Vec<ProcessInfo>,
    /// The dashboard's URL, served by `meshctl up` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleyAddrs {
    /// The apply API (`meshctl apply` talks to it).
    pub api: String,
    pub mcp: String,
    pub monitoring: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PilotAddrs {
    pub xds: String,
    pub debug: String,
    pub monitoring: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpcAddrs {
    pub grpc: String,
    pub monitoring: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyAddrs {
    /// `sidecar` or `router`.
    #[serde(rename = "type")]
    pub type_: String,
    pub namespace: String,
    pub service_account: String,
    /// `host:port` of the outbound listener (the app's HTTP proxy).
    pub outbound: String,
    /// `host:port` of the mTLS inbound listener.
    pub inbound: String,
    /// Admin URL (`/stats/prometheus`, `/config_dump`, ...).
    pub admin: String,
    /// `host:port` of the app behind a sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppAddrs {
    pub service: String,
    pub version: String,
    pub listen: String,
    /// The pod name of its sidecar.
    pub sidecar: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// Reading or writing the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "no Galley address: pass --galley URL or set MESH_GALLEY, or start a mesh with `meshctl up` (no {path}: {source})"
    )]
    NoMesh {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MeshState {
    /// Reads `STATE/mesh.json`.
    pub fn read(state_dir: &Path) -> Result<MeshState, StateError> {
        let path = state_dir.join(MESH_JSON);
        let text = std::fs::read_to_string(&path).map_err(|source| StateError::NoMesh {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Parse { path, source })
    }

    /// Writes `STATE/mesh.json` atomically (a reader never sees half a file).
    pub fn write(&self, state_dir: &Path) -> Result<(), StateError> {
        let path = state_dir.join(MESH_JSON);
        let tmp = state_dir.join(format!("{MESH_JSON}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| StateError::Write { path, source })
    }
}

/// Galley's apply API URL: the flag/env value, else the one in `STATE/mesh.json`.
pub fn galley_url(flag: Option<String>, state_dir: &Path) -> Result<String, StateError> {
    match flag {
        Some(url) if !url.is_empty() => Ok(url.trim_end_matches('/').to_string()),
        _ => Ok(MeshState::read(state_dir)?.galley.api),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> MeshState {
        MeshState {
            pid: 7,
            state_dir: dir.to_path_buf(),
            config_dir: dir.join("config"),
            ingress: "http://127.0.0.1:1".into(),
            ingress_https: None,
            galley: GalleyAddrs {
                api: "http://127.0.0.1:2".into(),
                mcp: "http://127.0.0.1:3".into(),
                monitoring: "http://127.0.0.1:4".into(),
            },
            pilot: PilotAddrs {
                xds: "http://127.0.0.1:5".into(),
                debug: "http://127.0.0.1:6".into(),
                monitoring: "http://127.0.0.1:7".into(),
            },
            citadel: GrpcAddrs {
                grpc: "http://127.0.0.1:8".into(),
                monitoring: "http://127.0.0.1:9".into(),
            },
            mixer: GrpcAddrs {
                grpc: "http://127.0.0.1:10".into(),
                monitoring: "http://127.0.0.1:11".into(),
            },
            proxies: BTreeMap::new(),
            apps: BTreeMap::new(),
            processes: vec![],
            dashboard: Some("http://127.0.0.1:12".into()),
        }
    }

    #[test]
    fn galley_from_flag_or_mesh_json() {
        let dir = tempfile::tempdir().unwrap();
        let err = galley_url(None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("--galley"), "{err}");
        assert_eq!(
            galley_url(Some("http://x:1/".into()), dir.path()).unwrap(),
            "http://x:1"
        );
        let s = sample(dir.path());
        s.write(dir.path()).unwrap();
        assert_eq!(MeshState::read(dir.path()).unwrap(), s);
        assert_eq!(galley_url(None, dir.path()).unwrap(), "http://127.0.0.1:2");
    }
}
