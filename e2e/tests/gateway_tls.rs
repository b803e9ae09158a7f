//! HTTPS on the ingress gateway end to end: `meshctl up --demo`, a Gateway with an HTTPS
//! server on port 443 (SIMPLE with certificate files made here, then MUTUAL) and a
//! VirtualService binding productpage to it; requests over TLS with the server name set.
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

    // credentialName: the ingress reads STATE/gateway-credentials/<name>/tls.{crt,key}.
    let cred = mesh.state_dir().join("gateway-credentials/secure-cred");
    std::fs::create_dir_all(&cred).unwrap();
    let (c, k) = ca.leaf(SECURE);
    std::fs::write(cred.join("tls.crt"), c).unwrap();
    std::fs::write(cred.join("tls.key"), k).unwrap();
    apply(&mesh, dir.path(), "cred.yaml", &credential_yaml());
    poll(
        "secure host by credentialName",
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
