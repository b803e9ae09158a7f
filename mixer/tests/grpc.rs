//! Check and Report over real gRPC, in process, with the generated client.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::config::{HandlerSpec, RuleAction, RuleSpec};
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::mixer_client::MixerClient;
use mesh_proto::istio::mixer::v1::referenced_attributes::Condition;
use mesh_proto::istio::mixer::v1::{CheckRequest, CompressedAttributes, ReportRequest};
use mesh_runtime::Metrics;
use mixer::MixerService;
use mixer::config::{ConfigState, Policy, PolicyHandle};
use mixer::metrics::MixerMetrics;
use serde_json::json;
use tokio::sync::oneshot;
use tonic::transport::Channel;

struct Harness {
    client: MixerClient<Channel>,
    policy: PolicyHandle,
    registry: Metrics,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start() -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let policy = PolicyHandle::default();
    let registry = Metrics::default();
    let service = MixerService::new(policy.clone(), MixerMetrics::register(&registry));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(mixer::server::serve_grpc(listener, service, async move {
        let _ = rx.await;
    }));
    let client = MixerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Harness {
        client,
        policy,
        registry,
        stop: Some(tx),
    }
}

fn deny_ratings_from_reviews_v3() -> Policy {
    let mut s = ConfigState::default();
    s.handlers.insert(
        "default/denyreviewsv3handler".into(),
        HandlerSpec {
            compiled_adapter: Some("denier".into()),
            params: Some(json!({"status": {"code": 7, "message": "Not allowed"}})),
            ..Default::default()
        },
    );
    s.rules.insert(
        "default/denyreviewsv3".into(),
        RuleSpec {
            match_: Some(
                r#"destination.labels["app"] == "ratings" && source.labels["app"]=="reviews" && source.labels["version"] == "v3""#
                    .into(),
            ),
            actions: vec![RuleAction {
                handler: "denyreviewsv3handler".into(),
                instances: vec!["denyreviewsv3request".into()],
                name: None,
            }],
            ..Default::default()
        },
    );
    let p = Policy::compile(&s);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    p
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn request_bag(source_version: &str) -> Bag {
    Bag::new()
        .with("context.reporter.kind", "inbound")
        .with(
            "destination.service.host",
            "ratings.default.svc.cluster.local",
        )
        .with("destination.labels", labels(&[("app", "ratings")]))
        .with(
            "source.labels",
            labels(&[("app", "reviews"), ("version", source_version)]),
        )
        .with("request.path", "/ratings/0")
}

fn check_request(bag: &Bag, dedup: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(compress(bag)),
        global_word_count: dictionary::words().len() as u32,
        deduplication_id: dedup.into(),
        quotas: Default::default(),
    }
}

#[tokio::test]
async fn allows_by_default_and_grants_quota() {
    let mut h = start().await;
    let mut req = check_request(&request_bag("v3"), "");
    req.quotas.insert(
        "rq".into(),
        QuotaParams {
            amount: 5,
            best_effort: true,
        },
    );
    let resp = h.client.check(req).await.unwrap().into_inner();
    let pre = resp.precondition.unwrap();
    assert_eq!(pre.status.unwrap().code, 0);
    assert_eq!(pre.valid_duration.unwrap().seconds, 60);
    assert_eq!(pre.valid_use_count, 10_000);
    assert!(
        pre.referenced_attributes
            .unwrap()
            .attribute_matches
            .is_empty()
    );
    assert_eq!(resp.quotas["rq"].granted_amount, 5);
    assert!(
        h.registry
            .encode()
            .contains(r#"mixer_check_total{code="OK"} 1"#),
        "{}",
        h.registry.encode()
    );
}

#[tokio::test]
async fn denier_rule_denies_and_reports_referenced_attributes() {
    let mut h = start().await;
    h.policy.set(deny_ratings_from_reviews_v3());

    let resp = h
        .client
        .check(check_request(&request_bag("v3"), ""))
        .await
        .unwrap()
        .into_inner();
    let pre = resp.precondition.unwrap();
    let status = pre.status.unwrap();
    assert_eq!(status.code, 7);
    assert_eq!(
        status.message,
        "PERMISSION_DENIED:denyreviewsv3handler.denier.default:Not allowed"
    );
    let ra = pre.referenced_attributes.unwrap();
    let word = |i: i32| -> String {
        if i >= 0 {
            dictionary::word(i as usize).unwrap().to_string()
        } else {
            ra.words[(-i - 1) as usize].clone()
        }
    };
    let mut seen: Vec<(String, String, i32)> = ra
        .attribute_matches
        .iter()
        .map(|m| (word(m.name), word(m.map_key), m.condition))
        .collect();
    seen.sort();
    let exact = Condition::Exact as i32;
    assert_eq!(
        seen,
        vec![
            ("destination.labels".into(), "app".into(), exact),
            ("destination.service.host".into(), "source.ip".into(), exact),
            ("source.labels".into(), "app".into(), exact),
            ("source.labels".into(), "version".into(), exact),
        ],
        "map_key 0 (the word source.ip) means no key"
    );

    // v2 is allowed, and the answer says what it depended on.
    let resp = h
        .client
        .check(check_request(&request_bag("v2"), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.precondition.unwrap().status.unwrap().code, 0);
    let text = h.registry.encode();
    assert!(
        text.contains(r#"mixer_check_total{code="PERMISSION_DENIED"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn repeated_deduplication_id_gets_the_same_answer() {
    let mut h = start().await;
    let first = h
        .client
        .check(check_request(&request_bag("v3"), "dedup-1"))
        .await
        .unwrap()
        .into_inner();
    h.policy.set(deny_ratings_from_reviews_v3());
    let again = h
        .client
        .check(check_request(&request_bag("v3"), "dedup-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let fresh = h
        .client
        .check(check_request(&request_bag("v3"), "dedup-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.precondition.unwrap().status.unwrap().code, 7);
}

#[tokio::test]
async fn malformed_requests_are_rejected_not_panicked() {
    let mut h = start().await;
    let mut attrs = CompressedAttributes::default();
    attrs.strings.insert(-3, 1);
    let err = h
        .client
        .check(CheckRequest {
            attributes: Some(attrs),
            global_word_count: dictionary::words().len() as u32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let mut attrs = CompressedAttributes::default();
    attrs.int64s.insert(200, 1);
    let err = h
        .client
        .check(CheckRequest {
            attributes: Some(attrs),
            global_word_count: 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "index beyond the client's word count"
    );

    let err = h
        .client
        .check(CheckRequest {
            attributes: Some(compress(&request_bag("v1"))),
            global_word_count: dictionary::words().len() as u32 + 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert_eq!(
        err.message(),
        "inconsistent global dictionary versions used"
    );

    let err = h
        .client
        .report(ReportRequest {
            global_word_count: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);

    let err = h
        .client
        .report(ReportRequest {
            attributes: vec![CompressedAttributes {
                bools: [(-1, true)].into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_check_over_4_mib_is_refused_and_the_server_goes_on() {
    let mut h = start().await;
    let mut attrs = compress(&request_bag("v1"));
    attrs.words.push("x".repeat(5 * 1024 * 1024));
    let err = h
        .client
        .check(CheckRequest {
            attributes: Some(attrs),
            global_word_count: dictionary::words().len() as u32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let ok = h
        .client
        .check(check_request(&request_bag("v1"), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.precondition.unwrap().status.unwrap_or_default().code, 0);
}

#[tokio::test]
async fn report_counts_delta_encoded_records() {
    let mut h = start().await;
    let a = request_bag("v1").with("response.code", 200i64);
    let b = a.clone().with("response.code", 503i64);
    let c = a.clone().with(
        "destination.service.host",
        "reviews.default.svc.cluster.local",
    );
    h.client.report(compress_report(&[a, b, c])).await.unwrap();
    let text = h.registry.encode();
    assert!(text.contains("mixer_report_records_total 3"), "{text}");
    assert!(
        text.contains(
            r#"mixer_reported_requests_total{destination_service="ratings.default.svc.cluster.local"} 2"#
        ),
        "{text}"
    );
}
