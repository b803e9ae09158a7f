//! Issue 9: Mixer's `accesslog` logentry line has the proxy's access-log shape. One request is
//! built with the proxy's own code (its `AccessLogEntry` and its Report bag); Mixer logs the
//! bag with Istio 1.4's default `accesslog` instance and `stdio` handler; both lines are
//! compared key by key.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::objects_from_yaml;
use mesh_proto::attributes::{Bag, compress_report};
use mesh_proto::config::ConfigObject;
use mixer::MixerService;
use mixer::config::{ConfigState, Policy, PolicyHandle};
use mixer::metrics::MixerMetrics;
use serde_json::Value;

fn service(objs: Vec<ConfigObject>) -> MixerService {
    let mut state = ConfigState::default();
    state.apply_objects(objs).unwrap();
    let policy = Policy::compile(&state);
    assert!(policy.problems.is_empty(), "{:?}", policy.problems);
    assert_eq!(policy.rules.len(), 1);
    let handle = PolicyHandle::default();
    handle.set(policy);
    MixerService::new(handle, MixerMetrics::default())
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Istio 1.4's default `accesslog` instance, `stdio` handler and rule (charts/mixer config.yaml),
/// the handler writing to `path`.
fn istio_accesslog(path: &Path) -> Vec<ConfigObject> {
    let yaml = format!(
        r#"apiVersion: "config.istio.io/v1alpha2"
kind: instance
metadata:
  name: accesslog
  namespace: istio-system
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    timestamp: request.time
    variables:
      sourceIp: source.ip | ip("0.0.0.0")
      sourceApp: source.labels["app"] | ""
      sourcePrincipal: source.principal | ""
      sourceName: source.name | ""
      sourceWorkload: source.workload.name | ""
      sourceNamespace: source.namespace | ""
      sourceOwner: source.owner | ""
      destinationApp: destination.labels["app"] | ""
      destinationIp: destination.ip | ip("0.0.0.0")
      destinationServiceHost: destination.service.host | ""
      destinationWorkload: destination.workload.name | ""
      destinationName: destination.name | ""
      destinationNamespace: destination.namespace | ""
      destinationOwner: destination.owner | ""
      destinationPrincipal: destination.principal | ""
      apiClaims: request.auth.raw_claims | ""
      apiKey: request.api_key | request.headers["x-api-key"] | ""
      protocol: request.scheme | context.protocol | "http"
      method: request.method | ""
      url: request.path | ""
      responseCode: response.code | 0
      responseFlags: context.proxy_error_code | ""
      responseSize: response.size | 0
      permissiveResponseCode: rbac.permissive.response_code | "none"
      permissiveResponsePolicyID: rbac.permissive.effective_policy_id | "none"
      requestSize: request.size | 0
      requestId: request.headers["x-request-id"] | ""
      clientTraceId: request.headers["x-client-trace-id"] | ""
      latency: response.duration | "0ms"
      connection_security_policy: conditional((context.reporter.kind | "inbound") == "outbound", "unknown", conditional(connection.mtls | false, "mutual_tls", "none"))
      requestedServerName: connection.requested_server_name | ""
      userAgent: request.useragent | ""
      responseTimestamp: response.time
      receivedBytes: request.total_size | 0
      sentBytes: response.total_size | 0
      referer: request.referer | ""
      httpAuthority: request.headers[":authority"] | request.host | ""
      xForwardedFor: request.headers["x-forwarded-for"] | "0.0.0.0"
      reporter: conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")
      grpcStatus: response.grpc_status | ""
      grpcMessage: response.grpc_message | ""
    monitored_resource_type: '"global"'
---
apiVersion: "config.istio.io/v1alpha2"
kind: handler
metadata:
  name: stdio
  namespace: istio-system
spec:
  compiledAdapter: stdio
  params:
    outputAsJson: true
    logStream: FILE
    outputPath: "{}"
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata:
  name: stdio
  namespace: istio-system
spec:
  match: context.protocol == "http" || context.protocol == "grpc"
  actions:
  - handler: stdio
    instances:
    - accesslog
"#,
        path.display()
    );
    objects_from_yaml(&yaml)
}

/// One request as the proxy sees it: its access-log entry and its Report bag, built with the
/// proxy's own code.
fn proxy_request(outbound: bool) -> (mesh_proxy::http::AccessLogEntry, Bag) {
    use mesh_proxy::http::{AccessLogEntry, Reporter};
    use mesh_proxy::mixer::{RequestAttributes, add_response};
    let req = http::Request::get("/reviews/1")
        .header("host", "reviews.default.svc.cluster.local:9080")
        .header("x-request-id", "6d1e1a6c-0f0b-4a1c-9a59-2b8f3c0e7d11")
        .header("user-agent", "curl/8.5.0")
        .body(())
        .unwrap();
    let (reporter, kind) = if outbound {
        (Reporter::Source, "outbound")
    } else {
        (Reporter::Destination, "inbound")
    };
    let src = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    let dst = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";
    let mut entry =
        AccessLogEntry::start(&req, Some("127.0.0.1:40000".parse().unwrap()), reporter, 17);
    entry.response_code = 201;
    entry.bytes_sent = 2048;
    entry.duration = 35;
    if outbound {
        entry.upstream_peer_principal = Some(dst.into());
        entry.upstream_cluster = Some("outbound|9080||reviews.default.svc.cluster.local".into());
        entry.upstream_host = Some("127.0.0.1:9081".into());
        entry.route_name = Some("default".into());
    } else {
        entry.downstream_peer_principal = Some(src.into());
        entry.upstream_cluster = Some("inbound|9080||".into());
    }
    let attrs = RequestAttributes {
        reporter_kind: kind,
        source_principal: Some(src),
        destination_principal: Some(dst),
        source_uid: None,
        destination_uid: None,
        destination_service_host: "reviews.default.svc.cluster.local",
        host: "reviews.default.svc.cluster.local:9080",
        path: req.uri().path(),
        method: req.method().as_str(),
        headers: req.headers(),
        mtls: true,
    };
    let mut bag = attrs.to_bag();
    add_response(&mut bag, 201, Duration::from_millis(35), 17, 2048);
    (entry, bag)
}

/// The fields the proxy fills and Mixer cannot know (not in the attributes the proxy sends).
const UNKNOWN_TO_MIXER: [&str; 4] = [
    "upstream_host",
    "upstream_cluster",
    "route_name",
    "downstream_remote_address",
];

fn millis_since_epoch(rfc3339: &str) -> i64 {
    // YYYY-MM-DDTHH:MM:SS.mmmZ, same day expected: compare time of day only (and the date).
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T').unwrap();
    let days: i64 = date.replace('-', "").parse().unwrap();
    let (hms, ms) = time.split_once('.').unwrap();
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    days * 86_400_000 + ((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().unwrap()
}

#[tokio::test]
async fn accesslog_instance_line_has_the_proxy_access_log_shape() {
    for outbound in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let svc = service(istio_accesslog(&path));
        let (entry, bag) = proxy_request(outbound);
        let proxy: Value = serde_json::from_slice(&entry.to_line()).unwrap();
        svc.handle_report(&compress_report(&[bag])).unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 1, "{got:?}");
        let mixer = &got[0];
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(mixer), keys(&proxy), "same field names");
        for (k, pv) in proxy.as_object().unwrap() {
            let mv = &mixer[k];
            if UNKNOWN_TO_MIXER.contains(&k.as_str()) {
                assert!(mv.is_null(), "{k}: {mv}");
            } else if k == "start_time" {
                let (a, b) = (pv.as_str().unwrap(), mv.as_str().unwrap());
                assert_eq!(a.len(), b.len(), "{a} {b}");
                assert!(b.ends_with('Z') && b.as_bytes()[10] == b'T', "{b}");
                // Mixer dates the request from its arrival minus the latency.
                assert!(
                    (millis_since_epoch(a) - millis_since_epoch(b)).abs() < 5_000,
                    "{a} {b}"
                );
            } else {
                assert_eq!(mv, pv, "{k} (outbound: {outbound})");
            }
        }
    }
}
