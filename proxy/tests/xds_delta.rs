//! The Delta ADS client against the real Pilot: initial config, an endpoint change arriving
//! as one ClusterLoadAssignment, a removed cluster, a NACKed bad route keeping the previous
//! config, a Pilot restart resumed with `initial_resource_versions`, and the fallback to SotW.
#![allow(clippy::unwrap_used)]

mod xds_pilot;

use mesh_proxy::xds::{XdsClientConfig, XdsProtocol};
use xds_pilot::{Pilot, Proxy, RATINGS, REVIEWS, Serve, World, wait_until};

fn client(pilot: &Pilot, protocol: XdsProtocol) -> XdsClientConfig {
    XdsClientConfig {
        addr: format!("http://{}", pilot.addr),
        protocol,
        tls: None,
    }
}

/// Whether the proxy's outbound routes send `reviews` to the reviews cluster.
fn routes_reviews(proxy: &Proxy) -> bool {
    let cfg = proxy.config.load();
    let Some(table) = cfg.route_table_for("virtualOutbound") else {
        return false;
    };
    mesh_proxy::routing::select(table, "reviews", "/x", &http::HeaderMap::new(), 0)
        .and_then(|s| s.cluster)
        .is_some_and(|c| c == REVIEWS)
}

#[tokio::test]
async fn delta_updates_removals_and_nacks_against_pilot() {
    let mut world = World::new(&["127.0.0.1"]);
    let pilot = Pilot::start(&world, None, Serve::Plain).await;
    let proxy = Proxy::start(client(&pilot, XdsProtocol::Delta), "default");

    wait_until("the initial config", || {
        proxy.readiness.is_ready()
            && proxy.endpoints(REVIEWS) == Some(1)
            && proxy.endpoints(RATINGS) == Some(1)
            && routes_reviews(&proxy)
    })
    .await;
    let statuses = pilot.proxies();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].protocol, "delta");
    assert_eq!(proxy.metrics.xds_connects.get(), 1);
    assert!(proxy.delta("eds", "added") >= 2);

    // An endpoint change reaches the proxy as one ClusterLoadAssignment and nothing else.
    let before = [
        proxy.delta("cds", "added"),
        proxy.delta("eds", "added"),
        proxy.delta("lds", "added"),
        proxy.delta("rds", "added"),
    ];
    let eds_acks = proxy.updates("eds", "ack");
    world.reviews_ips.push("127.0.0.2");
    pilot.publish(&world);
    wait_until("the new reviews endpoint", || {
        proxy.endpoints(REVIEWS) == Some(2)
    })
    .await;
    assert_eq!(proxy.updates("eds", "ack"), eds_acks + 1);
    assert_eq!(
        [
            proxy.delta("cds", "added"),
            proxy.delta("eds", "added"),
            proxy.delta("lds", "added"),
            proxy.delta("rds", "added"),
        ],
        [before[0], before[1] + 1, before[2], before[3]],
        "only the changed ClusterLoadAssignment was sent"
    );
    assert_eq!(proxy.endpoints(RATINGS), Some(1));

    // Removing ratings removes its cluster (and its endpoints go with it).
    let removed = proxy.delta("cds", "removed");
    world.without_ratings = true;
    pilot.publish(&world);
    wait_until("ratings to go", || {
        let cfg = proxy.config.load();
        !cfg.clusters.contains_key(RATINGS) && !cfg.endpoints.contains_key(RATINGS)
    })
    .await;
    assert_eq!(proxy.delta("cds", "removed"), removed + 1);
    assert!(routes_reviews(&proxy));

    // A route the proxy cannot compile is NACKed; the previous routes keep serving.
    let routes_version = proxy.config.load().versions.routes.clone();
    world.regex = Some("((");
    pilot.publish(&world);
    wait_until("the NACK", || proxy.updates("rds", "nack") == 1).await;
    wait_until("pilot to record the NACK", || {
        pilot.proxies()[0]
            .types
            .get("rds")
            .and_then(|t| t.last_nack.clone())
            .is_some_and(|n| n.error.contains("bad regex") && n.resources.len() == 1)
    })
    .await;
    let cfg = proxy.config.load();
    assert_eq!(cfg.versions.routes, routes_version);
    assert!(routes_reviews(&proxy), "the last good routes still serve");

    // A good route after the bad one is applied.
    world.regex = Some("/ok.*");
    pilot.publish(&world);
    wait_until("the fixed routes", || {
        proxy.config.load().versions.routes != routes_version
    })
    .await;
    assert_eq!(proxy.updates("rds", "nack"), 1);

    proxy.stop().await;
    pilot.stop().await;
}

#[tokio::test]
async fn reconnect_after_pilot_restart_sends_only_what_changed() {
    let mut world = World::new(&["127.0.0.1"]);
    let pilot = Pilot::start(&world, None, Serve::Plain).await;
    let addr = pilot.addr;
    let proxy = Proxy::start(client(&pilot, XdsProtocol::Delta), "default");
    wait_until("the initial config", || {
        proxy.readiness.is_ready() && proxy.endpoints(REVIEWS) == Some(1) && routes_reviews(&proxy)
    })
    .await;
    let count = |p: &Proxy| {
        ["cds", "eds", "lds", "rds"].map(|t| (p.delta(t, "added"), p.delta(t, "removed")))
    };
    let before = count(&proxy);

    // Pilot goes away; the proxy keeps its config.
    pilot.stop().await;
    assert!(routes_reviews(&proxy));
    assert_eq!(proxy.endpoints(REVIEWS), Some(1));

    // Pilot comes back on the same address with the same config: nothing is re-sent.
    let pilot = Pilot::start(&world, Some(addr), Serve::Plain).await;
    wait_until("the new stream to be answered on every type", || {
        proxy.metrics.xds_connects.get() == 2
            && pilot.proxies().first().is_some_and(|p| {
                ["cds", "eds", "lds", "rds"]
                    .iter()
                    .all(|t| p.types.get(t).is_some_and(|s| s.acked_version.is_some()))
            })
    })
    .await;
    assert_eq!(count(&proxy), before, "pilot sent nothing the proxy held");
    assert!(routes_reviews(&proxy));
    pilot.stop().await;

    // Back again after an endpoint change: only that ClusterLoadAssignment comes.
    world.reviews_ips.push("127.0.0.2");
    let pilot = Pilot::start(&world, Some(addr), Serve::Plain).await;
    wait_until("the changed endpoints", || {
        proxy.endpoints(REVIEWS) == Some(2)
    })
    .await;
    let mut expected = before;
    expected[1].0 += 1;
    assert_eq!(count(&proxy), expected);
    assert_eq!(proxy.metrics.xds_connects.get(), 3);

    proxy.stop().await;
    pilot.stop().await;
}

#[tokio::test]
async fn falls_back_to_sotw_when_delta_is_unimplemented() {
    let world = World::new(&["127.0.0.1"]);
    let pilot = Pilot::start(&world, None, Serve::SotwOnly).await;
    let proxy = Proxy::start(client(&pilot, XdsProtocol::Delta), "default");
    wait_until("the config over sotw", || {
        proxy.readiness.is_ready() && proxy.endpoints(REVIEWS) == Some(1) && routes_reviews(&proxy)
    })
    .await;
    assert_eq!(pilot.proxies()[0].protocol, "sotw");
    assert_eq!(proxy.delta("cds", "added"), 0);
    assert!(proxy.updates("cds", "ack") >= 1);
    proxy.stop().await;
    pilot.stop().await;

    // Asked for SotW, a Delta-capable Pilot is spoken to in SotW.
    let pilot = Pilot::start(&world, None, Serve::Plain).await;
    let proxy = Proxy::start(client(&pilot, XdsProtocol::Sotw), "default");
    wait_until("the config over sotw", || {
        proxy.readiness.is_ready() && routes_reviews(&proxy)
    })
    .await;
    assert_eq!(pilot.proxies()[0].protocol, "sotw");
    proxy.stop().await;
    pilot.stop().await;
}
