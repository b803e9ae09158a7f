//! Scale bench: Pilot's real ADS server on loopback, a registry of N services and M simulated
//! SotW ADS clients running in a child process (this binary re-executed with `--client-only`),
//! so that Pilot's memory is measured alone. Prints a markdown table per run.
//!
//! ```text
//! cargo bench -p pilot --bench scale -- --services 1000 --clients 2000            # both runs
//! cargo bench -p pilot --bench scale -- --services 1000 --clients 2000 --mode scoped
//! ```
//!
//! Per service: a Service (port 8080 `http`), Endpoints with 3 addresses (each a Pod, labels
//! `version: v1|v2`), a DestinationRule with subsets v1 and v2, and for 1 in 10 a VirtualService
//! splitting traffic between the subsets. Services are spread over 10 namespaces; clients too,
//! with 5 label sets per namespace. The `scoped` run adds one Sidecar per namespace whose egress
//! hosts are 10 of the services (namespace k: services 10k .. 10k+9), so each proxy sees 10.
//!
//! 1. Clients connect while the registry is empty and ACK it.
//! 2. Full push: the registry is swapped for the full one; measured until every client received
//!    and ACKed CDS (every cluster it sees), EDS (each cluster's assignment) and RDS (every
//!    virtual host).
//! 3. One Endpoints object (service 0) changes; measured per client that sees service 0 until it
//!    received the new EDS.
//!
//! Memory: Pilot's RSS is this process's (the bench process minus the clients, which run in the
//! child); the clients' RSS is reported apart.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::Node;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_proto::envoy::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use mesh_proto::type_url;
use pilot::galley_client::Snapshot;
use pilot::metrics::PilotMetrics;
use pilot::model::RegistryCache;
use pilot::translate::Options;
use pilot::xds::{AdsServer, DEBOUNCE_QUIET, SyncStatus};
use prost::Message;
use tokio::io::AsyncBufReadExt;
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

/// Services each proxy sees in the scoped run.
const SCOPE: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unscoped,
    Scoped,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Unscoped => "unscoped",
            Mode::Scoped => "scoped",
        }
    }
}

struct Params {
    services: usize,
    clients: usize,
    /// `None`: run both modes, each in its own process.
    mode: Option<Mode>,
    /// Client-only mode: Pilot's address.
    client_addr: Option<std::net::SocketAddr>,
}

fn params() -> Params {
    let mut p = Params {
        services: 1000,
        clients: 2000,
        mode: None,
        client_addr: None,
    };
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        let n = w[1].parse().ok();
        match (w[0].as_str(), n) {
            ("--services", Some(n)) => p.services = n,
            ("--clients", Some(n)) => p.clients = n,
            ("--mode", _) if w[1] == "scoped" => p.mode = Some(Mode::Scoped),
            ("--mode", _) if w[1] == "unscoped" => p.mode = Some(Mode::Unscoped),
            ("--client-only", _) => p.client_addr = w[1].parse().ok(),
            _ => {}
        }
    }
    p
}

/// Nanoseconds since the epoch: a clock both processes read.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn obj(v: serde_json::Value) -> ConfigObject {
    serde_json::from_value(v).expect("valid object")
}

fn namespace(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

/// Which services the Sidecar of namespace `k` lets its proxies see (scoped run).
fn scope_of(k: usize, services: usize) -> Vec<usize> {
    (0..SCOPE)
        .map(|j| (k * SCOPE + j) % services.max(1))
        .collect()
}

/// Every object of the mesh; `moved` shifts the addresses of service 0.
fn mesh(services: usize, moved: bool, mode: Mode) -> Vec<ConfigObject> {
    let mut out = Vec::with_capacity(services * 7);
    if mode == Mode::Scoped {
        for k in 0..NAMESPACES {
            let hosts: Vec<String> = scope_of(k, services)
                .into_iter()
                .map(|i| format!("{0}/svc-{i}.{0}.svc.cluster.local", namespace(i)))
                .collect();
            out.push(obj(serde_json::json!({
                "apiVersion": "networking.istio.io/v1alpha3", "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": format!("ns{k}")},
                "spec": {"egress": [{"hosts": hosts}]}
            })));
        }
    }
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
    rss_kib_of("self", field)
}

/// A field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`, in KiB.
fn rss_kib_of(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process used so far: Pilot's, since the clients run in a child
/// process (the bench's own event reading is a small part of it).
fn cpu_secs() -> f64 {
    cpu_secs_of("self")
}

/// CPU time (user + system) process `pid` used so far.
fn cpu_secs_of(pid: &str) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

/// What a client reports after answering a response (a line on the client process's stdout:
/// `client type_url count bytes moved at_ns`).
#[derive(Debug)]
struct Event {
    client: usize,
    type_url: String,
    count: usize,
    /// Encoded size of the response's resources.
    bytes: usize,
    /// EDS only: whether the moved address of service 0 ([`MOVED_IP`]) is in it.
    moved: bool,
    /// [`now_ns`] when the client had it.
    at: u128,
}

impl Event {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            self.client,
            self.type_url,
            self.count,
            self.bytes,
            u8::from(self.moved),
            self.at
        )
    }

    fn parse(line: &str) -> Option<Event> {
        let mut f = line.split_whitespace();
        Some(Event {
            client: f.next()?.parse().ok()?,
            type_url: f.next()?.to_string(),
            count: f.next()?.parse().ok()?,
            bytes: f.next()?.parse().ok()?,
            moved: f.next()? == "1",
            at: f.next()?.parse().ok()?,
        })
    }
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

/// A `DiscoveryRequest` encoded already: the clients encode each distinct name list once (the
/// bytes on the wire are a `DiscoveryRequest` as any client sends it), so that the simulated
/// proxies, which share Pilot's two cores here, spend little CPU on their ACKs.
#[derive(Clone, Debug, Default)]
struct EncodedRequest(prost::bytes::Bytes);

impl Message for EncodedRequest {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = prost::bytes::Bytes::new();
    }
}

/// `resource_names` (field 3) of a `DiscoveryRequest`, encoded.
fn encode_names(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        prost::encoding::string::encode(3, n, &mut out);
    }
    out
}

/// A request naming the names encoded in `names` (see [`encode_names`]), ACKing `r`.
fn request(
    node: &Option<Node>,
    type_url: &str,
    names: &[u8],
    r: Option<&DiscoveryResponse>,
) -> EncodedRequest {
    let mut out = DiscoveryRequest {
        node: node.clone(),
        type_url: type_url.to_string(),
        version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: r.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..DiscoveryRequest::default()
    }
    .encode_to_vec();
    out.extend_from_slice(names);
    EncodedRequest(out.into())
}

/// A SotW client like Envoy: CDS and LDS wildcard, EDS for every cluster it got, RDS
/// `http_proxy`; ACKs every response and reports it.
async fn client(
    i: usize,
    addr: std::net::SocketAddr,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = tonic::transport::Endpoint::new(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut ads = tonic::client::Grpc::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    ads.ready().await?;
    let (tx, rx) = mpsc::channel(8);
    let first = Some(node(i));
    let http_proxy = encode_names(&["http_proxy".to_string()]);
    tx.send(request(&first, type_url::CLUSTER, &[], None))
        .await?;
    tx.send(request(&None, type_url::LISTENER, &[], None))
        .await?;
    tx.send(request(&None, type_url::ROUTE, &http_proxy, None))
        .await?;
    let codec = tonic_prost::ProstCodec::<EncodedRequest, DiscoveryResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    let mut stream = ads
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec)
        .await?
        .into_inner();
    let mut eds_names: Vec<String> = Vec::new();
    let mut eds_wire: Vec<u8> = Vec::new();
    let mut eds_open = false;
    let mut last_eds: Option<DiscoveryResponse> = None;
    while let Some(r) = stream.message().await? {
        // When the response was received (before this client builds its answer).
        let at = now_ns();
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
                tx.send(request(&None, type_url::CLUSTER, &[], Some(&r)))
                    .await?;
                if names != eds_names || !eds_open {
                    eds_names = names;
                    eds_wire = encode_names(&eds_names);
                    // Like Envoy: the new names on the last EDS version and nonce (a fresh
                    // request the first time).
                    tx.send(request(
                        &None,
                        type_url::ENDPOINT,
                        &eds_wire,
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
                Some(eds_wire.as_slice())
            }
            type_url::ROUTE => {
                let vhosts: usize = r
                    .resources
                    .iter()
                    .filter_map(|a| RouteVhosts::decode(a.value.as_slice()).ok())
                    .map(|rc| rc.virtual_hosts.len())
                    .sum();
                tx.send(request(&None, type_url::ROUTE, &http_proxy, Some(&r)))
                    .await?;
                let _ = events.send(Event {
                    client: i,
                    type_url: r.type_url.clone(),
                    count: vhosts,
                    bytes,
                    moved,
                    at,
                });
                continue;
            }
            _ => Some(&[][..]),
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
            at,
        });
    }
    Ok(())
}

#[derive(Default, Clone, Copy)]
struct Seen {
    cds: usize,
    eds: usize,
    rds: usize,
    /// Bytes of the last CDS, EDS, LDS and RDS response.
    bytes: [usize; 4],
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

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Client-only mode: `clients` clients against `addr`, events on stdout.
async fn clients_only(p: &Params, addr: std::net::SocketAddr) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    for i in 0..p.clients {
        let ev = ev_tx.clone();
        tokio::spawn(async move {
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
        });
    }
    drop(ev_tx);
    let mut out = std::io::stdout().lock();
    while let Some(e) = ev_rx.recv().await {
        if out
            .write_all(e.line().as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// What one run expects each client to end up with: clusters, load assignments, virtual hosts.
fn expected(p: &Params, mode: Mode) -> (usize, usize) {
    match mode {
        Mode::Unscoped => (p.services * 3, p.services),
        Mode::Scoped => (SCOPE.min(p.services) * 3, SCOPE.min(p.services)),
    }
}

/// Whether client `i` sees service 0 (whose endpoints change).
fn sees_service_0(i: usize, p: &Params, mode: Mode) -> bool {
    match mode {
        Mode::Unscoped => true,
        Mode::Scoped => scope_of(i % NAMESPACES, p.services).contains(&0),
    }
}

/// One run: Pilot in this process, the clients in a child process.
async fn bench(p: Params, mode: Mode) {
    let baseline_kib = rss_kib("VmRSS:");
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = PilotMetrics::default();
    let build_secs = {
        let h = metrics.push_context_time.clone();
        move || histogram_sum(&h)
    };
    let ads = AdsServer::new(
        RegistryCache::new(snap_rx, "cluster.local"),
        Options {
            trust_domain: "cluster.local".into(),
        },
        metrics.clone(),
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

    // 1. Connect every client (in the child process) to an empty mesh.
    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--client-only",
            &addr.to_string(),
            "--clients",
            &p.clients.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the client process");
    let child_pid = child.id().map(|id| id.to_string()).unwrap_or_default();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(e) = Event::parse(&line)
                && ev_tx.send(e).is_err()
            {
                return;
            }
        }
    });
    let connect_start = Instant::now();
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    while seen.len() < p.clients {
        let e = recv(&mut ev_rx).await;
        seen.entry(e.client).or_default();
    }
    let connected = connect_start.elapsed();
    let rss_connected = rss_kib("VmRSS:");

    // 2. Full push.
    let (clusters, vhosts) = expected(&p, mode);
    let snapshot = Arc::new(Snapshot::from_objects(mesh(p.services, false, mode)));
    pushes.borrow_and_update();
    let cpu_start = cpu_secs();
    let clients_cpu_start = cpu_secs_of(&child_pid);
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
                let before = s.cds == clusters && s.eds == clusters && s.rds == vhosts;
                match e.type_url.as_str() {
                    type_url::CLUSTER => (s.cds, s.bytes[0]) = (e.count, e.bytes),
                    type_url::ENDPOINT => (s.eds, s.bytes[1]) = (e.count, e.bytes),
                    type_url::LISTENER => s.bytes[2] = e.bytes,
                    type_url::ROUTE => (s.rds, s.bytes[3]) = (e.count, e.bytes),
                    _ => {}
                }
                let after = s.cds == clusters && s.eds == clusters && s.rds == vhosts;
                if after && !before {
                    done += 1;
                }
            }
        }
    }
    let full = start.elapsed();
    let full_cpu = cpu_secs() - cpu_start;
    let full_clients_cpu = cpu_secs_of(&child_pid) - clients_cpu_start;
    let per_client = seen.get(&0).map(|s| s.bytes).unwrap_or_default();
    let published = published.unwrap_or(start);
    let rss_after_full = rss_kib("VmRSS:");
    // Built only now, so that the RSS above is Pilot's (its snapshot, registry and pushes).
    let moved_snapshot = Arc::new(Snapshot::from_objects(mesh(p.services, true, mode)));

    // 3. One Endpoints change.
    let needing = (0..p.clients)
        .filter(|i| sees_service_0(*i, &p, mode))
        .count();
    // `SCALE_EDS_PAUSE=<secs>`: wait before the endpoint change (to attach a profiler to it).
    if let Some(secs) = std::env::var("SCALE_EDS_PAUSE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("pid {}: endpoint change in {secs} s", std::process::id());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    pushes.borrow_and_update();
    let eds_cpu_start = cpu_secs();
    let eds_build_start = build_secs();
    let eds_clients_cpu_start = cpu_secs_of(&child_pid);
    let change = now_ns();
    snap_tx.send_replace(moved_snapshot);
    let mut eds_at: HashMap<usize, u128> = HashMap::new();
    let mut other_types: std::collections::BTreeMap<String, usize> = Default::default();
    let mut pushed_at = None;
    while eds_at.len() < needing {
        tokio::select! {
            _ = pushes.changed(), if pushed_at.is_none() => pushed_at = Some(now_ns()),
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
    // Anything else the change caused (to clients that do not need it) arrives shortly.
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), ev_rx.recv()).await {
        let short = e
            .type_url
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        *other_types.entry(short).or_default() += 1;
    }
    let eds_cpu = cpu_secs() - eds_cpu_start;
    let eds_build = build_secs() - eds_build_start;
    let eds_clients_cpu = cpu_secs_of(&child_pid) - eds_clients_cpu_start;
    let pushed_at = pushed_at.unwrap_or(change);
    let since = |from: u128| {
        let mut v: Vec<Duration> = eds_at
            .values()
            .map(|t| Duration::from_nanos(t.saturating_sub(from) as u64))
            .collect();
        v.sort();
        v
    };
    let from_change = since(change);
    let from_push = since(pushed_at);
    let peak_kib = rss_kib("VmHWM:");
    let client_rss = rss_kib_of(&child_pid, "VmRSS:");

    let total: usize = per_client.iter().sum();
    println!("\n### {} run\n", mode.as_str());
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| mesh | {} services ({} clusters), {} SotW clients, {} namespaces{} |",
        p.services,
        p.services * 3,
        p.clients,
        NAMESPACES,
        if mode == Mode::Scoped {
            format!(", a Sidecar per namespace: {SCOPE} services per proxy")
        } else {
            String::new()
        }
    );
    println!(
        "| one client's config, encoded: CDS / EDS / LDS / RDS (total) | {} / {} / {} / {} KiB ({} KiB) |",
        per_client[0] / 1024,
        per_client[1] / 1024,
        per_client[2] / 1024,
        per_client[3] / 1024,
        total / 1024
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
    println!("| full push: Pilot's CPU time (user + system, its process only) | {full_cpu:.2} s |");
    println!("| full push: the clients' CPU time (their process) | {full_clients_cpu:.2} s |");
    println!(
        "| endpoint change → EDS received by the {} clients that see it, p50 / p99 (from the change) | {} / {} |",
        needing,
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
        "| endpoint change: Pilot's CPU time until all received (+ 300 ms quiet) | {eds_cpu:.2} s |"
    );
    println!("| endpoint change: the clients' CPU time, same span | {eds_clients_cpu:.2} s |");
    println!(
        "| endpoint change: building the push (`PushContext::build`) | {:.1} ms |",
        eds_build * 1000.0
    );
    println!(
        "| Pilot RSS: connected (empty mesh) / after full push / peak (VmHWM) | {} / {} / {} |",
        mib(rss_connected),
        mib(rss_after_full),
        mib(peak_kib)
    );
    println!(
        "| Pilot RSS over its baseline after the full push | {} |",
        mib(rss_after_full.saturating_sub(baseline_kib))
    );
    println!("| clients' process RSS (apart) | {} |", mib(client_rss));
    println!("#size {total}");

    stop_tx.send_replace(true);
    let _ = child.kill().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// The `_sum` of histogram `h` (seconds).
fn histogram_sum(h: &prometheus_client::metrics::histogram::Histogram) -> f64 {
    let reg = mesh_runtime::Metrics::default();
    reg.register(|r| r.register("h", "h", h.clone()));
    reg.encode()
        .lines()
        .find_map(|l| l.strip_prefix("h_sum "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
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

/// Both runs, each in its own process (so each Pilot's memory starts from nothing); prints
/// their tables and the scoped/unscoped size ratio.
fn both(p: &Params) {
    let exe = std::env::current_exe().expect("own path");
    let mut sizes = Vec::new();
    for mode in [Mode::Unscoped, Mode::Scoped] {
        let out = std::process::Command::new(&exe)
            .args([
                "--mode",
                mode.as_str(),
                "--services",
                &p.services.to_string(),
                "--clients",
                &p.clients.to_string(),
            ])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run the bench");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            match line.strip_prefix("#size ") {
                Some(n) => sizes.push(n.trim().parse::<f64>().unwrap_or(0.0)),
                None => println!("{line}"),
            }
        }
        assert!(out.status.success(), "{} run failed", mode.as_str());
    }
    if let [unscoped, scoped] = sizes[..] {
        println!(
            "\nPer-proxy config with a Sidecar scoped to {SCOPE} of {} services: {:.2}% of the unscoped size (target ≤ 5%).",
            p.services,
            100.0 * scoped / unscoped.max(1.0)
        );
    }
}

fn main() {
    let p = params();
    if p.client_addr.is_none() && p.mode.is_none() {
        both(&p);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match (p.client_addr, p.mode) {
        (Some(addr), _) => rt.block_on(clients_only(&p, addr)),
        (None, Some(mode)) => rt.block_on(bench(p, mode)),
        (None, None) => {}
    }
}
