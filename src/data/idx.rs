//! The IDX format of MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>): a magic
//! number (0, 0, type 0x08 = unsigned byte, dimension count), big-endian u32 dimensions, then
//! the bytes. Files may be gzipped.
//!
//! Reading is bounded: the (decompressed) header is checked first, the product of the
//! dimensions is computed without overflow and checked against [`files::IDX`], and only then
//! are exactly that many bytes read, so neither a lying header nor a gzip bomb can make
//! Rampart allocate more than the file really holds (and at most the limit).

use std::io::{Read, Write};
use std::path::Path;

use super::DataError;
use crate::artifact::files::{self, FileError};

const IDX_UBYTE: u8 = 0x08;

/// The magic number of an unsigned-byte IDX file of `ndim` dimensions.
pub fn magic(ndim: u8) -> u32 {
    u32::from_be_bytes([0, 0, IDX_UBYTE, ndim])
}

/// Reads an unsigned-byte IDX file (gzipped or not) of `ndim` dimensions: the dimensions and
/// the raw data. `what` describes the expected file for errors.
pub fn read_idx(
    path: &Path,
    ndim: u8,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let (file, _) = files::open_bounded(path, files::IDX)?;
    let mut head = [0u8; 2];
    let mut file = std::io::BufReader::new(file);
    let io = |source| {
        DataError::File(FileError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let n = files::read_prefix(&mut file, &mut head).map_err(io)?;
    let gz = n == 2 && head == [0x1f, 0x8b];
    let chained = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    if gz {
        parse(flate2::read::GzDecoder::new(chained), path, ndim, what)
    } else {
        parse(chained, path, ndim, what)
    }
}

/// Parses IDX bytes from `r` (already decompressed), `path` naming them in errors: the header
/// is checked and the declared size bounded before the data are read.
pub fn parse(
    mut r: impl Read,
    path: &Path,
    ndim: u8,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let io = |source| {
        DataError::File(FileError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let header_len = 4 + 4 * ndim as usize;
    let truncated = |expected: usize, found: usize| DataError::Truncated {
        path: path.to_path_buf(),
        expected,
        found,
    };
    let mut header = vec![0u8; header_len];
    let got = files::read_prefix(&mut r, &mut header[..4]).map_err(io)?;
    if got < 4 {
        return Err(truncated(header_len, got));
    }
    let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if found != magic(ndim) {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected: magic(ndim),
            what,
        });
    }
    let got = 4 + files::read_prefix(&mut r, &mut header[4..]).map_err(io)?;
    if got < header_len {
        return Err(truncated(header_len, got));
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let size = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&s| s as u64 <= files::IDX.bytes)
        .ok_or_else(|| DataError::Oversized {
            path: path.to_path_buf(),
            dims: dims.clone(),
            limit: files::IDX.bytes,
        })?;
    let mut data = Vec::new();
    r.take(size as u64).read_to_end(&mut data).map_err(io)?;
    if data.len() < size {
        return Err(truncated(header_len + size, header_len + data.len()));
    }
    Ok((dims, data))
}

/// Writes an unsigned-byte IDX file (gzipped when `path` ends in `.gz`), atomically; for tests
/// and tools.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<(), FileError> {
    let mut out = magic(dims.len() as u8).to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let werr = |source| FileError::Write {
            path: path.to_path_buf(),
            source,
        };
        enc.write_all(&out).map_err(werr)?;
        out = enc.finish().map_err(werr)?;
    }
    files::write_atomic(path, &out)
}
