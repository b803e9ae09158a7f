//! Transparent capture end to end, with real iptables, in network namespaces of its own
//! (build the binaries first: `cargo build -p galley -p pilot -p citadel -p mesh-proxy -p e2e
//! --bins`; run as root: `MESH_REQUIRE_IPTABLES=1 cargo nextest run -p e2e --test
//! capture_iptables`).
//!
//! Two network namespaces joined by a veth pair, so nothing touches the host's interfaces or
//! iptables, and both vanish with the test (they live as long as the test's file descriptors
//! and its children; the children are killed on drop and, by `setpriv --pdeathsig`, when the
//! test dies):
//!
//! ```text
//!  "pod" namespace (10.77.0.2)                        "peer" namespace (10.77.0.1, .11, .12)
//!  iptables: pilot's istio-init script                echo v1 10.77.0.11:8080 (HTTP)
//!  galley, pilot, citadel (root, 127.0.0.1)           echo v2 10.77.0.12:8080 (HTTP)
//!  mesh-proxy (uid 1337) :15001 :15006 :15000  ─veth─ TCP echo 10.77.0.1:7000
//!  bookinfo `details` app 127.0.0.1:9080              TCP greeter 10.77.0.1:7001
//!  TCP echo / greeter 127.0.0.1:7200 / 7201           clients calling 10.77.0.2
//! ```
//!
//! The rules are the injection webhook's own (`pilot::inject::capture::Capture::script`, what
//! its `istio-init` container runs), so the proxy runs as uid/gid 1337, which they exclude. The
//! test shows, each by what only the sidecar can have done (and its metrics and access log):
//! 1. outbound HTTP: a plain socket to `echo.capture.test`'s ServiceEntry address
//!    (10.77.1.10:8080, nothing listens there) is routed by Pilot's VirtualService (subset v2,
//!    an added header the upstream echoes);
//! 2. inbound HTTP: the peer calling the pod's IP at the app port reaches the app, which
//!    listens on 127.0.0.1 only;
//! 3. TCP to an address outside the registry, client-first and server-first: passed through
//!    to the original destination;
//! 4. TCP to a TCP ServiceEntry's address: its `tcp_proxy`, to the endpoint's own port;
//! 5. the pod calling its own Service: out through 15001 with mTLS, back in through 15006;
//! 6. passthrough keeps 1 MB and the half-close; a TLS record is passed through;
//! 7. inbound plaintext TCP (client-first and server-first) reaches the pod's TCP servers.
//!
//! Without iptables, nsenter, setpriv or ip, or without the right to create a network
//! namespace, the test says so and passes, unless `MESH_REQUIRE_IPTABLES=1` (CI sets it).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use common::{alive, bin};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const POD_IP: &str = "10.77.0.2";
const PEER_IP: &str = "10.77.0.1";
const ECHO_V1_IP: &str = "10.77.0.11";
const ECHO_V2_IP: &str = "10.77.0.12";
/// The ServiceEntry's address: routed out of the pod, served by nothing.
const ECHO_VIP: &str = "10.77.1.10";
const ECHO_HOST: &str = "echo.capture.test";
const ECHO_PORT: u16 = 8080;
const TCP_PORT: u16 = 7000;
/// A server-first service (it greets, the client waits) outside the registry.
const GREETER_PORT: u16 = 7001;
const GREETING: &[u8] = b"220 capture-e2e ready\r\n";
/// The pod's own TCP servers (loopback only): an echo, and a server-first one.
const POD_TCP_PORT: u16 = 7200;
const POD_GREETER_PORT: u16 = 7201;
/// A TCP ServiceEntry: its address and port, served by the TCP echo at a different port.
const TCP_HOST: &str = "tcp-echo.capture.test";
const TCP_VIP: &str = "10.77.1.20";
const TCP_VIP_PORT: u16 = 7100;
const APP_PORT: u16 = 9080;
const ADMIN: &str = "127.0.0.1:15000";
const PROXY_UID: u32 = pilot::inject::capture::PROXY_UID;

/// The Kubernetes and Istio objects Galley serves.
fn config_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: details, namespace: default, labels: {{app: details}}}}
spec:
  selector: {{app: details}}
  ports: [{{name: http, port: {APP_PORT}, targetPort: {APP_PORT}, protocol: TCP}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: details, namespace: default}}
subsets:
- addresses: [{{ip: {POD_IP}, targetRef: {{kind: Pod, name: details-v1, namespace: default}}}}]
  ports: [{{name: http, port: {APP_PORT}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: details-v1, namespace: default, labels: {{app: details, version: v1}}}}
spec: {{serviceAccountName: bookinfo-details}}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{ECHO_HOST}]
  addresses: [{ECHO_VIP}]
  ports: [{{number: {ECHO_PORT}, name: http, protocol: HTTP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - {{address: {ECHO_V1_IP}, labels: {{version: v1}}}}
  - {{address: {ECHO_V2_IP}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: [{TCP_HOST}]
  addresses: [{TCP_VIP}]
  ports: [{{number: {TCP_VIP_PORT}, name: tcp, protocol: TCP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - {{address: {PEER_IP}, ports: {{tcp: {TCP_PORT}}}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {ECHO_HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{ECHO_HOST}]
  http:
  - headers:
      request:
        set: {{x-capture-route: pilot-virtualservice}}
    route:
    - destination: {{host: {ECHO_HOST}, subset: v2}}
"#
    )
}

const MESH_CONFIG: &str = "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n";

/// A network namespace of the test's own, held by an open file: it lasts while the file is open
/// or a process is in it.
struct NetNs {
    file: File,
}

impl NetNs {
    /// A new, empty network namespace (only `lo`, down).
    fn new() -> Result<NetNs, String> {
        std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            File::open("/proc/thread-self/ns/net").map_err(|e| format!("open netns: {e}"))
        })
        .join()
        .map_err(|_| "netns thread panicked".to_string())?
        .map(|file| NetNs { file })
    }

    /// A path naming the namespace for other processes (`nsenter --net=`, `ip ... netns`).
    fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }

    /// Runs `f` on a thread inside the namespace: the sockets it opens belong there.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = self.file.try_clone().unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// `program` run inside the namespace.
    fn command(&self, tools: &Tools, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&tools.nsenter);
        c.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `sh -c script` inside the namespace to completion; panics with its output if it fails.
    fn sh(&self, tools: &Tools, script: &str) -> String {
        let out = self
            .command(tools, "sh")
            .args(["-c", script])
            .env("PATH", &tools.path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "`{script}` failed:\n{text}");
        text
    }
}

/// The system tools the test needs, by absolute path.
struct Tools {
    nsenter: PathBuf,
    setpriv: PathBuf,
    /// PATH for the shell scripts (`ip`, `iptables`).
    path: String,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The tools, or why the test cannot run here.
fn tools() -> Result<Tools, String> {
    let mut missing = Vec::new();
    let mut found = BTreeMap::new();
    for t in ["iptables", "nsenter", "setpriv", "ip", "sh"] {
        match find_tool(t) {
            Some(p) => {
                found.insert(t, p);
            }
            None => missing.push(t),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "not installed: {} (apt-get install iptables util-linux iproute2)",
            missing.join(", ")
        ));
    }
    let mut dirs: Vec<String> = found
        .values()
        .filter_map(|p| p.parent().map(|d| d.display().to_string()))
        .collect();
    dirs.dedup();
    Ok(Tools {
        nsenter: found["nsenter"].clone(),
        setpriv: found["setpriv"].clone(),
        path: dirs.join(":"),
    })
}

/// A started process, its log, and the name to report it by.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Everything the test set up, torn down on drop in order: processes, then the namespaces (and
/// with them the iptables rules, veth and addresses), then the files.
struct Testbed {
    procs: Vec<Proc>,
    tools: Tools,
    pod: NetNs,
    peer: NetNs,
    dir: tempfile::TempDir,
}

impl Testbed {
    /// Starts `program ARGS` in the pod namespace (as `uid` when given), output to
    /// `DIR/<name>.log`. Children die with the test thread (`setpriv --pdeathsig`).
    fn start(&mut self, name: &str, program: &Path, uid: Option<u32>, args: &[String]) {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path).unwrap();
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(uid)).unwrap();
        }
        let mut c = self.pod.command(&self.tools, &self.tools.setpriv);
        c.arg("--pdeathsig=KILL");
        if let Some(uid) = uid {
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_string(),
            ]);
        }
        let child = c
            .arg("--")
            .arg(program)
            .args(args)
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log: log_path,
        });
    }

    /// Waits for `http://ADDR/PATH` (in the pod namespace) to answer 200, failing early when
    /// the process `name` exits.
    fn wait_ready(&mut self, name: &str, addr: &str, path: &str) {
        let addr: SocketAddr = addr.parse().unwrap();
        let what = format!("{name} ready at http://{addr}{path}");
        let path = path.to_string();
        poll(&what, Duration::from_secs(120), || {
            if let Some(p) = self.procs.iter_mut().find(|p| p.name == name)
                && let Ok(Some(status)) = p.child.try_wait()
            {
                panic!("{name} exited ({status}) before it was ready");
            }
            let path = path.clone();
            let r = self
                .pod
                .run(move || http_get(addr, "localhost", &path, &[]))?;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("status {}: {}", r.status, r.body))
            }
        });
    }

    fn log(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// The sidecar's Prometheus page.
    fn metrics(&self) -> String {
        self.pod
            .run(|| {
                http_get(
                    ADMIN.parse().unwrap(),
                    "localhost",
                    "/stats/prometheus",
                    &[],
                )
            })
            .map(|r| r.body)
            .unwrap_or_default()
    }

    fn diagnostics(&self) -> String {
        let mut s = String::new();
        let rules = self
            .pod
            .command(&self.tools, "iptables")
            .args(["-t", "nat", "-L", "-v", "-n"])
            .env("PATH", &self.tools.path)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        s.push_str(&format!("--- iptables -t nat -L -v -n (pod)\n{rules}\n"));
        for p in &self.procs {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            s.push_str(&format!("--- {} ({})\n{tail}\n", p.name, p.log.display()));
        }
        s
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("capture_iptables diagnostics:\n{}", self.diagnostics());
        }
        for p in &mut self.procs {
            let pid = p.child.id() as i32;
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for p in &mut self.procs {
            if common::wait_timeout(&mut p.child, Duration::from_secs(10)).is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// Calls `f` every 200 ms until it returns `Ok`, panicking with `what` and the last error
/// after `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// An HTTP response read by [`http_get`].
#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
}

/// `GET PATH` with `Host: HOST` over a plain socket to `addr` (HTTP/1.1, one request): what any
/// application does after resolving the host, with no proxy settings at all.
fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Response, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: capture-e2e\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response head: {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| "truncated chunk size".to_string())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| "truncated chunk".to_string())?;
        out.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or("");
    }
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Connects to `addr`, writes `msg` and reads as many bytes back (or, for an empty `msg`, the
/// server's greeting).
fn echo(addr: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let want = if msg.is_empty() {
        GREETING.len()
    } else {
        msg.len()
    };
    s.write_all(msg).map_err(|e| e.to_string())?;
    let mut back = vec![0u8; want];
    s.read_exact(&mut back)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(back)
}

/// An HTTP upstream answering `version=V` and every request header it got, one per line.
fn echo_router(version: &'static str, hits: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(move |headers: HeaderMap| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut body = format!("version={version}\n");
            for (k, v) in &headers {
                body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            body
        }
    })
}

/// A std listener bound inside `ns`, ready for tokio.
fn listen_in(ns: &NetNs, addr: &str) -> std::net::TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    let l = ns.run(move || std::net::TcpListener::bind(addr).unwrap());
    l.set_nonblocking(true).unwrap();
    l
}

#[test]
fn iptables_capture_routes_outbound_inbound_and_tcp_through_the_sidecar() {
    let required = std::env::var("MESH_REQUIRE_IPTABLES").as_deref() == Ok("1");
    let setup = tools().and_then(|t| Ok((t, NetNs::new()?, NetNs::new()?)));
    let (tools, pod, peer) = match setup {
        Ok(v) => v,
        Err(why) if !required => {
            eprintln!(
                "capture_iptables: SKIPPED, cannot run iptables in a network namespace here: \
                 {why}. Set MESH_REQUIRE_IPTABLES=1 to make this a failure."
            );
            return;
        }
        Err(why) => panic!("MESH_REQUIRE_IPTABLES=1 but {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    // The proxy runs as uid 1337: it must reach its token file.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut bed = Testbed {
        procs: Vec::new(),
        tools,
        pod,
        peer,
        dir,
    };

    // The network: lo up in both, a veth pair between them, a default route out of the pod.
    bed.pod.sh(
        &bed.tools,
        &format!(
            "set -e; ip link set lo up; \
             ip link add mc-pod type veth peer name mc-peer netns {peer}; \
             ip addr add {POD_IP}/24 dev mc-pod; ip link set mc-pod up; \
             ip route add default via {PEER_IP} dev mc-pod",
            peer = bed.peer.path()
        ),
    );
    bed.peer.sh(
        &bed.tools,
        &format!(
            "set -e; ip link set lo up; \
             ip addr add {PEER_IP}/24 dev mc-peer; ip addr add {ECHO_V1_IP}/24 dev mc-peer; \
             ip addr add {ECHO_V2_IP}/24 dev mc-peer; ip link set mc-peer up"
        ),
    );
    // The init container: the injection webhook's rules for a pod without annotations.
    let script = pilot::inject::capture::Capture::from_annotations(&BTreeMap::new())
        .unwrap()
        .script();
    match bed
        .pod
        .command(&bed.tools, "sh")
        .args(["-c", &script])
        .env("PATH", &bed.tools.path)
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) if !required => {
            eprintln!(
                "capture_iptables: SKIPPED, iptables does not work in a network namespace here:\n{}\
                 Set MESH_REQUIRE_IPTABLES=1 to make this a failure.",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        other => panic!("the istio-init script failed: {other:?}\n{script}"),
    }

    // The peer's servers: two versions of the echo service, a TCP echo.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v1_hits = Arc::new(AtomicUsize::new(0));
    let v2_hits = Arc::new(AtomicUsize::new(0));
    for (ip, version, hits) in [
        (ECHO_V1_IP, "v1", v1_hits.clone()),
        (ECHO_V2_IP, "v2", v2_hits.clone()),
    ] {
        let l = listen_in(&bed.peer, &format!("{ip}:{ECHO_PORT}"));
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            axum::serve(l, echo_router(version, hits)).await.unwrap();
        });
    }
    let tcp = listen_in(&bed.peer, &format!("{PEER_IP}:{TCP_PORT}"));
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(tcp).unwrap();
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    let greeter = listen_in(&bed.peer, &format!("{PEER_IP}:{GREETER_PORT}"));
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(greeter).unwrap();
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(GREETING).await;
            });
        }
    });

    // The control plane (root, loopback: not captured), then the app, then the sidecar.
    let d = bed.dir.path().to_path_buf();
    let config = d.join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("capture.yaml"), config_yaml()).unwrap();
    std::fs::write(d.join("meshconfig.yaml"), MESH_CONFIG).unwrap();
    let token = citadel::token::issue(
        &d.join("citadel"),
        "default",
        "bookinfo-details",
        Duration::from_secs(3600),
    )
    .unwrap();
    let token_file = d.join("details.jwt");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let p = |p: &Path| p.display().to_string();
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    bed.start(
        "galley",
        &bin("galley"),
        None,
        &[
            s(&["--config-dir"]),
            vec![p(&config)],
            s(&["--store"]),
            vec![p(&d.join("galley.sled"))],
            s(&[
                "--mcp-addr",
                "127.0.0.1:9901",
                "--api-addr",
                "127.0.0.1:9902",
            ]),
            s(&["--monitoring-addr", "127.0.0.1:15015", "--mesh-config"]),
            vec![p(&d.join("meshconfig.yaml"))],
        ]
        .concat(),
    );
    bed.start(
        "citadel",
        &bin("citadel"),
        None,
        &[
            s(&[
                "--grpc-addr",
                "127.0.0.1:8060",
                "--tls-addr",
                "127.0.0.1:8061",
            ]),
            s(&["--monitoring-addr", "127.0.0.1:15016", "--state-dir"]),
            vec![p(&d.join("citadel"))],
        ]
        .concat(),
    );
    bed.start(
        "pilot",
        &bin("pilot"),
        None,
        &s(&[
            "--galley-addr",
            "http://127.0.0.1:9901",
            "--xds-addr",
            "127.0.0.1:15010",
            "--debug-addr",
            "127.0.0.1:8080",
            "--monitoring-addr",
            "127.0.0.1:15014",
        ]),
    );
    bed.start(
        "details-v1",
        &bin("bookinfo"),
        None,
        &s(&[
            "--service",
            "details",
            "--version",
            "v1",
            "--listen",
            &format!("127.0.0.1:{APP_PORT}"),
        ]),
    );
    bed.wait_ready("galley", "127.0.0.1:15015", "/readyz");
    bed.wait_ready("citadel", "127.0.0.1:15016", "/readyz");
    bed.wait_ready("pilot", "127.0.0.1:15014", "/readyz");
    bed.wait_ready("details-v1", &format!("127.0.0.1:{APP_PORT}"), "/healthz");
    bed.start(
        "details-v1-proxy",
        &bin("mesh-proxy"),
        Some(PROXY_UID),
        &[
            s(&["--type", "sidecar", "--ip", POD_IP, "--pod", "details-v1"]),
            s(&[
                "--namespace",
                "default",
                "--service-account",
                "bookinfo-details",
            ]),
            s(&["--labels", "app=details,version=v1"]),
            s(&["--xds-addr", "http://127.0.0.1:15010"]),
            s(&["--citadel-addr", "http://127.0.0.1:8060", "--token-file"]),
            vec![p(&token_file)],
            s(&[
                "--outbound-addr",
                "127.0.0.1:15011",
                "--inbound-addr",
                "127.0.0.1:15012",
            ]),
            s(&["--admin-addr", ADMIN, "--app-addr"]),
            vec![format!("127.0.0.1:{APP_PORT}")],
            s(&["--capture-outbound-addr", "0.0.0.0:15001"]),
            s(&["--capture-inbound-addr", "0.0.0.0:15006"]),
        ]
        .concat(),
    );
    bed.wait_ready("details-v1-proxy", ADMIN, "/readyz");

    // 1. Outbound HTTP: the app dials the ServiceEntry's address, no proxy configured.
    let vip: SocketAddr = format!("{ECHO_VIP}:{ECHO_PORT}").parse().unwrap();
    let host = format!("{ECHO_HOST}:{ECHO_PORT}");
    let r = poll(
        "outbound HTTP routed by the sidecar",
        Duration::from_secs(60),
        || {
            let host = host.clone();
            let r = bed.pod.run(move || http_get(vip, &host, "/hello", &[]))?;
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("status {}: {}", r.status, r.body))
            }
        },
    );
    assert!(r.body.starts_with("version=v2\n"), "{r:?}");
    assert!(
        r.body.contains("x-capture-route: pilot-virtualservice\n"),
        "the VirtualService's header reached the upstream: {r:?}"
    );
    for _ in 0..3 {
        let host = host.clone();
        let r = bed
            .pod
            .run(move || http_get(vip, &host, "/again", &[]))
            .unwrap();
        assert!(r.body.starts_with("version=v2\n"), "{r:?}");
    }
    assert_eq!(v1_hits.load(Ordering::SeqCst), 0, "subset v2 only");
    assert!(v2_hits.load(Ordering::SeqCst) >= 4);
    let line = poll(
        "istio_requests_total (source)",
        Duration::from_secs(20),
        || {
            let m = bed.metrics();
            sample(
                &m,
                "istio_requests_total",
                &[
                    "reporter=\"source\"",
                    &format!("destination_service=\"{ECHO_HOST}\""),
                    "response_code=\"200\"",
                ],
            )
            .filter(|v| *v >= 4.0)
            .ok_or_else(|| "no sample yet".to_string())
        },
    );
    assert!(line >= 4.0);
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "proxy_capture_connections_total",
            &["direction=\"outbound\"", "target=\"http\""]
        )
        .is_some_and(|v| v >= 4.0),
        "{m}"
    );
    poll("the access log line", Duration::from_secs(20), || {
        let log = bed.log("details-v1-proxy");
        log.lines()
            .find(|l| l.contains("\"/hello\"") && l.contains(ECHO_HOST))
            .map(str::to_string)
            .ok_or_else(|| "no access log line for /hello yet".to_string())
    });

    // 2. Inbound: the peer calls the pod's IP at the app port; the app listens on loopback
    //    only, so only the sidecar's 15006 can have carried it.
    let pod_app: SocketAddr = format!("{POD_IP}:{APP_PORT}").parse().unwrap();
    let r = bed
        .peer
        .run(move || http_get(pod_app, "details:9080", "/details/0", &[]))
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"service\":\"details\""), "{r:?}");
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "proxy_capture_connections_total",
            &[
                "direction=\"inbound\"",
                "protocol=\"http1\"",
                "target=\"inbound\""
            ]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "destination_workload=\"details-v1\""
            ]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );

    // 3. TCP to an address outside the registry, client first (sniffed: not HTTP) and server
    //    first (nothing to sniff): passed through to the original destination.
    let tcp: SocketAddr = format!("{PEER_IP}:{TCP_PORT}").parse().unwrap();
    let msg = b"\x00\x01not http, just bytes\n";
    assert_eq!(bed.pod.run(move || echo(tcp, msg)).unwrap(), msg);
    let greeter: SocketAddr = format!("{PEER_IP}:{GREETER_PORT}").parse().unwrap();
    assert_eq!(bed.pod.run(move || echo(greeter, b"")).unwrap(), GREETING);
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "proxy_capture_connections_total",
            &[
                "direction=\"outbound\"",
                "protocol=\"tcp\"",
                "target=\"passthrough\""
            ]
        )
        .is_some_and(|v| v >= 2.0),
        "{m}"
    );

    // 4. TCP to a TCP ServiceEntry's address: Pilot's tcp_proxy for the port, to the endpoint's
    //    own port.
    let tcp_vip: SocketAddr = format!("{TCP_VIP}:{TCP_VIP_PORT}").parse().unwrap();
    assert_eq!(bed.pod.run(move || echo(tcp_vip, msg)).unwrap(), msg);
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "proxy_capture_connections_total",
            &[
                "direction=\"outbound\"",
                "protocol=\"declared\"",
                "target=\"tcp_proxy\""
            ]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    let opened = poll(
        "istio_tcp_connections_opened_total",
        Duration::from_secs(20),
        || {
            sample(
                &bed.metrics(),
                "istio_tcp_connections_opened_total",
                &[
                    "reporter=\"source\"",
                    &format!("destination_service=\"{TCP_HOST}\""),
                ],
            )
            .ok_or_else(|| "no sample yet".to_string())
        },
    );
    assert!(opened >= 1.0);

    // 5. The pod calling its own Service (mesh-internal: mTLS): out through 15001, then the
    //    proxy's own connection to the pod's IP comes back through 15006 to the app.
    let any_vip: SocketAddr = format!("10.77.1.30:{APP_PORT}").parse().unwrap();
    let r = bed
        .pod
        .run(move || http_get(any_vip, "details:9080", "/details/1", &[]));
    let r = r.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"service\":\"details\""), "{r:?}");
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-details\"",
                "destination_service=\"details.default.svc.cluster.local\"",
                "connection_security_policy=\"mutual_tls\"",
            ]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );

    // 6. Outbound passthrough keeps the bytes and the half-close: 1 MB written, the write side
    //    shut, everything echoed back and then the end of stream; a TLS handshake record
    //    (sniffed as TLS) is passed through too.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let back = bed.pod.run(move || -> Result<Vec<u8>, String> {
        let mut s =
            TcpStream::connect_timeout(&tcp, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        let writer = std::thread::spawn(move || {
            w.write_all(&sent)?;
            w.shutdown(std::net::Shutdown::Write)
        });
        let mut back = Vec::new();
        let read = s.read_to_end(&mut back);
        writer.join().unwrap().map_err(|e| e.to_string())?;
        read.map_err(|e| format!("after {} bytes: {e}", back.len()))?;
        Ok(back)
    });
    assert!(back.unwrap() == big, "1 MB echoed, then the end of stream");
    let hello = b"\x16\x03\x01\x00\x05hello";
    assert_eq!(bed.pod.run(move || echo(tcp, hello)).unwrap(), hello);
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "proxy_capture_connections_total",
            &[
                "direction=\"outbound\"",
                "protocol=\"tls\"",
                "target=\"passthrough\""
            ]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );

    // 7. Inbound TCP that is not HTTP (the pod's own TCP servers on loopback): client first
    //    and server first, from the peer to the pod's IP, through 15006 as plaintext TCP.
    for (port, greeting) in [(POD_TCP_PORT, &b""[..]), (POD_GREETER_PORT, GREETING)] {
        let l = listen_in(&bed.pod, &format!("127.0.0.1:{port}"));
        rt.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if s.write_all(greeting).await.is_ok() {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
            }
        });
    }
    let to_pod: SocketAddr = format!("{POD_IP}:{POD_TCP_PORT}").parse().unwrap();
    assert_eq!(bed.peer.run(move || echo(to_pod, msg)).unwrap(), msg);
    let to_pod: SocketAddr = format!("{POD_IP}:{POD_GREETER_PORT}").parse().unwrap();
    assert_eq!(bed.peer.run(move || echo(to_pod, b"")).unwrap(), GREETING);
    let m = bed.metrics();
    assert!(
        sample(
            &m,
            "proxy_capture_connections_total",
            &[
                "direction=\"inbound\"",
                "protocol=\"tcp\"",
                "target=\"inbound\""
            ]
        )
        .is_some_and(|v| v >= 2.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "istio_tcp_connections_opened_total",
            &[
                "reporter=\"destination\"",
                "connection_security_policy=\"none\""
            ]
        )
        .is_some_and(|v| v >= 2.0),
        "{m}"
    );

    drop(bed);
    rt.shutdown_timeout(Duration::from_secs(2));
}
