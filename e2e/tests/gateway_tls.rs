//! HTTPS on the ingress gateway end to end: `meshctl up --demo`, a Gateway with an HTTPS
//! server on port 443 (SIMPLE with certificate files made here, then MUTUAL) and a
//! VirtualService binding productpage to it; requests over TLS with the server name set. A
//! `credentialName` certificate comes over SDS from pilot (`STATE/credentials`), and its
//! rotation on disk reaches new connections without a restart.
//! (Build the binaries first: `cargo build -p meshctl -p galley -p pilot -p citadel -p mixer
//! -p mesh-proxy -p e2e --bins`.)

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Mesh, http, poll};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const HOST: &str = "bookinfo.example.com";
const SECURE: &str = "secure.example.com";

/// A CA, and certificates it signs.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// (certificate PEM, key PEM) for DNS `name`.
    fn leaf(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&self.pem) {
            roots.add(c).unwrap();
        }
        roots
    }
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

fn key_der(pem: &str) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// GET https://SNI:port/productpage over TLS to `addr` with server name `sni`, ALPN `alpn`,
/// and the client certificate when given: Ok((status, negotiated ALPN)), or why it failed.
async fn get(
    addr: SocketAddr,
    sni: &str,
    roots: rustls::RootCertStore,
    alpn: &str,
    client_cert: Option<&(String, String)>,
) -> Result<(u16, String), String> {
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client_cert {
        Some((c, k)) => b.with_client_auth_cert(pem_certs(c), key_der(k)).unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    let negotiated = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).to_string())
        .unwrap_or_default();
    let io = TokioIo::new(tls);
    let authority = format!("{sni}:{}", addr.port());
    let status = if negotiated == "h2" {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{authority}/productpage"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        status
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("http/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::get("/productpage")
            .header("host", &authority)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        status
    };
    Ok((status, negotiated))
}

fn gateway_yaml(dir: &Path, mode: &str) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    let ca = if mode == "MUTUAL" {
        format!("\n      caCertificates: {}", p("ca.crt"))
    } else {
        String::new()
    };
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: bookinfo-https
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls:
      mode: {mode}
      serverCertificate: {cert}
      privateKey: {key}{ca}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [{HOST}]
    tls:
      httpsRedirect: true
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: bookinfo-https
  namespace: default
spec:
  hosts: [{HOST}]
  gateways: [bookinfo-https]
  http:
  - match:
    - uri: {{exact: /productpage}}
    route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
",
        cert = p("tls.crt"),
        key = p("tls.key"),
    )
}

/// A second HTTPS server on 443 whose certificate comes from `credentialName`.
fn credential_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: secure-https
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: 443, name: https-secure, protocol: HTTPS}}
    hosts: [{SECURE}]
    tls:
      mode: SIMPLE
      credentialName: secure-cred
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: secure-https
  namespace: default
spec:
  hosts: [{SECURE}]
  gateways: [secure-https]
  http:
  - route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
"
    )
}

fn apply(mesh: &Mesh, dir: &Path, name: &str, yaml: &str) {
    let f = dir.join(name);
    std::fs::write(&f, yaml).unwrap();
    let out = mesh.meshctl(&["apply", "-f", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply {name}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gateway_simple_mutual_and_redirect() {
    let mesh = Mesh::start_demo();
    let https: SocketAddr = mesh.info["ingress_https"]
        .as_str()
        .expect("mesh.json has ingress_https")
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(HOST);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();

    // SIMPLE: 200 with the right name, over HTTP/1.1 and HTTP/2.
    apply(
        &mesh,
        dir.path(),
        "simple.yaml",
        &gateway_yaml(dir.path(), "SIMPLE"),
    );
    let (status, alpn) = poll("productpage over https", Duration::from_secs(120), || {
        let roots = ca.roots();
        async move {
            match get(https, HOST, roots, "http/1.1", None).await? {
                (200, alpn) => Ok((200, alpn)),
                (s, _) => Err(format!("status {s}")),
            }
        }
    })
    .await;
    assert_eq!((status, alpn.as_str()), (200, "http/1.1"));
    let h2 = get(https, HOST, ca.roots(), "h2", None).await.unwrap();
    assert_eq!(h2, (200, "h2".to_string()));
    // A name no server has: the handshake is refused.
    let wrong = get(https, "wrong.example.com", ca.roots(), "http/1.1", None).await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.starts_with("handshake")),
        "{wrong:?}"
    );

    // httpsRedirect on port 80 for the same host: 301 to https; other hosts still served.
    let plain = mesh.ingress();
    let resp = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{plain}/productpage"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("https://{HOST}")) && location.ends_with("/productpage"),
        "{location}"
    );
    let other = http()
        .get(format!("{plain}/productpage"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "the demo's own host is not redirected");

    // credentialName over SDS: pilot reads STATE/credentials/<namespace>/<name>/ (the
    // ingress runs in istio-system) and serves the secret to the ingress over ADS; the
    // ingress' own file fallback (STATE/gateway-credentials) does not have it.
    let cred = mesh
        .state_dir()
        .join("credentials/istio-system/secure-cred");
    std::fs::create_dir_all(&cred).unwrap();
    let (c, k) = ca.leaf(SECURE);
    std::fs::write(cred.join("tls.crt"), c).unwrap();
    std::fs::write(cred.join("tls.key"), k).unwrap();
    assert!(
        !mesh
            .state_dir()
            .join("gateway-credentials/secure-cred")
            .exists()
    );
    apply(&mesh, dir.path(), "cred.yaml", &credential_yaml());
    poll(
        "secure host by credentialName over SDS",
        Duration::from_secs(60),
        || {
            let roots = ca.roots();
            async move {
                match get(https, SECURE, roots, "http/1.1", None).await? {
                    (200, _) => Ok(()),
                    (s, _) => Err(format!("status {s}")),
                }
            }
        },
    )
    .await;

    // Rotation on disk: a certificate from another CA; pilot pushes it and new connections
    // get it, without restarting anything.
    let rotated_ca = TestCa::new();
    let (c, k) = rotated_ca.leaf(SECURE);
    std::fs::write(cred.join("tls.key"), k).unwrap();
    std::fs::write(cred.join("tls.crt"), c).unwrap();
    poll(
        "the rotated certificate on new connections",
        Duration::from_secs(60),
        || {
            let roots = rotated_ca.roots();
            async move {
                match get(https, SECURE, roots, "http/1.1", None).await? {
                    (200, _) => Ok(()),
                    (s, _) => Err(format!("status {s}")),
                }
            }
        },
    )
    .await;
    let old = get(https, SECURE, ca.roots(), "http/1.1", None).await;
    assert!(
        old.is_err(),
        "the old certificate is no longer served: {old:?}"
    );
    // Back to the first CA for the MUTUAL part below (its client trusts `ca`).
    let (c, k) = ca.leaf(SECURE);
    std::fs::write(cred.join("tls.key"), k).unwrap();
    std::fs::write(cred.join("tls.crt"), c).unwrap();
    poll(
        "the first CA's certificate again",
        Duration::from_secs(60),
        || {
            let roots = ca.roots();
            async move {
                match get(https, SECURE, roots, "http/1.1", None).await? {
                    (200, _) => Ok(()),
                    (s, _) => Err(format!("status {s}")),
                }
            }
        },
    )
    .await;

    // MUTUAL: without a client certificate refused, with one from the CA 200.
    apply(
        &mesh,
        dir.path(),
        "mutual.yaml",
        &gateway_yaml(dir.path(), "MUTUAL"),
    );
    let refused = poll(
        "MUTUAL to refuse a client without a certificate",
        Duration::from_secs(60),
        || {
            let roots = ca.roots();
            async move {
                match get(https, HOST, roots, "http/1.1", None).await {
                    Err(e) => Ok(e),
                    Ok(r) => Err(format!("still answered: {r:?}")),
                }
            }
        },
    )
    .await;
    assert!(!refused.is_empty());
    let client = ca.leaf("client.example.com");
    let with_cert = get(https, HOST, ca.roots(), "http/1.1", Some(&client)).await;
    assert_eq!(with_cert, Ok((200, "http/1.1".to_string())));
    let other_ca = TestCa::new();
    let foreign = other_ca.leaf("client.example.com");
    let bad = get(https, HOST, ca.roots(), "http/1.1", Some(&foreign)).await;
    assert!(bad.is_err(), "a certificate from another CA: {bad:?}");
    // The SIMPLE server on the same port still needs no client certificate.
    let simple = get(https, SECURE, ca.roots(), "http/1.1", None).await;
    assert_eq!(simple, Ok((200, "http/1.1".to_string())));
}

/// A TCP echo server on loopback (the upstream of the `protocol: TLS` server).
async fn tcp_echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

const TCP_HOST: &str = "tcp.example.com";

/// A `protocol: TLS` server on 443 terminating TLS (`mode`), and a VirtualService `tcp` route
/// to a ServiceEntry whose one endpoint is the test's echo server at `echo`.
fn tls_tcp_yaml(dir: &Path, mode: &str, echo: SocketAddr) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    let ca = if mode == "MUTUAL" {
        format!("\n      caCertificates: {}", p("ca.crt"))
    } else {
        String::new()
    };
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: tls-tcp
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: 443, name: tls-echo, protocol: TLS}}
    hosts: [{TCP_HOST}]
    tls:
      mode: {mode}
      serverCertificate: {cert}
      privateKey: {key}{ca}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: [tcp-echo.gateway.test]
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {echo_port}}}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tls-tcp
  namespace: default
spec:
  hosts: [{TCP_HOST}]
  gateways: [tls-tcp]
  tcp:
  - match:
    - port: 443
    route:
    - destination: {{host: tcp-echo.gateway.test, port: {{number: 7000}}}}
",
        cert = p("tls.crt"),
        key = p("tls.key"),
        echo_port = echo.port(),
    )
}

/// Writes `msg` over TLS (server name `sni`, no ALPN) to `addr` and reads as many bytes back.
async fn tls_echo(
    addr: SocketAddr,
    sni: &str,
    roots: rustls::RootCertStore,
    client_cert: Option<&(String, String)>,
    msg: &[u8],
) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client_cert {
        Some((c, k)) => b.with_client_auth_cert(pem_certs(c), key_der(k)).unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(msg)
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_gateway_terminates_and_forwards_tcp_simple_then_mutual() {
    let mesh = Mesh::start_demo();
    let https: SocketAddr = mesh.info["ingress_https"]
        .as_str()
        .expect("mesh.json has ingress_https")
        .parse()
        .unwrap();
    let echo = tcp_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(TCP_HOST);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();

    // SIMPLE: the gateway terminates TLS; the plaintext reaches the echo server and the
    // answer comes back over the same TLS connection.
    apply(
        &mesh,
        dir.path(),
        "tls-simple.yaml",
        &tls_tcp_yaml(dir.path(), "SIMPLE", echo),
    );
    let back = poll(
        "tcp echo through the TLS gateway",
        Duration::from_secs(120),
        || {
            let roots = ca.roots();
            async move { tls_echo(https, TCP_HOST, roots, None, b"hello through tls").await }
        },
    )
    .await;
    assert_eq!(back, b"hello through tls");
    let wrong = tls_echo(https, "wrong.example.com", ca.roots(), None, b"x").await;
    assert!(wrong.is_err(), "a name no server has: {wrong:?}");

    // The ingress counts it as a TCP connection to the ServiceEntry host, in the
    // ServiceEntry's namespace.
    let admin = mesh.proxy("istio-ingressgateway")["admin"]
        .as_str()
        .expect("the ingress has an admin address")
        .to_string();
    {
        poll("ingress tcp metrics", Duration::from_secs(20), || {
            let admin = admin.clone();
            async move {
                let text = http()
                    .get(format!("{admin}/stats/prometheus"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                text.lines()
                    .find(|l| {
                        l.starts_with("istio_tcp_connections_opened_total{")
                            && l.contains("destination_service=\"tcp-echo.gateway.test\"")
                            // Pilot's cluster metadata: the ServiceEntry's own namespace,
                            // not "gateway" from the host name.
                            && l.contains("destination_service_name=\"tcp-echo.gateway.test\"")
                            && l.contains("destination_service_namespace=\"default\"")
                    })
                    .map(str::to_string)
                    .ok_or_else(|| "no istio_tcp_connections_opened_total line".to_string())
            }
        })
        .await;
    }

    // MUTUAL: a client without a certificate is refused; one from the CA gets through.
    apply(
        &mesh,
        dir.path(),
        "tls-mutual.yaml",
        &tls_tcp_yaml(dir.path(), "MUTUAL", echo),
    );
    let refused = poll(
        "MUTUAL to refuse a client without a certificate",
        Duration::from_secs(60),
        || {
            let roots = ca.roots();
            async move {
                match tls_echo(https, TCP_HOST, roots, None, b"no cert").await {
                    Err(e) => Ok(e),
                    Ok(b) => Err(format!("still echoed {b:?}")),
                }
            }
        },
    )
    .await;
    assert!(!refused.is_empty());
    let client = ca.leaf("client.example.com");
    let back = tls_echo(https, TCP_HOST, ca.roots(), Some(&client), b"with a cert")
        .await
        .unwrap();
    assert_eq!(back, b"with a cert");
}
