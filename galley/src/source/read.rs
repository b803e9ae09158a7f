//! Reading a configuration file with a size bound, so a huge file is refused before it is read.

use std::io::Read;
use std::path::Path;

use super::parse::MAX_TEXT_BYTES;

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes; a configuration file may hold at most {MAX_TEXT_BYTES} bytes")]
    TooLarge { path: String, size: u64 },
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    NotText { path: String, offset: usize },
}

impl ReadError {
    /// Whether the file is simply gone (a race with a delete).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads `path` as UTF-8 text of at most [`MAX_TEXT_BYTES`] bytes, never holding more than that
/// limit (plus one byte) in memory.
pub fn read_config_file(path: &Path) -> Result<String, ReadError> {
    let shown = || path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let limit = MAX_TEXT_BYTES as u64;
    if size > limit {
        return Err(ReadError::TooLarge {
            path: shown(),
            size,
        });
    }
    let mut bytes = Vec::new();
    // The file may grow between the size check and the read: read at most one byte more.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: shown(),
            size: bytes.len() as u64,
        });
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotText {
        path: shown(),
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_refuses_huge_or_binary_files() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a.yaml");
        std::fs::write(&ok, "kind: A\n").unwrap();
        assert_eq!(read_config_file(&ok).unwrap(), "kind: A\n");

        // A sparse 100 MB file: refused from its size, without reading it.
        let big = dir.path().join("big.yaml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        let started = std::time::Instant::now();
        let e = read_config_file(&big).unwrap_err();
        assert!(
            matches!(e, ReadError::TooLarge { size, .. } if size == 100 << 20),
            "{e}"
        );
        assert!(e.to_string().contains("at most"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));

        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, b"a: \xff\xfe\x00").unwrap();
        let e = read_config_file(&bin).unwrap_err();
        assert!(matches!(e, ReadError::NotText { offset: 3, .. }), "{e}");

        let gone = read_config_file(&dir.path().join("gone.yaml")).unwrap_err();
        assert!(gone.is_not_found());
    }
}
