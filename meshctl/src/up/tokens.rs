//! Service-account tokens for the proxies, signed by Citadel's local issuer and written 0600
//! into `STATE/tokens/<namespace>.<sa>.jwt`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plan::Dirs;

/// How long the tokens of one `up` stay valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Issuing or writing a token failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot issue a token for {namespace}/{service_account}: {message}")]
    Issue {
        namespace: String,
        service_account: String,
        message: String,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates `dir` (and parents) readable by the owner only.
pub fn private_dir(dir: &Path) -> Result<(), TokenError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TokenError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `content` to `path` with mode 0600 (replacing what was there).
pub fn write_private(path: &Path, content: &str) -> Result<(), TokenError> {
    let err = |source| TokenError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Remove first so a pre-existing file with a wider mode is not reused.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(content.as_bytes()).map_err(err)
}

/// Issues and writes a token for every `(namespace, service account)`.
pub fn write_tokens(dirs: &Dirs, identities: &[(String, String)]) -> Result<(), TokenError> {
    private_dir(&dirs.citadel())?;
    private_dir(&dirs.tokens())?;
    for (ns, sa) in identities {
        let token = citadel::token::issue(&dirs.citadel(), ns, sa, TOKEN_TTL).map_err(|e| {
            TokenError::Issue {
                namespace: ns.clone(),
                service_account: sa.clone(),
                message: e.to_string(),
            }
        })?;
        write_private(&dirs.token_file(ns, sa), &token)?;
        tracing::debug!(namespace = ns, service_account = sa, "token written");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            state: dir.path().to_path_buf(),
            config: dir.path().join("config"),
            bin: dir.path().to_path_buf(),
        };
        let ids = vec![("default".to_string(), "bookinfo-reviews".to_string())];
        write_tokens(&dirs, &ids).unwrap();
        let path = dirs.token_file("default", "bookinfo-reviews");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        let tdir = std::fs::metadata(dirs.tokens()).unwrap();
        assert_eq!(tdir.permissions().mode() & 0o777, 0o700);
        // Rewriting replaces the token.
        write_private(&path, "x").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
