use mesh_proto::config::{ConfigObject, Kind};
use serde_json::json;

use super::*;

fn vs(ns: &str, name: &str, host: &str) -> ConfigObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [host]}
    }))
    .unwrap()
}

#[tokio::test]
async fn revisions_increase_per_batch_and_objects_carry_them() {
    let store = Store::temporary().unwrap();
    assert_eq!(store.revision(), 0);
    let mut rx = store.subscribe();
    let r = store
        .apply(vec![
            Change::Put(Kind::VirtualService, vs("", "a", "a")),
            Change::Put(Kind::VirtualService, vs("prod", "b", "b")),
        ])
        .await
        .unwrap();
    assert_eq!(r.revision, 1);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    let a = store
        .get(Kind::VirtualService, "default", "a")
        .unwrap()
        .unwrap();
    assert_eq!(a.metadata.namespace, "default", "namespace defaulted");
    assert_eq!(a.metadata.resource_version.as_deref(), Some("1"));
    assert_eq!(store.collection_revision(Kind::VirtualService).unwrap(), 1);
    assert_eq!(store.collection_revision(Kind::Gateway).unwrap(), 0);

    // identical put: nothing changes, no new revision
    let r = store
        .apply(vec![Change::Put(
            Kind::VirtualService,
            vs("default", "a", "a"),
        )])
        .await
        .unwrap();
    assert_eq!(r.revision, 1);
    assert_eq!(r.applied[0].revision, 1);
    assert!(!r.applied[0].changed);
    assert!(!rx.has_changed().unwrap());

    // changed put gets revision 2; other object keeps 1
    store
        .apply(vec![Change::Put(
            Kind::VirtualService,
            vs("default", "a", "x"),
        )])
        .await
        .unwrap();
    let list = store.list(Kind::VirtualService, None).unwrap();
    let revs: Vec<_> = list
        .iter()
        .map(|o| (o.key(), o.metadata.resource_version.clone().unwrap()))
        .collect();
    assert_eq!(
        revs,
        vec![
            ("default/a".to_string(), "2".to_string()),
            ("prod/b".to_string(), "1".to_string())
        ]
    );
    assert_eq!(
        store
            .list(Kind::VirtualService, Some("prod"))
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        store
            .delete(Kind::VirtualService, "prod", "b")
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        store
            .delete(Kind::VirtualService, "prod", "b")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.revision(), 3);
}

#[tokio::test]
async fn a_failing_batch_stores_nothing() {
    let store = Store::temporary().unwrap();
    store
        .apply(vec![Change::Put(
            Kind::VirtualService,
            vs("default", "keep", "k"),
        )])
        .await
        .unwrap();
    let err = store
        .apply(vec![
            Change::Put(Kind::VirtualService, vs("default", "new", "n")),
            Change::Delete {
                kind: Kind::VirtualService,
                namespace: "default".into(),
                name: "keep".into(),
            },
            Change::Put(Kind::VirtualService, vs("default", "", "n")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert_eq!(store.revision(), 1);
    let keys: Vec<_> = store
        .list(Kind::VirtualService, None)
        .unwrap()
        .iter()
        .map(ConfigObject::key)
        .collect();
    assert_eq!(keys, vec!["default/keep"]);
}

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(vec![Change::Put(
                Kind::VirtualService,
                vs("default", "a", "a"),
            )])
            .await
            .unwrap();
        store
            .apply(vec![Change::Put(
                Kind::VirtualService,
                vs("default", "b", "b"),
            )])
            .await
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revision(), 2);
    assert_eq!(store.list(Kind::VirtualService, None).unwrap().len(), 2);
    assert_eq!(
        object_key(Kind::VirtualService, "default", "a"),
        b"istio/networking/v1alpha3/virtualservices\0default/a".to_vec()
    );
    assert_eq!(
        object_key(Kind::Namespace, "", "prod"),
        b"k8s/core/v1/namespaces\0prod".to_vec()
    );
}
