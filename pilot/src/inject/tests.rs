//! Reviews of real Pod JSON, their patches applied with the `json-patch` crate.

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

fn config() -> InjectConfig {
    InjectConfig {
        proxy_image: "registry.example/mesh-proxy:1.0".into(),
        init_image: "registry.example/proxy-init:1.0".into(),
        xds_addr: "http://istio-pilot.istio-system.svc:15010".into(),
        citadel_addr: "http://istio-citadel.istio-system.svc:8060".into(),
        mixer_addr: Some("http://istio-policy.istio-system.svc:9091".into()),
        trust_domain: "cluster.local".into(),
    }
}

/// A Pod as a ReplicaSet creates it (no name yet, generateName, owner reference).
fn reviews_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v2-7d9c6b8f5-",
            "labels": {"app": "reviews", "version": "v2", "pod-template-hash": "7d9c6b8f5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "reviews-v2-7d9c6b8f5", "uid": "1", "controller": true}]
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [{
                "name": "reviews",
                "image": "docker.io/istio/examples-bookinfo-reviews-v2:1.16.2",
                "ports": [{"containerPort": 9080, "protocol": "TCP"}],
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}]
        }
    })
}

fn admission(api_version: &str, object: Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "object": object
        }
    })
}

/// Reviews `pod`; returns the response and the pod after its patch (the pod itself if none).
fn inject(pod: Value) -> (Value, Value) {
    let (answer, _) = review(&admission("admission.k8s.io/v1", pod.clone()), &config()).unwrap();
    let response = answer["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    let mut patched = pod;
    if let Some(p) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut patched, &ops).unwrap();
    }
    (response, patched)
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn flag(c: &Value, name: &str) -> Option<String> {
    let a = args(c);
    a.iter().position(|x| x == name).map(|i| a[i + 1].clone())
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn script(pod: &Value) -> String {
    let init = container(&pod["spec"]["initContainers"], INIT_CONTAINER);
    assert_eq!(init["command"][0], "sh");
    assert_eq!(init["command"][1], "-c");
    init["command"][2].as_str().unwrap().to_string()
}

#[test]
fn injects_init_and_proxy_into_a_plain_pod() {
    let (response, pod) = inject(reviews_pod());
    assert_eq!(response["allowed"], true);

    // The application is untouched, the proxy appended.
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "reviews");
    let proxy = &containers[1];
    assert_eq!(proxy["name"], PROXY_CONTAINER);
    assert_eq!(proxy["image"], "registry.example/mesh-proxy:1.0");
    assert_eq!(
        flag(proxy, "--xds-addr").as_deref(),
        Some("http://istio-pilot.istio-system.svc:15010")
    );
    assert_eq!(
        flag(proxy, "--citadel-addr").as_deref(),
        Some("http://istio-citadel.istio-system.svc:8060")
    );
    assert_eq!(
        flag(proxy, "--mixer-addr").as_deref(),
        Some("http://istio-policy.istio-system.svc:9091")
    );
    assert_eq!(
        flag(proxy, "--trust-domain").as_deref(),
        Some("cluster.local")
    );
    assert_eq!(flag(proxy, "--type").as_deref(), Some("sidecar"));
    assert_eq!(flag(proxy, "--app-addr").as_deref(), Some("127.0.0.1:9080"));
    assert_eq!(
        flag(proxy, "--token-file").as_deref(),
        Some("/var/run/secrets/tokens/istio-token")
    );
    // The iptables targets are the capture listeners; the other two stay on loopback.
    assert_eq!(
        flag(proxy, "--capture-inbound-addr").as_deref(),
        Some("0.0.0.0:15006")
    );
    assert_eq!(
        flag(proxy, "--capture-outbound-addr").as_deref(),
        Some("0.0.0.0:15001")
    );
    assert_eq!(
        flag(proxy, "--inbound-addr").as_deref(),
        Some("127.0.0.1:15082")
    );
    assert_eq!(
        flag(proxy, "--outbound-addr").as_deref(),
        Some("127.0.0.1:15081")
    );
    assert_eq!(
        env(proxy, "MESH_PROXY_POD")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(proxy, "MESH_PROXY_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env(proxy, "MESH_PROXY_SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(
        env(proxy, "MESH_PROXY_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        env(proxy, "MESH_PROXY_LABELS")["value"],
        "app=reviews,pod-template-hash=7d9c6b8f5,version=v2"
    );
    assert_eq!(
        env(proxy, "MESH_PROXY_WORKLOAD_NAME")["value"],
        "reviews-v2"
    );
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsUser"], 1337);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "100m");

    // The init container is the only one with network capabilities.
    let init = container(&pod["spec"]["initContainers"], INIT_CONTAINER);
    assert_eq!(init["image"], "registry.example/proxy-init:1.0");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let s = script(&pod);
    assert!(s.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
    assert!(s.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
    assert!(s.contains("--uid-owner 1337 -j RETURN"));

    // Volumes: the pod's own kept, the token projected for istio-ca.
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes[0]["name"], "tmp");
    let token = volumes.iter().find(|v| v["name"] == "istio-token").unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "istio-ca"
    );
    let mounts = proxy["volumeMounts"].as_array().unwrap();
    for m in mounts {
        assert!(volumes.iter().any(|v| v["name"] == m["name"]), "{m}");
    }

    // Status annotation (the pod had no annotations at all).
    let status: Value = serde_json::from_str(
        pod["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["containers"], json!(["istio-proxy"]));
    assert_eq!(status["initContainers"], json!(["istio-init"]));
}

#[test]
fn existing_init_containers_and_annotations_are_kept() {
    let mut pod = reviews_pod();
    pod["metadata"]["annotations"] = json!({
        "prometheus.io/scrape": "true",
        "sidecar.istio.io/proxyCPU": "250m",
    });
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "db-migrate:1"}]);
    let (response, pod) = inject(pod);
    assert_eq!(response["allowed"], true);
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    // The pod's own init container runs first, before capture starts.
    assert_eq!(inits[0]["name"], "migrate");
    assert_eq!(inits[1]["name"], INIT_CONTAINER);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert!(annotations[STATUS_ANNOTATION].is_string());
    let proxy = container(&pod["spec"]["containers"], PROXY_CONTAINER);
    assert_eq!(proxy["resources"]["requests"]["cpu"], "250m");
}

#[test]
fn excluded_ports_and_ranges_reach_the_init_script() {
    let mut pod = reviews_pod();
    pod["metadata"]["annotations"] = json!({
        "traffic.sidecar.istio.io/excludeOutboundPorts": "3306,6379",
        "traffic.sidecar.istio.io/excludeInboundPorts": "9090",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
    });
    let (_, pod) = inject(pod);
    let s = script(&pod);
    assert!(s.contains("-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN"));
    assert!(s.contains("-A ISTIO_OUTPUT -p tcp --dport 6379 -j RETURN"));
    assert!(s.contains("-A ISTIO_INBOUND -p tcp --dport 9090 -j RETURN"));
    assert!(s.contains("-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN"));
    assert!(s.contains("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT"));
    assert!(!s.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
}

#[test]
fn opted_out_host_network_and_injected_pods_are_left_alone() {
    let mut annotated = reviews_pod();
    annotated["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    let mut labelled = reviews_pod();
    labelled["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    let mut host = reviews_pod();
    host["spec"]["hostNetwork"] = json!(true);
    let mut has_proxy = reviews_pod();
    has_proxy["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "x"}));
    let mut has_status = reviews_pod();
    has_status["metadata"]["annotations"] = json!({STATUS_ANNOTATION: "{}"});
    for pod in [annotated, labelled, host, has_proxy, has_status] {
        let (response, patched) = inject(pod.clone());
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
        assert_eq!(patched, pod);
    }
    // A pod injected once and reviewed again is not injected twice.
    let (_, once) = inject(reviews_pod());
    let (response, _) = inject(once);
    assert!(response.get("patch").is_none());

    // "true" is not an opt-out.
    let mut opted_in = reviews_pod();
    opted_in["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "true"});
    assert!(inject(opted_in).0["patch"].is_string());
}

#[test]
fn v1beta1_is_answered_in_v1beta1() {
    let (answer, outcome) = review(
        &admission("admission.k8s.io/v1beta1", reviews_pod()),
        &config(),
    )
    .unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(outcome, Outcome::Injected);
}

#[test]
fn unreadable_pods_and_bad_annotations_are_denied_with_a_message() {
    for (pod, needle) in [
        (
            json!({"spec": {"containers": "nope"}}),
            "cannot read the pod",
        ),
        (json!("a string"), "cannot read the pod"),
        (
            {
                let mut p = reviews_pod();
                p["metadata"]["annotations"] =
                    json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "http"});
                p
            },
            "excludeOutboundPorts",
        ),
    ] {
        let (response, patched) = inject(pod.clone());
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 400);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
        assert_eq!(patched, pod);
    }
}

#[test]
fn malformed_reviews_are_errors_and_other_objects_pass() {
    let c = config();
    assert!(matches!(
        review(&json!({"apiVersion": "v1", "kind": "AdmissionReview"}), &c),
        Err(ReviewError::Version(_))
    ));
    assert!(matches!(
        review(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}),
            &c
        ),
        Err(ReviewError::Kind(_))
    ));
    assert!(matches!(
        review(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            &c
        ),
        Err(ReviewError::NoRequest)
    ));
    let mut no_uid = admission("admission.k8s.io/v1", reviews_pod());
    no_uid["request"]["uid"] = json!("");
    assert!(matches!(review(&no_uid, &c), Err(ReviewError::NoUid)));

    // A Service, or an UPDATE of a Pod, is allowed unchanged.
    let mut service = admission("admission.k8s.io/v1", json!({"kind": "Service"}));
    service["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    let (answer, outcome) = review(&service, &c).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(outcome, Outcome::Skipped);
    let mut update = admission("admission.k8s.io/v1", reviews_pod());
    update["request"]["operation"] = json!("UPDATE");
    let (answer, _) = review(&update, &c).unwrap();
    assert!(answer["response"].get("patch").is_none());
}

#[tokio::test]
async fn route_answers_400_415_and_reviews() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let metrics = InjectMetrics::default();
    let router = inject_router(config(), metrics.clone());
    let call = |content_type: &'static str, body: String| {
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(
                    Request::post(INJECT_PATH)
                        .header("content-type", content_type)
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, _) = call("text/plain", "{}".into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, body) = call("application/json", "".into()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "empty body")
    );
    let (status, body) = call("application/json", "{not json".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("body is not JSON"), "{body}");
    let (status, body) = call("application/json", json!({"kind": "X"}).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("apiVersion"), "{body}");

    let (status, body) = call(
        "application/json; charset=utf-8",
        admission("admission.k8s.io/v1", reviews_pod()).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let count = |result: &str| {
        metrics
            .reviews
            .get_or_create(&routes::ResultLabel {
                result: result.into(),
            })
            .get()
    };
    assert_eq!(count("bad_request"), 4);
    assert_eq!(count("injected"), 1);
}
