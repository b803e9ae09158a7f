//! Scale bench: Pilot's real ADS server in-process on loopback, a registry of N services and M
//! simulated SotW ADS clients. Prints a markdown table.
//!
//! ```text
//! cargo bench -p pilot --bench scale -- --services 1000 --clients 2000
//! ```
//!
//! Per service: a Service (port 8080 `http`), Endpoints with 3 addresses (each a Pod, labels
//! `version: v1|v2`), a DestinationRule with subsets v1 and v2, and for 1 in 10 a VirtualService
//! splitting traffic between the subsets. Services are spread over 10 namespaces; clients too,
//! with 5 label sets per namespace.
//!
//! 1. Clients connect while the registry is empty and ACK it.
//! 2. Full push: the registry is swapped for the full one; measured until every client received
//!    and ACKed CDS (every cluster), EDS (every cluster's assignment) and RDS (every virtual host).
//! 3. One Endpoints object changes; measured per client until it received the new EDS.
//!
//! Memory is the RSS of this process (Pilot and the clients) minus the RSS before Pilot started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_proto::envoy::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use mesh_proto::type_url;
use pilot::galley_client::Snapshot;
use pilot::metrics::PilotMetrics;
use pilot::model::RegistryCache;
use pilot::translate::Options;
use pilot::xds::{AdsServer, DEBOUNCE_QUIET, SyncStatus};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const NAMESPACES: usize = 10;
const LABEL_SETS: usize = 5;
const PORT: u16 = 8080;
/// The first address of service 0 after the Endpoints change.
const MOVED_IP: &[u8] = b"10.0.0.101";
const DEADLINE: Duration = Duration::from_secs(600);

/// Only the name of a Cluster (prost skips the other fields).
#[derive(Clone, PartialEq, Message)]
struct ClusterName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Only the virtual hosts of a RouteConfiguration, left encoded.
#[derive(Clone, PartialEq, Message)]
struct RouteVhosts {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    virtual_hosts: Vec<prost::bytes::Bytes>,
}

struct Params {
    services: usize,
    clients: usize,
}

fn params() -> Params {
    let mut p = Params {
        services: 1000,
        clients: 2000,
    };
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        let n = w[1].parse().ok();
        match (w[0].as_str(), n) {
            ("--services", Some(n)) => p.services = n,
            ("--clients", Some(n)) => p.clients = n,
            _ => {}
        }
    }
    p
}

fn obj(v: serde_json::Value) -> ConfigObject {
    serde_json::from_value(v).expect("valid object")
}

fn namespace(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

/// Every object of the mesh; `moved` shifts the addresses of service 0.
fn mesh(services: usize, moved: bool) -> Vec<ConfigObject> {
    let mut out = Vec::with_capacity(services * 7);
    for i in 0..services {
        let ns = namespace(i);
        let name = format!("svc-{i}");
        out.push(obj(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": PORT}], "selector": {"app": name}}
        })));
        let mut addresses = Vec::new();
        for k in 0..3 {
            let pod = format!("{name}-{k}");
            let version = if k == 0 { "v1" } else { "v2" };
            out.push(obj(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"app": name, "version": version}},
                "spec": {"serviceAccountName": name}
            })));
            let shift = if moved && i == 0 { 100 } else { 0 };
            let ip = format!("10.{}.{}.{}", (i / 250) % 250, i % 250, k + 1 + shift);
            addresses
                .push(serde_json::json!({"ip": ip, "targetRef": {"kind": "Pod", "name": pod}}));
        }
        out.push(obj(serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 9080}]}]
        })));
        out.push(obj(serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": name, "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}}
            ]}
        })));
        if i % 10 == 0 {
            out.push(obj(serde_json::json!({
                "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"hosts": [name], "http": [{"route": [
                    {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                    {"destination": {"host": name, "subset": "v2"}, "weight": 10}
                ]}]}
            })));
        }
    }
    out
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What a client reports after answering a response.
#[derive(Debug)]
struct Event {
    client: usize,
    type_url: String,
    count: usize,
    /// Encoded size of the response's resources.
    bytes: usize,
    /// EDS only: whether the moved address of service 0 ([`MOVED_IP`]) is in it.
    moved: bool,
    at: Instant,
}

fn node(i: usize) -> Node {
    let ns = namespace(i);
    let labels = Struct {
        fields: [(
            "app".to_string(),
            Value {
                kind: Some(ValueKind::StringValue(format!("client-{}", i % LABEL_SETS))),
            },
        )]
        .into(),
    };
    Node {
        id: format!(
            "sidecar~10.200.{}.{}~client-{i}.{ns}~{ns}.svc.cluster.local",
            i / 250,
            i % 250
        ),
        metadata: Some(Struct {
            fields: [(
                "LABELS".to_string(),
                Value {
                    kind: Some(ValueKind::StructValue(labels)),
                },
            )]
            .into(),
        }),
        ..Node::default()
    }
}

fn request(
    node: &Option<Node>,
    type_url: &str,
    names: Vec<String>,
    r: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.clone(),
        type_url: type_url.to_string(),
        resource_names: names,
        version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: r.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..DiscoveryRequest::default()
    }
}

/// A SotW client like Envoy: CDS and LDS wildcard, EDS for every cluster it got, RDS
/// `http_proxy`; ACKs every response and reports it.
async fn client(
    i: usize,
    addr: std::net::SocketAddr,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await?
        .max_decoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(8);
    let first = Some(node(i));
    tx.send(request(&first, type_url::CLUSTER, vec![], None))
        .await?;
    tx.send(request(&None, type_url::LISTENER, vec![], None))
        .await?;
    tx.send(request(
        &None,
        type_url::ROUTE,
        vec!["http_proxy".into()],
        None,
    ))
    .await?;
    let mut stream = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut eds_names: Vec<String> = Vec::new();
    let mut eds_open = false;
    let mut last_eds: Option<DiscoveryResponse> = None;
    while let Some(r) = stream.message().await? {
        let mut moved = false;
        let count = r.resources.len();
        let bytes: usize = r.resources.iter().map(|a| a.value.len()).sum();
        let ack_names = match r.type_url.as_str() {
            type_url::CLUSTER => {
                let names: Vec<String> = r
                    .resources
                    .iter()
                    .filter_map(|a| ClusterName::decode(a.value.as_slice()).ok())
                    .map(|c| c.name)
                    .collect();
                tx.send(request(&None, type_url::CLUSTER, vec![], Some(&r)))
                    .await?;
                if names != eds_names || !eds_open {
                    eds_names = names;
                    // Like Envoy: the new names on the last EDS version and nonce (a fresh
                    // request the first time).
                    tx.send(request(
                        &None,
                        type_url::ENDPOINT,
                        eds_names.clone(),
                        last_eds.as_ref(),
                    ))
                    .await?;
                    eds_open = true;
                }
                None
            }
            type_url::ENDPOINT => {
                moved = r
                    .resources
                    .iter()
                    .any(|a| a.value.windows(MOVED_IP.len()).any(|w| w == MOVED_IP));
                last_eds = Some(DiscoveryResponse {
                    version_info: r.version_info.clone(),
                    nonce: r.nonce.clone(),
                    ..DiscoveryResponse::default()
                });
                Some(eds_names.clone())
            }
            type_url::ROUTE => {
                let vhosts: usize = r
                    .resources
                    .iter()
                    .filter_map(|a| RouteVhosts::decode(a.value.as_slice()).ok())
                    .map(|rc| rc.virtual_hosts.len())
                    .sum();
                tx.send(request(
                    &None,
                    type_url::ROUTE,
                    vec!["http_proxy".into()],
                    Some(&r),
                ))
                .await?;
                let _ = events.send(Event {
                    client: i,
                    type_url: r.type_url.clone(),
                    count: vhosts,
                    bytes,
                    moved,
                    at: Instant::now(),
                });
                continue;
            }
            _ => Some(vec![]),
        };
        if let Some(names) = ack_names {
            tx.send(request(&None, &r.type_url, names, Some(&r)))
                .await?;
        }
        let _ = events.send(Event {
            client: i,
            type_url: r.type_url,
            count,
            bytes,
            moved,
            at: Instant::now(),
        });
    }
    Ok(())
}

#[derive(Default, Clone, Copy)]
struct Seen {
    cds: usize,
    eds: usize,
    rds: usize,
    /// Bytes of the last CDS, EDS and RDS response.
    bytes: [usize; 3],
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn bench(p: Params) {
    let baseline_kib = rss_kib("VmRSS:");
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let ads = AdsServer::new(
        RegistryCache::new(snap_rx, "cluster.local"),
        Options {
            trust_domain: "cluster.local".into(),
        },
        PilotMetrics::default(),
        SyncStatus::default(),
        stop_rx.clone(),
    );
    let mut pushes = ads.pushes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let mut stop_wait = stop_rx;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                ads.into_service()
                    .max_decoding_message_size(64 * 1024 * 1024),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            }),
    );

    // 1. Connect every client to an empty mesh.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let connect_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..p.clients {
        let ev = ev_tx.clone();
        tasks.push(tokio::spawn(async move {
            // Like Envoy, a client whose stream fails (a connect refused or reset while thousands
            // connect at once) reconnects after a growing pause.
            for attempt in 1..=20u32 {
                match client(i, addr, ev.clone()).await {
                    Ok(()) => return,
                    Err(e) if attempt == 20 => eprintln!("client {i}: {e}"),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    }
                }
            }
        }));
    }
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    while seen.len() < p.clients {
        let e = recv(&mut ev_rx).await;
        seen.entry(e.client).or_default();
    }
    let connected = connect_start.elapsed();

    // 2. Full push.
    let clusters = p.services * 3;
    let snapshot = Arc::new(Snapshot::from_objects(mesh(p.services, false)));
    pushes.borrow_and_update();
    let start = Instant::now();
    snap_tx.send_replace(snapshot);
    let mut published = None;
    let mut done = 0usize;
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    while done < p.clients {
        tokio::select! {
            _ = pushes.changed(), if published.is_none() => published = Some(Instant::now()),
            e = recv_opt(&mut ev_rx) => {
                let Some(e) = e else { break };
                let s = seen.entry(e.client).or_default();
                let before = s.cds == clusters && s.eds == clusters && s.rds == p.services;
                match e.type_url.as_str() {
                    type_url::CLUSTER => (s.cds, s.bytes[0]) = (e.count, e.bytes),
                    type_url::ENDPOINT => (s.eds, s.bytes[1]) = (e.count, e.bytes),
                    type_url::ROUTE => (s.rds, s.bytes[2]) = (e.count, e.bytes),
                    _ => {}
                }
                let after = s.cds == clusters && s.eds == clusters && s.rds == p.services;
                if after && !before {
                    done += 1;
                }
            }
        }
    }
    let full = start.elapsed();
    let per_client = seen.get(&0).map(|s| s.bytes).unwrap_or_default();
    let published = published.unwrap_or(start);
    let rss_after_full = rss_kib("VmRSS:");

    // 3. One Endpoints change.
    pushes.borrow_and_update();
    let change = Instant::now();
    snap_tx.send_replace(Arc::new(Snapshot::from_objects(mesh(p.services, true))));
    let mut eds_at: HashMap<usize, Instant> = HashMap::new();
    let mut other_types: std::collections::BTreeMap<String, usize> = Default::default();
    let mut pushed_at = None;
    while eds_at.len() < p.clients {
        tokio::select! {
            _ = pushes.changed(), if pushed_at.is_none() => pushed_at = Some(Instant::now()),
            e = recv_opt(&mut ev_rx) => {
                let Some(e) = e else { break };
                if e.type_url == type_url::ENDPOINT && e.moved {
                    eds_at.entry(e.client).or_insert(e.at);
                } else {
                    let short = e.type_url.rsplit('.').next().unwrap_or_default().to_string();
                    *other_types.entry(short).or_default() += 1;
                }
            }
        }
    }
    let pushed_at = pushed_at.unwrap_or(change);
    let mut from_change: Vec<Duration> = eds_at.values().map(|t| *t - change).collect();
    let mut from_push: Vec<Duration> = eds_at
        .values()
        .map(|t| t.saturating_duration_since(pushed_at))
        .collect();
    from_change.sort();
    from_push.sort();
    let peak_kib = rss_kib("VmHWM:");

    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| mesh | {} services ({} clusters), {} SotW clients, {} namespaces |",
        p.services, clusters, p.clients, NAMESPACES
    );
    println!(
        "| one client's config, encoded: CDS / EDS / RDS | {} / {} / {} KiB |",
        per_client[0] / 1024,
        per_client[1] / 1024,
        per_client[2] / 1024
    );
    println!(
        "| clients connected and ACKed (empty mesh) | {} |",
        ms(connected)
    );
    println!(
        "| full push: change → every client ACKed CDS+EDS+RDS | {} (includes the {} debounce) |",
        ms(full),
        ms(DEBOUNCE_QUIET)
    );
    println!(
        "| full push: push published → every client ACKed | {} |",
        ms(full.saturating_sub(published - start))
    );
    println!(
        "| endpoint change → EDS received, p50 / p99 (from the change) | {} / {} |",
        ms(percentile(&from_change, 0.5)),
        ms(percentile(&from_change, 0.99))
    );
    println!(
        "| endpoint change → EDS received, p50 / p99 (from push start) | {} / {} |",
        ms(percentile(&from_push, 0.5)),
        ms(percentile(&from_push, 0.99))
    );
    println!("| other responses seen during the endpoint change (by type) | {other_types:?} |");
    println!(
        "| RSS after full push (bench process − baseline; Pilot + clients) | {:.1} MiB |",
        (rss_after_full.saturating_sub(baseline_kib)) as f64 / 1024.0
    );
    println!(
        "| peak RSS (VmHWM, whole bench process) | {:.1} MiB |",
        peak_kib as f64 / 1024.0
    );

    stop_tx.send_replace(true);
    for t in tasks {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    match recv_opt(rx).await {
        Some(e) => e,
        None => panic!("clients went away"),
    }
}

async fn recv_opt(rx: &mut mpsc::UnboundedReceiver<Event>) -> Option<Event> {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(e) => e,
        Err(_) => panic!("no progress for {DEADLINE:?}"),
    }
}

fn main() {
    let p = params();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(p));
}
