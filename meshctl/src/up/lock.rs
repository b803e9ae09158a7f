//! `STATE/meshctl.lock`: one `meshctl up` per state directory. The file holds the owner's pid; a
//! lock whose pid is no longer alive is stale and taken over.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "meshctl.lock";

/// Taking the lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("a mesh is already running (pid {pid}, state {}); stop it first", state.display())]
    Held { pid: i32, state: PathBuf },
    #[error("cannot create lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it removes the file.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock of `state_dir` for process `pid`.
    pub fn acquire(state_dir: &Path, pid: u32) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Two tries: the second after removing a stale lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{pid}").map_err(io)?;
                    return Ok(StateLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<i32>() {
                        Ok(owner) if is_alive(owner) => {
                            return Err(LockError::Held {
                                pid: owner,
                                state: state_dir.to_path_buf(),
                            });
                        }
                        _ => {
                            tracing::warn!(lock = %path.display(), content = text.trim(), "removing stale lock");
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(io(e)),
                            }
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("lock was taken while retrying")))
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(lock = %self.path.display(), error = %e, "cannot remove lock");
        }
    }
}

/// Whether a process with this pid exists (signal 0 probes without sending anything).
fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_while_first_is_held_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let lock = StateLock::acquire(dir.path(), me).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), me.to_string());
        let err = StateLock::acquire(dir.path(), me).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "a mesh is already running (pid {me}, state {}); stop it first",
                dir.path().display()
            )
        );
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        assert!(StateLock::acquire(dir.path(), me).is_ok());
    }

    #[test]
    fn stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that has exited: a child we waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), format!("{dead}\n")).unwrap();
        let _lock = StateLock::acquire(dir.path(), 42).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), "42");
    }

    #[test]
    fn unreadable_lock_content_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "not a pid").unwrap();
        assert!(StateLock::acquire(dir.path(), 43).is_ok());
    }
}
