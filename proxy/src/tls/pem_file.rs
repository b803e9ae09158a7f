//! Reading certificate, key and CA files named by configuration (xDS resources: gateway
//! `DownstreamTlsContext`s, SDS secrets, DestinationRule TLS origination): only regular files,
//! and at most [`MAX_PEM_FILE`] bytes. A path such as `/dev/zero` or a FIFO in an update would
//! otherwise make the proxy read forever (running out of memory) or block its xDS client; like
//! Envoy, which refuses `/dev`, `/proc` and `/sys` paths as data sources, the update is refused
//! instead (found by the `xds_apply` fuzzer, see docs/fuzzing.md).

use std::io::{self, Read};
use std::path::Path;

/// The largest PEM file read (a system CA bundle is a few hundred KiB).
pub const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

/// The contents of the regular file at `path`, if it is at most [`MAX_PEM_FILE`] bytes.
pub fn read_pem_file(path: &Path) -> io::Result<Vec<u8>> {
    // Looked at before opening: opening a FIFO for reading blocks until a writer comes.
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_PEM_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_PEM_FILE} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_devices_directories_and_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ca.crt");
        std::fs::write(&ok, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(
            read_pem_file(&ok).unwrap(),
            b"-----BEGIN CERTIFICATE-----\n"
        );
        // Would read forever.
        let e = read_pem_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(read_pem_file(dir.path()).is_err());
        assert_eq!(
            read_pem_file(&dir.path().join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        let big = dir.path().join("big.pem");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PEM_FILE + 1).unwrap();
        assert_eq!(
            read_pem_file(&big).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
