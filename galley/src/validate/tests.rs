use mesh_proto::config::Kind;

use super::*;

fn fields(r: &Report) -> Vec<(usize, String)> {
    r.errors.iter().map(|e| (e.line, e.field.clone())).collect()
}

const VS_BAD: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v2
      weight: 30
  - match:
    - uri:
        prefix: /x
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings
  namespace: prod
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      weight: "heavy"
"#;

#[test]
fn virtual_service_errors_carry_field_paths_and_lines() {
    let r = check_text("bookinfo.yaml", VS_BAD);
    assert!(r.objects.is_empty());
    assert_eq!(
        fields(&r),
        vec![
            (1, "spec.http[0].route".to_string()),
            (1, "spec.http[1]".to_string()),
            (22, "spec.http[0].route[0].weight".to_string()),
        ]
    );
    assert_eq!(
        r.errors[0].to_string(),
        "bookinfo.yaml:1: VirtualService default/reviews: spec.http[0].route: weights of the destinations sum to 80, must be 100"
    );
    assert_eq!(r.errors[2].namespace, "prod");
    assert_eq!(r.errors[2].name, "ratings");
}

#[test]
fn envelope_and_names() {
    let text = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: Bad/Name\nspec:\n  host: ''\n  subsets:\n  - name: v1\n  - name: v1\n---\nkind: Service\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n- just a list\n";
    let r = check_text("f.yaml", text);
    assert_eq!(
        fields(&r),
        vec![
            (1, "metadata.name".to_string()),
            (1, "spec.host".to_string()),
            (1, "spec.subsets[1].name".to_string()),
            (11, "apiVersion".to_string()),
            (18, String::new()),
        ]
    );
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].kind, "Deployment");
    assert_eq!(r.skipped[0].line, 14);
}

#[test]
fn gateways_services_and_valid_objects() {
    let text = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  servers:
  - port: {number: 80, protocol: HTTP, name: http}
  - port: {number: 0}
    hosts: ["*"]
  - hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports:
  - port: 0
  - port: 70000
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports: [{port: 9080, name: http}]
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, namespace: ignored}
"#;
    let r = check_text("f.yaml", text);
    let f = fields(&r);
    let expected: Vec<(usize, String)> = [
        (1, "spec.servers[0].hosts"),
        (1, "spec.servers[1].port.name"),
        (1, "spec.servers[1].port.protocol"),
        (1, "spec.servers[2].port"),
        (11, "spec.ports[1].port"),
    ]
    .into_iter()
    .map(|(l, f)| (l, f.to_string()))
    .collect();
    assert_eq!(
        f, expected,
        "structural errors replace the typed error of the same field"
    );
    assert_eq!(r.objects.len(), 2);
    assert_eq!(r.objects[0].kind, Kind::Service);
    assert_eq!(r.objects[0].object.metadata.namespace, "default");
    assert_eq!(r.objects[0].line, 19);
    assert_eq!(r.objects[1].kind, Kind::Namespace);
    assert_eq!(r.objects[1].object.metadata.namespace, "");

    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: ['*']\n";
    let r = check_text("g.yaml", gw);
    assert_eq!(
        fields(&r),
        vec![
            (1, "spec.servers[0].hosts".to_string()),
            (1, "spec.servers[1].port.number".to_string())
        ]
    );
}

#[test]
fn http_rules_need_an_action_and_direct_response_counts() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: []\n  http:\n  - directResponse: {status: 503}\n  - redirect: {uri: /x}\n    route: [{destination: {host: a}}]\n";
    let r = check_text("f.yaml", text);
    assert_eq!(
        fields(&r),
        vec![
            (1, "spec.hosts".to_string()),
            (1, "spec.http[1]".to_string())
        ]
    );
}

#[test]
fn bookinfo_conformance_samples_validate() {
    let dir =
        std::path::Path::new("/work/shared/conformance/istio/valid/samples/bookinfo/networking");
    let Ok(entries) = std::fs::read_dir(dir) else {
        println!(
            "conformance folder {} is missing: nothing checked",
            dir.display()
        );
        return;
    };
    let mut files = 0;
    let mut objects = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let r = check_text(&name, &text);
        let errs: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert!(errs.is_empty(), "{name}: {errs:#?}");
        assert!(r.skipped.is_empty(), "{name}: {:?}", r.skipped);
        assert!(!r.objects.is_empty(), "{name} has no objects");
        files += 1;
        objects += r.objects.len();
    }
    println!("conformance: {files} files, {objects} objects valid");
    assert!(files > 0);
}

#[test]
fn mixer_expressions_are_parsed_at_the_door() {
    let text = r#"apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny, namespace: istio-system}
spec:
  match: destination.labels["app"] == "ratings" &&
  actions: [{handler: denier, instances: [nothing]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      source: source.workload.name | "unknown"
      code: (response.code | 200
"#;
    let r = check_text("mixer.yaml", text);
    let got: Vec<String> = r
        .errors
        .iter()
        .map(|e| format!("{}:{}", e.field, e.message))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("spec.match:invalid expression")
            && got[0].ends_with("position 42: expected an operand, found end of expression"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("spec.params.dimensions.code:") && got[1].contains("position 21"),
        "{got:?}"
    );
}

#[test]
fn sidecar_rules_run_through_the_whole_check() {
    let text = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 10.0.0.1:8080
  - port: {number: 9080, protocol: TCP, name: tcp}
    bind: unix:///var/run/in.sock
  egress:
  - hosts: [reviews]
  - port: {number: 0, protocol: HTTP, name: uds}
    bind: 127.0.0.1
    hosts: ["./*"]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
    egressProxy: {host: proxy.example.com, port: {number: 3128}}
"#;
    let r = check_text("sc.yaml", text);
    assert!(r.objects.is_empty());
    let got: Vec<String> = r.errors.iter().map(|e| e.field.clone()).collect();
    assert_eq!(
        got,
        vec![
            "spec.ingress[0].defaultEndpoint",
            "spec.ingress[1].bind",
            "spec.ingress[1].port.number",
            "spec.egress[0]",
            "spec.egress[0].hosts[0]",
            "spec.egress[1].bind",
            "spec.outboundTrafficPolicy.egressProxy",
        ],
        "{:#?}",
        r.errors
    );
    let ok = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n    captureMode: NONE\n  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: unix:///var/run/out.sock\n    captureMode: NONE\n    hosts: [\"istio-system/*\"]\n  - hosts: [\"./*\", \"*/*.example.com\"]\n  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n    egressProxy: {host: proxy.example.com, port: {number: 3128}}\n";
    let r = check_text("ok.yaml", ok);
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(r.objects.len(), 1);
}
