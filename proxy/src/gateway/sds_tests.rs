//! SDS secrets from Pilot: decoding, NACKs, feeding gateway listeners, rotation.

use mesh_proto::envoy::envoy::config::core::v3::{DataSource, Node, data_source};
use mesh_proto::envoy::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use mesh_proto::envoy::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use mesh_proto::envoy::google::protobuf::Any;
use mesh_proto::type_url;

use super::*;
use crate::xds::{AdsSession, DeltaSession};

fn inline(b: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(b.as_bytes().to_vec())),
        ..DataSource::default()
    })
}

fn cert_secret(name: &str, (cert, key): &(String, String)) -> Any {
    Any {
        type_url: type_url::SECRET.to_string(),
        value: Secret {
            name: name.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(cert),
                private_key: inline(key),
                ..TlsCertificate::default()
            })),
        }
        .encode_to_vec(),
    }
}

fn ca_secret(name: &str, ca: &str) -> Any {
    Any {
        type_url: type_url::SECRET.to_string(),
        value: Secret {
            name: name.to_string(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(ca),
                    ..CertificateValidationContext::default()
                },
            )),
        }
        .encode_to_vec(),
    }
}

const CRED: &str = "sds-test-cred-no-such-dir";

fn sds_listeners() -> Vec<Any> {
    pilot_listeners(json!([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
         "hosts": ["bookinfo.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": CRED}}
    ]))
    .iter()
    .map(any)
    .collect()
}

#[test]
fn secrets_decode_and_bad_pem_or_a_foreign_key_is_refused() {
    let ca = TestCa::new("sds ca");
    let pair = ca.leaf(&["bookinfo.example.com"]);
    let s = decode_secret(&cert_secret("a", &pair)).unwrap();
    assert_eq!(s.name, "a");
    assert_eq!(s.part(SecretPart::CertChain), Some(pair.0.as_bytes()));
    assert_eq!(s.part(SecretPart::PrivateKey), Some(pair.1.as_bytes()));
    assert_eq!(s.part(SecretPart::TrustedCa), None);
    assert!(!format!("{s:?}").contains("PRIVATE KEY"), "no key in logs");
    let v = decode_secret(&ca_secret("a-cacert", &ca.pem)).unwrap();
    assert_eq!(v.part(SecretPart::TrustedCa), Some(ca.pem.as_bytes()));

    let (field, reason) =
        decode_secret(&cert_secret("a", &("garbage".into(), pair.1.clone()))).unwrap_err();
    assert_eq!(field, "tls_certificate.certificate_chain");
    assert!(reason.contains("bad PEM"), "{reason}");
    let (field, reason) =
        decode_secret(&cert_secret("a", &(pair.0.clone(), "nope".into()))).unwrap_err();
    assert_eq!(field, "tls_certificate.private_key");
    assert!(reason.contains("bad PEM"), "{reason}");
    let other_key = ca.leaf(&["x.example.com"]).1;
    let (_, reason) = decode_secret(&cert_secret("a", &(pair.0.clone(), other_key))).unwrap_err();
    assert!(reason.contains("does not match"), "{reason}");
    let (field, _) = decode_secret(&ca_secret("a-cacert", "not a ca")).unwrap_err();
    assert_eq!(field, "validation_context.trusted_ca");
    let mut wrong = cert_secret("a", &pair);
    wrong.type_url = type_url::CLUSTER.into();
    assert!(decode_secret(&wrong).is_err());
}

#[tokio::test]
async fn pilot_secrets_feed_the_listener_rotate_and_bad_ones_are_nacked() {
    let mut state = XdsState::default();
    let (_, cfg) = state
        .apply(type_url::LISTENER, "l1", &sds_listeners())
        .unwrap();
    assert_eq!(state.secret_names().into_iter().collect::<Vec<_>>(), [CRED]);
    // Neither a secret nor a file yet: the chain waits, handshakes are refused.
    let tls = cfg.gateway_tls("0.0.0.0_443").unwrap().clone();
    assert!(tls.waiting());
    assert!(tls.select(Some("bookinfo.example.com")).is_none());

    // The secret arrives (with one nobody references, which is ignored).
    let ca1 = TestCa::new("first ca");
    let stray = ca1.leaf(&["stray.example.com"]);
    let (_, cfg) = state
        .apply(
            type_url::SECRET,
            "s1",
            &[
                cert_secret(CRED, &ca1.leaf(&["bookinfo.example.com"])),
                cert_secret("stray", &stray),
            ],
        )
        .unwrap();
    let tls1 = cfg.gateway_tls("0.0.0.0_443").unwrap().clone();
    assert!(!tls1.waiting());
    assert_eq!(tls1.secrets().keys().collect::<Vec<_>>(), [CRED]);
    let (_, got) = handshake(tls1.clone(), client(&ca1, None), "bookinfo.example.com").await;
    assert_eq!(got.as_deref(), Ok("world"));

    // Rotation: a new certificate from another CA; new connections use it.
    let ca2 = TestCa::new("second ca");
    let (_, cfg) = state
        .apply(
            type_url::SECRET,
            "s2",
            &[cert_secret(CRED, &ca2.leaf(&["bookinfo.example.com"]))],
        )
        .unwrap();
    let tls2 = cfg.gateway_tls("0.0.0.0_443").unwrap().clone();
    assert!(!Arc::ptr_eq(&tls1, &tls2));
    let (_, got) = handshake(tls2.clone(), client(&ca2, None), "bookinfo.example.com").await;
    assert_eq!(got.as_deref(), Ok("world"));
    let (_, got) = handshake(tls2.clone(), client(&ca1, None), "bookinfo.example.com").await;
    assert!(got.is_err(), "the old certificate is gone");

    // The same listeners again: the TLS object (and its secret) is kept.
    let (_, cfg) = state
        .apply(type_url::LISTENER, "l2", &sds_listeners())
        .unwrap();
    assert!(Arc::ptr_eq(cfg.gateway_tls("0.0.0.0_443").unwrap(), &tls2));

    // A malformed secret is NACKed with the reason; the last good one keeps serving.
    let err = state
        .apply(
            type_url::SECRET,
            "s3",
            &[cert_secret(CRED, &("garbage".into(), "garbage".into()))],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("secret {CRED}")) && err.contains("bad PEM"),
        "{err}"
    );
    assert!(Arc::ptr_eq(
        state.snapshot().gateway_tls("0.0.0.0_443").unwrap(),
        &tls2
    ));
}

#[test]
fn both_protocols_subscribe_to_the_secrets_gateway_listeners_name() {
    let listeners = sds_listeners();
    // SotW: the LDS response is followed by an SDS request naming the credential.
    let mut s = AdsSession::new(Node::default());
    drop(s.initial_requests());
    let (reqs, res) = s.on_response(&DiscoveryResponse {
        version_info: "l1".into(),
        resources: listeners.clone(),
        type_url: type_url::LISTENER.into(),
        nonce: "n1".into(),
        ..Default::default()
    });
    assert!(res.is_ok());
    let sds: Vec<_> = reqs
        .iter()
        .filter(|r| r.type_url == type_url::SECRET)
        .collect();
    assert_eq!(sds.len(), 1);
    assert_eq!(sds[0].resource_names, [CRED]);

    // Delta: subscribed, and the new listener waits (warming) until Pilot answers the name.
    let mut d = DeltaSession::new(Node::default());
    drop(d.initial_requests());
    let out = d.on_response(&DeltaDiscoveryResponse {
        system_version_info: "l1".into(),
        resources: listeners
            .iter()
            .enumerate()
            .map(|(i, a)| Resource {
                name: format!("l{i}"),
                version: "1".into(),
                resource: Some(a.clone()),
                ..Default::default()
            })
            .collect(),
        type_url: type_url::LISTENER.into(),
        nonce: "d1".into(),
        ..Default::default()
    });
    assert!(out.result.is_ok());
    let sub: Vec<_> = out
        .requests
        .iter()
        .filter(|r| r.type_url == type_url::SECRET)
        .collect();
    assert_eq!(sub.len(), 1);
    assert_eq!(sub[0].resource_names_subscribe, [CRED]);
    // The route configuration is answered; the secret is still awaited.
    let rds = out
        .requests
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .unwrap()
        .resource_names_subscribe
        .clone();
    let out = d.on_response(&DeltaDiscoveryResponse {
        system_version_info: "r1".into(),
        type_url: type_url::ROUTE.into(),
        removed_resources: rds,
        nonce: "r1".into(),
        ..Default::default()
    });
    assert!(out.result.is_ok());
    assert!(!d.is_warm(), "waits for the secret");
    let ca = TestCa::new("delta ca");
    let out = d.on_response(&DeltaDiscoveryResponse {
        system_version_info: "s1".into(),
        resources: vec![Resource {
            name: CRED.into(),
            version: "1".into(),
            resource: Some(cert_secret(CRED, &ca.leaf(&["bookinfo.example.com"]))),
            ..Default::default()
        }],
        type_url: type_url::SECRET.into(),
        nonce: "d2".into(),
        ..Default::default()
    });
    let (_, cfg) = out.result.unwrap();
    assert!(d.is_warm());
    assert!(!cfg.gateway_tls("0.0.0.0_443").unwrap().waiting());
    // Pilot withdraws the secret: back to the (missing) file fallback, the chain waits.
    let out = d.on_response(&DeltaDiscoveryResponse {
        system_version_info: "s2".into(),
        type_url: type_url::SECRET.into(),
        removed_resources: vec![CRED.into()],
        nonce: "d3".into(),
        ..Default::default()
    });
    let (_, cfg) = out.result.unwrap();
    assert!(cfg.gateway_tls("0.0.0.0_443").unwrap().waiting());
}
