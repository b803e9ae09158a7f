//! Shared support for the end-to-end tests: finding the built binaries, running
//! `meshctl up --demo` in a temporary state directory, and stopping everything on drop (also when
//! a test fails).
//!
//! The tests start the REAL binaries. They must be built first:
//! `cargo build --workspace --bins` (`.ci/run` does it). The binaries are looked up in
//! `MESH_BIN_DIR` if set, else beside this package's own `bookinfo` binary (the target profile
//! directory, e.g. `target/debug`), which is where cargo puts every workspace binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The directory holding every workspace binary.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESH_BIN_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_BIN_EXE_bookinfo"))
        .parent()
        .expect("bookinfo has a parent directory")
        .to_path_buf()
}

/// The path of binary `name`, failing the test with the build command when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build every binary first with `cargo build --workspace --bins` \
         (or point MESH_BIN_DIR at them)",
        p.display()
    );
    p
}

/// Whether a process with this pid still exists.
/// A zombie (exited, not yet reaped: orphans wait for PID 1 to reap them) counts as gone.
pub fn alive(pid: i32) -> bool {
    let exists = match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    exists && !zombie(pid)
}

fn zombie(pid: i32) -> bool {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces, so read after the last ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state == 'Z')
}

/// Waits for `child` to exit, up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 200 ms until it returns `Some`, panicking with `what` and the last state
/// after `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An HTTP client that never uses a proxy from the environment.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client")
}

/// A running `meshctl up`; dropping it stops meshctl and kills every child it started.
pub struct Mesh {
    pub state: tempfile::TempDir,
    pub meshctl: Child,
    /// `STATE/mesh.json` as written once the mesh was ready.
    pub info: Value,
    stopped: bool,
}

impl Mesh {
    /// Runs `meshctl up --demo --state <tempdir>` and waits (with a deadline) for `mesh.json`.
    pub fn start_demo() -> Mesh {
        Mesh::start_demo_with(&[])
    }

    /// Like [`Mesh::start_demo`], with `extra` flags for `meshctl up`
    /// (e.g. `["--trace-collector", "127.0.0.1:4317"]`).
    pub fn start_demo_with(extra: &[&str]) -> Mesh {
        let state = tempfile::tempdir().expect("tempdir");
        let out = std::fs::File::create(state.path().join("meshctl.stdout")).expect("stdout file");
        let err = std::fs::File::create(state.path().join("meshctl.stderr")).expect("stderr file");
        let meshctl = Command::new(bin("meshctl"))
            .args(["up", "--demo", "--state"])
            .arg(state.path())
            .args(extra)
            .env("MESH_BIN_DIR", bin_dir())
            .env("MESH_UP_TIMEOUT", "240")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start meshctl");
        let mut mesh = Mesh {
            state,
            meshctl,
            info: Value::Null,
            stopped: false,
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        let path = mesh.state.path().join("mesh.json");
        loop {
            if let Ok(Some(status)) = mesh.meshctl.try_wait() {
                panic!(
                    "meshctl up exited ({status}) before the mesh was ready:\n{}",
                    mesh.diagnostics()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                mesh.info = v;
                return mesh;
            }
            if Instant::now() >= deadline {
                panic!("the mesh was not ready in time:\n{}", mesh.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn ingress(&self) -> String {
        self.info["ingress"]
            .as_str()
            .expect("mesh.json has ingress")
            .to_string()
    }

    /// A proxy's entry in mesh.json by pod name (`reviews-v1`, `istio-ingressgateway`).
    pub fn proxy(&self, pod: &str) -> &Value {
        let p = &self.info["proxies"][pod];
        assert!(p.is_object(), "mesh.json has no proxy {pod}: {}", self.info);
        p
    }

    /// Every child pid recorded in mesh.json.
    pub fn child_pids(&self) -> Vec<i32> {
        self.info["processes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["pid"].as_i64())
                    .map(|p| p as i32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// meshctl's stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.state.path().join("meshctl.stdout")).unwrap_or_default()
    }

    /// Runs `meshctl ARGS --state <state>` to completion (SIGTERM after 60 s, so a command that
    /// wrongly keeps running cannot hang the test).
    pub fn meshctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .arg("60")
            .arg(bin("meshctl"))
            .args(args)
            .arg("--state")
            .arg(self.state.path())
            .env_remove("MESH_GALLEY")
            .stdin(Stdio::null())
            .output()
            .expect("run meshctl")
    }

    /// Sends SIGTERM to meshctl and waits for it; returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stopped = true;
        let _ = kill(Pid::from_raw(self.meshctl.id() as i32), Signal::SIGTERM);
        wait_timeout(&mut self.meshctl, Duration::from_secs(20))
    }

    /// meshctl's output and the tail of every child log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let dir = self.state.path();
        let mut s = String::new();
        for f in ["meshctl.stdout", "meshctl.stderr"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            s.push_str(&format!("--- {f}\n{}\n", tail(&text, 30)));
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
            let mut logs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            logs.sort();
            for l in logs {
                let text = std::fs::read_to_string(&l).unwrap_or_default();
                s.push_str(&format!("--- {}\n{}\n", l.display(), tail(&text, 8)));
            }
        }
        s
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("mesh diagnostics:\n{}", self.diagnostics());
        }
        if !self.stopped || matches!(self.meshctl.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.meshctl.id() as i32), Signal::SIGTERM);
            if wait_timeout(&mut self.meshctl, Duration::from_secs(10)).is_none() {
                let _ = self.meshctl.kill();
                let _ = self.meshctl.wait();
            }
        }
        for pid in self.child_pids() {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}
