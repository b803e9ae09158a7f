//! `--credential-kube` against a local HTTP server that answers like the Kubernetes API server
//! (lists with a resourceVersion, watches as newline-delimited JSON events, `410 Gone`, a
//! failing watch); no cluster is needed. Secrets added, updated and deleted reach the
//! published credentials; errors keep the last good ones.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use parking_lot::Mutex;
use pilot::sds::{
    CredentialSource, Credentials, KubeCredentialOptions, SECRET_FIELD_SELECTOR, SdsMetrics,
    watch_kube,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

enum WatchScript {
    /// 200 and the events sent on the channel, one JSON per line, until the sender is dropped.
    Events(mpsc::UnboundedReceiver<Value>),
    /// That HTTP status with a Status body.
    Fail(u16),
}

/// Per collection path (`/api/v1/namespaces/<ns>/secrets`): what a list answers now, and the
/// watch answers in order (none left: a watch that never sends anything).
#[derive(Default)]
struct Fake {
    lists: Mutex<HashMap<String, Value>>,
    watches: Mutex<HashMap<String, VecDeque<WatchScript>>>,
    /// (path, query) of every GET.
    seen: Mutex<Vec<(String, String)>>,
    /// Collection paths whose lists are held back (answered once removed).
    held: Mutex<std::collections::HashSet<String>>,
}

fn path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets")
}

impl Fake {
    fn list(&self, ns: &str, resource_version: &str, items: Vec<Value>) {
        self.lists.lock().insert(
            path(ns),
            json!({"apiVersion": "v1", "kind": "SecretList",
                   "metadata": {"resourceVersion": resource_version}, "items": items}),
        );
    }

    /// What the cluster-wide list (`/api/v1/secrets`) answers.
    fn list_all(&self, resource_version: &str, items: Vec<Value>) {
        self.lists.lock().insert(
            "/api/v1/secrets".to_string(),
            json!({"apiVersion": "v1", "kind": "SecretList",
                   "metadata": {"resourceVersion": resource_version}, "items": items}),
        );
    }

    fn watch(&self, ns: &str) -> mpsc::UnboundedSender<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.script(ns, WatchScript::Events(rx));
        tx
    }

    fn script(&self, ns: &str, script: WatchScript) {
        self.watches
            .lock()
            .entry(path(ns))
            .or_default()
            .push_back(script);
    }

    fn requests(&self, ns: &str, watch: bool) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .filter(|(p, q)| *p == path(ns) && q.contains("watch=true") == watch)
            .map(|(_, q)| q.clone())
            .collect()
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn api(State(fake): State<Arc<Fake>>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    fake.seen.lock().push((path.clone(), query.clone()));
    if !query.split('&').any(|p| p == "watch=true") {
        while fake.held.lock().contains(&path) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let answer = fake.lists.lock().get(&path).cloned();
        return json_response(
            StatusCode::OK,
            answer.unwrap_or_else(|| {
                json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "1"}, "items": []})
            }),
        );
    }
    let script = fake
        .watches
        .lock()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    match script {
        Some(WatchScript::Fail(code)) => json_response(
            StatusCode::from_u16(code).unwrap(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "scripted failure", "reason": "InternalError", "code": code}),
        ),
        Some(WatchScript::Events(rx)) => {
            let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                .map(|v| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{v}\n"))));
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(lines))
                .unwrap()
        }
        None => Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::pending::<
                Result<Bytes, std::convert::Infallible>,
            >()))
            .unwrap(),
    }
}

async fn api_server(fake: Arc<Fake>) -> SocketAddr {
    let app = axum::Router::new().fallback(api).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn secret(ns: &str, name: &str, rv: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": format!("uid-{name}")},
        "data": data,
    })
}

fn tls(ns: &str, name: &str, rv: &str, cert: &str) -> Value {
    secret(
        ns,
        name,
        rv,
        "kubernetes.io/tls",
        &[("tls.crt", cert), ("tls.key", "KEY")],
    )
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// The certificate of `ns/name` as published now.
fn cert(source: &CredentialSource, ns: &str, name: &str) -> Option<String> {
    let creds: Arc<Credentials> = source.current();
    creds
        .get(ns, name)
        .and_then(|c| c.cert_chain.clone())
        .map(|c| String::from_utf8(c).unwrap())
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn secrets_added_updated_deleted_reach_the_credentials_across_relists_and_errors() {
    let fake = Arc::new(Fake::default());
    fake.list(
        "istio-system",
        "100",
        vec![
            tls("istio-system", "gw-cred", "10", "CERT-1"),
            secret(
                "istio-system",
                "generic-cred",
                "11",
                "Opaque",
                &[("cert", "G-CERT"), ("key", "G-KEY"), ("cacert", "G-CA")],
            ),
            secret(
                "istio-system",
                "gw-cred-cacert",
                "12",
                "Opaque",
                &[("cacert", "GW-CA")],
            ),
            secret(
                "istio-system",
                "broken",
                "13",
                "kubernetes.io/tls",
                &[("tls.crt", "NO-KEY")],
            ),
            secret(
                "istio-system",
                "db",
                "14",
                "Opaque",
                &[("password", "hunter2")],
            ),
            // Not base64: that Secret is skipped; the list still syncs.
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": "raw-pem", "namespace": "istio-system", "resourceVersion": "15"},
                   "data": {"tls.crt": "-----BEGIN CERTIFICATE-----", "tls.key": "S0VZ"}}),
        ],
    );
    fake.list(
        "gateways",
        "50",
        vec![tls("gateways", "gw-cred", "5", "OTHER-NS")],
    );
    let w1 = fake.watch("istio-system");
    let addr = api_server(fake.clone()).await;
    let metrics = SdsMetrics::default();
    let (_stop, stop_rx) = watch::channel(false);
    let (source, mut listed) = watch_kube(
        client(addr),
        KubeCredentialOptions {
            namespaces: vec!["istio-system".into(), "gateways".into()],
            allow_plaintext: false,
        },
        metrics.clone(),
        stop_rx,
    );
    tokio::time::timeout(Duration::from_secs(15), listed.wait_for(|l| *l))
        .await
        .expect("both namespaces listed")
        .unwrap();

    // Both namespaces' credentials; the malformed and unrelated Secrets are not there.
    let creds = source.current();
    assert_eq!(creds.len(), 4, "{creds:?}");
    assert_eq!(
        cert(&source, "istio-system", "gw-cred").as_deref(),
        Some("CERT-1")
    );
    assert_eq!(
        cert(&source, "gateways", "gw-cred").as_deref(),
        Some("OTHER-NS")
    );
    let generic = creds.get("istio-system", "generic-cred").unwrap();
    assert_eq!(generic.private_key.as_deref(), Some(b"G-KEY".as_slice()));
    assert_eq!(generic.ca.as_deref(), Some(b"G-CA".as_slice()));
    let companion = creds.get("istio-system", "gw-cred-cacert").unwrap();
    assert_eq!(companion.ca.as_deref(), Some(b"GW-CA".as_slice()));
    assert_eq!(companion.cert_chain, None);
    assert!(creds.get("istio-system", "broken").is_none());
    assert!(creds.get("istio-system", "db").is_none());
    assert!(creds.get("istio-system", "raw-pem").is_none());
    assert_eq!(metrics.rejected.get(), 2);
    assert_eq!(metrics.credentials.get(), 4);
    // Only the namespaces asked for, with the field selector leaving out token Secrets.
    let lists = fake.requests("istio-system", false);
    assert_eq!(lists.len(), 1);
    let selector = url_encoded(SECRET_FIELD_SELECTOR);
    assert!(
        lists[0].contains(&selector),
        "{} lacks {selector}",
        lists[0]
    );
    assert!(
        fake.seen
            .lock()
            .iter()
            .all(|(p, _)| p.starts_with("/api/v1/namespaces/")),
        "no cluster-wide request"
    );

    // Watch: an update (rotation), an addition, a delete, a malformed update.
    let mut rx = source.subscribe();
    rx.mark_unchanged();
    w1.send(event(
        "MODIFIED",
        tls("istio-system", "gw-cred", "20", "CERT-2"),
    ))
    .unwrap();
    tokio::time::timeout(Duration::from_secs(15), rx.changed())
        .await
        .expect("rotation published")
        .unwrap();
    assert_eq!(
        cert(&source, "istio-system", "gw-cred").as_deref(),
        Some("CERT-2")
    );
    w1.send(event("ADDED", tls("istio-system", "new-cred", "21", "NEW")))
        .unwrap();
    w1.send(event(
        "DELETED",
        secret("istio-system", "generic-cred", "22", "Opaque", &[]),
    ))
    .unwrap();
    eventually("addition and delete published", || {
        cert(&source, "istio-system", "new-cred").is_some()
            && source
                .current()
                .get("istio-system", "generic-cred")
                .is_none()
    })
    .await;
    let changes = metrics.changes.get();
    w1.send(event(
        "MODIFIED",
        secret(
            "istio-system",
            "new-cred",
            "23",
            "kubernetes.io/tls",
            &[("tls.key", "ONLY-KEY")],
        ),
    ))
    .unwrap();
    eventually("malformed update counted", || metrics.rejected.get() == 3).await;
    assert_eq!(
        cert(&source, "istio-system", "new-cred").as_deref(),
        Some("NEW"),
        "the last good version stays"
    );
    assert_eq!(metrics.changes.get(), changes);

    // 410 Gone: the watcher lists again; until that list is complete the credentials stay.
    // Meanwhile gw-cred was rotated again and new-cred deleted.
    fake.list(
        "istio-system",
        "200",
        vec![tls("istio-system", "gw-cred", "190", "CERT-3")],
    );
    let w2 = fake.watch("istio-system");
    w1.send(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "too old resource version: 23 (180)", "reason": "Expired", "code": 410}}))
        .unwrap();
    eventually("relist published", || {
        cert(&source, "istio-system", "gw-cred").as_deref() == Some("CERT-3")
            && source.current().get("istio-system", "new-cred").is_none()
    })
    .await;
    assert_eq!(fake.requests("istio-system", false).len(), 2);
    assert!(metrics.kube_watch_errors.get() >= 1);
    // The other namespace was not disturbed.
    assert_eq!(
        cert(&source, "gateways", "gw-cred").as_deref(),
        Some("OTHER-NS")
    );

    // The watch connection drops and the next watch fails with 500: retried with backoff,
    // the credentials stay, and events after the reconnect arrive.
    let errors = metrics.kube_watch_errors.get();
    fake.script("istio-system", WatchScript::Fail(500));
    let w3 = fake.watch("istio-system");
    drop(w2);
    eventually("watch error counted", || {
        metrics.kube_watch_errors.get() > errors
    })
    .await;
    assert_eq!(
        cert(&source, "istio-system", "gw-cred").as_deref(),
        Some("CERT-3")
    );
    w3.send(event("ADDED", tls("istio-system", "late", "201", "LATE")))
        .unwrap();
    eventually("event after the reconnect", || {
        cert(&source, "istio-system", "late").is_some()
    })
    .await;
    assert_eq!(
        cert(&source, "istio-system", "gw-cred").as_deref(),
        Some("CERT-3")
    );
}

/// How the query string carries `s` (kube encodes with `form_urlencoded`).
fn url_encoded(s: &str) -> String {
    s.replace('/', "%2F")
        .replace('=', "%3D")
        .replace(',', "%2C")
        .replace('!', "%21")
}

/// `GET path` on `addr` over HTTP/1.0: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: pilot\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `pilot --credential-kube --kubeconfig F`: not ready until the Secrets are listed, then the
/// credentials are read and exported as metrics.
#[tokio::test]
async fn pilot_is_not_ready_until_the_secrets_are_listed() {
    use clap::Parser;
    let fake = Arc::new(Fake::default());
    fake.list(
        "istio-system",
        "100",
        vec![tls("istio-system", "gw-cred", "10", "CERT")],
    );
    fake.held.lock().insert(path("istio-system"));
    let addr = api_server(fake.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{addr}\"}}\n\
             users:\n- name: me\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: me}}\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    let monitoring = free_addr();
    let args = pilot::Args::try_parse_from([
        "pilot",
        "--galley-addr",
        "http://127.0.0.1:1",
        "--xds-addr",
        "127.0.0.1:0",
        "--debug-addr",
        "127.0.0.1:0",
        "--monitoring-addr",
        &monitoring.to_string(),
        "--credential-kube",
        "--credential-kube-namespaces",
        "istio-system",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pilot::run(args, async move {
        let _ = stopped.await;
    }));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listing = !fake.requests("istio-system", false).is_empty();
        if let Some((503, body)) = http_get(monitoring, "/readyz").await
            && body.contains("gateway-credentials-listed")
            && listing
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never waited for the list"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.held.lock().clear();
    eventually_async("credentials listed", || async {
        match http_get(monitoring, "/readyz").await {
            Some((_, body)) => !body.contains("gateway-credentials-listed"),
            None => false,
        }
    })
    .await;
    let (status, metrics) = http_get(monitoring, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("pilot_sds_credentials 1"), "{metrics}");
    assert!(
        metrics.contains("pilot_sds_credentials_rejected_total 0"),
        "{metrics}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Without namespaces: one cluster-wide watcher; every namespace's credentials are kept apart.
#[tokio::test]
async fn without_namespaces_every_namespace_is_watched() {
    let fake = Arc::new(Fake::default());
    fake.list_all(
        "100",
        vec![
            tls("istio-system", "gw-cred", "10", "SYSTEM"),
            tls("team-a", "gw-cred", "11", "TEAM-A"),
        ],
    );
    let addr = api_server(fake.clone()).await;
    let (_stop, stop_rx) = watch::channel(false);
    let (source, mut listed) = watch_kube(
        client(addr),
        KubeCredentialOptions::default(),
        SdsMetrics::default(),
        stop_rx,
    );
    tokio::time::timeout(Duration::from_secs(15), listed.wait_for(|l| *l))
        .await
        .expect("listed")
        .unwrap();
    assert_eq!(
        cert(&source, "istio-system", "gw-cred").as_deref(),
        Some("SYSTEM")
    );
    assert_eq!(
        cert(&source, "team-a", "gw-cred").as_deref(),
        Some("TEAM-A")
    );
    assert!(
        fake.seen.lock().iter().all(|(p, _)| p == "/api/v1/secrets"),
        "{:?}",
        fake.seen.lock()
    );
}
