//! `meshctl up` killed outright (SIGKILL, no chance to clean up) leaves no child behind: every
//! child watches the stdin pipe meshctl holds and stops when the kernel closes it.
//! Needs the workspace binaries built: `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::Duration;

use common::{Mesh, alive, poll};

#[tokio::test]
async fn sigkill_of_meshctl_leaves_no_child() {
    let mut mesh = Mesh::start_demo();
    let children = mesh.child_pids();
    assert!(
        children.len() >= 10,
        "expected the control plane, apps and proxies: {children:?}"
    );
    assert!(children.iter().all(|p| alive(*p)));
    mesh.meshctl.kill().unwrap(); // SIGKILL
    mesh.meshctl.wait().unwrap();
    poll(
        "every child of the killed meshctl to exit",
        Duration::from_secs(30),
        || {
            let left: Vec<i32> = children.iter().copied().filter(|p| alive(*p)).collect();
            async move {
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still alive: {left:?}"))
                }
            }
        },
    )
    .await;
}
