//! Citadel's gRPC service in process with real `mesh-identity` workloads: issuance, refusal,
//! rotation, and mutual TLS between two workloads over loopback.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel::{Citadel, Config, TtlPolicy};
use mesh_identity::{IdentityConfig, SpiffeId, WorkloadIdentity, peer_identity};
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const HOUR: Duration = Duration::from_secs(3600);

struct Running {
    grpc: SocketAddr,
    monitoring: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), citadel::RunError>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }

    fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

async fn start_citadel(state: &Path, grpc: SocketAddr) -> Running {
    let citadel = Citadel::bind(Config::local(
        grpc,
        "127.0.0.1:0".parse().unwrap(),
        state.to_path_buf(),
        TtlPolicy {
            default: HOUR,
            max: 2 * HOUR,
        },
    ))
    .await
    .unwrap();
    let grpc = citadel.grpc_addr().unwrap();
    let monitoring = citadel.monitoring_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(citadel.serve(async {
        let _ = rx.await;
    }));
    Running {
        grpc,
        monitoring,
        stop: Some(tx),
        task,
    }
}

async fn identity(citadel: &str, state: &Path, sa: &str, ttl: Duration) -> WorkloadIdentity {
    let token = citadel::token::issue(state, "default", sa, HOUR).unwrap();
    WorkloadIdentity::start(IdentityConfig {
        citadel_addr: citadel.to_string(),
        token,
        ttl,
        trust_domain: "cluster.local".into(),
    })
    .await
    .unwrap()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// One TLS exchange: returns what each side saw of the other (or the error text).
async fn mtls(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (
    Result<Option<SpiffeId>, String>,
    Result<Option<SpiffeId>, String>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let seen = peer_identity(tls.get_ref().1);
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(seen)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("reviews.default.svc.cluster.local").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let seen = peer_identity(tls.get_ref().1);
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok(seen)
    }
    .await;
    (accept.await.unwrap(), client)
}

async fn poll_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_workloads_complete_mutual_tls_with_citadel_certificates() {
    let state = tempfile::tempdir().unwrap();
    let citadel = start_citadel(state.path(), "127.0.0.1:0".parse().unwrap()).await;
    let reviews = identity(&citadel.url(), state.path(), "reviews", HOUR).await;
    let productpage = identity(&citadel.url(), state.path(), "productpage", HOUR).await;
    assert_eq!(
        reviews.spiffe_id().to_string(),
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    let remaining = reviews
        .cert_not_after()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(remaining > HOUR - Duration::from_secs(10) && remaining <= HOUR);

    let expected = [reviews.spiffe_id().to_string()];
    let (server_saw, client_saw) = mtls(
        reviews.server_config(),
        productpage.client_config(&expected),
    )
    .await;
    assert_eq!(server_saw.unwrap(), Some(productpage.spiffe_id()));
    assert_eq!(client_saw.unwrap(), Some(reviews.spiffe_id()));
    // Client configs are cached per SAN list.
    assert!(Arc::ptr_eq(
        &productpage.client_config(&expected),
        &productpage.client_config(&expected)
    ));

    // A client expecting another identity refuses the server.
    let (_, client_saw) = mtls(
        reviews.server_config(),
        productpage.client_config(&["spiffe://cluster.local/ns/default/sa/ratings".to_string()]),
    )
    .await;
    assert!(client_saw.is_err());

    // A workload of another mesh (another Citadel, another root) is refused both ways.
    let other_state = tempfile::tempdir().unwrap();
    let other = start_citadel(other_state.path(), "127.0.0.1:0".parse().unwrap()).await;
    let stranger = identity(&other.url(), other_state.path(), "reviews", HOUR).await;
    let (_, client_saw) = mtls(
        stranger.server_config(),
        productpage.client_config(&expected),
    )
    .await;
    assert!(client_saw.is_err(), "client accepted a foreign root");
    let (server_saw, _) = mtls(reviews.server_config(), stranger.client_config(&[])).await;
    assert!(server_saw.is_err(), "server accepted a foreign root");

    other.stop().await;
    citadel.stop().await;
}

#[tokio::test]
async fn service_refuses_bad_requests_and_counts_them() {
    let state = tempfile::tempdir().unwrap();
    let citadel = start_citadel(state.path(), "127.0.0.1:0".parse().unwrap()).await;
    assert!(
        http_get(citadel.monitoring, "/readyz")
            .await
            .starts_with("HTTP/1.0 200")
    );

    let mut client = IstioCertificateServiceClient::connect(citadel.url())
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/istio-system/sa/admin"
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let request = |token: Option<&str>, ttl: i64| {
        let mut r = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: ttl,
            metadata: None,
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };

    let err = client
        .create_certificate(request(None, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let foreign_state = tempfile::tempdir().unwrap();
    let foreign = citadel::token::issue(foreign_state.path(), "default", "reviews", HOUR).unwrap();
    let err = client
        .create_certificate(request(Some(&foreign), 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("signature"), "{}", err.message());

    let token = citadel::token::issue(state.path(), "default", "reviews", HOUR).unwrap();
    let err = client
        .create_certificate(request(Some(&token), 3 * 3600))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let mut bad = request(Some(&token), 0);
    bad.get_mut().csr = "garbage".into();
    let err = client.create_certificate(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The CSR claims istio-system/admin; the certificate names the token's account only.
    let chain = client
        .create_certificate(request(Some(&token), 0))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2);
    let mut r = chain[0].as_bytes();
    let leaf = rustls_pemfile::certs(&mut r).next().unwrap().unwrap();
    assert_eq!(
        mesh_identity::uri_sans(&leaf),
        vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]
    );

    let metrics = http_get(citadel.monitoring, "/metrics").await;
    for line in [
        "citadel_csr_total{result=\"unauthenticated\"} 2",
        "citadel_csr_total{result=\"ttl_too_long\"} 1",
        "citadel_csr_total{result=\"invalid_csr\"} 1",
        "citadel_csr_total{result=\"success\"} 1",
        "citadel_cert_issued_total 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    citadel.stop().await;
}

#[tokio::test]
async fn certificates_rotate_and_survive_citadel_outage() {
    let state = tempfile::tempdir().unwrap();
    let citadel = start_citadel(state.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = citadel.grpc;
    let url = citadel.url();
    let workload = identity(&url, state.path(), "ratings", Duration::from_secs(4)).await;
    let mut rotations = workload.rotations();
    let first_not_after = workload.cert_not_after();
    let first_server = workload.server_config();

    // Renewed at about half life (2 s).
    poll_until("first rotation", Duration::from_secs(15), || {
        workload.cert_not_after() > first_not_after
    })
    .await;
    assert!(rotations.has_changed().unwrap());
    rotations.mark_unchanged();
    assert!(!Arc::ptr_eq(&first_server, &workload.server_config()));

    // Citadel goes away: the workload keeps its certificate and retries.
    citadel.stop().await;
    let held = workload.cert_not_after();
    poll_until("a failed renewal", Duration::from_secs(15), || {
        workload.renewal_failures() > 0
    })
    .await;
    assert_eq!(workload.spiffe_id().service_account, "ratings");
    assert!(workload.cert_not_after() <= held + Duration::from_secs(1));

    // Citadel is back on the same address with the same state: renewal resumes.
    let citadel = start_citadel(state.path(), addr).await;
    poll_until("renewal after outage", Duration::from_secs(30), || {
        workload.cert_not_after() > held
    })
    .await;
    citadel.stop().await;
}

#[tokio::test]
async fn renewal_by_certificate_survives_citadel_outage() {
    let state = tempfile::tempdir().unwrap();
    let start = |grpc: SocketAddr, tls: SocketAddr| {
        let state = state.path().to_path_buf();
        async move {
            let mut config = Config::local(
                grpc,
                "127.0.0.1:0".parse().unwrap(),
                state,
                TtlPolicy {
                    default: HOUR,
                    max: 2 * HOUR,
                },
            );
            config.tls_addr = Some(tls);
            let citadel = Citadel::bind(config).await.unwrap();
            let addrs = (citadel.grpc_addr().unwrap(), citadel.tls_addr().unwrap());
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(citadel.serve(async {
                let _ = rx.await;
            }));
            (addrs, tx, task)
        }
    };
    let ((grpc, tls), stop, task) = start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    // A token that expires at once after the first certificate: renewals can only be by the
    // certificate, over the TLS listener.
    let token =
        citadel::token::issue(state.path(), "default", "ratings", Duration::from_secs(1)).unwrap();
    let issued_at = Instant::now();
    let workload = WorkloadIdentity::start_with(
        IdentityConfig {
            citadel_addr: format!("http://{grpc}"),
            token,
            ttl: HOUR,
            trust_domain: "cluster.local".into(),
        },
        mesh_identity::RenewalConfig {
            tls_addr: Some(tls.to_string()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    poll_until("the token to expire", Duration::from_secs(10), || {
        issued_at.elapsed() > Duration::from_secs(2)
    })
    .await;
    workload.renew_now().await.unwrap();
    assert_eq!(workload.renewals(), 1);

    // Citadel down: the renewal fails, the certificate is kept, the failure is exposed.
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let held = workload.cert_chain();
    assert!(workload.renew_now().await.is_err());
    assert_eq!(workload.cert_chain(), held);
    assert_eq!(workload.consecutive_renewal_failures(), 1);
    assert!(workload.last_renewal_error().unwrap().contains("connect"));
    assert!(workload.seconds_to_expiry() > 3000.0);

    // Back on the same addresses (same CA, new server certificate): renewal by certificate
    // resumes and the failure state clears.
    let (_, stop, task) = start(grpc, tls).await;
    workload.renew_now().await.unwrap();
    assert_ne!(workload.cert_chain(), held);
    assert_eq!(workload.spiffe_id().service_account, "ratings");
    assert_eq!(workload.consecutive_renewal_failures(), 0);
    assert_eq!(workload.last_renewal_error(), None);
    assert_eq!(workload.renewal_failures(), 1);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
