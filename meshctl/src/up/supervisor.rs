//! The child processes of `meshctl up`: started with their output in `logs/<name>.log`, each in
//! its own process group (a terminal's Ctrl-C reaches only meshctl, which then stops them in
//! order), watched for unexpected exits, and stopped with SIGTERM, then SIGKILL after a grace
//! period.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::plan::ProcSpec;
use crate::state::ProcessInfo;

/// How many log lines an error about an exited child shows.
pub const TAIL_LINES: usize = 20;

/// Starting a child failed, or one exited.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot create log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {name} ({}): {source}", program.display())]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited unexpectedly ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
}

#[derive(Debug)]
struct Supervised {
    name: String,
    pid: u32,
    log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

/// The running children.
#[derive(Debug)]
pub struct Supervisor {
    log_dir: PathBuf,
    children: Vec<Supervised>,
}

impl Supervisor {
    /// A supervisor writing child logs into `log_dir` (which must exist).
    pub fn new(log_dir: &Path) -> Self {
        Supervisor {
            log_dir: log_dir.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Starts `spec`, its stdout and stderr going to `logs/<name>.log` (truncated).
    pub fn spawn(&mut self, spec: &ProcSpec) -> Result<u32, SuperviseError> {
        let log = self.log_dir.join(format!("{}.log", spec.name));
        let log_err = |source| SuperviseError::Log {
            path: log.clone(),
            source,
        };
        let out = std::fs::File::create(&log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let spawn_err = |source| SuperviseError::Spawn {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        };
        // stdin is a pipe meshctl never writes to and keeps open (inside `child`) for the child's
        // life: when meshctl exits, however it exits, the kernel closes it and the child, told by
        // MESH_EXIT_WITH_PARENT, stops.
        let child = Command::new(&spec.program)
            .args(&spec.args)
            .env(mesh_runtime::EXIT_WITH_PARENT_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_err(std::io::Error::other("exited before its pid was read")))?;
        tracing::info!(name = spec.name, pid, log = %log.display(), "started");
        self.children.push(Supervised {
            name: spec.name.clone(),
            pid,
            log,
            child,
            exited: None,
        });
        Ok(pid)
    }

    /// The first child that exited since the last check, as an error with its log's tail.
    pub fn check(&mut self) -> Result<(), SuperviseError> {
        for c in &mut self.children {
            if c.exited.is_some() {
                continue;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                c.exited = Some(status);
                return Err(SuperviseError::Exited {
                    name: c.name.clone(),
                    status,
                    log: c.log.clone(),
                    tail: log_tail(&c.log, TAIL_LINES),
                });
            }
        }
        Ok(())
    }

    /// Every started child (for `mesh.json`).
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.children
            .iter()
            .map(|c| ProcessInfo {
                name: c.name.clone(),
                pid: c.pid,
                log: c.log.clone(),
            })
            .collect()
    }

    /// SIGTERM to every live child (last started first), waits up to `grace` for all to exit,
    /// then SIGKILLs the rest and reaps them.
    pub async fn stop(&mut self, grace: Duration) {
        for c in self.children.iter_mut().rev() {
            if c.exited.is_none()
                && matches!(c.child.try_wait(), Ok(None))
                && let Err(e) = kill(Pid::from_raw(c.pid as i32), Signal::SIGTERM)
            {
                tracing::warn!(name = c.name, pid = c.pid, error = %e, "cannot send SIGTERM");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for c in &mut self.children {
            if c.exited.is_some() {
                continue;
            }
            match tokio::time::timeout_at(deadline, c.child.wait()).await {
                Ok(Ok(status)) => {
                    tracing::info!(name = c.name, pid = c.pid, %status, "stopped");
                    c.exited = Some(status);
                }
                Ok(Err(e)) => tracing::warn!(name = c.name, error = %e, "cannot wait for child"),
                Err(_) => {
                    tracing::warn!(name = c.name, pid = c.pid, "did not stop in time; killing");
                    if let Err(e) = c.child.kill().await {
                        tracing::warn!(name = c.name, error = %e, "cannot kill");
                    }
                    c.exited = c.child.try_wait().ok().flatten();
                }
            }
        }
    }
}

impl Drop for Supervisor {
    /// Safety net: no child outlives a supervisor that was not stopped.
    fn drop(&mut self) {
        for c in &mut self.children {
            if c.exited.is_none() {
                let _ = c.child.start_kill();
            }
        }
    }
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str) -> ProcSpec {
        ProcSpec {
            name: name.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ready_url: String::new(),
        }
    }

    fn alive(pid: u32) -> bool {
        kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    #[tokio::test]
    async fn reports_an_exited_child_with_its_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path());
        sup.spawn(&sh("bad", "echo line one; echo cannot listen >&2; exit 3"))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(e) = sup.check() {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "child never exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("bad exited unexpectedly (exit status: 3)"),
            "{msg}"
        );
        assert!(msg.ends_with("line one\ncannot listen"), "{msg}");
        // Reported once.
        assert!(sup.check().is_ok());
    }

    #[tokio::test]
    async fn stop_terminates_then_kills_stragglers() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path());
        let polite = sup.spawn(&sh("polite", "sleep 30")).unwrap();
        let stubborn = sup
            .spawn(&sh(
                "stubborn",
                "trap '' TERM; while true; do sleep 0.1; done",
            ))
            .unwrap();
        assert_eq!(sup.processes().len(), 2);
        assert!(alive(polite) && alive(stubborn));
        let started = std::time::Instant::now();
        sup.stop(Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!alive(polite), "SIGTERM stops a child that honours it");
        assert!(!alive(stubborn), "SIGKILL stops one that ignores SIGTERM");
        assert!(sup.check().is_ok());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&p, 2), "3\n4");
        assert_eq!(log_tail(&p, 10), "1\n2\n3\n4");
        assert_eq!(log_tail(&dir.path().join("none"), 3), "");
    }
}
