//! Galley acknowledges an apply only once it is durable: SIGKILL in the middle of a stream of
//! applies loses no acknowledged change and leaves no half-written resource. The real galley
//! binary, killed at several moments, restarted each time on the same sled store.
//! Needs the workspace binaries built: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, http, poll};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Galley {
    child: Child,
    api: String,
}

impl Galley {
    async fn start(store: &Path) -> Galley {
        let (mcp, api, mon) = (free_port(), free_port(), free_port());
        let child = Command::new(bin("galley"))
            .args(["--store", &store.display().to_string()])
            .args(["--mcp-addr", &format!("127.0.0.1:{mcp}")])
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--monitoring-addr", &format!("127.0.0.1:{mon}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = format!("http://127.0.0.1:{mon}/readyz");
        poll("galley ready", Duration::from_secs(30), || {
            let ready = ready.clone();
            async move {
                let r = http().get(&ready).send().await.map_err(|e| e.to_string())?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(r.status().to_string())
                }
            }
        })
        .await;
        Galley {
            child,
            api: format!("http://127.0.0.1:{api}"),
        }
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown path runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The stored VirtualServices of `ns`: name → the `hosts[0]` they carry.
    async fn virtual_services(&self, ns: &str) -> BTreeMap<String, String> {
        let v: Value = http()
            .get(format!(
                "{}/apis/v1/virtualservices?namespace={ns}",
                self.api
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                // A half-written object would lack its spec or hosts.
                let host = o["spec"]["hosts"][0].as_str().unwrap_or_else(|| {
                    panic!("stored object without spec.hosts[0]: {o}");
                });
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    host.to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Galley {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two VirtualServices in one apply, both carrying generation `g` in their hosts.
fn pair(g: u32) -> String {
    let vs = |name: &str| {
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: durable\nspec:\n  hosts: [\"{name}-{g}.example.com\"]\n  http:\n  - route:\n    - destination:\n        host: {name}.durable.svc.cluster.local\n"
        )
    };
    format!("{}---\n{}", vs("a"), vs("b"))
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_apply_and_no_batch_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("galley.sled");
    let mut acknowledged = 0;
    let mut generation = 0;
    // Kill after 1, 7 and 23 applies, each time while an apply is in flight.
    for applies_before_kill in [1u32, 7, 23] {
        let mut galley = Galley::start(&store).await;
        // Everything acknowledged before the last kill is still there, in one piece: both
        // objects of an apply carry the same generation (a batch is all or nothing).
        let stored = galley.virtual_services("durable").await;
        if acknowledged > 0 {
            let want = format!("a-{acknowledged}.example.com");
            let got_a = stored.get("a").cloned().unwrap_or_default();
            let got_b = stored.get("b").cloned().unwrap_or_default();
            let gen_of = |h: &str| -> u32 {
                h.trim_start_matches(['a', 'b', '-'])
                    .trim_end_matches(".example.com")
                    .parse()
                    .unwrap()
            };
            // The acknowledged generation, or the one in flight when killed (durable but
            // unacknowledged), never an older one.
            let (ga, gb) = (gen_of(&got_a), gen_of(&got_b));
            assert!(
                ga >= acknowledged,
                "acknowledged {want} lost: stored {stored:?}"
            );
            assert_eq!(ga, gb, "a torn batch: {stored:?}");
            generation = ga;
        }
        for _ in 0..applies_before_kill {
            generation += 1;
            let r = http()
                .post(format!("{}/apis/v1/apply", galley.api))
                .body(pair(generation))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{:?}", r.text().await);
            acknowledged = generation;
        }
        // One more apply in flight, then SIGKILL while it may be half-way.
        let api = galley.api.clone();
        let in_flight = tokio::spawn(async move {
            let _ = http()
                .post(format!("{api}/apis/v1/apply"))
                .body(pair(generation + 1))
                .send()
                .await;
        });
        tokio::task::yield_now().await;
        galley.kill();
        let _ = in_flight.await;
    }
    // A last restart: the final state is whole too.
    let galley = Galley::start(&store).await;
    let stored = galley.virtual_services("durable").await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let a = &stored["a"];
    let b = &stored["b"];
    assert_eq!(
        a.trim_start_matches("a-"),
        b.trim_start_matches("b-"),
        "a torn batch: {stored:?}"
    );
    assert!(
        a.trim_start_matches("a-")
            .trim_end_matches(".example.com")
            .parse::<u32>()
            .unwrap()
            >= acknowledged,
        "acknowledged generation {acknowledged} lost: {stored:?}"
    );
}
