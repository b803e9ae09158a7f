#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::config::ConfigObject;
use mesh_proto::envoy::envoy::config::core::v3::{Node, data_source::Specifier};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use mesh_proto::envoy::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_proto::envoy::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use mesh_proto::type_url;
use prost::Message;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

use super::*;
use crate::galley_client::Snapshot;
use crate::metrics::PilotMetrics;
use crate::model::{Registry, RegistryCache};
use crate::translate::{Options, ProxyInfo, TypeResources, translate};
use crate::xds::{AdsServer, SyncStatus};

const ROUTER: &str = "router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(10);

fn objects() -> Vec<ConfigObject> {
    serde_json::from_value(json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
             "hosts": ["bookinfo.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-cred"}},
            {"port": {"number": 443, "name": "https-mtls", "protocol": "HTTPS"},
             "hosts": ["secure.example.com"],
             "tls": {"mode": "MUTUAL", "credentialName": "mtls-cred"}}
         ]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "pp", "namespace": "default"},
         "spec": {"hosts": ["bookinfo.example.com", "secure.example.com"], "gateways": ["gw"],
                  "http": [{"route": [{"destination": {"host": "productpage"}}]}]}}
    ]))
    .unwrap()
}

fn router(namespace: &str) -> ProxyInfo {
    let mut p = ProxyInfo::from_id(&format!(
        "router~127.0.0.1~gw-1.{namespace}~{namespace}.svc.cluster.local"
    ))
    .unwrap();
    p.labels.insert("istio".into(), "ingressgateway".into());
    p
}

fn listeners_of(proxy: &ProxyInfo) -> TypeResources {
    let reg = Registry::from_snapshot(&Snapshot::from_objects(objects()), "cluster.local");
    translate(
        &reg,
        proxy,
        &Options {
            trust_domain: "cluster.local".into(),
        },
    )
    .encode()
    .listeners
}

fn cred(cert: &str, key: &str, ca: Option<&str>) -> Credential {
    Credential {
        cert_chain: Some(cert.as_bytes().to_vec()),
        private_key: Some(key.as_bytes().to_vec()),
        ca: ca.map(|c| c.as_bytes().to_vec()),
    }
}

fn creds(cert: &str) -> Credentials {
    let k = |ns: &str, n: &str| (ns.to_string(), n.to_string());
    Credentials::from_entries([
        (
            k("istio-system", "bookinfo-cred"),
            cred(cert, "KEY-1", None),
        ),
        (
            k("istio-system", "mtls-cred"),
            cred("CERT-M", "KEY-M", Some("CA-M")),
        ),
        (k("istio-system", "unreferenced"), cred("X", "Y", None)),
        (k("default", "bookinfo-cred"), cred("OTHER-NS", "Z", None)),
    ])
}

fn decoded(t: &TypeResources) -> Vec<Secret> {
    t.resources
        .iter()
        .map(|r| {
            assert_eq!(r.resource.type_url, type_url::SECRET);
            Secret::decode(r.resource.value.as_slice()).unwrap()
        })
        .collect()
}

fn inline(d: &Option<mesh_proto::envoy::envoy::config::core::v3::DataSource>) -> String {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("not inline bytes: {other:?}"),
    }
}

fn cert_of(s: &Secret) -> (String, String) {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => {
            (inline(&t.certificate_chain), inline(&t.private_key))
        }
        other => panic!("not a certificate: {other:?}"),
    }
}

#[test]
fn credentials_are_read_per_namespace_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let put = |path: &str, body: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    put("istio-system/bookinfo/tls.crt", "C");
    put("istio-system/bookinfo/tls.key", "K");
    put("istio-system/bookinfo/ca.crt", "A");
    put("istio-system/generic/cert", "GC");
    put("istio-system/generic/key", "GK");
    put("istio-system/..data/tls.crt", "hidden");
    put("other/bookinfo/tls.crt", "C2");
    std::fs::create_dir_all(dir.path().join("istio-system/empty")).unwrap();
    let c = Credentials::read(dir.path());
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(
        c.get("istio-system", "bookinfo"),
        Some(&cred("C", "K", Some("A")))
    );
    assert_eq!(
        c.get("istio-system", "generic"),
        Some(&cred("GC", "GK", None))
    );
    let other = c.get("other", "bookinfo").unwrap();
    assert_eq!(other.private_key, None);
    assert!(c.get("istio-system", "..data").is_none());
    // Debug output (logs) never carries the key bytes (`K` = 75).
    assert!(!format!("{c:?}").contains("75"), "{c:?}");
    assert!(Credentials::read(&dir.path().join("missing")).is_empty());
}

#[test]
fn a_router_gets_only_the_secrets_its_listeners_name_from_its_namespace() {
    let gw = router("istio-system");
    let listeners = listeners_of(&gw);
    assert_eq!(
        referenced_names(&listeners).into_iter().collect::<Vec<_>>(),
        ["bookinfo-cred", "mtls-cred", "mtls-cred-cacert"]
    );
    let metrics = SdsMetrics::default();
    let secrets = secrets_for(&gw, &listeners, &creds("CERT-1"), &metrics);
    let got = decoded(&secrets);
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["bookinfo-cred", "mtls-cred", "mtls-cred-cacert"]);
    assert_eq!(
        cert_of(&got[0]),
        ("CERT-1".to_string(), "KEY-1".to_string())
    );
    assert_eq!(
        cert_of(&got[1]),
        ("CERT-M".to_string(), "KEY-M".to_string())
    );
    match &got[2].r#type {
        Some(secret::Type::ValidationContext(v)) => assert_eq!(inline(&v.trusted_ca), "CA-M"),
        other => panic!("not a validation context: {other:?}"),
    }
    assert_eq!(metrics.missing.get(), 0);
    assert_eq!(metrics.served.get(), 3);

    // A sidecar with the same labels gets nothing.
    let mut sidecar =
        ProxyInfo::from_id("sidecar~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local")
            .unwrap();
    sidecar
        .labels
        .insert("istio".into(), "ingressgateway".into());
    assert!(
        secrets_for(&sidecar, &listeners, &creds("C"), &metrics)
            .resources
            .is_empty()
    );

    // A gateway in another namespace only sees that namespace's credentials: `default` has
    // just `bookinfo-cred`; the other two are missing (not sent, counted).
    let other = router("default");
    let other_listeners = listeners_of(&other);
    let got = decoded(&secrets_for(
        &other,
        &other_listeners,
        &creds("C"),
        &metrics,
    ));
    assert_eq!(got.len(), 1);
    assert_eq!(cert_of(&got[0]).0, "OTHER-NS");
    assert_eq!(metrics.missing.get(), 2);

    // The version follows the content: a rotated certificate is a new version.
    let again = secrets_for(&gw, &listeners, &creds("CERT-1"), &metrics);
    let rotated = secrets_for(&gw, &listeners, &creds("CERT-2"), &metrics);
    assert_eq!(again.version, secrets.version);
    assert_ne!(rotated.version, secrets.version);
}

fn router_node() -> Node {
    let labels = Struct {
        fields: [(
            "istio".to_string(),
            Value {
                kind: Some(ValueKind::StringValue("ingressgateway".into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let mut meta = Struct::default();
    meta.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(ValueKind::StructValue(labels)),
        },
    );
    Node {
        id: ROUTER.into(),
        metadata: Some(meta),
        ..Node::default()
    }
}

/// An ADS server with `source` on 127.0.0.1:0; the stop sender ends it.
async fn serve(source: CredentialSource) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let (_snapshots, rx) = watch::channel(Arc::new(Snapshot::from_objects(objects())));
    let (stop, stop_rx) = watch::channel(false);
    let ads = AdsServer::new(
        RegistryCache::new(rx, "cluster.local"),
        Options {
            trust_domain: "cluster.local".into(),
        },
        PilotMetrics::default(),
        SyncStatus::default(),
        stop_rx.clone(),
    )
    .with_credentials(source);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut stop_wait = stop_rx;
    tokio::spawn(async move {
        // Keep the snapshot sender alive as long as the server.
        let _snapshots = _snapshots;
        tonic::transport::Server::builder()
            .add_service(ads.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Client { tx, rx }
    }

    async fn send(&self, url: &str, names: &[&str], version: &str, nonce: &str) {
        self.tx
            .send(DiscoveryRequest {
                version_info: version.into(),
                node: Some(router_node()),
                resource_names: names.iter().map(|s| s.to_string()).collect(),
                type_url: url.into(),
                response_nonce: nonce.into(),
                ..DiscoveryRequest::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self, url: &str) -> DiscoveryResponse {
        loop {
            let r = tokio::time::timeout(WAIT, self.rx.message())
                .await
                .expect("response in time")
                .unwrap()
                .unwrap();
            if r.type_url == url {
                return r;
            }
        }
    }
}

fn secrets_in(r: &DiscoveryResponse) -> Vec<Secret> {
    r.resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn sotw_serves_referenced_secrets_and_pushes_a_rotation() {
    let metrics = SdsMetrics::default();
    let (source, creds_tx) = CredentialSource::channel(creds("CERT-1"), true, metrics);
    let (addr, stop) = serve(source).await;
    let mut c = Client::connect(addr).await;
    c.send(type_url::LISTENER, &[], "", "").await;
    let lds = c.recv(type_url::LISTENER).await;
    c.send(type_url::LISTENER, &[], &lds.version_info, &lds.nonce)
        .await;
    // Asks for one referenced name and one that is not referenced: only the first comes.
    c.send(type_url::SECRET, &["bookinfo-cred", "unreferenced"], "", "")
        .await;
    let sds = c.recv(type_url::SECRET).await;
    let got = secrets_in(&sds);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].name, "bookinfo-cred");
    assert_eq!(cert_of(&got[0]).0, "CERT-1");
    c.send(
        type_url::SECRET,
        &["bookinfo-cred", "unreferenced"],
        &sds.version_info,
        &sds.nonce,
    )
    .await;

    // The certificate rotates on disk (here: the source publishes it): pushed unasked.
    creds_tx.send_replace(Arc::new(creds("CERT-2")));
    let rotated = c.recv(type_url::SECRET).await;
    assert_ne!(rotated.version_info, sds.version_info);
    let got = secrets_in(&rotated);
    assert_eq!(got.len(), 1);
    assert_eq!(cert_of(&got[0]).0, "CERT-2");
    stop.send_replace(true);
}

#[tokio::test]
async fn plaintext_streams_get_no_secrets_unless_allowed() {
    let (source, _tx) = CredentialSource::channel(creds("CERT-1"), false, SdsMetrics::default());
    let (addr, stop) = serve(source).await;
    let mut c = Client::connect(addr).await;
    c.send(type_url::LISTENER, &[], "", "").await;
    let lds = c.recv(type_url::LISTENER).await;
    c.send(type_url::LISTENER, &[], &lds.version_info, &lds.nonce)
        .await;
    c.send(type_url::SECRET, &["bookinfo-cred"], "", "").await;
    let sds = c.recv(type_url::SECRET).await;
    assert!(sds.resources.is_empty(), "{:?}", secrets_in(&sds));
    stop.send_replace(true);
}

#[tokio::test]
async fn the_directory_watch_publishes_changed_content() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("istio-system/bookinfo-cred");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tls.crt"), "ONE").unwrap();
    std::fs::write(d.join("tls.key"), "KEY").unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let metrics = SdsMetrics::default();
    let source = watch_dir(
        dir.path().to_path_buf(),
        Duration::from_millis(20),
        false,
        metrics.clone(),
        stop_rx,
    );
    let mut rx = source.subscribe();
    assert_eq!(
        source
            .current()
            .get("istio-system", "bookinfo-cred")
            .unwrap()
            .cert_chain
            .as_deref(),
        Some(b"ONE".as_slice())
    );
    std::fs::write(d.join("tls.crt"), "TWO").unwrap();
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rx.borrow()
            .get("istio-system", "bookinfo-cred")
            .unwrap()
            .cert_chain
            .as_deref(),
        Some(b"TWO".as_slice())
    );
    assert_eq!(metrics.changes.get(), 1);
    assert_eq!(metrics.credentials.get(), 1);
}

#[tokio::test]
async fn delta_serves_referenced_secrets_rotates_and_removes() {
    use mesh_proto::envoy::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    };
    let (source, creds_tx) =
        CredentialSource::channel(creds("CERT-1"), true, SdsMetrics::default());
    let (addr, stop) = serve(source).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let req = |url: &str, subscribe: &[&str], nonce: &str| DeltaDiscoveryRequest {
        node: Some(router_node()),
        type_url: url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..DeltaDiscoveryRequest::default()
    };
    let mut recv = async || -> DeltaDiscoveryResponse {
        loop {
            let r = tokio::time::timeout(WAIT, inbound.message())
                .await
                .expect("response in time")
                .unwrap()
                .unwrap();
            if r.type_url == type_url::SECRET {
                return r;
            }
            tx.send(req(&r.type_url, &[], &r.nonce)).await.unwrap();
        }
    };
    tx.send(req(type_url::LISTENER, &[], "")).await.unwrap();
    tx.send(req(
        type_url::SECRET,
        &["bookinfo-cred", "unreferenced"],
        "",
    ))
    .await
    .unwrap();
    let first = recv().await;
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["bookinfo-cred"]);
    assert_eq!(first.removed_resources, ["unreferenced"]);
    let s = Secret::decode(
        first.resources[0]
            .resource
            .as_ref()
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(cert_of(&s).0, "CERT-1");
    tx.send(req(type_url::SECRET, &[], &first.nonce))
        .await
        .unwrap();

    creds_tx.send_replace(Arc::new(creds("CERT-2")));
    let rotated = recv().await;
    assert_eq!(rotated.resources.len(), 1);
    assert_ne!(rotated.resources[0].version, first.resources[0].version);
    let s = Secret::decode(
        rotated.resources[0]
            .resource
            .as_ref()
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(cert_of(&s).0, "CERT-2");
    tx.send(req(type_url::SECRET, &[], &rotated.nonce))
        .await
        .unwrap();

    // The credential is deleted: the gateway is told it is gone.
    creds_tx.send_replace(Arc::new(Credentials::default()));
    let gone = recv().await;
    assert!(gone.resources.is_empty());
    assert_eq!(gone.removed_resources, ["bookinfo-cred"]);
    stop.send_replace(true);
}

/// Kubernetes Secrets, converted as `--credential-kube` does, answer a MUTUAL server: the
/// certificate from `mtls-cred`, the CA from its `mtls-cred-cacert` companion when
/// `mtls-cred` has none, and from `mtls-cred`'s own `ca.crt` when it has one.
#[test]
fn a_mutual_servers_ca_comes_from_the_cacert_companion_secret() {
    use super::secret::Secret as KubeSecret;

    let kube_secret = |name: &str, data: &[(&str, &str)]| {
        let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        KubeSecret::new("istio-system", name, &data)
    };
    let creds_of = |secrets: &[KubeSecret]| {
        Credentials::from_entries(secrets.iter().map(|s| {
            let key = (
                s.metadata.namespace.clone().unwrap(),
                s.metadata.name.clone().unwrap(),
            );
            (key, credential_from_secret(s).unwrap().unwrap())
        }))
    };
    let ca_of = |got: &[Secret]| -> String {
        let s = got.iter().find(|s| s.name == "mtls-cred-cacert").unwrap();
        match &s.r#type {
            Some(secret::Type::ValidationContext(v)) => inline(&v.trusted_ca),
            other => panic!("not a validation context: {other:?}"),
        }
    };
    let gw = router("istio-system");
    let listeners = listeners_of(&gw);
    let metrics = SdsMetrics::default();

    let companion = creds_of(&[
        kube_secret("mtls-cred", &[("tls.crt", "CERT-M"), ("tls.key", "KEY-M")]),
        kube_secret("mtls-cred-cacert", &[("cacert", "CA-COMPANION")]),
    ]);
    let got = decoded(&secrets_for(&gw, &listeners, &companion, &metrics));
    assert_eq!(ca_of(&got), "CA-COMPANION");
    let cert = got.iter().find(|s| s.name == "mtls-cred").unwrap();
    assert_eq!(cert_of(cert), ("CERT-M".to_string(), "KEY-M".to_string()));

    let own = creds_of(&[
        kube_secret(
            "mtls-cred",
            &[
                ("tls.crt", "CERT-M"),
                ("tls.key", "KEY-M"),
                ("ca.crt", "CA-OWN"),
            ],
        ),
        kube_secret("mtls-cred-cacert", &[("cacert", "CA-COMPANION")]),
    ]);
    assert_eq!(
        ca_of(&decoded(&secrets_for(&gw, &listeners, &own, &metrics))),
        "CA-OWN"
    );

    // Without either CA, the validation context is not sent (the listener waits for it).
    let none = creds_of(&[kube_secret(
        "mtls-cred",
        &[("tls.crt", "CERT-M"), ("tls.key", "KEY-M")],
    )]);
    let got = decoded(&secrets_for(&gw, &listeners, &none, &metrics));
    assert!(got.iter().all(|s| s.name != "mtls-cred-cacert"));
}
