//! Shared helpers of the binary readers: bounds-checked header fields, element
//! decoding with per-value checks, whole-file reads and atomic writes.

use crate::matrix::Element;
use omen_core::{Error, Result};
use std::io::Write;
use std::path::Path;

/// The widest vector any reader accepts. Real datasets stay far below (GIST is 960,
/// large text embeddings 4,096); a larger value in a header means a damaged file.
pub const MAX_DIM: usize = 1 << 16;

/// Reads the little-endian `u32` at `offset`, or reports the header as truncated.
pub(crate) fn u32_at(bytes: &[u8], offset: usize, file: &Path, what: &str) -> Result<u32> {
    match bytes.get(offset..offset + 4) {
        Some(b) => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::corruption(
            file,
            offset as u64,
            format!(
                "truncated: the file ends ({} bytes) before the {what} field",
                bytes.len()
            ),
        )),
    }
}

/// Checks a dimension read from a header at `offset`.
pub(crate) fn check_dim(dim: i64, offset: usize, file: &Path) -> Result<usize> {
    if dim < 1 || dim as u64 > MAX_DIM as u64 {
        return Err(Error::corruption(
            file,
            offset as u64,
            format!("dimension {dim} is out of range 1..={MAX_DIM}"),
        ));
    }
    Ok(dim as usize)
}

/// Decodes `out_len` elements starting at `bytes[start..]`, appending them to `out`.
/// Each value is checked; a bad one is `Corruption` at its byte offset
/// (`file_offset + index * SIZE`, where `file_offset` is where `start` lies in the
/// file). `row_of` names the row and component in the message.
pub(crate) fn decode_into<T: Element>(
    bytes: &[u8],
    file_offset: u64,
    out: &mut Vec<T>,
    file: &Path,
    dim: usize,
    first_index: usize,
) -> Result<()> {
    let before = out.len();
    out.extend(bytes.chunks_exact(T::SIZE).map(T::from_le));
    // Checking after the bulk decode keeps the common (valid) path a tight loop.
    if let Some(i) = out[before..].iter().position(|v| !v.is_valid()) {
        let idx = first_index + i;
        return Err(Error::corruption(
            file,
            file_offset + (i * T::SIZE) as u64,
            format!(
                "non-finite value at row {}, component {}",
                idx / dim.max(1),
                idx % dim.max(1)
            ),
        ));
    }
    Ok(())
}

/// Reads a whole file; errors name the path.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes a file through a temporary sibling and a rename, so that a reader (or a
/// cache check) never sees a half-written file.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    // The temporary file is created private (0600); a dataset file is not secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_data().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Refuses non-finite floats before writing, so that every file we write reads back.
pub(crate) fn check_writable<T: Element>(data: &[T], dim: usize) -> Result<()> {
    if dim == 0 || dim > MAX_DIM {
        return Err(Error::invalid_param(
            "dim",
            format!("must be in 1..={MAX_DIM}, got {dim}"),
        ));
    }
    if let Some(i) = data.iter().position(|v| !v.is_valid()) {
        return Err(Error::NonFinite {
            row: i / dim,
            component: i % dim,
            value: data[i].to_f32(),
        });
    }
    Ok(())
}
