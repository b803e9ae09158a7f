//! Under `cargo run`, bring the sibling binaries up to date before starting them.
//!
//! `cargo run -p meshctl` builds only meshctl, but `up` starts galley, pilot, citadel, mixer,
//! mesh-proxy and bookinfo from the same directory. When meshctl itself was started by
//! `cargo run` (cargo sets `CARGO`, `CARGO_MANIFEST_DIR` and `CARGO_PKG_NAME` for the program it
//! runs), `up` runs `cargo build --workspace --bins` with the same profile first, so one command
//! works on a fresh clone and never starts stale binaries. Started any other way (an installed
//! binary, `--bin-dir`, a test that inherits cargo's variables for another package), it builds
//! nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace build that `up` would run, when meshctl runs under `cargo run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiblingBuild {
    pub cargo: OsString,
    pub manifest: PathBuf,
    pub release: bool,
}

/// Failed to build the siblings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot run {cargo}: {source}")]
    Spawn {
        cargo: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`cargo build --workspace --bins` failed ({status}); see its output above")]
    Failed { status: std::process::ExitStatus },
}

impl SiblingBuild {
    /// Decides from meshctl's environment and executable path whether to build.
    pub fn detect(env: impl Fn(&str) -> Option<OsString>, exe_dir: &Path) -> Option<Self> {
        if env("CARGO_PKG_NAME")? != "meshctl" {
            return None;
        }
        let cargo = env("CARGO")?;
        let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?)
            .parent()?
            .join("Cargo.toml");
        if !manifest.is_file() {
            return None;
        }
        let release = exe_dir.file_name().is_some_and(|n| n == "release");
        Some(SiblingBuild {
            cargo,
            manifest,
            release,
        })
    }

    /// Runs the build, its output going to meshctl's stderr.
    pub fn run(&self) -> Result<(), BuildError> {
        let mut cmd = Command::new(&self.cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&self.manifest)
            .args(["--workspace", "--bins"]);
        if self.release {
            cmd.arg("--release");
        }
        eprintln!(
            "meshctl: building the mesh's binaries ({}cargo build --workspace --bins)",
            if self.release { "release, " } else { "" }
        );
        let status = cmd.status().map_err(|source| BuildError::Spawn {
            cargo: self.cargo.to_string_lossy().into_owned(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(BuildError::Failed { status })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let m: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn meshctl_dir() -> String {
        env!("CARGO_MANIFEST_DIR").to_string()
    }

    #[test]
    fn builds_only_under_cargo_run_of_meshctl() {
        let dir = meshctl_dir();
        let under_cargo = env_of(&[
            ("CARGO", "/usr/bin/cargo"),
            ("CARGO_MANIFEST_DIR", &dir),
            ("CARGO_PKG_NAME", "meshctl"),
        ]);
        let b = SiblingBuild::detect(&under_cargo, Path::new("/t/release")).unwrap();
        assert!(b.release);
        assert!(b.manifest.ends_with("Cargo.toml"));
        assert!(
            !SiblingBuild::detect(&under_cargo, Path::new("/t/debug"))
                .unwrap()
                .release
        );

        let other_package = env_of(&[
            ("CARGO", "/usr/bin/cargo"),
            ("CARGO_MANIFEST_DIR", &dir),
            ("CARGO_PKG_NAME", "e2e"),
        ]);
        assert_eq!(
            SiblingBuild::detect(other_package, Path::new("/t/debug")),
            None
        );
        assert_eq!(
            SiblingBuild::detect(env_of(&[]), Path::new("/t/debug")),
            None
        );
    }
}
