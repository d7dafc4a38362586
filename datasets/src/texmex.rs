//! TEXMEX `.fvecs` / `.ivecs` / `.bvecs` (the SIFT/GIST corpus format): every row is
//! a little-endian `i32` dimension followed by that many elements (`f32`, `i32` or
//! `u8`). Every row must declare the same dimension.

use crate::io::{check_dim, check_writable, decode_into, read_file, write_file, MAX_DIM};
use crate::matrix::{Element, Matrix, Vectors};
use omen_core::{Error, Result};
use std::path::Path;

fn parse_xvecs<T: Element>(bytes: &[u8], file: &Path) -> Result<Matrix<T>> {
    if bytes.is_empty() {
        return Err(Error::corruption(
            file,
            0,
            "empty file: no rows, so no dimension",
        ));
    }
    if bytes.len() < 4 {
        return Err(Error::corruption(
            file,
            0,
            format!(
                "truncated: {} bytes, less than one dimension field",
                bytes.len()
            ),
        ));
    }
    let dim = check_dim(
        i64::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        0,
        file,
    )?;
    let row_bytes = 4 + dim * T::SIZE;
    let rows = bytes.len() / row_bytes;
    let rem = bytes.len() % row_bytes;
    if rem != 0 {
        return Err(Error::corruption(
            file,
            (rows * row_bytes) as u64,
            format!("truncated: row {rows} has {rem} of {row_bytes} bytes"),
        ));
    }
    // Bounded by the file's own size: no allocation larger than what was read.
    let mut data = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        let off = r * row_bytes;
        let d = i32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]);
        if i64::from(d) != dim as i64 {
            return Err(Error::corruption(
                file,
                off as u64,
                format!("row {r} declares dimension {d}, but row 0 declared {dim}"),
            ));
        }
        decode_into(
            &bytes[off + 4..off + row_bytes],
            (off + 4) as u64,
            &mut data,
            file,
            dim,
            r * dim,
        )?;
    }
    Ok(Matrix::from_parts(rows, dim, data))
}

fn encode_xvecs<T: Element>(m: &Matrix<T>) -> Result<Vec<u8>> {
    check_writable(m.data(), m.dim())?;
    if m.is_empty() {
        return Err(Error::invalid_param(
            "vectors",
            "an xvecs file cannot hold zero rows (it would have no dimension)",
        ));
    }
    debug_assert!(m.dim() <= MAX_DIM);
    let mut out = Vec::with_capacity(m.rows() * (4 + m.dim() * T::SIZE));
    let d = (m.dim() as i32).to_le_bytes();
    for row in m.iter_rows() {
        out.extend_from_slice(&d);
        for &v in row {
            v.push_le(&mut out);
        }
    }
    Ok(out)
}

/// Parses `.fvecs` bytes. `file` names the source in errors.
///
/// Errors: `Corruption` (with the byte offset) for an empty or truncated file, a
/// dimension outside `1..=MAX_DIM`, a row whose dimension differs from the first, or
/// a NaN/infinite component.
pub fn parse_fvecs(bytes: &[u8], file: impl AsRef<Path>) -> Result<Vectors> {
    parse_xvecs(bytes, file.as_ref())
}

/// Parses `.ivecs` bytes (TEXMEX ground truth files hold neighbour ids this way).
pub fn parse_ivecs(bytes: &[u8], file: impl AsRef<Path>) -> Result<Matrix<i32>> {
    parse_xvecs(bytes, file.as_ref())
}

/// Parses `.bvecs` bytes (one `u8` per component).
pub fn parse_bvecs(bytes: &[u8], file: impl AsRef<Path>) -> Result<Matrix<u8>> {
    parse_xvecs(bytes, file.as_ref())
}

/// Encodes vectors as `.fvecs`. Refuses zero rows and non-finite values.
pub fn encode_fvecs(m: &Vectors) -> Result<Vec<u8>> {
    encode_xvecs(m)
}

/// Encodes a matrix as `.ivecs`. Refuses zero rows.
pub fn encode_ivecs(m: &Matrix<i32>) -> Result<Vec<u8>> {
    encode_xvecs(m)
}

/// Encodes a matrix as `.bvecs`. Refuses zero rows.
pub fn encode_bvecs(m: &Matrix<u8>) -> Result<Vec<u8>> {
    encode_xvecs(m)
}

/// Reads a `.fvecs` file.
pub fn read_fvecs(path: impl AsRef<Path>) -> Result<Vectors> {
    let path = path.as_ref();
    parse_fvecs(&read_file(path)?, path)
}

/// Reads an `.ivecs` file.
pub fn read_ivecs(path: impl AsRef<Path>) -> Result<Matrix<i32>> {
    let path = path.as_ref();
    parse_ivecs(&read_file(path)?, path)
}

/// Reads a `.bvecs` file.
pub fn read_bvecs(path: impl AsRef<Path>) -> Result<Matrix<u8>> {
    let path = path.as_ref();
    parse_bvecs(&read_file(path)?, path)
}

/// Writes a `.fvecs` file (atomically: through a temporary file and a rename).
pub fn write_fvecs(path: impl AsRef<Path>, m: &Vectors) -> Result<()> {
    write_file(path.as_ref(), &encode_fvecs(m)?)
}

/// Writes an `.ivecs` file.
pub fn write_ivecs(path: impl AsRef<Path>, m: &Matrix<i32>) -> Result<()> {
    write_file(path.as_ref(), &encode_ivecs(m)?)
}

/// Writes a `.bvecs` file.
pub fn write_bvecs(path: impl AsRef<Path>, m: &Matrix<u8>) -> Result<()> {
    write_file(path.as_ref(), &encode_bvecs(m)?)
}
