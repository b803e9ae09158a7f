//! Workload identity against the real `citadel` binary, with `mesh-identity` as the workload
//! library: expired and foreign certificates refused by a mesh TLS server, certificate rotation
//! under an open connection (renewal over Citadel's TLS listener by the current certificate),
//! identity from the token and never from the CSR, and root rotation (two roots trusted).
//!
//! Build first: `cargo build -p citadel --bins` (and this package's `bookinfo`, which
//! `cargo nextest run -p e2e --test identity` builds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::{IdentityConfig, RenewalConfig, SpiffeId, WorkloadIdentity, peer_identity};
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const HOUR: Duration = Duration::from_secs(3600);

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `citadel` process, killed on drop.
struct Citadel {
    child: Child,
    state: PathBuf,
    grpc: SocketAddr,
    tls: SocketAddr,
    log: PathBuf,
}

impl Citadel {
    async fn start(state: &Path) -> Citadel {
        std::fs::create_dir_all(state).unwrap();
        let (grpc, tls, monitoring) = (free_addr(), free_addr(), free_addr());
        let log = state.join("citadel.log");
        let child = Command::new(common::bin("citadel"))
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--tls-addr")
            .arg(tls.to_string())
            .arg("--monitoring-addr")
            .arg(monitoring.to_string())
            .arg("--state-dir")
            .arg(state)
            .args(["--default-ttl", "1h", "--max-ttl", "2h"])
            .env("MESH_EXIT_WITH_PARENT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let c = Citadel {
            child,
            state: state.to_path_buf(),
            grpc,
            tls,
            log,
        };
        let http = common::http();
        let url = format!("http://{monitoring}/readyz");
        common::poll("citadel ready", Duration::from_secs(30), || {
            let http = http.clone();
            let url = url.clone();
            let log = c.log.clone();
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(format!(
                        "{other:?}; log: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    )),
                }
            }
        })
        .await;
        c
    }

    fn token(&self, sa: &str, ttl: Duration) -> String {
        citadel::token::issue(&self.state, "default", sa, ttl).unwrap()
    }

    fn config(&self, token: String, ttl: Duration) -> IdentityConfig {
        IdentityConfig {
            citadel_addr: format!("http://{}", self.grpc),
            token,
            ttl,
            trust_domain: "cluster.local".into(),
        }
    }

    /// A workload of service account `sa` renewing over the TLS listener.
    async fn workload(&self, sa: &str, ttl: Duration) -> WorkloadIdentity {
        WorkloadIdentity::start_with(self.config(self.token(sa, HOUR), ttl), self.renewal())
            .await
            .unwrap()
    }

    fn renewal(&self) -> RenewalConfig {
        RenewalConfig {
            tls_addr: Some(self.tls.to_string()),
            ..RenewalConfig::default()
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Citadel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

/// A mesh TLS server built from `identity` (a fresh `server_config()` per connection, as the
/// proxy does): answers each line with `<peer spiffe id>:<line>`. Reports each handshake: the
/// peer's id, or the error.
async fn mesh_server(
    identity: WorkloadIdentity,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let peer = peer_identity(tls.get_ref().1)
                    .map(|id| id.to_string())
                    .unwrap_or_default();
                let _ = tx.send(Ok(peer.clone()));
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{peer}:{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

type Conn = BufReader<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects with `config` and exchanges one line (so a refused client certificate, which TLS
/// 1.3 reports after the handshake, surfaces here too).
async fn connect(config: Arc<ClientConfig>, addr: SocketAddr) -> Result<Conn, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("reviews.default.svc.cluster.local").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut conn = BufReader::new(tls);
    exchange(&mut conn, "hello").await?;
    Ok(conn)
}

async fn exchange(conn: &mut Conn, line: &str) -> Result<String, String> {
    conn.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut answer))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(answer.trim_end().to_string())
}

fn server_leaf(conn: &Conn) -> CertificateDer<'static> {
    conn.get_ref().get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn next_handshake(
    rx: &mut mpsc::UnboundedReceiver<Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the server saw the handshake")
        .expect("server running")
}

fn is_refusal(err: &str) -> bool {
    [
        "UnknownIssuer",
        "BadSignature",
        "Expired",
        "expired",
        "CertificateRequired",
        "certificate",
    ]
    .iter()
    .any(|w| err.contains(w))
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let citadel = Citadel::start(&dir.path().join("citadel")).await;
    let server = citadel.workload("reviews", HOUR).await;
    let (addr, mut seen) = mesh_server(server.clone()).await;

    // A 2-second certificate; its client configuration keeps it while renewal moves on.
    let short = citadel
        .workload("productpage", Duration::from_secs(2))
        .await;
    let old_config = short.client_config(&[spiffe("reviews")]);
    let not_after = short.cert_not_after();
    let mut conn = connect(old_config.clone(), addr).await.unwrap();
    assert_eq!(
        next_handshake(&mut seen).await.unwrap(),
        spiffe("productpage")
    );
    assert_eq!(
        exchange(&mut conn, "x").await.unwrap(),
        format!("{}:x", spiffe("productpage"))
    );

    common::poll(
        "the short certificate to expire",
        Duration::from_secs(20),
        || async {
            if SystemTime::now() > not_after + Duration::from_secs(1) {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    let err = connect(old_config, addr)
        .await
        .expect_err("an expired certificate is refused");
    let server_err = next_handshake(&mut seen).await.unwrap_err();
    assert!(
        server_err.to_lowercase().contains("expired"),
        "server: {server_err}; client: {err}"
    );

    // The renewed certificate is accepted.
    common::poll("a renewal", Duration::from_secs(20), || async {
        if short.renewals() > 0 {
            Ok(())
        } else {
            Err(format!("{:?}", short.last_renewal_error()))
        }
    })
    .await;
    connect(short.client_config(&[spiffe("reviews")]), addr)
        .await
        .unwrap();
    assert_eq!(
        next_handshake(&mut seen).await.unwrap(),
        spiffe("productpage")
    );
}

#[tokio::test]
async fn a_certificate_from_a_foreign_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let citadel = Citadel::start(&dir.path().join("mesh")).await;
    // The intruder's Citadel has its own root and also trusts the mesh's (public) root, so its
    // workloads accept mesh servers: the refusal below is the mesh server's.
    let foreign_dir = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign_dir).unwrap();
    std::fs::copy(
        dir.path().join("mesh/ca-cert.pem"),
        foreign_dir.join("extra-roots.pem"),
    )
    .unwrap();
    let foreign = Citadel::start(&foreign_dir).await;
    let server = citadel.workload("reviews", HOUR).await;
    let client = citadel.workload("productpage", HOUR).await;
    let intruder = foreign.workload("productpage", HOUR).await;
    let (addr, mut seen) = mesh_server(server.clone()).await;

    // Same service account, same trust domain, other root: refused by the server.
    let err = connect(intruder.client_config(&[spiffe("reviews")]), addr)
        .await
        .expect_err("foreign client refused");
    let server_err = next_handshake(&mut seen).await.unwrap_err();
    assert!(
        is_refusal(&server_err),
        "server: {server_err}; client: {err}"
    );

    // And a server from the foreign root is refused by a mesh client.
    let (foreign_addr, _) = mesh_server(foreign.workload("reviews", HOUR).await).await;
    let err = connect(client.client_config(&[spiffe("reviews")]), foreign_addr)
        .await
        .expect_err("foreign server refused");
    assert!(is_refusal(&err), "{err}");

    // The mesh's own client is accepted.
    connect(client.client_config(&[spiffe("reviews")]), addr)
        .await
        .unwrap();
    assert_eq!(
        next_handshake(&mut seen).await.unwrap(),
        spiffe("productpage")
    );
}

#[tokio::test]
async fn rotation_keeps_open_connections_and_new_ones_use_the_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let citadel = Citadel::start(&dir.path().join("citadel")).await;
    // The server's token lives 2 seconds: every renewal after that can only be by its
    // certificate, over Citadel's TLS listener.
    let token_issued = SystemTime::now();
    let server = WorkloadIdentity::start_with(
        citadel.config(citadel.token("reviews", Duration::from_secs(2)), HOUR),
        citadel.renewal(),
    )
    .await
    .unwrap();
    let client = citadel.workload("productpage", HOUR).await;
    let (addr, mut seen) = mesh_server(server.clone()).await;

    let mut old = connect(client.client_config(&[spiffe("reviews")]), addr)
        .await
        .unwrap();
    next_handshake(&mut seen).await.unwrap();
    let first_leaf = server_leaf(&old);
    assert_eq!(first_leaf, server.cert_chain()[0]);

    common::poll(
        "the server's token to expire",
        Duration::from_secs(20),
        || async {
            if SystemTime::now() > token_issued + Duration::from_secs(4) {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    let mut rotations = server.rotations();
    rotations.mark_unchanged();
    server.renew_now().await.unwrap();
    assert!(rotations.has_changed().unwrap());
    assert_eq!(server.renewals(), 1);
    assert_eq!(server.spiffe_id().to_string(), spiffe("reviews"));
    let second_leaf = server.cert_chain()[0].clone();
    assert_ne!(second_leaf, first_leaf);
    // Citadel says how it authenticated the renewal (its log may carry colour codes).
    let log = citadel.log();
    assert!(
        log.lines().any(|l| l.contains("certificate issued")
            && l.contains("sa/reviews")
            && l.contains("mtls")),
        "renewal by certificate: {log}"
    );

    // The open connection keeps working on the old certificate.
    assert_eq!(
        exchange(&mut old, "still there").await.unwrap(),
        format!("{}:still there", spiffe("productpage"))
    );
    // A new connection gets the new certificate.
    let new = connect(client.client_config(&[spiffe("reviews")]), addr)
        .await
        .unwrap();
    next_handshake(&mut seen).await.unwrap();
    assert_eq!(server_leaf(&new), second_leaf);
    assert_eq!(server_leaf(&old), first_leaf);

    // Without the TLS listener the expired token cannot renew: the certificate is kept and the
    // failure exposed.
    let token_only = WorkloadIdentity::start(
        citadel.config(citadel.token("ratings", Duration::from_secs(1)), HOUR),
    )
    .await
    .unwrap();
    let issued = SystemTime::now();
    common::poll("the token to expire", Duration::from_secs(20), || async {
        if SystemTime::now() > issued + Duration::from_secs(2) {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    let kept = token_only.cert_chain()[0].clone();
    let err = token_only.renew_now().await.unwrap_err().to_string();
    assert!(err.contains("Unauthenticated"), "{err}");
    assert_eq!(token_only.cert_chain()[0], kept);
    assert!(token_only.consecutive_renewal_failures() > 0);
    assert!(token_only.last_renewal_error().unwrap().contains("expired"));
    assert!(token_only.seconds_to_expiry() > 3000.0);
}

#[tokio::test]
async fn the_identity_is_the_tokens_never_the_csrs() {
    let dir = tempfile::tempdir().unwrap();
    let citadel = Citadel::start(&dir.path().join("citadel")).await;
    // A workload holding the ratings token asks for a certificate naming reviews.
    let wanted = SpiffeId::new("cluster.local", "default", "reviews").unwrap();
    let key = mesh_identity::csr::generate(Some(&wanted)).unwrap();
    let mut client = IstioCertificateServiceClient::connect(format!("http://{}", citadel.grpc))
        .await
        .unwrap();
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: key.csr_pem.clone(),
        validity_duration: 3600,
        metadata: None,
    });
    let token = citadel.token("ratings", HOUR);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let chain = client
        .create_certificate(request)
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let mut pem = chain[0].as_bytes();
    let leaf = pem_first(&mut pem);
    assert_eq!(mesh_identity::uri_sans(&leaf), vec![spiffe("ratings")]);

    // The same through mesh-identity: the workload is who its token says.
    let id = WorkloadIdentity::start(citadel.config(token, HOUR))
        .await
        .unwrap();
    assert_eq!(id.spiffe_id().to_string(), spiffe("ratings"));
}

fn pem_first(pem: &mut &[u8]) -> CertificateDer<'static> {
    // One PEM certificate: the base64 between the armour lines.
    let text = std::str::from_utf8(pem).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    CertificateDer::from(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

/// A self-signed P-256 root with a distinct name: (certificate PEM, key PEM).
fn root(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[tokio::test]
async fn root_rotation_trusts_peers_of_either_root() {
    let dir = tempfile::tempdir().unwrap();
    let (old_cert, old_key) = root("old root");
    let (new_cert, new_key) = root("new root");
    // Two Citadels in the middle of a rotation: one still signing with the old root, one
    // with the new; each serves both roots.
    let write = |name: &str, cert: &str, key: &str, extra: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca-cert.pem"), cert).unwrap();
        std::fs::write(d.join("ca-key.pem"), key).unwrap();
        std::fs::write(d.join("extra-roots.pem"), extra).unwrap();
        d
    };
    let old = Citadel::start(&write("old", &old_cert, &old_key, &new_cert)).await;
    let new = Citadel::start(&write("new", &new_cert, &new_key, &old_cert)).await;

    let old_server = old.workload("reviews", HOUR).await;
    let new_server = new.workload("reviews", HOUR).await;
    let old_client = old.workload("productpage", HOUR).await;
    let new_client = new.workload("productpage", HOUR).await;
    for w in [&old_server, &new_server, &old_client, &new_client] {
        assert_eq!(w.trust_bundle().len(), 2, "both roots trusted");
    }
    assert_ne!(old_server.root_cert(), new_server.root_cert());

    for server in [&old_server, &new_server] {
        let (addr, mut seen) = mesh_server(server.clone()).await;
        for client in [&old_client, &new_client] {
            let mut conn = connect(client.client_config(&[spiffe("reviews")]), addr)
                .await
                .unwrap();
            assert_eq!(
                next_handshake(&mut seen).await.unwrap(),
                spiffe("productpage")
            );
            assert_eq!(
                exchange(&mut conn, "rotated").await.unwrap(),
                format!("{}:rotated", spiffe("productpage"))
            );
        }
    }

    // Renewal over TLS works with either root in place (Citadel's server certificate chains
    // to its signing root, in the workload's bundle).
    new_client.renew_now().await.unwrap();
    assert_eq!(new_client.trust_bundle().len(), 2);

    // A third root nobody trusts is still refused.
    let stranger = Citadel::start(&dir.path().join("stranger")).await;
    let intruder = stranger.workload("productpage", HOUR).await;
    let (addr, mut seen) = mesh_server(new_server.clone()).await;
    assert!(
        connect(intruder.client_config(&[spiffe("reviews")]), addr)
            .await
            .is_err()
    );
    assert!(next_handshake(&mut seen).await.is_err());
}
