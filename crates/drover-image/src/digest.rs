//! SHA-256 fingerprints of files: the library's identity for an image and the strong ETag of
//! its transfers.

use crate::ImageError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Large reads keep hashing at disk speed.
const CHUNK: usize = 1 << 20;

/// The hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut file = std::fs::File::open(path).map_err(ImageError::io(path))?;
    let mut hasher = Sha256::new();
    hash_from(&mut file, &mut hasher).map_err(ImageError::io(path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds `hasher` with everything `reader` gives, in large reads; the number of bytes.
pub fn hash_from(reader: &mut impl Read, hasher: &mut Sha256) -> std::io::Result<u64> {
    let mut buffer = vec![0_u8; CHUNK];
    let mut length = 0;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok(length),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").expect("write");
        assert_eq!(
            sha256_file(&path).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            sha256_file(&dir.path().join("none")),
            Err(ImageError::Io { .. })
        ));
    }
}
