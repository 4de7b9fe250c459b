//! SHA-256 digests of artifacts (RustCrypto `sha2`), of bytes in memory or streamed from a
//! file so that memory does not grow with its size.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::files::{self, FileError, Limit};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a regular file of at most `limit` bytes, read in 1 MiB blocks.
pub fn sha256_file(path: &Path, limit: Limit) -> Result<String, FileError> {
    let (mut file, _) = files::open_bounded(path, limit)?;
    let digest = sha256_stream(&mut file).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of everything `reader` yields, read in 1 MiB blocks (memory does not grow with it).
pub fn sha256_stream(reader: &mut impl Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hasher.finalize().into())
}
