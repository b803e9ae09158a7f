//! The CA Secret against a local HTTP server that answers like the Kubernetes API server
//! (Secret GET/POST, `Status` bodies for 404 and 409); no cluster is needed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::*;

const NS: &str = "istio-system";

#[derive(Default)]
struct Fake {
    /// The Secret as stored by the API server.
    stored: Option<Value>,
    /// On the next POST: store this Secret (another replica's) and answer 409.
    race_winner: Option<Value>,
    /// Answer every request with 403.
    forbidden: bool,
    /// `METHOD name` of every request, in order.
    seen: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason,
            "details": {"name": CA_SECRET_NAME, "kind": "secrets"}, "code": code.as_u16(),
        })),
    )
        .into_response()
}

async fn read(State(fake): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut f = fake.lock();
    f.seen.push(format!("GET {ns}/{name}"));
    if f.forbidden {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "secrets is forbidden".into(),
        );
    }
    match &f.stored {
        Some(s) if ns == NS && name == CA_SECRET_NAME => Json(s.clone()).into_response(),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("secrets \"{name}\" not found"),
        ),
    }
}

async fn create(
    State(fake): State<Shared>,
    Path(ns): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut f = fake.lock();
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    f.seen.push(format!("POST {ns}/{name}"));
    if let Some(winner) = f.race_winner.take() {
        f.stored = Some(winner);
    }
    if f.stored.is_some() {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("secrets \"{name}\" already exists"),
        );
    }
    f.stored = Some(body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn api_server(fake: Fake) -> (SocketAddr, Shared) {
    let shared: Shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(read))
        .route("/api/v1/namespaces/{ns}/secrets", post(create))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, shared)
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// A Secret in Istio's self-signed layout holding a fresh root; returns it and the root PEM.
fn istio_secret() -> (Value, String) {
    let (cert, key) = generate_root("cluster.local").unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET_NAME.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        type_: Some(CA_SECRET_TYPE.into()),
        data: Some(BTreeMap::from([
            (
                CA_CERT_FILE.to_string(),
                ByteString(cert.clone().into_bytes()),
            ),
            (CA_KEY_FILE.to_string(), ByteString(key.into_bytes())),
            (CERT_CHAIN_FILE.to_string(), ByteString(Vec::new())),
            (ROOT_CERT_FILE.to_string(), ByteString(Vec::new())),
        ])),
        ..Secret::default()
    };
    (serde_json::to_value(secret).unwrap(), cert)
}

async fn load(addr: SocketAddr) -> Result<CertificateAuthority, CaError> {
    CaSecret::new(NS)
        .load_or_create(client(addr), "cluster.local")
        .await
}

#[tokio::test]
async fn an_existing_secret_is_loaded() {
    let (secret, root) = istio_secret();
    let (addr, fake) = api_server(Fake {
        stored: Some(secret),
        ..Fake::default()
    })
    .await;
    let ca = load(addr).await.unwrap();
    assert_eq!(ca.root_cert_pem(), root);
    assert!(!ca.is_plugged_in());
    assert_eq!(fake.lock().seen, vec![format!("GET {NS}/{CA_SECRET_NAME}")]);
}

#[tokio::test]
async fn an_absent_secret_is_created_and_reused() {
    let (addr, fake) = api_server(Fake::default()).await;
    let ca = load(addr).await.unwrap();
    let stored = fake.lock().stored.clone().unwrap();
    assert_eq!(stored["type"], CA_SECRET_TYPE);
    assert_eq!(stored["metadata"]["name"], CA_SECRET_NAME);
    assert_eq!(stored["metadata"]["namespace"], NS);
    let secret: Secret = serde_json::from_value(stored).unwrap();
    let data = secret.data.unwrap();
    let keys: Vec<_> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE]
    );
    let stored_cert = String::from_utf8(data[CA_CERT_FILE].0.clone()).unwrap();
    assert_eq!(ca.root_cert_pem(), stored_cert);
    assert_eq!(data[ROOT_CERT_FILE].0, stored_cert.as_bytes());
    assert!(
        String::from_utf8_lossy(&data[CA_KEY_FILE].0).contains("PRIVATE KEY"),
        "the key is stored"
    );
    assert_eq!(
        fake.lock().seen,
        vec![
            format!("GET {NS}/{CA_SECRET_NAME}"),
            format!("POST {NS}/{CA_SECRET_NAME}"),
        ]
    );
    // A restart (or another replica later) loads the same root.
    let again = load(addr).await.unwrap();
    assert_eq!(again.root_cert_pem(), ca.root_cert_pem());
}

#[tokio::test]
async fn a_create_conflict_loads_the_winners_root() {
    let (winner, winner_root) = istio_secret();
    let (addr, fake) = api_server(Fake {
        race_winner: Some(winner),
        ..Fake::default()
    })
    .await;
    let ca = load(addr).await.unwrap();
    assert_eq!(ca.root_cert_pem(), winner_root);
    let seen = fake.lock().seen.clone();
    assert_eq!(
        seen,
        vec![
            format!("GET {NS}/{CA_SECRET_NAME}"),
            format!("POST {NS}/{CA_SECRET_NAME}"),
            format!("GET {NS}/{CA_SECRET_NAME}"),
        ]
    );
}

#[tokio::test]
async fn replicas_starting_together_end_with_one_root() {
    let (addr, _fake) = api_server(Fake::default()).await;
    let loads: Vec<_> = (0..4).map(|_| tokio::spawn(load(addr))).collect();
    let mut roots = Vec::new();
    for l in loads {
        roots.push(l.await.unwrap().unwrap().root_cert_pem().to_string());
    }
    roots.dedup();
    assert_eq!(roots.len(), 1);
}

#[tokio::test]
async fn a_malformed_secret_names_the_secret_and_key() {
    let (mut secret, _) = istio_secret();
    secret["data"][CA_KEY_FILE] = json!(base64_of(b"-----BEGIN PRIVATE KEY-----\nnope\n"));
    let (addr, _) = api_server(Fake {
        stored: Some(secret.clone()),
        ..Fake::default()
    })
    .await;
    let err = load(addr).await.unwrap_err().to_string();
    assert!(
        err.contains("Secret istio-system/istio-ca-secret key ca-key.pem"),
        "{err}"
    );

    secret["data"].as_object_mut().unwrap().remove(CA_CERT_FILE);
    let (addr, fake) = api_server(Fake {
        stored: Some(secret),
        ..Fake::default()
    })
    .await;
    let err = load(addr).await.unwrap_err().to_string();
    assert!(
        err.contains("Secret istio-system/istio-ca-secret key ca-cert.pem: missing"),
        "{err}"
    );
    // A broken Secret is reported, never replaced.
    assert!(fake.lock().seen.iter().all(|s| s.starts_with("GET")));
}

#[tokio::test]
async fn api_server_refusals_are_errors() {
    let (addr, _) = api_server(Fake {
        forbidden: true,
        ..Fake::default()
    })
    .await;
    let err = load(addr).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot read Secret istio-system/istio-ca-secret")
            && err.contains("forbidden"),
        "{err}"
    );
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
