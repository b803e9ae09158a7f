//! TokenReview against a local HTTP server answering with responses recorded in the shape the
//! Kubernetes API server gives (`testdata/tokenreview/*.json`); no cluster is needed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::Value;

use super::*;

type Seen = Arc<Mutex<Vec<Value>>>;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/testdata/tokenreview/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

async fn review(State(seen): State<Seen>, Json(body): Json<Value>) -> impl IntoResponse {
    seen.lock().push(body.clone());
    let token = body["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, name) = match token.as_str() {
        "good-jwt" => (StatusCode::CREATED, "authenticated"),
        "wrong-aud-jwt" => (StatusCode::CREATED, "wrong-audience"),
        "admin-jwt" => (StatusCode::CREATED, "not-a-service-account"),
        "forbidden-jwt" => (StatusCode::FORBIDDEN, "forbidden"),
        _ => {
            // Not JSON, and quoting the token: the error must not repeat it.
            return (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                format!("{{\"status\": \"{token}\""),
            );
        }
    };
    (
        status,
        [("content-type", "application/json")],
        fixture(name).replace("{{TOKEN}}", &token),
    )
}

async fn api_server() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/apis/authentication.k8s.io/v1/tokenreviews", post(review))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn authenticator(addr: SocketAddr) -> TokenReviewAuthenticator {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    TokenReviewAuthenticator::new(kube::Client::try_from(config).unwrap())
}

/// Collects everything logged (at every level) on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn service_account_tokens_are_reviewed_by_the_api_server() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let (addr, seen) = api_server().await;
    let a = authenticator(addr);

    let who = a
        .authenticate(&CallerInfo::with_bearer("good-jwt"))
        .await
        .unwrap();
    assert_eq!(
        (who.namespace.as_str(), who.service_account.as_str(), who.by),
        ("default", "bookinfo-reviews", "kube-tokenreview")
    );
    // The review asked for the istio-ca audience, with the caller's token.
    let sent = seen.lock()[0].clone();
    assert_eq!(sent["kind"], "TokenReview");
    assert_eq!(sent["spec"]["audiences"], serde_json::json!(["istio-ca"]));
    assert_eq!(sent["spec"]["token"], "good-jwt");

    // Not applicable without a bearer token: no call is made.
    assert!(matches!(
        a.authenticate(&CallerInfo::default()).await,
        Err(AuthnError::NotApplicable(_))
    ));
    assert_eq!(seen.lock().len(), 1);

    for (token, expect) in [
        ("wrong-aud-jwt", "is invalid for the target audiences"),
        ("admin-jwt", "kubernetes-admin is not a service account"),
        ("forbidden-jwt", "403 Forbidden"),
        ("secret-garbage-jwt", "cannot decode"),
    ] {
        let err = a
            .authenticate(&CallerInfo::with_bearer(token))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, AuthnError::Rejected { .. }),
            "{token}: {text}"
        );
        assert!(text.contains(expect), "{token}: {text}");
        assert!(!text.contains(token), "{token} leaked into {text}");
    }
    // Nothing logged anywhere (kube, hyper, ours) carries a token.
    let logged = String::from_utf8_lossy(&logs.0.lock()).to_string();
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "capture works: {logged}"
    );
    for token in [
        "good-jwt",
        "wrong-aud-jwt",
        "admin-jwt",
        "forbidden-jwt",
        "secret-garbage-jwt",
    ] {
        assert!(!logged.contains(token), "{token} logged:\n{logged}");
    }
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_refusal() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = authenticator(addr)
        .authenticate(&CallerInfo::with_bearer("good-jwt"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
}

#[test]
fn service_account_usernames() {
    assert_eq!(
        parse_service_account_username("system:serviceaccount:default:bookinfo-reviews"),
        Some(("default", "bookinfo-reviews"))
    );
    for bad in [
        "kubernetes-admin",
        "system:serviceaccount:default",
        "system:serviceaccount::sa",
        "system:serviceaccount:ns:",
        "system:serviceaccount:ns:a:b",
    ] {
        assert_eq!(parse_service_account_username(bad), None, "{bad}");
    }
}
