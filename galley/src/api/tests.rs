use axum::body::Body;
use axum::http::{Request, StatusCode};
use mesh_proto::config::Kind;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::store::Store;

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn post(body: &str) -> Request<Body> {
    Request::post("/apis/v1/apply")
        .header(SOURCE_HEADER, "reviews.yaml")
        .body(Body::from(body.to_string()))
        .unwrap()
}

const GOOD: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 80\n    - destination: {host: reviews, subset: v2}\n      weight: 20\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";

#[tokio::test]
async fn invalid_apply_is_400_with_field_errors_and_stores_nothing() {
    let store = Store::temporary().unwrap();
    let metrics = ApiMetrics::default();
    let app = api_router(store.clone(), metrics.clone());
    let bad = format!(
        "{GOOD}---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: ratings, namespace: prod}}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {{host: ratings}}\n      weight: -5\n    - destination: {{host: ratings}}\n      weight: 50\n"
    );
    let (status, body) = call(&app, post(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["spec.http[0].route[0].weight", "spec.http[0].route"]
    );
    assert_eq!(errors[0]["file"], "reviews.yaml");
    assert_eq!(errors[0]["line"], 17);
    assert_eq!(errors[0]["kind"], "VirtualService");
    assert_eq!(errors[0]["namespace"], "prod");
    assert_eq!(errors[0]["name"], "ratings");
    assert!(
        store.list(Kind::VirtualService, None).unwrap().is_empty(),
        "nothing stored"
    );
    assert_eq!(store.revision(), 0);
    assert_eq!(metrics.rejected.get(), 1);
}

#[tokio::test]
async fn apply_get_delete() {
    let store = Store::temporary().unwrap();
    let app = api_router(store.clone(), ApiMetrics::default());
    let (status, body) = call(&app, post(GOOD)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["applied"],
        serde_json::json!([{"kind": "VirtualService", "namespace": "default", "name": "reviews", "revision": 1}])
    );
    assert_eq!(body["skipped"][0]["kind"], "Deployment");
    assert_eq!(body["skipped"][0]["line"], 13);
    assert_eq!(body["skipped"][0]["file"], "reviews.yaml");

    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let (status, body) = call(&app, get("/apis/v1/virtualservices")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["metadata"]["name"], "reviews");
    assert_eq!(body["items"][0]["metadata"]["resourceVersion"], "1");
    assert_eq!(
        body["items"][0]["spec"]["http"][0]["route"][1]["weight"],
        20
    );
    let (_, body) = call(&app, get("/apis/v1/VirtualService?namespace=prod")).await;
    assert_eq!(body["items"], serde_json::json!([]));
    let (status, _) = call(&app, get("/apis/v1/widgets")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let del = |uri: &str| Request::delete(uri).body(Body::empty()).unwrap();
    let (status, body) = call(&app, del("/apis/v1/virtualservice/default/reviews")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["deleted"]["revision"], 2);
    let (status, _) = call(&app, del("/apis/v1/virtualservice/default/reviews")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(store.list(Kind::VirtualService, None).unwrap().is_empty());
}

#[tokio::test]
async fn history_lists_changes_and_rollback_restores_a_revision() {
    let store = Store::temporary().unwrap();
    let app = api_router(store.clone(), ApiMetrics::default());
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let roll = |rev: &str| {
        Request::post(format!("/apis/v1/rollback/{rev}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(call(&app, post(GOOD)).await.0, StatusCode::OK); // rev 1
    let changed = GOOD
        .replace("weight: 80", "weight: 50")
        .replace("weight: 20", "weight: 50")
        + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: {host: reviews}\n";
    assert_eq!(call(&app, post(&changed)).await.0, StatusCode::OK); // rev 2
    let del = Request::delete("/apis/v1/virtualservice/default/reviews")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, del).await.0, StatusCode::OK); // rev 3

    let (status, body) = call(&app, get("/apis/v1/history")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows: Vec<(u64, &str, &str, &str)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["rev"].as_u64().unwrap(),
                i["op"].as_str().unwrap(),
                i["kind"].as_str().unwrap(),
                i["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, "create", "VirtualService", "reviews"),
            (2, "update", "VirtualService", "reviews"),
            (2, "create", "DestinationRule", "reviews"),
            (3, "delete", "VirtualService", "reviews"),
        ]
    );
    assert!(body["items"][0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["items"][0]["namespace"], "default");
    let (_, body) = call(
        &app,
        get("/apis/v1/history?kind=destinationrule&namespace=default&name=reviews"),
    )
    .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let (status, _) = call(&app, get("/apis/v1/history?kind=widgets")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Back to revision 1: the VirtualService with 80/20 returns, the DestinationRule goes.
    let (status, body) = call(&app, roll("1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 4);
    assert_eq!(body["applied"].as_array().unwrap().len(), 2, "{body}");
    let vs = store
        .get(Kind::VirtualService, "default", "reviews")
        .unwrap()
        .unwrap();
    assert_eq!(vs.body["spec"]["http"][0]["route"][0]["weight"], 80);
    assert_eq!(vs.metadata.resource_version.as_deref(), Some("4"));
    assert!(store.list(Kind::DestinationRule, None).unwrap().is_empty());
    // Rolling back to where we are changes nothing.
    let (status, body) = call(&app, roll("4")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(store.revision(), 4);
    // Back to 2, then to the empty store.
    assert_eq!(call(&app, roll("2")).await.0, StatusCode::OK);
    assert_eq!(store.list(Kind::DestinationRule, None).unwrap().len(), 1);
    assert_eq!(
        store
            .get(Kind::VirtualService, "default", "reviews")
            .unwrap()
            .unwrap()
            .body["spec"]["http"][0]["route"][0]["weight"],
        50
    );
    assert_eq!(call(&app, roll("0")).await.0, StatusCode::OK);
    assert!(store.list(Kind::VirtualService, None).unwrap().is_empty());
    assert!(store.list(Kind::DestinationRule, None).unwrap().is_empty());

    assert_eq!(call(&app, roll("99")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, roll("x")).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_rollback_to_content_that_no_longer_validates_changes_nothing() {
    let store = Store::temporary().unwrap();
    let app = api_router(store.clone(), ApiMetrics::default());
    // Stored without validation (as by an older galley): weights 150 + -50.
    let bad: mesh_proto::config::ConfigObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews"}, "weight": 150},
            {"destination": {"host": "reviews"}, "weight": -50}]}]}
    }))
    .unwrap();
    store
        .apply(vec![crate::store::Change::Put(Kind::VirtualService, bad)])
        .await
        .unwrap(); // rev 1
    assert_eq!(call(&app, post(GOOD)).await.0, StatusCode::OK); // rev 2
    let req = Request::post("/apis/v1/rollback/1")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == "spec.http[0].route[0].weight"),
        "{body}"
    );
    assert_eq!(errors[0]["file"], "revision 1");
    assert_eq!(store.revision(), 2, "nothing changed");
    let vs = store
        .get(Kind::VirtualService, "default", "reviews")
        .unwrap()
        .unwrap();
    assert_eq!(vs.body["spec"]["http"][0]["route"][0]["weight"], 80);
}
