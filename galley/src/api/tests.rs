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
