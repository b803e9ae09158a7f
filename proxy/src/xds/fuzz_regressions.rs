//! Regression tests for inputs the coverage-guided fuzzers (`fuzz/`, docs/fuzzing.md) found.

use mesh_proto::envoy::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use mesh_proto::envoy::envoy::config::listener::v3::Listener as EnvoyListener;
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, TlsCertificate,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;
use prost::Message;

use super::state::{ApplyError, XdsState};
use super::testdata;

/// A gateway listener terminating TLS with the certificate and key read from `cert`, `key`.
fn gateway_listener(cert: &str, key: &str) -> Any {
    let base = testdata::listener_any("0.0.0.0_443", "https.443.gw");
    let mut l = EnvoyListener::decode(base.value.as_slice()).unwrap();
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

/// xds_apply: an LDS update naming `/dev/zero` as a gateway certificate made the proxy read
/// it forever (out of memory). It is NACKed now, and the accepted state keeps serving.
#[test]
fn a_device_as_certificate_file_is_nacked_not_read_forever() {
    let mut state = XdsState::default();
    let err = state
        .apply(
            type_url::LISTENER,
            "1",
            &[gateway_listener("/dev/zero", "/dev/zero")],
        )
        .unwrap_err();
    let ApplyError::Decode(e) = err else {
        panic!("not a decode error: {err}");
    };
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(state.snapshot().listeners.is_empty());
}
