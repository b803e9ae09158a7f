//! Protocols end to end on one `meshctl up --demo` (build the binaries first:
//! `cargo build -p galley -p pilot -p citadel -p mixer -p mesh-proxy -p meshctl -p e2e --bins`):
//! a TCP Service (port name `tcp-echo`) gets Pilot's `tcp_proxy` listener on a client sidecar,
//! bytes cross the mesh over mTLS to a server sidecar in front of a TCP echo application, and
//! both sidecars count Istio's TCP metrics.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Mesh, bin, http, poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TCP_PORT: u16 = 9000;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An application echoing every byte until the client closes.
async fn echo_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Starts a sidecar for `pod` (service account `sa`) with `extra` flags.
fn sidecar(mesh: &Mesh, pod: &str, sa: &str, app: &str, extra: &[String]) -> (Proc, SocketAddr) {
    let state = mesh.state_dir();
    let token = citadel::token::issue(
        &state.join("citadel"),
        "default",
        sa,
        Duration::from_secs(3600),
    )
    .unwrap();
    let token_file = state.join(format!("{pod}.jwt"));
    std::fs::write(&token_file, token).unwrap();
    let admin = free_addr();
    let log = std::fs::File::create(state.join(format!("{pod}-proxy.test.log"))).unwrap();
    let child = Command::new(bin("mesh-proxy"))
        .args(["--type", "sidecar", "--pod", pod, "--namespace", "default"])
        .args(["--service-account", sa, "--labels", &format!("app={app}")])
        .args(["--xds-addr", mesh.info["pilot"]["xds"].as_str().unwrap()])
        .args([
            "--citadel-addr",
            mesh.info["citadel"]["grpc"].as_str().unwrap(),
        ])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--outbound-addr", &free_addr().to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (Proc(child), admin)
}

async fn metrics(admin: SocketAddr) -> String {
    match http()
        .get(format!("http://{admin}/stats/prometheus"))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Writes `msg` through the TCP listener and reads it back.
async fn echo_through(addr: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, String> {
    let mut c = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    c.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut back))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_service_is_proxied_over_mtls_with_istio_tcp_metrics() {
    let mesh = Mesh::start_demo();
    let app = echo_app().await;
    let inbound = free_addr();
    let tcp_listen = free_addr();
    let yaml = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: tcp-echo, port: {TCP_PORT}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: echo, namespace: default}}
subsets:
- addresses: [{{ip: 127.0.0.1, targetRef: {{kind: Pod, name: echo-v1, namespace: default}}}}]
  ports: [{{name: tcp-echo, port: {}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-v1, namespace: default, labels: {{app: echo}}}}
spec: {{serviceAccountName: echo}}
"#,
        inbound.port()
    );
    let file = mesh.state_dir().join("echo.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = mesh.meshctl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_server, server_admin) = sidecar(
        &mesh,
        "echo-v1",
        "echo",
        "echo",
        &[
            "--inbound-addr".into(),
            inbound.to_string(),
            "--app-addr".into(),
            app.to_string(),
        ],
    );
    let (_client, client_admin) = sidecar(
        &mesh,
        "tcp-client",
        "tcp-client",
        "tcp-client",
        &[
            "--inbound-addr".into(),
            free_addr().to_string(),
            "--tcp-listen".into(),
            format!("{TCP_PORT}={tcp_listen}"),
        ],
    );
    // Config reaches the client sidecar, certificates are held: bytes echo back.
    let back = poll("tcp echo through the mesh", Duration::from_secs(60), || {
        echo_through(tcp_listen, b"hello over tcp")
    })
    .await;
    assert_eq!(back, b"hello over tcp");

    let service = "destination_service=\"echo.default.svc.cluster.local\"";
    let client_line = poll("source tcp metrics", Duration::from_secs(20), || async {
        metrics(client_admin)
            .await
            .lines()
            .find(|l| {
                l.starts_with("istio_tcp_received_bytes_total{")
                    && l.contains("reporter=\"source\"")
                    && l.contains(service)
                    && l.contains(
                        "destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\"",
                    )
                    && !l.ends_with(" 0")
            })
            .map(str::to_string)
            .ok_or_else(|| "no line yet".to_string())
    })
    .await;
    assert!(
        client_line.contains("request_protocol=\"tcp\""),
        "{client_line}"
    );
    let server_line = poll(
        "destination tcp metrics",
        Duration::from_secs(20),
        || async {
            metrics(server_admin)
                .await
                .lines()
                .find(|l| {
                    l.starts_with("istio_tcp_connections_opened_total{")
                        && l.contains("reporter=\"destination\"")
                        && l.contains(service)
                        && l.contains(
                            "source_principal=\"spiffe://cluster.local/ns/default/sa/tcp-client\"",
                        )
                        && l.contains("connection_security_policy=\"mutual_tls\"")
                })
                .map(str::to_string)
                .ok_or_else(|| "no line yet".to_string())
        },
    )
    .await;
    assert!(
        server_line.contains("destination_workload=\"echo-v1\""),
        "{server_line}"
    );
}
