//! The inbound policy end to end: a `virtualInbound` listener shaped like Pilot's, compiled, then
//! asked about requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{EncodingKey, Header};
use mesh_proto::envoy::envoy::config::core::v3::{DataSource, HttpUri, data_source};
use mesh_proto::envoy::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter,
};
use mesh_proto::envoy::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use mesh_proto::envoy::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use mesh_proto::envoy::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtHeader, JwtProvider, JwtRequirement, JwtRequirementOrList, RemoteJwks,
    RequirementRule, jwt_provider, jwt_requirement, requirement_rule,
};
use mesh_proto::envoy::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_filter,
};
use mesh_proto::envoy::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, PathMatcher, StringMatcher, ValueMatcher, list_matcher,
    metadata_matcher, path_matcher, string_matcher, value_matcher,
};
use mesh_proto::envoy::google::protobuf::{Any, Empty, UInt32Value};
use serde_json::json;

use super::*;

const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDUWCw2nxJdN3XL
992qKeeQkZZZbCX/iPpcjZJLnd8oIpOcbZ8SxpVSZn+6C/S6BCa6JCL4HrwRLTD2
7jcSqKn7aT/I9G6NkRpZtIMNxiGb5gqrrivuiOrKwGGg7C/0Dn1fH+tPrQ2MFVEF
NaxWBhekjsD5pLkg2Vgd6iT4PyKwGRczYYChDkgb07qAu3Lom4aO/1wRYNIR208q
1F9VjySRtFTjsTxEQ26dt2U1WDBjzpAJU9VRTz3majrfs6b2/gyBB7LT9O2xtgaL
nkTLGNqvrtxQXEKA0Kc3u6U00u2bfQUx+fcAw5XoVYbFzAE25v4xACvnUV7WY/Fw
rEUCLYu1AgMBAAECggEADuGzD4zsa44Eemv/o/pV2ULqx4+Vxifia/QcCaKhzh1G
PRNNr7ItKt42G2LVHuhFkowPy1XUFlwVb2jYgT1C1HTW3I2M5e0CbMEC4kc9ecCQ
hOGrAIel9NmwvedvoOoXDUCebDITnfqsd/IABvNcWtMKYTSTKOMykr4jIybBlpe6
4zSocqybgJHfSRvWjnAqNtUpPc6QvWa/4vX0RNp/IbBac6HfVAsEJ5+ga7gNv6nU
F8KO5sJmfyQZITxiQvWb0ZX7Lifb9oW8LtLm4vX9broBujoWL+uHrFabn9/0uPoY
z38WAQfow1lzrvvUbpd5RsSuI+J/BhWT9w87n8otoQKBgQDqhd4Upa2KmWpwqWe4
U7VTH4/VgCEUYor1Lo+o0U6ReJ/0DMagS4jPs2yyWGdYMXTz5d/MhsvSaGpo8GTs
R0vczi9x1TBx6GYjUC5G4gMqKdhNfxazZCARoJGGV2YjvqPiEOX59k7rMBGo/4Fm
U1wNgoNqOeYt2R4K8jel+0RR/QKBgQDnylrPEFT4TVQsFCEVI4u0E49nMHHRauW1
6XAszR0SKv/4gCvvaiJyn9bf710BAw2K4gmYdpzEFXWTxPl6yucmGducc7OWr6JW
zK7vXutrQe0M4aszQdON2bLmtfyOgawrWF/8XZB9ucINkpg5NtGtgUl7zrbGnF5d
vFAFBkDSGQKBgBjFLuGrZhr/fTiNDAFyBfLToJOCRvwqNFcVJeNEyDGhNfPG7au8
jqSxZMepgrDT+HBSVUL68cg1cxfGXEKAfUjDFkvFoqpFS5RrQZgHAyKO7OOyiqlD
6Ac0mGpCDO21kwWrlz7BfzBkEVlyMy6lm1Fp+Ytcti0dg4jQcIQ9d8fZAoGBAOJl
l8Tf4t6UST60eou3KGE/KbZUbxdpHe1MkTBxN4/jSBlkt4UlWXgz/yDDH0g5vySE
G3M7h2tOuoUWw8bYIGXqo8JwkF0CN8IoMkXDpJYi0nLeiOWLyiKnHEKURpa6uXus
2jQY/2SN56hyIxTfInYh7bBr+8KKQPG1WUNPFEkhAoGAB4vzSDgP7EpRO2/nWRMe
xlvEBag5SiR9RWjXVKItjlrmaXRbYB30BOjPAEOY1nBgFNxRIKLS0nDY9uUbuq6t
6TjfaE0Z91+OqMRmYByPRBSMYiw6vT6mACXu9inhGHnO+rJ/5e9flgDygqLqt/Sj
E1+FzXVhOEpyZU6sKUrFlII=
-----END PRIVATE KEY-----";
const RSA_N: &str = "1FgsNp8SXTd1y_fdqinnkJGWWWwl_4j6XI2SS53fKCKTnG2fEsaVUmZ_ugv0ugQmuiQi-B68ES0w9u43Eqip-2k_yPRujZEaWbSDDcYhm-YKq64r7ojqysBhoOwv9A59Xx_rT60NjBVRBTWsVgYXpI7A-aS5INlYHeok-D8isBkXM2GAoQ5IG9O6gLty6JuGjv9cEWDSEdtPKtRfVY8kkbRU47E8RENunbdlNVgwY86QCVPVUU895mo637Om9v4MgQey0_TtsbYGi55Eyxjar67cUFxCgNCnN7ulNNLtm30FMfn3AMOV6FWGxcwBNub-MQAr51Fe1mPxcKxFAi2LtQ";
const ISSUER: &str = "testing@secure.istio.io";

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn listener(chains: &[(&str, Option<u32>)], filters: Vec<HttpFilter>) -> Listener {
    let hcm = HttpConnectionManager {
        http_filters: filters,
        ..HttpConnectionManager::default()
    };
    Listener {
        name: INBOUND_LISTENER.into(),
        filter_chains: chains
            .iter()
            .map(|(t, port)| FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    transport_protocol: t.to_string(),
                    destination_port: port.map(|value| UInt32Value { value }),
                    ..FilterChainMatch::default()
                }),
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: type_url::HTTP_CONNECTION_MANAGER.into(),
                        value: hcm.encode_to_vec(),
                    })),
                }],
                ..FilterChain::default()
            })
            .collect(),
        ..Listener::default()
    }
}

fn http_filter<M: Message + Name>(name: &str, m: &M) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(m))),
        ..HttpFilter::default()
    }
}

fn sm(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}

fn rbac_filter(action: rbac::Action, policies: Vec<(&str, Policy)>) -> HttpFilter {
    http_filter(
        "envoy.filters.http.rbac",
        &Rbac {
            rules: Some(RbacRules {
                action: action as i32,
                policies: policies
                    .into_iter()
                    .map(|(n, p)| (n.to_string(), p))
                    .collect::<HashMap<_, _>>(),
                ..RbacRules::default()
            }),
            ..Rbac::default()
        },
    )
}

fn pid(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}
fn perm(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}

fn peer_is(spiffe: &str) -> Principal {
    pid(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(sm(string_matcher::MatchPattern::Exact(spiffe.into()))),
        },
    ))
}

#[allow(deprecated)]
fn claim_is(claim: &str, v: &str) -> Principal {
    pid(principal::Identifier::Metadata(MetadataMatcher {
        filter: AUTHN_METADATA.into(),
        path: ["request.auth.claims", claim]
            .iter()
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
            })
            .collect(),
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                        ValueMatcher {
                            match_pattern: Some(value_matcher::MatchPattern::StringMatch(sm(
                                string_matcher::MatchPattern::Exact(v.into()),
                            ))),
                        },
                    ))),
                },
            ))),
        }),
        invert: false,
    }))
}

#[allow(deprecated)]
fn request_principal_present() -> Principal {
    pid(principal::Identifier::Metadata(MetadataMatcher {
        filter: AUTHN_METADATA.into(),
        path: vec![metadata_matcher::PathSegment {
            segment: Some(metadata_matcher::path_segment::Segment::Key(
                "request.auth.principal".into(),
            )),
        }],
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(
                    mesh_proto::envoy::envoy::r#type::matcher::v3::RegexMatcher {
                        regex: ".+".into(),
                        ..Default::default()
                    },
                )),
                ignore_case: false,
            })),
        }),
        invert: false,
    }))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Req {
    peer: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    headers: HeaderMap,
    auth: AuthFacts,
}

impl Req {
    fn new(peer: Option<&'static str>, method: &'static str, path: &'static str) -> Req {
        Req {
            peer,
            method,
            path,
            headers: HeaderMap::new(),
            auth: AuthFacts::default(),
        }
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            peer: self.peer,
            source: addr("10.0.0.7:4000"),
            destination: addr("127.0.0.1:9080"),
            method: self.method,
            host: "ratings:9080",
            path: self.path,
            path_and_query: self.path,
            headers: &self.headers,
            server_name: None,
            auth: Some(&self.auth),
        }
    }
}

const V3: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews-v3";
const V2: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

#[test]
fn deny_before_allow_and_no_matching_allow_denies() {
    let deny = Policy {
        principals: vec![pid(principal::Identifier::OrIds(principal::Set {
            ids: vec![peer_is(V3)],
        }))],
        permissions: vec![perm(permission::Rule::Any(true))],
        ..Policy::default()
    };
    // ALLOW GET /ratings* from any authenticated peer, or anyone with header x-admin: yes.
    let allow = Policy {
        principals: vec![
            pid(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: None,
                },
            )),
            pid(principal::Identifier::Header(HeaderMatcher {
                name: "x-admin".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    sm(string_matcher::MatchPattern::Exact("yes".into())),
                )),
                ..HeaderMatcher::default()
            })),
        ],
        permissions: vec![perm(permission::Rule::AndRules(permission::Set {
            rules: vec![
                perm(permission::Rule::Header(HeaderMatcher {
                    name: ":method".into(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::StringMatch(sm(
                            string_matcher::MatchPattern::Exact("GET".into()),
                        )),
                    ),
                    ..HeaderMatcher::default()
                })),
                perm(permission::Rule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(sm(
                        string_matcher::MatchPattern::Prefix("/ratings".into()),
                    ))),
                })),
                perm(permission::Rule::NotRule(Box::new(perm(
                    permission::Rule::DestinationPort(15000),
                )))),
            ],
        }))],
        ..Policy::default()
    };
    let l = listener(
        &[("tls", None)],
        vec![
            rbac_filter(
                rbac::Action::Deny,
                vec![("ns[default]-policy[deny]-rule[0]", deny)],
            ),
            rbac_filter(
                rbac::Action::Allow,
                vec![("ns[default]-policy[allow]-rule[0]", allow)],
            ),
        ],
    );
    let p = InboundPolicy::decode(&l).unwrap();
    assert_eq!(p.rbac.len(), 2);
    let decide = |r: &Req| p.authorize(&r.view());
    assert_eq!(
        decide(&Req::new(Some(V2), "GET", "/ratings/0")),
        Decision::Allow
    );
    // DENY wins even though ALLOW would match.
    assert!(
        matches!(decide(&Req::new(Some(V3), "GET", "/ratings/0")), Decision::Deny(r) if r.contains("policy[deny]"))
    );
    // No ALLOW matches: wrong method, wrong path, no peer.
    assert!(matches!(
        decide(&Req::new(Some(V2), "POST", "/ratings/0")),
        Decision::Deny(_)
    ));
    assert!(matches!(
        decide(&Req::new(Some(V2), "GET", "/details")),
        Decision::Deny(_)
    ));
    assert!(matches!(
        decide(&Req::new(None, "GET", "/ratings/0")),
        Decision::Deny(_)
    ));
    // Plaintext with the header is allowed by the second principal.
    let mut r = Req::new(None, "GET", "/ratings/1");
    r.headers.insert("x-admin", HeaderValue::from_static("yes"));
    assert_eq!(decide(&r), Decision::Allow);

    // ALLOW filter with no policies: everything denied. No filter at all: everything allowed.
    let none = InboundPolicy::decode(&listener(
        &[("tls", None)],
        vec![rbac_filter(rbac::Action::Allow, vec![])],
    ))
    .unwrap();
    assert!(matches!(
        check(&none, &Req::new(Some(V2), "GET", "/")),
        Decision::Deny(_)
    ));
    let open = InboundPolicy::decode(&listener(&[("tls", None)], vec![])).unwrap();
    assert_eq!(
        open.authorize(&Req::new(None, "GET", "/").view()),
        Decision::Allow
    );
}

fn check(p: &InboundPolicy, r: &Req) -> Decision {
    p.authorize(&r.view())
}

#[test]
fn request_principals_and_claims_come_from_the_verified_token() {
    let allow = Policy {
        principals: vec![pid(principal::Identifier::AndIds(principal::Set {
            ids: vec![request_principal_present(), claim_is("group", "admin")],
        }))],
        permissions: vec![perm(permission::Rule::Any(true))],
        ..Policy::default()
    };
    let p = InboundPolicy::decode(&listener(
        &[("tls", None), ("raw_buffer", None)],
        vec![rbac_filter(rbac::Action::Allow, vec![("a", allow)])],
    ))
    .unwrap();
    let mut r = Req::new(None, "GET", "/productpage");
    assert!(matches!(check(&p, &r), Decision::Deny(_)));
    let token = |claims: serde_json::Value| VerifiedJwt {
        provider: "origins-0".into(),
        metadata_key: ISSUER.into(),
        claims: claims.as_object().unwrap().clone(),
    };
    r.auth.tokens = vec![token(
        json!({"iss": ISSUER, "sub": "alice", "group": "admin"}),
    )];
    assert_eq!(check(&p, &r), Decision::Allow);
    assert_eq!(
        r.auth.principal().as_deref(),
        Some("testing@secure.istio.io/alice")
    );
    // List-valued claims match on any element.
    r.auth.tokens = vec![token(
        json!({"iss": ISSUER, "sub": "bob", "group": ["dev", "admin"]}),
    )];
    assert_eq!(check(&p, &r), Decision::Allow);
    r.auth.tokens = vec![token(json!({"iss": ISSUER, "sub": "bob", "group": "dev"}))];
    assert!(matches!(check(&p, &r), Decision::Deny(_)));
}

#[test]
fn modes_follow_the_filter_chains() {
    let modes = |chains: &[(&str, Option<u32>)]| {
        InboundPolicy::decode(&listener(chains, vec![]))
            .unwrap()
            .modes
    };
    assert_eq!(modes(&[("tls", None)]).for_port(9080), MtlsMode::Strict);
    assert_eq!(
        modes(&[("tls", None), ("raw_buffer", None)]).for_port(9080),
        MtlsMode::Permissive
    );
    assert_eq!(
        modes(&[("raw_buffer", None)]).for_port(9080),
        MtlsMode::Disable
    );
    let m = modes(&[("raw_buffer", Some(9080)), ("tls", None)]);
    assert_eq!(m.for_port(9080), MtlsMode::Disable);
    assert_eq!(m.for_port(9081), MtlsMode::Strict);
    assert!(InboundPolicy::decode(&listener(&[("quic", None)], vec![])).is_err());
}

#[tokio::test]
async fn sniffing_tells_tls_from_plaintext_without_consuming() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    for (bytes, want) in [
        (&[0x16u8, 0x03, 0x01][..], Some(true)),
        (b"GET / HTTP/1.1\r\n", Some(false)),
        (b"", None),
    ] {
        let mut c = tokio::net::TcpStream::connect(a).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        c.write_all(bytes).await.unwrap();
        if bytes.is_empty() {
            drop(c);
            assert_eq!(sniff_tls(&s, std::time::Duration::from_secs(5)).await, want);
            continue;
        }
        assert_eq!(sniff_tls(&s, std::time::Duration::from_secs(5)).await, want);
        // Nothing consumed: the first byte is still there.
        let mut s = s;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], bytes[0]);
    }
}

fn rsa_jwks() -> String {
    json!({"keys": [{"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"}]}).to_string()
}

struct EcKey {
    der: Vec<u8>,
    jwk: serde_json::Value,
}

fn ec_key(kid: &str) -> EcKey {
    use base64::Engine;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    EcKey {
        der: kp.serialize_der(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rs256(claims: serde_json::Value) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("rsa1".into());
    jsonwebtoken::encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn es256(key: &EcKey, kid: &str, claims: serde_json::Value) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(&key.der)).unwrap()
}

fn provider(jwks: jwt_provider::JwksSourceSpecifier, audiences: &[&str]) -> JwtProvider {
    JwtProvider {
        issuer: ISSUER.into(),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        forward_payload_header: "x-jwt-payload".into(),
        payload_in_metadata: ISSUER.into(),
        jwks_source_specifier: Some(jwks),
        ..JwtProvider::default()
    }
}

fn local(jwks: String) -> jwt_provider::JwksSourceSpecifier {
    jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
        specifier: Some(data_source::Specifier::InlineString(jwks)),
        ..DataSource::default()
    })
}

fn jwt_listener(providers: Vec<(&str, JwtProvider)>) -> Listener {
    let mut any: Vec<JwtRequirement> = providers
        .iter()
        .map(|(n, _)| JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(n.to_string())),
        })
        .collect();
    any.push(JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    });
    let cfg = JwtAuthentication {
        providers: providers
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect(),
        rules: vec![RequirementRule {
            r#match: None,
            requirement_type: Some(requirement_rule::RequirementType::Requires(
                JwtRequirement {
                    requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                        JwtRequirementOrList { requirements: any },
                    )),
                },
            )),
        }],
        ..JwtAuthentication::default()
    };
    listener(
        &[("tls", None)],
        vec![http_filter("envoy.filters.http.jwt_authn", &cfg)],
    )
}

async fn auth(p: &InboundPolicy, token: Option<&str>) -> (Result<AuthFacts, JwtError>, HeaderMap) {
    let mut h = HeaderMap::new();
    if let Some(t) = token {
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    let r = p
        .authenticate(&mut h, &Uri::from_static("/productpage"))
        .await;
    (r, h)
}

#[tokio::test]
async fn jwt_rs256_and_es256_against_inline_jwks() {
    let ec = ec_key("ec1");
    let jwks = json!({"keys": [serde_json::from_str::<serde_json::Value>(&rsa_jwks()).unwrap()["keys"][0].clone(), ec.jwk.clone()]}).to_string();
    let p = InboundPolicy::decode(&jwt_listener(vec![(
        "origins-0",
        provider(local(jwks), &["bookinfo"]),
    )]))
    .unwrap();
    let good = json!({"iss": ISSUER, "sub": "alice", "aud": "bookinfo", "exp": now() + 600});

    let (r, h) = auth(&p, Some(&rs256(good.clone()))).await;
    let facts = r.unwrap();
    assert_eq!(
        facts.principal().as_deref(),
        Some("testing@secure.istio.io/alice")
    );
    // Not forwarded: the token is removed; the payload goes in its header.
    assert!(h.get("authorization").is_none());
    let payload = h.get("x-jwt-payload").unwrap().to_str().unwrap();
    use base64::Engine;
    let decoded: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decoded["sub"], "alice");

    let (r, _) = auth(&p, Some(&es256(&ec, "ec1", good.clone()))).await;
    assert_eq!(
        r.unwrap().principal().as_deref(),
        Some("testing@secure.istio.io/alice")
    );

    // No token: passes on with no principal.
    let (r, _) = auth(&p, None).await;
    assert_eq!(r.unwrap().principal(), None);

    // Refused: wrong issuer, wrong audience, expired, signed by another key, garbage.
    let mut bad_iss = good.clone();
    bad_iss["iss"] = json!("someone-else");
    let mut bad_aud = good.clone();
    bad_aud["aud"] = json!("other");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let other = ec_key("ec1");
    for token in [
        rs256(bad_iss),
        rs256(bad_aud),
        rs256(expired),
        es256(&other, "ec1", good.clone()),
        "not.a.jwt".to_string(),
    ] {
        let (r, _) = auth(&p, Some(&token)).await;
        let e = r.unwrap_err();
        assert!(matches!(e, JwtError::Invalid(_)), "{token}: {e:?}");
        assert_eq!(e.to_string(), "Jwt verification fails");
    }
}

#[tokio::test]
async fn remote_jwks_is_fetched_once_and_cached() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ec = ec_key("k");
    let body = json!({"keys": [ec.jwk.clone()]}).to_string();
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/jwks.json", server.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = server.accept().await else {
                return;
            };
            h2.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let remote = jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
        http_uri: Some(HttpUri {
            uri: uri.clone(),
            ..HttpUri::default()
        }),
        ..RemoteJwks::default()
    });
    let p = InboundPolicy::decode(&jwt_listener(vec![("origins-0", provider(remote, &[]))]))
        .unwrap()
        .with_jwks_cache(&JwksCache::default());
    let good = json!({"iss": ISSUER, "sub": "bob", "exp": now() + 600});
    for _ in 0..3 {
        let (r, _) = auth(&p, Some(&es256(&ec, "k", good.clone()))).await;
        assert_eq!(
            r.unwrap().principal().as_deref(),
            Some("testing@secure.istio.io/bob")
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn custom_token_locations() {
    let mut prov = provider(local(rsa_jwks()), &[]);
    prov.from_headers = vec![JwtHeader {
        name: "x-jwt".into(),
        value_prefix: "".into(),
    }];
    prov.from_params = vec!["token".into()];
    prov.forward = true;
    let p = InboundPolicy::decode(&jwt_listener(vec![("origins-0", prov)])).unwrap();
    let t = rs256(json!({"iss": ISSUER, "sub": "carol"}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = HeaderMap::new();
        h.insert("x-jwt", HeaderValue::from_str(&t).unwrap());
        let r = p
            .authenticate(&mut h, &Uri::from_static("/"))
            .await
            .unwrap();
        assert_eq!(
            r.principal().as_deref(),
            Some("testing@secure.istio.io/carol")
        );
        // Forwarded: still there.
        assert!(h.get("x-jwt").is_some());
        let uri: Uri = format!("/x?token={t}").parse().unwrap();
        let r = p.authenticate(&mut HeaderMap::new(), &uri).await.unwrap();
        assert_eq!(
            r.principal().as_deref(),
            Some("testing@secure.istio.io/carol")
        );
        // The default Authorization header is not a location of this provider.
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert_eq!(
            p.authenticate(&mut h, &Uri::from_static("/"))
                .await
                .unwrap()
                .principal(),
            None
        );
    });
}

#[path = "policy_tests.rs"]
mod policy_tests;
