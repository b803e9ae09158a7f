//! The Kubernetes source against a local HTTP server that answers like the API server (lists
//! with a resourceVersion, watches as newline-delimited JSON events, `410 Gone`, status
//! patches and Events); no cluster is needed.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use galley::source::kube::{KubeMetrics, KubeOptions, KubeSource, ORIGIN_ANNOTATION};
use galley::store::Store;
use mesh_proto::config::Kind;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What one watch request of a resource gets.
enum WatchScript {
    /// 200 and the events sent on the channel, one JSON per line, until the sender is dropped.
    Events(mpsc::UnboundedReceiver<Value>),
    /// That HTTP status with a Status body.
    Fail(u16),
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

#[derive(Default)]
struct Fake {
    /// Per plural: what a list answers now; none: an empty list.
    lists: Mutex<HashMap<String, Value>>,
    /// Per plural: watch answers in order; none left: a watch that never sends anything.
    watches: Mutex<HashMap<String, VecDeque<WatchScript>>>,
    seen: Mutex<Vec<Seen>>,
    /// Plurals whose lists are held back (answered once removed).
    held: Mutex<std::collections::HashSet<String>>,
}

impl Fake {
    fn list(&self, plural: &str, resource_version: &str, items: Vec<Value>) {
        self.lists.lock().insert(
            plural.to_string(),
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualServiceList",
                "metadata": {"resourceVersion": resource_version}, "items": items,
            }),
        );
    }

    fn watch(&self, plural: &str) -> mpsc::UnboundedSender<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.watch_script(plural, WatchScript::Events(rx));
        tx
    }

    fn watch_script(&self, plural: &str, script: WatchScript) {
        self.watches
            .lock()
            .entry(plural.to_string())
            .or_default()
            .push_back(script);
    }

    fn seen(&self, method: &str, path_part: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_part))
            .cloned()
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

async fn api(State(fake): State<Arc<Fake>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.seen.lock().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match method {
        Method::GET => {
            let plural = segs.last().copied().unwrap_or_default().to_string();
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1")
            {
                let script = fake
                    .watches
                    .lock()
                    .get_mut(&plural)
                    .and_then(VecDeque::pop_front);
                match script {
                    Some(WatchScript::Fail(code)) => json_response(
                        StatusCode::from_u16(code).unwrap(),
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "scripted failure", "reason": "InternalError", "code": code}),
                    ),
                    Some(WatchScript::Events(rx)) => {
                        let lines =
                            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|v| {
                                Ok::<_, std::convert::Infallible>(Bytes::from(format!("{v}\n")))
                            });
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
            } else {
                while fake.held.lock().contains(&plural) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let answer = fake.lists.lock().get(&plural).cloned();
                json_response(
                    StatusCode::OK,
                    answer.unwrap_or_else(|| {
                        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})
                    }),
                )
            }
        }
        Method::PATCH if path.ends_with("/status") => {
            let n = segs.len();
            json_response(
                StatusCode::OK,
                json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": segs[n - 2], "namespace": segs[n - 4]}}),
            )
        }
        Method::POST if path.ends_with("/events") => {
            let mut created = body.clone();
            created["metadata"]["name"] = json!("ev-1");
            json_response(StatusCode::CREATED, created)
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "code": 404}),
        ),
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

fn vs(name: &str, rv: &str, host: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "prod", "resourceVersion": rv, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}
    })
}

fn invalid_vs(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "prod", "resourceVersion": rv, "uid": format!("uid-{name}"), "generation": 3},
        "spec": {"hosts": []}
    })
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stored_names(store: &Store) -> Vec<String> {
    store
        .list(Kind::VirtualService, None)
        .unwrap()
        .iter()
        .map(|o| o.key())
        .collect()
}

fn host_of(store: &Store, name: &str) -> Option<String> {
    store
        .get(Kind::VirtualService, "prod", name)
        .unwrap()
        .and_then(|o| o.body["spec"]["hosts"][0].as_str().map(str::to_string))
}

#[tokio::test]
async fn list_watch_reject_delete_relist_and_reconnect() {
    let fake = Arc::new(Fake::default());
    // The first list: one valid and one invalid VirtualService.
    fake.list(
        "virtualservices",
        "100",
        vec![vs("reviews", "10", "reviews"), invalid_vs("broken", "11")],
    );
    let w1 = fake.watch("virtualservices");
    let addr = api_server(fake.clone()).await;
    let store = Store::temporary().unwrap();
    let metrics = KubeMetrics::default();
    let source = KubeSource::new(
        client(addr),
        store.clone(),
        KubeOptions {
            namespace: None,
            write_status: true,
            kubeconfig: None,
            instance: "galley-0".into(),
        },
        metrics.clone(),
    );
    let mut synced = source.synced();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(source.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(15), synced.wait_for(|s| *s))
        .await
        .expect("every kind listed")
        .unwrap();

    // The valid one is stored (from Kubernetes), the invalid one is not.
    assert_eq!(stored_names(&store), vec!["prod/reviews"]);
    let stored = store
        .get(Kind::VirtualService, "prod", "reviews")
        .unwrap()
        .unwrap();
    assert_eq!(stored.metadata.annotations[ORIGIN_ANNOTATION], "kubernetes");
    // Every kind was listed (the context kinds too).
    for path in [
        "/apis/networking.istio.io/v1/virtualservices",
        "/apis/security.istio.io/v1/authorizationpolicies",
        "/apis/config.istio.io/v1alpha2/rules",
        "/api/v1/pods",
        "/api/v1/namespaces",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        assert!(
            fake.seen("GET", path)
                .iter()
                .any(|s| !s.query.contains("watch")),
            "{path} not listed"
        );
    }

    // Why "broken" was rejected: its status, merge-patched, and a Warning Event.
    eventually("status patch and event", || {
        !fake.seen("PATCH", "/broken/status").is_empty() && !fake.seen("POST", "/events").is_empty()
    })
    .await;
    let patch = &fake.seen(
        "PATCH",
        "/apis/networking.istio.io/v1/namespaces/prod/virtualservices/broken/status",
    )[0];
    let messages = &patch.body["status"]["validationMessages"];
    assert_eq!(messages[0]["type"]["code"], "IST0106", "{patch:?}");
    assert_eq!(messages[0]["level"], "ERROR");
    assert_eq!(messages[0]["field"], "spec.hosts");
    assert!(
        messages[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("spec.hosts: "),
        "{patch:?}"
    );
    assert_eq!(patch.body["status"]["observedGeneration"], 3);
    let ev = &fake.seen("POST", "/api/v1/namespaces/prod/events")[0].body;
    assert_eq!(ev["reason"], "Rejected");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["kind"], "VirtualService");
    assert_eq!(ev["involvedObject"]["name"], "broken");
    assert_eq!(ev["involvedObject"]["uid"], "uid-broken");
    assert_eq!(ev["reportingInstance"], "galley-0");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .starts_with("VirtualService prod/broken: spec.hosts: "),
        "{ev}"
    );
    assert_eq!(
        metrics
            .rejected
            .get_or_create(&vec![("kind", "VirtualService".to_string())])
            .get(),
        1
    );

    // Watch: a change, an addition, a bookmark, an invalid edit (the last valid version
    // stays), a delete.
    let rev = store.revision();
    w1.send(event("MODIFIED", vs("reviews", "12", "reviews-v2")))
        .unwrap();
    w1.send(event("ADDED", vs("ratings", "13", "ratings")))
        .unwrap();
    w1.send(json!({"type": "BOOKMARK", "object": {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"resourceVersion": "14"}}}))
        .unwrap();
    eventually("watched changes stored", || {
        host_of(&store, "reviews").as_deref() == Some("reviews-v2")
            && host_of(&store, "ratings").is_some()
    })
    .await;
    assert!(store.revision() > rev);
    w1.send(event("MODIFIED", invalid_vs("reviews", "15")))
        .unwrap();
    eventually("second rejection reported", || {
        !fake.seen("PATCH", "/reviews/status").is_empty()
    })
    .await;
    assert_eq!(host_of(&store, "reviews").as_deref(), Some("reviews-v2"));
    w1.send(event("DELETED", vs("ratings", "16", "ratings")))
        .unwrap();
    eventually("delete applied", || host_of(&store, "ratings").is_none()).await;

    // 410 Gone: the watcher lists again. "reviews" was deleted meanwhile and "details" added;
    // the relist replaces what Kubernetes contributed.
    fake.list(
        "virtualservices",
        "200",
        vec![vs("details", "190", "details"), invalid_vs("broken", "11")],
    );
    let w2 = fake.watch("virtualservices");
    w1.send(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "too old resource version: 16 (180)", "reason": "Expired", "code": 410}}))
        .unwrap();
    eventually("relist applied", || {
        stored_names(&store) == vec!["prod/details".to_string()]
    })
    .await;
    let relists = |reason: &str| {
        metrics
            .restarts
            .get_or_create(&vec![
                ("kind", "VirtualService".to_string()),
                ("reason", reason.to_string()),
            ])
            .get()
    };
    assert_eq!(relists("relist"), 1);
    let errors_before = relists("error");
    assert!(errors_before >= 1, "the 410 counts as a watch error");
    // "broken" is unchanged: not reported a second time.
    assert_eq!(fake.seen("PATCH", "/broken/status").len(), 1);

    // The watch connection drops, the next watch fails with 500, then one works: galley
    // reconnects (with backoff) from the last resourceVersion without a relist.
    fake.watch_script("virtualservices", WatchScript::Fail(500));
    let w3 = fake.watch("virtualservices");
    drop(w2);
    eventually("reconnected after a watch error", || {
        relists("error") > errors_before
            && fake
                .seen("GET", "/apis/networking.istio.io/v1/virtualservices")
                .iter()
                .filter(|s| s.query.contains("watch=true"))
                .count()
                >= 4
    })
    .await;
    w3.send(event("ADDED", vs("late", "201", "late"))).unwrap();
    eventually("events after the reconnect", || {
        host_of(&store, "late").is_some()
    })
    .await;
    let last_watch = fake
        .seen("GET", "/apis/networking.istio.io/v1/virtualservices")
        .into_iter()
        .rfind(|s| s.query.contains("watch=true"))
        .unwrap();
    assert!(
        last_watch.query.contains("resourceVersion=200"),
        "{last_watch:?}"
    );
    assert_eq!(relists("relist"), 1, "a reconnect is not a relist");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// galley with `--kube`: not ready until every kind is listed, then serves the Kubernetes
/// objects from its store (apply API; MCP reads the same store) and exports the metrics.
#[tokio::test]
async fn galley_is_ready_once_every_kind_is_listed() {
    let fake = Arc::new(Fake::default());
    fake.list(
        "virtualservices",
        "100",
        vec![vs("reviews", "10", "reviews"), invalid_vs("broken", "11")],
    );
    fake.held.lock().insert("virtualservices".into());
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
    let cfg = galley::Config {
        config_dir: None,
        store_dir: tmp.path().join("store"),
        mcp_addr: free_addr(),
        api_addr: free_addr(),
        monitoring_addr: free_addr(),
        poll_interval: Duration::from_millis(50),
        webhook: None,
        kube: Some(KubeOptions {
            namespace: None,
            write_status: false,
            kubeconfig: Some(kubeconfig),
            instance: "galley".into(),
        }),
        mesh_config: None,
    };
    let (api, mon) = (cfg.api_addr, cfg.monitoring_addr);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(galley::run(cfg, async move {
        let _ = rx.await;
    }));
    let readyz = || async move {
        reqwest::get(format!("http://{mon}/readyz"))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    // Serving, but VirtualServices are not listed yet: not ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pod_lists = fake
            .seen("GET", "/api/v1/pods")
            .iter()
            .filter(|s| !s.query.contains("watch"))
            .count();
        if readyz().await == Some(503) && pod_lists == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.held.lock().clear();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while readyz().await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body: Value = reqwest::get(format!("http://{api}/apis/v1/virtualservices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["reviews"]);
    let metrics = reqwest::get(format!("http://{mon}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "galley_kube_rejected_total{kind=\"VirtualService\"} 1",
        "galley_kube_synced{kind=\"VirtualService\"} 1",
        "galley_kube_synced{kind=\"Pod\"} 1",
        "galley_kube_last_event_timestamp_seconds{kind=\"VirtualService\"}",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    // --kube-write-status false: nothing written to the API server.
    assert!(fake.seen("PATCH", "/status").is_empty());
    assert!(fake.seen("POST", "/events").is_empty());
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
