//! A one-proxy mesh on the real binaries: citadel, galley (config directory), pilot, and one
//! `mesh-proxy` sidecar whose outbound listener is the hop measured.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::{Proc, free_addrs, wait_ready};

/// The namespace of every generated object.
pub const NAMESPACE: &str = "default";
/// The Service port of every generated service.
pub const SERVICE_PORT: u16 = 8080;
/// The service in front of the upstream.
pub const UPSTREAM_SERVICE: &str = "upstream";

/// Service + Endpoints for `name` (port [`SERVICE_PORT`], one endpoint `endpoint`); with
/// `pod`, the endpoint is a Pod `<name>-0` running as service account `<name>` (so Pilot knows
/// its identity and gives the cluster mTLS with that SAN, as for any meshed workload).
fn service_yaml(out: &mut String, name: &str, endpoint: SocketAddr, pod: bool) {
    let target = if pod {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-0\n  namespace: {NAMESPACE}\n  \
             labels:\n    app: {name}\nspec:\n  serviceAccountName: {name}\n  containers:\n  - name: app\n\
             status:\n  podIP: \"{ip}\"\n  phase: Running\n---\n",
            ip = endpoint.ip(),
        );
        format!(
            "\n    targetRef:\n      kind: Pod\n      name: {name}-0\n      namespace: {NAMESPACE}"
        )
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  \
         labels:\n    app: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    \
         port: {SERVICE_PORT}\n    targetPort: {port}\n    protocol: TCP\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
         subsets:\n- addresses:\n  - ip: \"{ip}\"{target}\n  ports:\n  - name: http\n    port: {port}\n    \
         protocol: TCP\n---\n",
        ip = endpoint.ip(),
        port = endpoint.port(),
    );
}

/// The config directory content: the upstream's Service + Endpoints, a DestinationRule with
/// `tls.mode: DISABLE` (a plaintext hop, like nginx's), and `extra` filler services
/// `svc-<i>` (each with one Pod endpoint on a port nothing listens on, mTLS by default).
pub fn config_yaml(upstream: SocketAddr, extra: usize) -> String {
    let mut out = String::new();
    service_yaml(&mut out, UPSTREAM_SERVICE, upstream, false);
    let _ = write!(
        out,
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: \
         {UPSTREAM_SERVICE}\n  namespace: {NAMESPACE}\nspec:\n  host: {UPSTREAM_SERVICE}\n  \
         trafficPolicy:\n    tls:\n      mode: DISABLE\n---\n"
    );
    for i in 0..extra {
        let ep = SocketAddr::from(([127, 0, 0, 1], 20000 + (i % 40000) as u16));
        service_yaml(&mut out, &format!("svc-{i}"), ep, true);
    }
    out
}

/// How the proxy is started.
pub struct ProxyOptions {
    /// `TOKIO_WORKER_THREADS` for mesh-proxy (None: tokio's default, one per core).
    pub worker_threads: Option<usize>,
}

/// A running mesh; dropping it stops every process.
pub struct Mesh {
    /// The proxy's outbound listener.
    pub outbound: SocketAddr,
    // Drop order: the proxy first, then the control plane.
    pub proxy: Proc,
    _pilot: Proc,
    _galley: Proc,
    _citadel: Proc,
}

impl Mesh {
    pub fn proxy_pid(&self) -> i32 {
        self.proxy.pid()
    }
}

fn log(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// Starts citadel, galley (on a config dir holding `config`), pilot and one sidecar, waits
/// until each is ready and the proxy holds a config with at least `clusters` outbound
/// clusters including the upstream's.
pub async fn start(
    bin_dir: &Path,
    dir: &Path,
    config: &str,
    clusters: usize,
    opts: &ProxyOptions,
) -> Mesh {
    let bin = |n: &str| {
        let p = bin_dir.join(n);
        assert!(
            p.is_file(),
            "{} is missing: build it (see the bench's doc comment)",
            p.display()
        );
        p
    };
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    std::fs::write(dir.join("config/bench.yaml"), config).expect("config file");
    let a = free_addrs(10);
    let (citadel_grpc, citadel_mon) = (a[0], a[1]);
    let (galley_mcp, galley_api, galley_mon) = (a[2], a[3], a[4]);
    let (pilot_xds, pilot_debug, pilot_mon) = (a[5], a[6], a[7]);
    let (outbound, admin) = (a[8], a[9]);
    let [inbound, app] = free_addrs(2)[..] else {
        unreachable!()
    };
    let citadel_state = dir.join("citadel");
    std::fs::create_dir_all(&citadel_state).expect("citadel dir");
    let token = citadel::token::issue(
        &citadel_state,
        NAMESPACE,
        "bench",
        Duration::from_secs(24 * 3600),
    )
    .expect("issue a token");
    let token_file = dir.join("token.jwt");
    std::fs::write(&token_file, token).expect("token file");

    let quiet = |c: &mut Command| {
        c.env("MESH_LOG_LEVEL", "warn");
    };
    let mut cmd = Command::new(bin("citadel"));
    cmd.arg("--grpc-addr")
        .arg(citadel_grpc.to_string())
        .arg("--state-dir")
        .arg(&citadel_state)
        .arg("--monitoring-addr")
        .arg(citadel_mon.to_string());
    quiet(&mut cmd);
    let mut citadel = Proc::spawn("citadel", cmd, &log(dir, "citadel"));

    let mut cmd = Command::new(bin("galley"));
    cmd.arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--store")
        .arg(dir.join("galley.sled"))
        .arg("--mcp-addr")
        .arg(galley_mcp.to_string())
        .arg("--api-addr")
        .arg(galley_api.to_string())
        .arg("--monitoring-addr")
        .arg(galley_mon.to_string());
    quiet(&mut cmd);
    let mut galley = Proc::spawn("galley", cmd, &log(dir, "galley"));

    let mut cmd = Command::new(bin("pilot"));
    cmd.arg("--galley-addr")
        .arg(format!("http://{galley_mcp}"))
        .arg("--xds-addr")
        .arg(pilot_xds.to_string())
        .arg("--debug-addr")
        .arg(pilot_debug.to_string())
        .arg("--monitoring-addr")
        .arg(pilot_mon.to_string());
    quiet(&mut cmd);
    let mut pilot = Proc::spawn("pilot", cmd, &log(dir, "pilot"));

    // PROXY_WRAP="heaptrack -o /tmp/proxy": the proxy runs under that tool (whose pid is then
    // the one measured).
    let mut cmd = match std::env::var("PROXY_WRAP") {
        Ok(w) if !w.trim().is_empty() => {
            let mut parts = w.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or_default());
            c.args(parts).arg(bin("mesh-proxy"));
            c
        }
        _ => Command::new(bin("mesh-proxy")),
    };
    cmd.args([
        "--type",
        "sidecar",
        "--ip",
        "127.0.0.1",
        "--pod",
        "bench-client",
    ])
    .args(["--namespace", NAMESPACE, "--service-account", "bench"])
    .args(["--labels", "app=bench-client,version=v1"])
    .arg("--xds-addr")
    .arg(format!("http://{pilot_xds}"))
    .arg("--citadel-addr")
    .arg(format!("http://{citadel_grpc}"))
    .arg("--token-file")
    .arg(&token_file)
    .arg("--outbound-addr")
    .arg(outbound.to_string())
    .arg("--inbound-addr")
    .arg(inbound.to_string())
    .arg("--app-addr")
    .arg(app.to_string())
    .arg("--admin-addr")
    .arg(admin.to_string());
    quiet(&mut cmd);
    if let Some(n) = opts.worker_threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    let mut proxy = Proc::spawn("mesh-proxy", cmd, &log(dir, "mesh-proxy"));

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let up = Duration::from_secs(120);
    for (url, name) in [
        (format!("http://{citadel_mon}/readyz"), "citadel"),
        (format!("http://{galley_mon}/readyz"), "galley"),
        (format!("http://{pilot_mon}/readyz"), "pilot"),
        (format!("http://{admin}/readyz"), "mesh-proxy"),
    ] {
        wait_ready(&client, &url, up, || {
            for (p, n) in [
                (&mut citadel, "citadel"),
                (&mut galley, "galley"),
                (&mut pilot, "pilot"),
                (&mut proxy, "mesh-proxy"),
            ] {
                p.check_running(&log(dir, n));
            }
        })
        .await;
        let _ = name;
    }
    wait_config(&client, admin, pilot_debug, clusters, up).await;
    wait_synced(&client, pilot_debug, up).await;
    Mesh {
        outbound,
        proxy,
        _pilot: pilot,
        _galley: galley,
        _citadel: citadel,
    }
}

/// The number of outbound clusters with endpoints in the proxy's applied config, and whether
/// the upstream's cluster is among them.
fn applied(dump: &serde_json::Value) -> (usize, bool) {
    let upstream = format!("|{UPSTREAM_SERVICE}.{NAMESPACE}.");
    let names: Vec<String> = match &dump["clusters"] {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let outbound: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    let has_upstream = outbound.iter().any(|n| n.contains(&upstream));
    (outbound.len(), has_upstream)
}

/// Whether pilot's `/debug/syncz` shows every type of the (only) proxy acknowledged at the
/// version last sent; `Err` with the reason on a NACK of the current version.
fn synced(syncz: &serde_json::Value) -> Result<bool, String> {
    let Some(proxy) = syncz.as_array().and_then(|a| a.first()) else {
        return Ok(false);
    };
    let Some(types) = proxy["types"].as_object() else {
        return Ok(false);
    };
    let mut all = !types.is_empty();
    for (name, t) in types {
        let sent = t["sent_version"].as_str();
        if let Some(n) = t["last_nack"].as_object()
            && n["version"].as_str() == sent
        {
            return Err(format!("{name} NACKed: {}", n["error"]));
        }
        all &= sent.is_some() && t["acked_version"].as_str() == sent;
    }
    Ok(all)
}

/// Polls pilot's `/debug/syncz` until the proxy ACKed every type at the version last sent.
async fn wait_synced(client: &reqwest::Client, debug: SocketAddr, t: Duration) {
    let deadline = Instant::now() + t;
    let url = format!("http://{debug}/debug/syncz");
    loop {
        if let Ok(r) = client.get(&url).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            match synced(&v) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => panic!("mesh-proxy rejected its config: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "mesh-proxy did not ACK every type in {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the proxy's `/config_dump` until it applied (and so ACKed) at least `clusters`
/// outbound clusters, the upstream's among them.
async fn wait_config(
    client: &reqwest::Client,
    admin: SocketAddr,
    debug: SocketAddr,
    clusters: usize,
    t: Duration,
) {
    let deadline = Instant::now() + t;
    let url = format!("http://{admin}/config_dump");
    let mut last = (0, false);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            last = applied(&v);
            if last.0 >= clusters && last.1 {
                return;
            }
        }
        // A NACK (pilot's view) ends the wait at once with the proxy's reason.
        if let Ok(r) = client
            .get(format!("http://{debug}/debug/syncz"))
            .send()
            .await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && let Err(e) = synced(&v)
        {
            panic!("mesh-proxy rejected its config: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "mesh-proxy did not apply {clusters} outbound clusters in {t:?} (last: {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
