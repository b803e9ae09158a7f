//! A router gateway listener with Mixer: Check denies → 403 with the message, allowed requests
//! are forwarded and reported; an unreachable Mixer fails open.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use mesh_proto::attributes::{Bag, decompress, decompress_report};
use mesh_proto::google::rpc::Status;
use mesh_proto::istio::mixer::v1::mixer_server::{Mixer, MixerServer};
use mesh_proto::istio::mixer::v1::{
    CheckRequest, CheckResponse, ReportRequest, ReportResponse, check_response,
};
use mesh_proto::type_url;
use mesh_proxy::admin::ProxyMetrics;
use mesh_proxy::http::{ProxyContext, RoutedKind, serve_routed};
use mesh_proxy::mixer::MixerClient;
use mesh_proxy::tls::IdentitySlot;
use mesh_proxy::xds::testdata::*;
use parking_lot::Mutex;
use tokio::net::TcpListener;

#[derive(Default, Clone)]
struct FakeMixer {
    checks: Arc<Mutex<Vec<Bag>>>,
    reports: Arc<Mutex<Vec<Bag>>>,
}

#[tonic::async_trait]
impl Mixer for FakeMixer {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let req = req.into_inner();
        assert_eq!(
            req.global_word_count as usize,
            mesh_proto::dictionary::words().len()
        );
        let bag = decompress(&req.attributes.unwrap())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let deny = bag.get_string("request.path") == Some("/deny");
        self.checks.lock().push(bag);
        let status = if deny {
            Status {
                code: 7,
                message: "PERMISSION_DENIED:denyall.denier.default:denied by rule".into(),
                details: vec![],
            }
        } else {
            Status::default()
        };
        Ok(tonic::Response::new(CheckResponse {
            precondition: Some(check_response::PreconditionResult {
                status: Some(status),
                valid_use_count: 10000,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn report(
        &self,
        req: tonic::Request<ReportRequest>,
    ) -> Result<tonic::Response<ReportResponse>, tonic::Status> {
        let bags = decompress_report(&req.into_inner())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.reports.lock().extend(bags);
        Ok(tonic::Response::new(ReportResponse {}))
    }
}

async fn start_mixer(m: FakeMixer) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MixerServer::new(m))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

const PRODUCTPAGE: &str = "outbound|9080||productpage.default.svc.cluster.local";

async fn gateway(
    mixer_addr: &str,
) -> (
    std::net::SocketAddr,
    Arc<ProxyContext>,
    tokio::sync::watch::Sender<bool>,
) {
    let app = upstream("productpage").await;
    let cfg = config(vec![
        (type_url::CLUSTER, vec![cluster_any(PRODUCTPAGE, None)]),
        (
            type_url::ENDPOINT,
            vec![cla_any(PRODUCTPAGE, &[&app.to_string()])],
        ),
        (
            type_url::LISTENER,
            vec![listener_any("0.0.0.0_80", "http.80")],
        ),
        (
            type_url::ROUTE,
            vec![route_any("http.80", "*", "/", PRODUCTPAGE)],
        ),
    ]);
    let metrics = ProxyMetrics::default();
    let mut node = node("istio-ingressgateway", "istio-ingressgateway");
    node.proxy_type = mesh_proxy::xds::ProxyType::Router;
    node.namespace = "istio-system".into();
    let ctx = Arc::new(ProxyContext {
        config: cfg,
        upstream: mesh_proxy::http::Upstream::new(Duration::from_secs(2)),
        mixer: Some(MixerClient::new(mixer_addr, metrics.clone()).unwrap()),
        metrics,
        identity: IdentitySlot::default(),
        workload: mesh_proxy::http::Workload::of_node(&node),
        node,
        app_addr: app,
        access_log: None,
        tracer: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = stopper();
    tokio::spawn(serve_routed(
        l,
        ctx.clone(),
        "0.0.0.0_80".into(),
        RoutedKind::Gateway,
        stopped(),
    ));
    (addr, ctx, stop)
}

#[tokio::test]
async fn check_denies_allows_and_reports() {
    let fake = FakeMixer::default();
    let mixer = start_mixer(fake.clone()).await;
    let (gw, ctx, stop) = gateway(&format!("http://{mixer}")).await;

    let (status, _, body) = send(
        gw,
        "/productpage",
        &[("host", "bookinfo.example.com:8080"), ("end-user", "jason")],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "productpage /productpage")
    );
    let (status, _, body) = send(gw, "/deny", &[("host", "bookinfo.example.com")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("denied by rule"), "{body}");

    {
        let checks = fake.checks.lock();
        assert_eq!(checks.len(), 2);
        let c = &checks[0];
        assert_eq!(c.get_string("context.reporter.kind"), Some("outbound"));
        assert_eq!(
            c.get_string("request.host"),
            Some("bookinfo.example.com:8080")
        );
        assert_eq!(c.get_string("request.method"), Some("GET"));
        assert_eq!(
            c.get_string("destination.service.host"),
            Some("productpage.default.svc.cluster.local")
        );
        assert_eq!(
            c.get_string_map("request.headers").unwrap()["end-user"],
            "jason"
        );
    }

    // Reports are batched (up to 1 s) off the request path: wait for them with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reports = fake.reports.lock().clone();
        if let Some(r) = reports.first() {
            assert_eq!(r.get_string("request.path"), Some("/productpage"));
            assert_eq!(r.get_int64("response.code"), Some(200));
            assert!(r.get_duration("response.duration").is_some());
            assert_eq!(reports.len(), 1, "denied requests are not reported");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no report arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctx.metrics.mixer_fail_open.get(), 0);
    stop.send(true).unwrap();
}

#[tokio::test]
async fn unreachable_mixer_fails_open() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (gw, ctx, stop) = gateway(&format!("http://{dead}")).await;
    let (status, _, body) = send(gw, "/productpage", &[("host", "x")]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "productpage /productpage")
    );
    assert_eq!(ctx.metrics.mixer_fail_open.get(), 1);
    stop.send(true).unwrap();
}
