//! JWKS over HTTPS (refresh, failures), token locations with a prefix, and Istio policies
//! translated by the real Pilot: AUDIT and `when` conditions.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

use super::*;

/// An HTTPS server for `localhost` signed by a fresh CA, answering the JWKS `body` with the
/// status in `status` (changeable) and counting requests. Returns (URI, CA certificate, hits,
/// status).
async fn https_jwks(
    body: String,
) -> (
    String,
    CertificateDer<'static>,
    Arc<AtomicUsize>,
    Arc<Mutex<u16>>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_der = ca.self_signed(&ca_key).unwrap().der().clone();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!(
        "https://localhost:{}/jwks.json",
        l.local_addr().unwrap().port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(Mutex::new(200u16));
    let (h2, s2) = (hits.clone(), status.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let (acceptor, hits, status, body) =
                (acceptor.clone(), h2.clone(), s2.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let code = *status.lock();
                    let body = body.clone();
                    async move {
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (uri, ca_der, hits, status)
}

fn remote(uri: &str, cache_secs: i64) -> jwt_provider::JwksSourceSpecifier {
    jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
        http_uri: Some(HttpUri {
            uri: uri.into(),
            ..HttpUri::default()
        }),
        cache_duration: Some(mesh_proto::envoy::google::protobuf::Duration {
            seconds: cache_secs,
            nanos: 0,
        }),
        ..RemoteJwks::default()
    })
}

fn roots(ca: &CertificateDer<'static>) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    r.add(ca.clone()).unwrap();
    Arc::new(r)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn jwks_uri_over_https_is_fetched_refreshed_and_kept_on_failure() {
    let ec = ec_key("k");
    let (uri, ca, hits, status) = https_jwks(json!({"keys": [ec.jwk.clone()]}).to_string()).await;
    let cache = JwksCache::with_roots(roots(&ca));
    let p = InboundPolicy::decode(&jwt_listener(vec![(
        "origins-0",
        provider(remote(&uri, 60), &[]),
    )]))
    .unwrap()
    .with_jwks_cache(&cache);
    let token = es256(
        &ec,
        "k",
        json!({"iss": ISSUER, "sub": "bob", "exp": now() + 600}),
    );
    let principal = |r: Result<AuthFacts, JwtError>| r.map(|f| f.principal());

    // Until a fetch succeeds, a request with a token is refused (401) ...
    *status.lock() = 500;
    let (r, _) = auth(&p, Some(&token)).await;
    assert_eq!(r.unwrap_err().to_string(), "Jwt verification fails");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // ... and fails fast without another fetch within the retry delay.
    let (r, _) = auth(&p, Some(&token)).await;
    assert!(r.is_err());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no fetch within the retry delay"
    );
    // A request without a token is not affected (allow_missing).
    assert_eq!(principal(auth(&p, None).await.0).unwrap(), None);

    // The server recovers; after the retry delay the keys are fetched over HTTPS.
    *status.lock() = 200;
    cache.age(&uri, jwks::RETRY_AFTER_FAILURE);
    let (r, _) = auth(&p, Some(&token)).await;
    assert_eq!(
        principal(r).unwrap().as_deref(),
        Some("testing@secure.istio.io/bob")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Fresh: no fetch.
    assert!(auth(&p, Some(&token)).await.0.is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Stale (older than cache_duration) while the server fails: the old keys keep working
    // and one background refresh is attempted.
    *status.lock() = 503;
    cache.age(&uri, Duration::from_secs(61));
    assert!(auth(&p, Some(&token)).await.0.is_ok(), "stale keys served");
    wait_for("the background refresh", || {
        hits.load(Ordering::SeqCst) == 3
    })
    .await;
    for _ in 0..3 {
        assert!(auth(&p, Some(&token)).await.0.is_ok(), "kept after failure");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3, "no retry storm");

    // A client that does not trust the server's CA never gets keys.
    let other = InboundPolicy::decode(&jwt_listener(vec![(
        "origins-0",
        provider(remote(&uri, 60), &[]),
    )]))
    .unwrap()
    .with_jwks_cache(&JwksCache::with_roots(Arc::new(
        rustls::RootCertStore::empty(),
    )));
    *status.lock() = 200;
    let (r, _) = auth(&other, Some(&token)).await;
    assert!(matches!(r, Err(JwtError::Invalid(_))));
}

#[test]
fn jwks_uri_must_be_http_or_https() {
    let e = InboundPolicy::decode(&jwt_listener(vec![(
        "origins-0",
        provider(remote("ftp://example.com/keys", 60), &[]),
    )]))
    .unwrap_err();
    assert!(e.reason.contains("ftp://"), "{e}");
}

#[tokio::test]
async fn from_headers_with_prefix_and_payload_output() {
    let mut prov = provider(local(rsa_jwks()), &[]);
    prov.from_headers = vec![JwtHeader {
        name: "x-jwt-assertion".into(),
        value_prefix: "Token ".into(),
    }];
    let p = InboundPolicy::decode(&jwt_listener(vec![("origins-0", prov)])).unwrap();
    let t = rs256(json!({"iss": ISSUER, "sub": "dave", "group": "ops"}));
    let mut h = HeaderMap::new();
    h.insert(
        "x-jwt-assertion",
        HeaderValue::from_str(&format!("Token {t}")).unwrap(),
    );
    let facts = p
        .authenticate(&mut h, &Uri::from_static("/"))
        .await
        .unwrap();
    assert_eq!(
        facts.principal().as_deref(),
        Some("testing@secure.istio.io/dave")
    );
    // Not forwarded: the header is removed; the payload goes to outputPayloadToHeader.
    assert!(h.get("x-jwt-assertion").is_none());
    let payload = h.get("x-jwt-payload").unwrap().to_str().unwrap();
    assert_eq!(payload, t.split('.').nth(1).unwrap());
    // Without the prefix the header holds no token of this provider.
    let mut h = HeaderMap::new();
    h.insert("x-jwt-assertion", HeaderValue::from_str(&t).unwrap());
    let facts = p
        .authenticate(&mut h, &Uri::from_static("/"))
        .await
        .unwrap();
    assert_eq!(facts.principal(), None);
}

/// Istio objects → the real Pilot's `virtualInbound` for app `ratings` → compiled here.
fn pilot_policy(objs: Vec<serde_json::Value>) -> InboundPolicy {
    let objs: Vec<mesh_proto::config::ConfigObject> = objs
        .into_iter()
        .map(|o| serde_json::from_value(o).unwrap())
        .collect();
    let reg = pilot::model::Registry::from_snapshot(
        &pilot::galley_client::Snapshot::from_objects(objs),
        "cluster.local",
    );
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let mut proxy = pilot::translate::ProxyInfo::from_id(
        "sidecar~127.0.0.1~ratings-v1.default~default.svc.cluster.local",
    )
    .unwrap();
    proxy.labels.insert("app".into(), "ratings".into());
    let cfg = pilot::translate::translate(
        &reg,
        &proxy,
        &pilot::translate::Options {
            trust_domain: "cluster.local".into(),
        },
    );
    let l = cfg
        .listeners
        .iter()
        .find(|l| l.name == INBOUND_LISTENER)
        .expect("virtualInbound");
    InboundPolicy::decode(l).unwrap()
}

fn policy(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

struct View {
    source: &'static str,
    path: &'static str,
    headers: HeaderMap,
    auth: AuthFacts,
}

impl View {
    fn new(source: &'static str, path: &'static str) -> View {
        View {
            source,
            path,
            headers: HeaderMap::new(),
            auth: AuthFacts::default(),
        }
    }
    fn decide(&self, p: &InboundPolicy) -> Decision {
        p.authorize(&RequestView {
            peer: Some("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
            source: addr(self.source),
            destination: addr("127.0.0.1:9080"),
            method: "GET",
            host: "ratings:9080",
            path: self.path,
            path_and_query: self.path,
            headers: &self.headers,
            server_name: None,
            auth: Some(&self.auth),
        })
    }
}

#[test]
fn pilot_policies_audit_never_blocks_and_when_conditions_apply() {
    let selector = json!({"matchLabels": {"app": "ratings"}});
    let p = pilot_policy(vec![
        policy(
            "audit-all",
            json!({"selector": selector, "action": "AUDIT",
                   "rules": [{"to": [{"operation": {"paths": ["/ratings/*"]}}]}]}),
        ),
        policy(
            "when",
            json!({"selector": selector, "action": "ALLOW", "rules": [
                {"when": [{"key": "source.ip", "values": ["10.1.0.0/16"]},
                          {"key": "request.headers[x-tenant]", "values": ["blue"]}]},
                {"to": [{"operation": {"paths": ["/admin"]}}],
                 "when": [{"key": "request.auth.claims[group]", "values": ["admin"]}]}]}),
        ),
    ]);
    let actions: Vec<RbacAction> = p.rbac_policies.iter().map(|(a, _)| *a).collect();
    assert!(
        actions.contains(&RbacAction::Log),
        "AUDIT → LOG: {actions:?}"
    );
    assert!(actions.contains(&RbacAction::Allow));
    // Both `when` conditions of the first rule must hold.
    let mut v = View::new("10.1.2.3:5000", "/ratings/0");
    v.headers
        .insert("x-tenant", HeaderValue::from_static("blue"));
    assert_eq!(
        v.decide(&p),
        Decision::Allow,
        "AUDIT matched and did not block"
    );
    v.source = "192.168.0.9:5000";
    assert!(matches!(v.decide(&p), Decision::Deny(_)), "source.ip");
    v.source = "10.1.2.3:5000";
    v.headers
        .insert("x-tenant", HeaderValue::from_static("red"));
    assert!(matches!(v.decide(&p), Decision::Deny(_)), "request.headers");
    // Second rule: a claim of the verified token.
    let mut v = View::new("192.168.0.9:5000", "/admin");
    assert!(matches!(v.decide(&p), Decision::Deny(_)));
    v.auth.tokens = vec![VerifiedJwt {
        provider: "origins-0".into(),
        metadata_key: ISSUER.into(),
        claims: json!({"iss": ISSUER, "sub": "eve", "group": "admin"})
            .as_object()
            .unwrap()
            .clone(),
    }];
    assert_eq!(v.decide(&p), Decision::Allow, "request.auth.claims[group]");

    // AUDIT alone never denies anything.
    let audit_only = pilot_policy(vec![policy(
        "audit",
        json!({"selector": selector, "action": "AUDIT", "rules": [{}]}),
    )]);
    assert_eq!(
        View::new("192.168.0.9:5000", "/x").decide(&audit_only),
        Decision::Allow
    );
}
