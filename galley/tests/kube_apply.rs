//! The apply API with `--kube`: two galley replicas share one (fake) API server. Applies and
//! deletes go to the API server; each replica's watch brings them into its store and MCP
//! snapshot; the replica that answered already has the change (read-your-write).
//!
//! The fake keeps objects, hands out increasing resourceVersions, answers lists, streams watch
//! events from a resourceVersion on (each event delayed, so a replica that answered before its
//! watch delivered would be caught), and can refuse the next replace with 409.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use galley::KubeOptions;
use mesh_proto::config::Kind;
use mesh_proto::istio::mcp::v1alpha1::RequestResources;
use mesh_proto::istio::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How late the fake delivers every watch event.
const WATCH_DELAY: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Db {
    rv: u64,
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// (resourceVersion, plural, namespace, event).
    log: Vec<(u64, String, String, Value)>,
}

struct Fake {
    db: Mutex<Db>,
    changed: watch::Sender<u64>,
    /// Writes seen: (method, path, query).
    writes: Mutex<Vec<(String, String, String)>>,
    /// Refuse the next PUT with 409 Conflict.
    conflict_next: Mutex<bool>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            db: Mutex::new(Db::default()),
            changed: watch::Sender::new(0),
            writes: Mutex::new(Vec::new()),
            conflict_next: Mutex::new(false),
        })
    }

    fn writes(&self) -> Vec<(String, String, String)> {
        self.writes.lock().clone()
    }

    /// Stores a change and logs its watch event.
    fn commit(&self, plural: &str, ns: &str, name: &str, obj: Option<Value>) -> Value {
        let mut db = self.db.lock();
        db.rv += 1;
        let rv = db.rv;
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let (event, out) = match obj {
            Some(mut o) => {
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                o["metadata"]["uid"] = json!(format!("uid-{name}"));
                let ty = if db.objects.contains_key(&key) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                db.objects.insert(key, o.clone());
                (json!({"type": ty, "object": o}), o)
            }
            None => {
                let mut o = db.objects.remove(&key).unwrap();
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                (json!({"type": "DELETED", "object": o}), o)
            }
        };
        db.log.push((rv, plural.to_string(), ns.to_string(), event));
        drop(db);
        self.changed.send_replace(rv);
        out
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

fn status(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// (plural, namespace, name, subresource) of an API path.
fn parse_path(path: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => &segs[2..],
        Some(&"apis") => &segs[3..],
        _ => return None,
    };
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (rest[1].to_string(), &rest[2..])
    } else {
        (String::new(), rest)
    };
    Some((
        rest.first()?.to_string(),
        ns,
        rest.get(1).map(|s| s.to_string()),
        rest.get(2).map(|s| s.to_string()),
    ))
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

async fn api(State(fake): State<Arc<Fake>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let Some((plural, ns, name, sub)) = parse_path(&path) else {
        return status(404, "NotFound", "no such path");
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if method != Method::GET && plural != "events" && sub.is_none() {
        fake.writes
            .lock()
            .push((method.to_string(), path.clone(), query.clone()));
    }
    match (method, name, sub) {
        (Method::GET, None, None) if query_value(&query, "watch") == Some("true") => {
            let from: u64 = query_value(&query, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            watch_stream(fake, plural, ns, from)
        }
        (Method::GET, None, None) => {
            let db = fake.db.lock();
            let items: Vec<Value> = db
                .objects
                .iter()
                .filter(|((p, n, _), _)| *p == plural && (ns.is_empty() || *n == ns))
                .map(|(_, o)| o.clone())
                .collect();
            json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List",
                       "metadata": {"resourceVersion": db.rv.to_string()}, "items": items}),
            )
        }
        (Method::GET, Some(name), None) => match fake.db.lock().objects.get(&(plural, ns, name)) {
            Some(o) => json_response(StatusCode::OK, o.clone()),
            None => status(404, "NotFound", "not found"),
        },
        (Method::POST, None, None) if plural == "events" => {
            json_response(StatusCode::CREATED, body)
        }
        (Method::POST, None, None) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if fake
                .db
                .lock()
                .objects
                .contains_key(&(plural.clone(), ns.clone(), name.clone()))
            {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{plural} \"{name}\" already exists"),
                );
            }
            let o = fake.commit(&plural, &ns, &name, Some(body));
            json_response(StatusCode::CREATED, o)
        }
        (Method::PUT, Some(name), None) => {
            let current = fake
                .db
                .lock()
                .objects
                .get(&(plural.clone(), ns.clone(), name.clone()))
                .cloned();
            let Some(current) = current else {
                return status(404, "NotFound", "not found");
            };
            let conflict = std::mem::take(&mut *fake.conflict_next.lock());
            if conflict
                || body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
            {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            let o = fake.commit(&plural, &ns, &name, Some(body));
            json_response(StatusCode::OK, o)
        }
        (Method::DELETE, Some(name), None) => {
            let exists =
                fake.db
                    .lock()
                    .objects
                    .contains_key(&(plural.clone(), ns.clone(), name.clone()));
            if !exists {
                return status(404, "NotFound", "not found");
            }
            let o = fake.commit(&plural, &ns, &name, None);
            json_response(StatusCode::OK, o)
        }
        (Method::PATCH, Some(_), Some(s)) if s == "status" => json_response(StatusCode::OK, body),
        _ => status(405, "MethodNotAllowed", "not supported by the fake"),
    }
}

/// Events of `plural` (in `ns`, or all) after `from`, then every new one, each `WATCH_DELAY`
/// late.
fn watch_stream(fake: Arc<Fake>, plural: String, ns: String, from: u64) -> Response {
    let rx = fake.changed.subscribe();
    let state = (fake, rx, from, VecDeque::<Value>::new());
    let events = futures::stream::unfold(state, move |(fake, mut rx, mut last, mut queue)| {
        let (plural, ns) = (plural.clone(), ns.clone());
        async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    tokio::time::sleep(WATCH_DELAY).await;
                    let line = Bytes::from(format!("{ev}\n"));
                    return Some((
                        Ok::<_, std::convert::Infallible>(line),
                        (fake, rx, last, queue),
                    ));
                }
                rx.borrow_and_update();
                {
                    let db = fake.db.lock();
                    for (rv, p, n, ev) in &db.log {
                        if *rv > last && *p == plural && (ns.is_empty() || *n == ns) {
                            queue.push_back(ev.clone());
                        }
                    }
                    last = last.max(db.rv);
                }
                if queue.is_empty() && rx.changed().await.is_err() {
                    return None;
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(events))
        .unwrap()
}

async fn api_server(fake: Arc<Fake>) -> SocketAddr {
    let app = axum::Router::new().fallback(api).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Replica {
    api: SocketAddr,
    mcp: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), galley::GalleyError>>,
}

async fn start_replica(dir: &std::path::Path, name: &str, kubeconfig: &std::path::Path) -> Replica {
    let cfg = galley::Config {
        config_dir: None,
        store_dir: dir.join(format!("{name}.sled")),
        mcp_addr: free_addr(),
        api_addr: free_addr(),
        monitoring_addr: free_addr(),
        poll_interval: Duration::from_millis(50),
        webhook: None,
        kube: Some(KubeOptions {
            namespace: None,
            write_status: true,
            kubeconfig: Some(kubeconfig.to_path_buf()),
            instance: name.into(),
        }),
        mesh_config: None,
    };
    let (api, mcp, mon) = (cfg.api_addr, cfg.mcp_addr, cfg.monitoring_addr);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(galley::run(cfg, async move {
        let _ = rx.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !reqwest::get(format!("http://{mon}/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(tokio::time::Instant::now() < deadline, "{name} never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Replica {
        api,
        mcp,
        stop,
        task,
    }
}

async fn apply(api: SocketAddr, text: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/apis/v1/apply"))
        .header("x-mesh-source", "vs.yaml")
        .body(text.to_string())
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap())
}

/// `namespace/name` → first host, from the replica's apply API.
async fn listed(api: SocketAddr) -> BTreeMap<String, String> {
    let body: Value = reqwest::get(format!("http://{api}/apis/v1/virtualservices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                o["spec"]["hosts"][0].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The VirtualService keys of the replica's MCP snapshot (the first full state it sends).
async fn mcp_snapshot(mcp: SocketAddr) -> Vec<String> {
    let collection = Kind::VirtualService.info().collection;
    let mut client = ResourceSourceClient::connect(format!("http://{mcp}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(RequestResources {
        sink_node: None,
        collection: collection.into(),
        initial_resource_versions: Default::default(),
        response_nonce: String::new(),
        error_detail: None,
        incremental: false,
    })
    .await
    .unwrap();
    let mut stream = client
        .establish_resource_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let res = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    res.resources
        .iter()
        .map(|r| mesh_proto::mcp::from_resource(collection, r).unwrap().key())
        .collect()
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn vs(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: {name}, namespace: prod}}\n\
         spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}}}\n"
    )
}

#[tokio::test]
async fn two_replicas_share_the_api_server_as_their_store() {
    let fake = Fake::new();
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
    let a = start_replica(tmp.path(), "galley-a", &kubeconfig).await;
    let b = start_replica(tmp.path(), "galley-b", &kubeconfig).await;

    // Apply through A: written to the API server (create, field manager galley), and A's store
    // and MCP snapshot have it when the answer comes, though the watch is 300 ms late.
    let (code, body) = apply(a.api, &vs("reviews", "reviews")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"][0]["kind"], "VirtualService");
    assert_eq!(body["applied"][0]["namespace"], "prod");
    assert_eq!(body["applied"][0]["resourceVersion"], "1");
    assert!(
        body["applied"][0]["revision"].as_u64().unwrap() >= 1,
        "{body}"
    );
    assert_eq!(
        listed(a.api).await.get("prod/reviews").map(String::as_str),
        Some("reviews"),
        "read-your-write on A"
    );
    assert_eq!(mcp_snapshot(a.mcp).await, vec!["prod/reviews"]);
    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].0, "POST");
    assert_eq!(
        writes[0].1,
        "/apis/networking.istio.io/v1/namespaces/prod/virtualservices"
    );
    assert!(writes[0].2.contains("fieldManager=galley"), "{writes:?}");
    let stored = fake.db.lock().objects.values().next().cloned().unwrap();
    assert_eq!(stored["apiVersion"], "networking.istio.io/v1");
    assert!(stored["metadata"]["annotations"].is_null(), "{stored}");

    // B's watch brings it in too.
    eventually("B lists it", || async {
        listed(b.api).await.contains_key("prod/reviews")
    })
    .await;
    assert_eq!(mcp_snapshot(b.mcp).await, vec!["prod/reviews"]);

    // Invalid: the same 400 as without --kube, nothing written.
    let (code, body) = apply(a.api, &vs("broken", "\"\"")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["errors"][0]["file"], "vs.yaml");
    assert!(
        body["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("spec."),
        "{body}"
    );
    assert_eq!(
        fake.writes().len(),
        1,
        "nothing written for an invalid apply"
    );

    // An update through B replaces it (PUT with the resourceVersion read), A sees it.
    let (code, body) = apply(b.api, &vs("reviews", "reviews-v2")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        listed(b.api).await.get("prod/reviews").map(String::as_str),
        Some("reviews-v2")
    );
    assert_eq!(fake.writes()[1].0, "PUT");
    eventually("A sees the update", || async {
        listed(a.api).await.get("prod/reviews").map(String::as_str) == Some("reviews-v2")
    })
    .await;

    // A 409 from the API server is a clear conflict, and nothing changes.
    *fake.conflict_next.lock() = true;
    let (code, body) = apply(a.api, &vs("reviews", "reviews-v3")).await;
    assert_eq!(code, 409, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("VirtualService prod/reviews: conflict: ")
            && message.contains("apply again"),
        "{message}"
    );
    assert_eq!(
        listed(a.api).await.get("prod/reviews").map(String::as_str),
        Some("reviews-v2")
    );

    // Context kinds are read-only; history and rollback are not offered.
    let (code, body) = apply(
        a.api,
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: prod}\nspec:\n  ports: [{port: 9080, name: http}]\n",
    )
    .await;
    assert_eq!(code, 405, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["line"], 1);
    let history = reqwest::get(format!("http://{}/apis/v1/history", a.api))
        .await
        .unwrap();
    assert_eq!(history.status().as_u16(), 501);

    // Delete through B: gone from B at the answer, then from A.
    let resp = reqwest::Client::new()
        .delete(format!(
            "http://{}/apis/v1/virtualservice/prod/reviews",
            b.api
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(listed(b.api).await.is_empty(), "read-your-delete on B");
    eventually("A drops it", || async { listed(a.api).await.is_empty() }).await;
    assert!(fake.db.lock().objects.is_empty());
    let resp = reqwest::Client::new()
        .delete(format!(
            "http://{}/apis/v1/virtualservice/prod/reviews",
            a.api
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    for r in [a, b] {
        r.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), r.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
