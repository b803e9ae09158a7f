//! Security policy end to end on one `meshctl up --demo` (build the binaries first:
//! `cargo build -p galley -p pilot -p citadel -p mixer -p mesh-proxy -p meshctl -p e2e --bins`):
//!
//! - AuthorizationPolicy: Istio's DENY of ratings for reviews-v3's service account makes those
//!   calls 403 while reviews-v2's succeed (seen in productpage's call tree);
//! - RequestAuthentication + an ALLOW policy requiring a request principal on productpage: bad
//!   token → 401, no token → 403, good token (signed here, key in the inline JWKS) → 200;
//! - PeerAuthentication: PERMISSIVE by default (a plaintext client reaches a sidecar's inbound
//!   listener), STRICT mesh-wide → plaintext refused while the demo keeps working over mTLS.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{Mesh, http, poll};
use serde_json::{Value, json};

const ISSUER: &str = "testing@secure.istio.io";

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn apply(mesh: &Mesh, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = write(dir, name, yaml);
    let out = mesh.meshctl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "meshctl apply {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reviews_to(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: {subset}\n"
    )
}

/// GET ingress/productpage with an optional bearer token: (status, body).
async fn productpage(mesh: &Mesh, token: Option<&str>) -> Result<(u16, String), String> {
    let url = format!("{}/productpage", mesh.ingress());
    let mut req = http().get(&url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// The reviews version and its call to ratings (`Ok(status)`: 200 when ratings v1 answered).
fn reviews_and_ratings(body: &str) -> Option<(String, u16)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let reviews = v["calls"].as_array()?.get(1)?.clone();
    let version = reviews["version"].as_str()?.to_string();
    let ratings = reviews["calls"].as_array()?.first()?.clone();
    if ratings["service"] != "ratings" {
        return None;
    }
    let status = if ratings["version"] == "v1" {
        200
    } else {
        u16::try_from(ratings["status"].as_u64()?).ok()?
    };
    Some((version, status))
}

/// Polls until `n` consecutive productpage replies show reviews `version` whose ratings call
/// ended with `ratings_status`.
async fn wait_for_ratings(mesh: &Mesh, token: Option<&str>, version: &str, ratings_status: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut streak, mut last) = (0, String::new());
    while streak < 3 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for reviews {version} → ratings {ratings_status}; last: {last}\n{}",
            mesh.diagnostics()
        );
        match productpage(mesh, token).await {
            Ok((200, body)) => match reviews_and_ratings(&body) {
                Some((v, s)) if v == version && s == ratings_status => streak += 1,
                _ => {
                    streak = 0;
                    last = body;
                }
            },
            Ok((s, body)) => {
                streak = 0;
                last = format!("{s} {body}");
            }
            Err(e) => {
                streak = 0;
                last = e;
            }
        }
        if streak == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls until productpage answers `want` for `token`.
async fn wait_for_status(mesh: &Mesh, token: Option<&str>, want: u16, what: &str) -> String {
    poll(what, Duration::from_secs(60), || async {
        match productpage(mesh, token).await {
            Ok((s, body)) if s == want => Ok(body),
            Ok((s, body)) => Err(format!("{s} {body}")),
            Err(e) => Err(e),
        }
    })
    .await
}

/// A plaintext HTTP/1.1 GET to a sidecar's inbound address: Ok(status) or Err(what happened).
async fn plaintext_get(inbound: &str) -> Result<u16, String> {
    http()
        .get(format!("http://{inbound}/reviews/0"))
        .header("host", "reviews:9080")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

struct Signer {
    der: Vec<u8>,
    jwks: String,
}

fn signer() -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "e2e", "alg": "ES256",
                     "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    Signer {
        der: kp.serialize_der(),
        jwks: json!({"keys": [jwk]}).to_string(),
    }
}

fn sign(der: &[u8], claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("e2e".into());
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_ec_der(der)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_policies_are_enforced_in_the_proxies() {
    let mut mesh = Mesh::start_demo();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    wait_for_status(&mesh, None, 200, "productpage through the ingress").await;

    // PERMISSIVE (no PeerAuthentication): a plaintext client reaches reviews-v1's sidecar.
    let inbound = mesh.proxy("reviews-v1")["inbound"]
        .as_str()
        .unwrap()
        .to_string();
    let status = poll(
        "plaintext answer under PERMISSIVE",
        Duration::from_secs(60),
        || async { plaintext_get(&inbound).await.map_err(|e| e.to_string()) },
    )
    .await;
    assert_eq!(status, 200, "plaintext request under PERMISSIVE");

    // (b) Istio's sample DENY, aimed at reviews-v3's own service account.
    apply(
        &mesh,
        dir,
        "deny-reviews-v3.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-reviews-v3\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: ratings\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/bookinfo-reviews-v3\"]\n",
    );
    apply(&mesh, dir, "reviews-v3.yaml", &reviews_to("v3"));
    wait_for_ratings(&mesh, None, "v3", 403).await;
    apply(&mesh, dir, "reviews-v2.yaml", &reviews_to("v2"));
    wait_for_ratings(&mesh, None, "v2", 200).await;

    // (c) JWT on productpage: RequestAuthentication with an inline JWKS, and an ALLOW policy
    // that needs a request principal.
    let key = signer();
    let ra = format!(
        "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: productpage\n  jwtRules:\n  - issuer: \"{ISSUER}\"\n    jwks: '{}'\n",
        key.jwks
    );
    apply(&mesh, dir, "jwt.yaml", &ra);
    apply(
        &mesh,
        dir,
        "require-jwt.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: require-jwt\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: productpage\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n",
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let good = sign(
        &key.der,
        &json!({"iss": ISSUER, "sub": "alice", "exp": exp}),
    );
    let other = signer();
    let bad = sign(
        &other.der,
        &json!({"iss": ISSUER, "sub": "mallory", "exp": exp}),
    );
    let body = wait_for_status(
        &mesh,
        Some(&bad),
        401,
        "401 for a token signed by another key",
    )
    .await;
    assert_eq!(body.trim(), "Jwt verification fails");
    let body = wait_for_status(&mesh, None, 403, "403 without a token").await;
    assert_eq!(body.trim(), "RBAC: access denied");
    let body = wait_for_status(&mesh, Some(&good), 200, "200 with a good token").await;
    assert!(body.contains("\"productpage\""), "{body}");
    let (s, _) = productpage(&mesh, Some("not-a-jwt")).await.unwrap();
    assert_eq!(s, 401);

    // (a) STRICT mesh-wide: plaintext refused, the demo still works over mutual TLS.
    apply(
        &mesh,
        dir,
        "strict.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let err = poll(
        "plaintext refused under STRICT",
        Duration::from_secs(60),
        || async {
            match plaintext_get(&inbound).await {
                Ok(s) => Err(format!("plaintext request answered {s}")),
                Err(e) => Ok(e),
            }
        },
    )
    .await;
    assert!(!err.is_empty());
    // Stays refused, and the mesh keeps serving.
    for _ in 0..3 {
        assert!(plaintext_get(&inbound).await.is_err());
    }
    wait_for_ratings(&mesh, Some(&good), "v2", 200).await;

    let status = mesh.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "meshctl did not stop cleanly: {status:?}"
    );
}
