use super::*;
use crate::source::parse_text;

fn run(text: &str) -> Vec<String> {
    let docs: Vec<_> = parse_text("mesh.yaml", text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    analyze(&objects_from_documents(&docs))
        .iter()
        .map(ToString::to_string)
        .collect()
}

const BASE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {ports: [{port: 9080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: twoport, namespace: default}
spec: {ports: [{port: 80}, {port: 443}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["bookinfo.com"]}]}
---
"#;

#[test]
fn clean_config_has_no_findings() {
    let text = format!(
        "{BASE}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n"
    );
    assert_eq!(run(&text), Vec::<String>::new());
}

#[test]
fn dangling_references_are_ist0101() {
    let text = format!(
        r#"{BASE}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [bookinfo.com]
  gateways: [gw, missing-gw]
  http:
  - route:
    - destination: {{host: reviews, subset: v9}}
    - destination: {{host: nowhere}}
    - destination: {{host: reviews, port: {{number: 1}}}}
    - destination: {{host: twoport}}
"#
    );
    let f = run(&text);
    assert_eq!(
        f,
        vec![
            "Error [IST0101] (VirtualService default/reviews mesh.yaml:21) Referenced host+subset in destinationrule not found: \"reviews+v9\"",
            "Error [IST0101] (VirtualService default/reviews mesh.yaml:21) Referenced host not found: \"nowhere\"",
            "Error [IST0101] (VirtualService default/reviews mesh.yaml:21) Referenced host+port not found: \"reviews+1\"",
            "Error [IST0101] (VirtualService default/reviews mesh.yaml:21) Referenced gateway not found: \"missing-gw\"",
            "Error [IST0112] (VirtualService default/reviews mesh.yaml:21) This VirtualService routes to a service \"twoport\" that exposes multiple ports [80 443]. Specifying a port in the destination is required to disambiguate.",
            "Warning [IST0132] (VirtualService default/reviews mesh.yaml:21) one or more host [bookinfo.com] defined in VirtualService default/reviews not found in Gateway default/missing-gw.",
        ],
        "{f:#?}"
    );
}

#[test]
fn gateway_hosts_conflicts_unknown_hosts() {
    let text = format!(
        r#"{BASE}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a}}
spec:
  hosts: [other.com]
  gateways: [gw]
  tcp: [{{route: [{{destination: {{host: reviews}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b}}
spec: {{hosts: [reviews], tcp: [{{route: [{{destination: {{host: reviews}}}}]}}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: c, namespace: default}}
spec: {{hosts: [reviews.default.svc.cluster.local], gateways: [mesh], tcp: [{{route: [{{destination: {{host: reviews}}}}]}}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: d, namespace: other}}
spec: {{hosts: [details.default.svc.cluster.local], exportTo: ["."], tcp: [{{route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]}}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: e, namespace: x}}
spec: {{hosts: [details.default.svc.cluster.local], exportTo: ["."], tcp: [{{route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ghost}}
spec: {{host: ghost}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default}}
spec: {{egress: [{{hosts: ["./reviews.default.svc.cluster.local", "*/reviews", "./ghost.default.svc.cluster.local", "istio-system/*"]}}]}}
"#
    );
    let f = run(&text);
    let codes: Vec<(&str, &str)> = f
        .iter()
        .map(|l| (l.split(' ').nth(1).unwrap(), l.split(' ').nth(3).unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("[IST0132]", "default/a"),
            ("[IST0109]", "default/b"),
            ("[IST0109]", "default/c"),
            ("[IST0174]", "default/ghost"),
            ("[IST0101]", "default/default"),
        ],
        "{f:#?}"
    );
    assert!(f[0].starts_with("Warning [IST0132] (VirtualService default/a mesh.yaml:21) one or more host [other.com] defined in VirtualService default/a not found in Gateway default/gw."), "{}", f[0]);
    assert!(f[1].contains("The VirtualServices default/b,default/c associated with mesh gateway define the same host reviews.default.svc.cluster.local"), "{}", f[1]);
    assert!(
        f[4].ends_with("Referenced host not found: \"./ghost.default.svc.cluster.local\""),
        "{}",
        f[4]
    );
}

#[test]
fn findings_from_galley_have_no_position() {
    let obj: mesh_proto::config::ConfigObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "x", "namespace": "prod"}, "spec": {"host": "x"}}))
    .unwrap();
    let f = analyze(&[Object::from_config(&obj).unwrap()]);
    assert_eq!(
        f[0].to_string(),
        "Warning [IST0174] (DestinationRule prod/x) The host x defined in the DestinationRule does not match any services in the mesh."
    );
}

#[test]
fn single_object_analyzers() {
    let text = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: prod}
spec:
  host: db.prod.svc.cluster.local
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}
    - port: {number: 444}
      tls: {mode: SIMPLE, caCertificates: /ca.pem}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ok, namespace: prod}
spec: {host: db.prod.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp}
spec: {hosts: [a.com], ports: [{number: 5432, name: db, protocol: tcp}], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: https}
spec: {hosts: [b.com], ports: [{number: 443, name: https, protocol: HTTPS}], resolution: DNS}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rel}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_BEFORE, value: {name: x}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: prio}
spec:
  priority: 10
  configPatches:
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_BEFORE, value: {name: x}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: route-remove}
spec:
  configPatches:
  - applyTo: ROUTE_CONFIGURATION
    patch: {operation: REMOVE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: authz}
spec: {}
status:
  conditions:
  - {type: Ready, status: "True", reason: Fine}
  - {type: ZtunnelAccepted, status: "False", reason: UnsupportedValue, message: nope}
"#;
    let f: Vec<(String, String)> = run(text)
        .iter()
        .map(|l| {
            let code = l.split_whitespace().nth(1).unwrap().to_string();
            let obj = l.split_whitespace().nth(3).unwrap().to_string();
            (code, obj)
        })
        .collect();
    let want: Vec<(&str, &str)> = vec![
        ("[IST0128]", "prod/db"),
        ("[IST0129]", "prod/db"),
        ("[IST0134]", "default/tcp"),
        ("[IST0151]", "default/rel"),
        ("[IST0171]", "default/authz"),
    ];
    let mut got: Vec<(&str, &str)> = f
        .iter()
        .filter(|(c, _)| c != "[IST0174]" && c != "[IST0101]")
        .map(|(c, o)| (c.as_str(), o.as_str()))
        .collect();
    got.sort();
    assert_eq!(got, want, "{f:?}");
    let all = run(text).join("\n");
    assert!(all.contains("DestinationRule db in namespace prod has TLS mode set to MUTUAL but no caCertificates are set to validate server identity for host: db.prod.svc.cluster.local at port 443"), "{all}");
    assert!(
        all.contains("type=ZtunnelAccepted, reason=UnsupportedValue, message=nope."),
        "{all}"
    );
}

#[test]
fn gateways_serving_one_host_and_port_to_the_same_pods_conflict() {
    let text = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta}
spec:
  selector: {istio: ingressgateway, app: gw}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*.bar"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-port}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-pods}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
"#;
    let f = run(text);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f[0].starts_with("Error [IST0145] (Gateway default/alpha mesh.yaml:1) Conflict with gateways default/beta (workload selector istio=ingressgateway, port 80, hosts [foo.bar])."), "{}", f[0]);
    assert!(f[1].contains("[IST0145] (Gateway default/beta"), "{}", f[1]);
}
