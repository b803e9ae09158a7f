//! Writes the seed corpora of every fuzz target under `fuzz/corpus/<target>/` (`fuzz/run.sh
//! --seeds`). It is built like the targets (with the coverage flags, so it links libFuzzer,
//! which owns `main`): run with `-runs=1`, it writes the files on
//! libFuzzer's first call. The xDS seeds are the proxy's own test resources
//! (`mesh_proxy::xds::testdata`, shaped like Pilot's) in real responses; the HTTP seeds are real
//! requests, pipelined requests and smuggling attempts.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use mesh_fuzz::frames::{self, DELTA};
use mesh_proto::attributes::{Bag, compress, compress_report};
use mesh_proto::envoy::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use mesh_proto::envoy::envoy::config::listener::v3::Listener;
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, TlsCertificate,
};
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;
use mesh_proxy::xds::testdata;
use prost::Message;

const C: &str = "outbound|9080||reviews.default.svc.cluster.local";

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn sotw(url: &str, version: &str, resources: Vec<Any>) -> (u8, Vec<u8>) {
    let r = DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: url.into(),
        nonce: format!("n-{version}"),
        ..Default::default()
    };
    (0xff, r.encode_to_vec())
}

fn delta(url: &str, version: &str, resources: Vec<(&str, Any)>, removed: &[&str]) -> (u8, Vec<u8>) {
    let r = DeltaDiscoveryResponse {
        system_version_info: version.into(),
        resources: resources
            .into_iter()
            .map(|(name, body)| Resource {
                name: name.into(),
                version: version.into(),
                resource: Some(body),
                ..Default::default()
            })
            .collect(),
        type_url: url.into(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: format!("d-{version}"),
        ..Default::default()
    };
    (0xff, r.encode_to_vec())
}

/// A gateway listener terminating TLS with certificate files at `cert` and `key` (files that
/// do not exist make Pilot's update NACKed).
fn gateway_listener(cert: &str, key: &str) -> Any {
    let base = testdata::listener_any("0.0.0.0_443", "https.443.gw");
    let mut l = Listener::decode(base.value.as_slice()).expect("testdata listener");
    let file = |f: &str| DataSource {
        specifier: Some(data_source::Specifier::Filename(f.into())),
        ..Default::default()
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    l.filter_chains[0].transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
            type_url: type_url::DOWNSTREAM_TLS_CONTEXT.into(),
            value: tls.encode_to_vec(),
        })),
    });
    Any {
        type_url: type_url::LISTENER.into(),
        value: l.encode_to_vec(),
    }
}

fn xds() {
    let cluster = testdata::cluster_any(C, Some("spiffe://cluster.local/ns/default/sa/reviews"));
    let plain = testdata::cluster_any("outbound|80||plain.default.svc.cluster.local", None);
    let cla = testdata::cla_any(C, &["127.0.0.1:9080", "10.0.0.1:80"]);
    let listener = testdata::listener_any("virtualOutbound", "http_proxy");
    let route = testdata::route_any("http_proxy", "reviews", "/", C);
    let weighted =
        testdata::weighted_route_any("http_proxy", "ratings:9080", &[(C, 25), ("b", 75)]);
    let bad = testdata::bad_regex_route_any("http_proxy");
    let full = vec![
        sotw(type_url::CLUSTER, "1", vec![cluster.clone(), plain.clone()]),
        sotw(type_url::ENDPOINT, "1", vec![cla.clone()]),
        sotw(type_url::LISTENER, "1", vec![listener.clone()]),
        sotw(type_url::ROUTE, "1", vec![route.clone()]),
        sotw(type_url::ROUTE, "2", vec![weighted.clone()]),
    ];
    write("xds_apply", "sotw-full", &frames::join(0, &full));
    write(
        "xds_apply",
        "sotw-nack",
        &frames::join(
            0,
            &[
                sotw(type_url::LISTENER, "1", vec![listener.clone()]),
                sotw(type_url::ROUTE, "1", vec![bad.clone()]),
                sotw(
                    type_url::CLUSTER,
                    "2",
                    vec![cluster.clone(), cluster.clone()],
                ),
                sotw("type.googleapis.com/unknown", "3", vec![]),
            ],
        ),
    );
    let d = vec![
        delta(
            type_url::CLUSTER,
            "1",
            vec![(C, cluster.clone()), ("plain", plain)],
            &[],
        ),
        delta(type_url::ENDPOINT, "1", vec![(C, cla)], &[]),
        delta(
            type_url::LISTENER,
            "1",
            vec![("virtualOutbound", listener)],
            &[],
        ),
        delta(type_url::ROUTE, "1", vec![("http_proxy", route)], &[]),
        delta(type_url::ROUTE, "2", vec![("http_proxy", weighted)], &[]),
        delta(type_url::CLUSTER, "3", vec![], &["plain"]),
        delta(type_url::ROUTE, "4", vec![("http_proxy", bad)], &[]),
    ];
    write("xds_apply", "delta-full", &frames::join(DELTA, &d));
    let gw = gateway_listener("/nonexistent/gw/tls.crt", "/nonexistent/gw/tls.key");
    write(
        "xds_apply",
        "sotw-gateway-tls",
        &frames::join(0, &[sotw(type_url::LISTENER, "1", vec![gw])]),
    );
    // Found with this target: a device as a certificate file was read until memory ran out.
    let zero = gateway_listener("/dev/zero", "/dev/zero");
    write(
        "xds_apply",
        "regression-dev-zero-cert",
        &frames::join(0, &[sotw(type_url::LISTENER, "1", vec![zero])]),
    );
}

fn http() {
    let reqs: &[(&str, &[u8])] = &[
        ("get", b"GET /productpage HTTP/1.1\r\nHost: productpage:9080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"),
        ("post-pipelined", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("lf-only", b"\r\nGET /b HTTP/1.1\nhost: x\n\nGET /c HTTP/1.1\nhost: x\nconnection: close\n\n"),
        ("chunked", b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("cl-te", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("te-cl", b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"),
        ("cl-list", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("cl-dup", b"POST /a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhiPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("body-looks-like-head", b"POST /a HTTP/1.1\r\nContent-Length: 60\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("te-obfuscated", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding : chunked\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"),
        ("upgrade", b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        ("connect", b"CONNECT reviews:9080 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"),
        ("http10", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"),
        ("expect", b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"),
        ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
        ("tls-hello", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"),
        ("not-http", b"\x00\x01 SSH-2.0-OpenSSH\r\n"),
    ];
    for (name, r) in reqs {
        // http_head_guard: two control bytes (read sizes, head limit) then the stream.
        let mut g = vec![0x83, 0xff];
        g.extend_from_slice(r);
        write("http_head_guard", name, &g);
        let mut g = vec![0x05, 0x08];
        g.extend_from_slice(r);
        write("http_head_guard", &format!("{name}-split"), &g);
        // http_front: one control byte (write size) then the stream.
        let mut f = vec![0xff];
        f.extend_from_slice(r);
        write("http_front", name, &f);
    }
}

fn mixer() {
    let mut labels = BTreeMap::new();
    labels.insert(":authority".to_string(), "reviews:9080".to_string());
    labels.insert("x-custom".to_string(), "v".to_string());
    let bag = Bag::new()
        .with("source.uid", "kubernetes://productpage-v1.default")
        .with(
            "destination.service.host",
            "reviews.default.svc.cluster.local",
        )
        .with("request.size", 1234i64)
        .with("response.code", 200i64)
        .with("connection.mtls", true)
        .with("request.headers", labels)
        .with(
            "request.time",
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        )
        .with("response.duration", Duration::from_micros(2_500))
        .with("check.cache_hit", false)
        .with("api.operation", "made-up word")
        .with("request.auth.raw_claims", b"\x00\x01".to_vec())
        .with("response.grpc_message", 0.5f64);
    let mut a = vec![0u8];
    a.extend_from_slice(&compress(&bag).encode_to_vec());
    write("mixer_attributes", "check-bag", &a);
    let mut second = bag.clone();
    second.set("response.code", 503i64);
    second.remove("api.operation");
    let mut r = vec![1u8];
    r.extend_from_slice(&compress_report(&[bag.clone(), second, bag]).encode_to_vec());
    write("mixer_attributes", "report-delta", &r);
}

libfuzzer_sys::fuzz_target!(|_data: &[u8]| {
    xds();
    http();
    mixer();
});
