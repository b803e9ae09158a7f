//! Istio 1.4's Bookinfo policy and telemetry samples, applied unchanged (only a Redis address
//! rewritten), against the real `mixer` binary fed over MCP, and a real redis-server.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{Buf, BufMut};
use common::*;
use mesh_proto::attributes::Bag;
use mesh_proto::config::ConfigObject;
use mesh_proto::dictionary;
use mesh_proto::istio::mixer::v1::{CheckRequest, CompressedAttributes, ReportRequest};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

fn sample(path: &str) -> String {
    std::fs::read_to_string(format!("{SAMPLES}/{path}")).unwrap()
}

fn pods() -> Vec<ConfigObject> {
    vec![
        pod("productpage-v1", "productpage", "v1"),
        pod("ratings-v1", "ratings", "v1"),
        pod("reviews-v2", "reviews", "v2"),
        pod("reviews-v3", "reviews", "v3"),
    ]
}

async fn mixer_with(yaml: &str, rules: usize) -> (Mixer, tokio::sync::oneshot::Sender<()>) {
    let mut objs = objects_from_yaml(yaml);
    objs.extend(pods());
    let (galley, stop) = serve_galley(by_collection(objs)).await;
    (Mixer::start(galley, rules).await, stop)
}

fn to_productpage(source_pod: &str) -> Bag {
    Bag::new()
        .with("source.uid", format!("kubernetes://{source_pod}.default"))
        .with("destination.uid", "kubernetes://productpage-v1.default")
        .with(
            "destination.service.host",
            "productpage.default.svc.cluster.local",
        )
        .with("request.path", "/productpage")
}

async fn granted(m: &mut Mixer, bag: &Bag, dedup: &str) -> i64 {
    granted_quota(m, "requestcountquota", bag, dedup).await
}

async fn granted_quota(m: &mut Mixer, quota: &str, bag: &Bag, dedup: &str) -> i64 {
    let resp = m
        .client
        .check(check_request(bag, Some((quota, 1)), dedup))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.precondition.unwrap().status.unwrap().code, 0);
    resp.quotas[quota].granted_amount
}

#[tokio::test]
async fn memquota_ratelimit_sample_exhausts_productpage_budget() {
    ratelimit_exhausts_productpage_budget(
        "policy/mixer-rule-productpage-ratelimit.yaml",
        "requestcountquota",
    )
    .await;
}

/// The same sample in Istio's legacy kinds (`kind: memquota`, `kind: quota`).
#[tokio::test]
async fn memquota_ratelimit_crd_sample_exhausts_productpage_budget() {
    ratelimit_exhausts_productpage_budget(
        "policy/mixer-rule-productpage-ratelimit-crd.yaml",
        "requestcount",
    )
    .await;
}

/// `quota`: the quota instance's name (what the proxy asks for).
async fn ratelimit_exhausts_productpage_budget(file: &str, quota: &str) {
    let (mut m, _g) = mixer_with(&sample(file), 1).await;
    let bag = to_productpage("reviews-v2");
    // The productpage override: 2 per 5s.
    assert_eq!(granted_quota(&mut m, quota, &bag, "").await, 1);
    // A retry with the same deduplication id does not consume again.
    assert_eq!(granted_quota(&mut m, quota, &bag, "retry-1").await, 1);
    assert_eq!(granted_quota(&mut m, quota, &bag, "retry-1").await, 1);
    let resp = m
        .client
        .check(check_request(&bag, Some((quota, 1)), ""))
        .await
        .unwrap()
        .into_inner();
    let q = &resp.quotas[quota];
    assert_eq!(
        q.granted_amount, 0,
        "past the budget: the proxy answers 429"
    );
    // The quota's dimensions read the destination labels (via destination.uid) and the
    // x-forwarded-for header (absent).
    assert!(
        !q.referenced_attributes
            .as_ref()
            .unwrap()
            .attribute_matches
            .is_empty()
    );
    // Another destination has the 500/s default.
    let details = Bag::new().with(
        "destination.service.host",
        "details.default.svc.cluster.local",
    );
    assert_eq!(granted_quota(&mut m, quota, &details, "").await, 1);
    // A quota no rule serves is granted in full.
    let resp = m
        .client
        .check(check_request(&bag, Some(("otherquota", 7)), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.quotas["otherquota"].granted_amount, 7);
}

async fn two_mixers_on_one_redis(
    sample_path: &str,
) -> (Mixer, Mixer, Redis, tokio::sync::oneshot::Sender<()>) {
    let redis = Redis::start().await;
    let yaml = sample(sample_path).replace(
        "redisServerUrl: redis-release-master:6379",
        &format!("redisServerUrl: 127.0.0.1:{}", redis.port),
    );
    let mut objs = objects_from_yaml(&yaml);
    objs.extend(pods());
    let (galley, stop) = serve_galley(by_collection(objs)).await;
    let a = Mixer::start(galley, 1).await;
    let b = Mixer::start(galley, 1).await;
    (a, b, redis, stop)
}

#[tokio::test]
async fn redisquota_fixed_window_sample_shares_one_budget_across_two_mixers() {
    let (mut a, mut b, _redis, _galley) =
        two_mixers_on_one_redis("policy/mixer-rule-productpage-redis-quota-fixed-window.yaml")
            .await;
    // From reviews: the default limit, 1 per 30s, for both mixers together.
    let bag = to_productpage("reviews-v2");
    assert_eq!(granted(&mut a, &bag, "").await, 1);
    assert_eq!(granted(&mut b, &bag, "").await, 0);
    assert_eq!(granted(&mut a, &bag, "").await, 0);

    // From the ingress gateway: the override, 50 per 30s, split across the two.
    let ingress = to_productpage("reviews-v2").with(
        "source.labels",
        BTreeMap::from([("app".to_string(), "istio-ingressgateway".to_string())]),
    );
    let mut total = 0;
    for i in 0..60 {
        let m = if i % 2 == 0 { &mut a } else { &mut b };
        total += granted(m, &ingress, "").await;
    }
    assert_eq!(total, 50);
    // A deduplicated retry on the other mixer gets the first answer, not a new allocation.
    let fresh = to_productpage("reviews-v3");
    assert_eq!(granted(&mut a, &fresh, "dedup-x").await, 1);
    assert_eq!(granted(&mut b, &fresh, "dedup-x").await, 1);
    assert_eq!(granted(&mut b, &fresh, "").await, 0);
}

#[tokio::test]
async fn redisquota_rolling_window_sample_shares_one_budget_across_two_mixers() {
    let (mut a, mut b, redis, _galley) =
        two_mixers_on_one_redis("policy/mixer-rule-productpage-redis-quota-rolling-window.yaml")
            .await;
    // productpage, any source: 2 per rolling second.
    let bag = to_productpage("reviews-v2");
    let start = Instant::now();
    let grants = [
        granted(&mut a, &bag, "").await,
        granted(&mut b, &bag, "").await,
        granted(&mut a, &bag, "").await,
        granted(&mut b, &bag, "").await,
    ];
    let elapsed = start.elapsed();
    let total: i64 = grants.iter().sum();
    if elapsed.as_millis() < 900 {
        assert_eq!(grants, [1, 1, 0, 0], "one budget of 2 in the window");
    } else {
        assert!(total <= 4, "{grants:?} in {elapsed:?}");
    }
    // The window rolls: the budget comes back once the first grants are older than 1s.
    poll("the window to roll", || {
        let mut a = a.client.clone();
        let bag = bag.clone();
        async move {
            a.check(check_request(&bag, Some(("requestcountquota", 1)), ""))
                .await
                .unwrap()
                .into_inner()
                .quotas["requestcountquota"]
                .granted_amount
                == 1
        }
    })
    .await;

    // Redis gone: nothing is granted, and the status says why.
    drop(redis);
    poll("redis to be unavailable", || {
        let mut b = b.client.clone();
        let bag = bag.clone();
        async move {
            let resp = b
                .check(check_request(&bag, Some(("requestcountquota", 1)), ""))
                .await
                .unwrap()
                .into_inner();
            let q = &resp.quotas["requestcountquota"];
            q.granted_amount == 0 && q.status.as_ref().is_some_and(|s| s.code == 14)
        }
    })
    .await;
}

#[tokio::test]
async fn deny_label_sample_denies_reviews_v3_to_ratings_only() {
    deny_label_denies_reviews_v3_to_ratings_only("policy/mixer-rule-deny-label.yaml").await;
}

/// The same sample in Istio's legacy kinds (`kind: denier`, `kind: checknothing`).
#[tokio::test]
async fn deny_label_crd_sample_denies_reviews_v3_to_ratings_only() {
    deny_label_denies_reviews_v3_to_ratings_only("policy/mixer-rule-deny-label-crd.yaml").await;
}

async fn deny_label_denies_reviews_v3_to_ratings_only(file: &str) {
    let (mut m, _g) = mixer_with(&sample(file), 1).await;
    let to_ratings = |source: &str| {
        Bag::new()
            .with("source.uid", format!("kubernetes://{source}.default"))
            .with("destination.uid", "kubernetes://ratings-v1.default")
            .with(
                "destination.service.host",
                "ratings.default.svc.cluster.local",
            )
    };
    let denied = m
        .client
        .check(check_request(&to_ratings("reviews-v3"), None, ""))
        .await
        .unwrap()
        .into_inner();
    let status = denied.precondition.unwrap().status.unwrap();
    assert_eq!(status.code, 7);
    assert_eq!(
        status.message,
        "PERMISSION_DENIED:denyreviewsv3handler.denier.default:Not allowed"
    );
    let allowed = m
        .client
        .check(check_request(&to_ratings("reviews-v2"), None, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.precondition.unwrap().status.unwrap().code, 0);
}

/// Sends raw bytes as the request message.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

async fn raw_call(m: &Mixer, method: &'static str, body: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", m.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn malformed_attribute_bags_are_invalid_argument() {
    let (mut m, _g) = mixer_with(&sample("policy/mixer-rule-deny-label.yaml"), 1).await;
    let words = dictionary::words().len() as u32;
    // A negative index naming no message word.
    let bad_index = CheckRequest {
        attributes: Some(CompressedAttributes {
            strings: [(-5, 0)].into(),
            ..Default::default()
        }),
        global_word_count: words,
        ..Default::default()
    };
    // response.code is INT64 in the vocabulary: sent as a string.
    let code = dictionary::index_of("response.code").unwrap();
    let wrong_type = CheckRequest {
        attributes: Some(CompressedAttributes {
            words: vec!["200".into()],
            strings: [(code, -1)].into(),
            ..Default::default()
        }),
        global_word_count: words,
        ..Default::default()
    };
    for req in [bad_index.clone(), wrong_type.clone()] {
        let err = m.client.check(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    }
    let err = m
        .client
        .report(ReportRequest {
            attributes: vec![wrong_type.attributes.clone().unwrap()],
            global_word_count: words,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Truncated message bytes: a valid request cut inside its first field (the attributes).
    let full = check_request(&to_productpage("reviews-v2"), None, "").encode_to_vec();
    assert_eq!(full[0], 0x0a, "field 1, length-delimited");
    assert!(full[1] > 10);
    let truncated = full[..10].to_vec();
    let st = raw_call(&m, "/istio.mixer.v1.Mixer/Check", truncated).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    let st = raw_call(&m, "/istio.mixer.v1.Mixer/Report", vec![0x0a, 0x7f, 0x01]).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");

    // Still serving.
    let ok = m
        .client
        .check(check_request(&to_productpage("reviews-v2"), None, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.precondition.unwrap().status.unwrap().code, 0);
}

#[tokio::test]
async fn prometheus_metrics_sample_exposes_series_after_report() {
    metrics_exposes_series_after_report("telemetry/metrics.yaml").await;
}

/// The same sample in Istio's legacy kinds (`kind: prometheus`, `kind: metric`).
#[tokio::test]
async fn prometheus_metrics_crd_sample_exposes_series_after_report() {
    metrics_exposes_series_after_report("telemetry/metrics-crd.yaml").await;
}

async fn metrics_exposes_series_after_report(file: &str) {
    let (mut m, _g) = mixer_with(&sample(file), 1).await;
    let bag = |reporter: &str, source: &str| {
        Bag::new()
            .with("context.reporter.kind", reporter)
            .with("source.workload.name", source)
            .with("destination.workload.name", "reviews-v1")
            .with("response.code", 200i64)
    };
    let req = mesh_proto::attributes::compress_report(&[
        bag("inbound", "productpage-v1"),
        bag("inbound", "productpage-v1"),
        bag("outbound", "productpage-v1"),
    ]);
    m.client.report(req).await.unwrap();
    let text = m.metrics().await;
    // value "2": each request counted twice.
    assert!(
        text.contains(r#"istio_double_request_count_total{reporter="server",source="productpage-v1",destination="reviews-v1",message="twice the fun!"} 4.0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"istio_double_request_count_total{reporter="client",source="productpage-v1",destination="reviews-v1",message="twice the fun!"} 2.0"#),
        "{text}"
    );
}
