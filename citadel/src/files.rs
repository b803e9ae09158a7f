//! Files in the state directory: secrets are written owner-only (0600), and a file created
//! by two processes at once ends up written whole by exactly one of them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {io}")]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub io: std::io::Error,
}

impl FileError {
    pub(crate) fn new(action: &'static str, path: &Path, io: std::io::Error) -> Self {
        FileError {
            action,
            path: path.to_path_buf(),
            io,
        }
    }
}

/// Creates `dir` (and its parents) if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(dir).map_err(|e| FileError::new("cannot create directory", dir, e))
}

/// Writes `contents` to `path` with `mode` unless the file already exists. Returns `false`
/// when another writer got there first (the existing file is left alone). The content is
/// written to a private temporary file and linked into place, so readers never see half a file.
pub fn create_once(path: &Path, contents: &[u8], mode: u32) -> Result<bool, FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.{}.{:x}.tmp",
        name.unwrap_or_default(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(FileError::new("cannot write", &tmp, e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FileError::new("cannot create", path, e)),
    }
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| FileError::new("cannot read", path, e))
}

/// Reads a whole UTF-8 file.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|e| FileError::new("cannot read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_writer_wins_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        assert!(create_once(&p, b"one", 0o600).unwrap());
        assert!(!create_once(&p, b"two", 0o600).unwrap());
        assert_eq!(read(&p).unwrap(), b"one");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
