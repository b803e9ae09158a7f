//! Galley's apply API over HTTP/JSON (`/apis/v1/...`), as `docs/contracts.md` fixes it.

use mesh_proto::config::ConfigObject;
use serde::Deserialize;

/// What `POST /apis/v1/apply` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied {
        applied: Vec<Applied>,
        skipped: Vec<Skipped>,
    },
    Invalid(Vec<Invalid>),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Applied {
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub revision: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Skipped {
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub line: u64,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub reason: String,
}

/// One invalid document: where it is, what it is, which field and why.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Invalid {
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub line: u64,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub message: String,
}

impl std::fmt::Display for Invalid {
    /// `file:line: Kind ns/name: field: message` (parts that are unknown are left out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:", self.file, self.line)?;
        if !self.kind.is_empty() {
            write!(f, " {}", self.kind)?;
        }
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (_, true) => {}
            (true, false) => write!(f, " {}", self.name)?,
            (false, false) => write!(f, " {}/{}", self.namespace, self.name)?,
        }
        if !self.kind.is_empty() || !self.name.is_empty() {
            f.write_str(":")?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

#[derive(Deserialize)]
struct AppliedBody {
    #[serde(default)]
    applied: Vec<Applied>,
    #[serde(default)]
    skipped: Vec<Skipped>,
}

#[derive(Deserialize)]
struct ErrorsBody {
    errors: Vec<Invalid>,
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    items: Vec<ConfigObject>,
}

/// Talking to Galley failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach galley at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("galley answered {status} for {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("galley's answer for {url} is not what the API promises: {message}")]
    Decode { url: String, message: String },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
}

/// A client of one Galley's apply API.
#[derive(Debug, Clone)]
pub struct GalleyApi {
    base: String,
    http: reqwest::Client,
}

impl GalleyApi {
    /// A client for the API at `base` (`http://127.0.0.1:9902`).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        GalleyApi {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Sends one file's text; `source` names it in Galley's answers and logs.
    pub async fn apply(&self, source: &str, text: String) -> Result<ApplyOutcome, ApiError> {
        let url = format!("{}/apis/v1/apply", self.base);
        let (status, body) = call(
            &url,
            self.http
                .post(&url)
                .header("x-mesh-source", source)
                .header("content-type", "application/yaml")
                .body(text),
        )
        .await?;
        match status {
            200 => {
                let b: AppliedBody = decode(&url, &body)?;
                Ok(ApplyOutcome::Applied {
                    applied: b.applied,
                    skipped: b.skipped,
                })
            }
            400 => match serde_json::from_str::<ErrorsBody>(&body) {
                Ok(b) => Ok(ApplyOutcome::Invalid(b.errors)),
                Err(_) => Err(ApiError::Status { url, status, body }),
            },
            _ => Err(ApiError::Status { url, status, body }),
        }
    }

    /// Every object of `kind` (as `Kind::from_name` spells it), in `namespace` or all.
    pub async fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<ConfigObject>, ApiError> {
        let mut url = format!("{}/apis/v1/{}", self.base, kind);
        if let Some(ns) = namespace {
            url.push_str("?namespace=");
            url.push_str(ns);
        }
        let (status, body) = call(&url, self.http.get(&url)).await?;
        if status != 200 {
            return Err(ApiError::Status { url, status, body });
        }
        Ok(decode::<ListBody>(&url, &body)?.items)
    }

    /// Deletes `kind` `namespace/name`.
    pub async fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<(), ApiError> {
        let url = format!("{}/apis/v1/{}/{}/{}", self.base, kind, namespace, name);
        let (status, body) = call(&url, self.http.delete(&url)).await?;
        match status {
            200 | 204 => Ok(()),
            404 => Err(ApiError::NotFound {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            _ => Err(ApiError::Status { url, status, body }),
        }
    }
}

/// One change in Galley's history (`GET /apis/v1/history`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct HistoryRow {
    pub rev: u64,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize)]
struct HistoryBody {
    #[serde(default)]
    items: Vec<HistoryRow>,
}

/// What `POST /apis/v1/rollback/{rev}` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The store now holds the content of the target revision, as `revision`.
    RolledBack {
        revision: u64,
        applied: Vec<Applied>,
    },
    /// Objects of the target revision no longer validate: nothing changed.
    Invalid(Vec<Invalid>),
}

#[derive(Deserialize)]
struct RollbackBody {
    revision: u64,
    #[serde(default)]
    applied: Vec<Applied>,
}

impl GalleyApi {
    /// The history, optionally only of `kind` (as `Kind::from_name` spells it), `namespace`,
    /// `name`; oldest first.
    pub async fn history(
        &self,
        kind: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<HistoryRow>, ApiError> {
        let query: Vec<String> = [("kind", kind), ("namespace", namespace), ("name", name)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
            .collect();
        let mut url = format!("{}/apis/v1/history", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let (status, body) = call(&url, self.http.get(&url)).await?;
        if status != 200 {
            return Err(ApiError::Status { url, status, body });
        }
        Ok(decode::<HistoryBody>(&url, &body)?.items)
    }

    /// Restores the store to its content at revision `rev`.
    pub async fn rollback(&self, rev: u64) -> Result<RollbackOutcome, ApiError> {
        let url = format!("{}/apis/v1/rollback/{rev}", self.base);
        let (status, body) = call(&url, self.http.post(&url)).await?;
        match status {
            200 => {
                let b: RollbackBody = decode(&url, &body)?;
                Ok(RollbackOutcome::RolledBack {
                    revision: b.revision,
                    applied: b.applied,
                })
            }
            400 => match serde_json::from_str::<ErrorsBody>(&body) {
                Ok(b) => Ok(RollbackOutcome::Invalid(b.errors)),
                Err(_) => Err(ApiError::Status { url, status, body }),
            },
            _ => Err(ApiError::Status { url, status, body }),
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `req` (to `url`) and reads the whole answer: (status, body).
async fn call(url: &str, req: reqwest::RequestBuilder) -> Result<(u16, String), ApiError> {
    let resp = req.send().await.map_err(|source| ApiError::Unreachable {
        url: url.to_string(),
        source,
    })?;
    let status = resp.status().as_u16();
    Ok((status, read_body(url, resp).await?))
}

async fn read_body(url: &str, resp: reqwest::Response) -> Result<String, ApiError> {
    resp.text().await.map_err(|source| ApiError::Unreachable {
        url: url.to_string(),
        source,
    })
}

fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &str) -> Result<T, ApiError> {
    serde_json::from_str(body).map_err(|e| ApiError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_documents_print_as_one_line_each() {
        let e = Invalid {
            file: "reviews.yaml".into(),
            line: 3,
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: "reviews".into(),
            field: "spec.http[0].route[0].weight".into(),
            message: "invalid type: string \"x\", expected i32".into(),
        };
        assert_eq!(
            e.to_string(),
            "reviews.yaml:3: VirtualService default/reviews: spec.http[0].route[0].weight: invalid type: string \"x\", expected i32"
        );
        let bare = Invalid {
            file: "x.yaml".into(),
            line: 1,
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            field: String::new(),
            message: "not YAML".into(),
        };
        assert_eq!(bare.to_string(), "x.yaml:1: not YAML");
    }

    #[tokio::test]
    async fn unreachable_galley_names_the_url() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let api = GalleyApi::new(&format!("http://{dead}"));
        let err = api.apply("x.yaml", "a: 1".into()).await.unwrap_err();
        assert!(err.to_string().contains("cannot reach galley"), "{err}");
    }
}
