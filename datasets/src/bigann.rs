//! big-ann-benchmarks binary files.
//!
//! * `.fbin` / `.ibin` / `.u8bin`: `u32` row count, `u32` dimension (both
//!   little-endian), then the rows (`f32`, `i32` or `u8`).
//! * ground truth: `u32` query count `n`, `u32` depth `k`, then `n × k` `i32` ids,
//!   then `n × k` `f32` distances. A file with the ids only (the same header and
//!   `n × k` ids, as an `.ibin` of ids) is accepted too.

use crate::io::{check_dim, check_writable, decode_into, read_file, u32_at, write_file, MAX_DIM};
use crate::matrix::{Element, GroundTruth, IdSource, Matrix, NeighborTable, Vectors};
use omen_core::{Error, Result};
use std::path::Path;

const HEADER: usize = 8;

fn parse_bin<T: Element>(bytes: &[u8], file: &Path) -> Result<Matrix<T>> {
    let rows = u32_at(bytes, 0, file, "row count")? as usize;
    let dim = check_dim(i64::from(u32_at(bytes, 4, file, "dimension")?), 4, file)?;
    let row_bytes = (dim * T::SIZE) as u64;
    let avail = (bytes.len() - HEADER) as u64;
    // u64 arithmetic: rows * row_bytes < 2^32 * 2^18, no overflow.
    let need = rows as u64 * row_bytes;
    if avail < need {
        let complete = avail / row_bytes;
        return Err(Error::corruption(
            file,
            HEADER as u64 + complete * row_bytes,
            format!(
                "truncated: the header declares {rows} rows of dimension {dim} \
                 ({need} bytes) but the file holds {avail} bytes after the header; \
                 row {complete} is incomplete"
            ),
        ));
    }
    if avail > need {
        return Err(Error::corruption(
            file,
            HEADER as u64 + need,
            format!(
                "{} trailing bytes after the {rows} rows of dimension {dim} the header declares",
                avail - need
            ),
        ));
    }
    let mut data = Vec::with_capacity(rows * dim);
    decode_into(&bytes[HEADER..], HEADER as u64, &mut data, file, dim, 0)?;
    Ok(Matrix::from_parts(rows, dim, data))
}

fn encode_bin<T: Element>(m: &Matrix<T>) -> Result<Vec<u8>> {
    check_writable(m.data(), m.dim())?;
    let rows = u32::try_from(m.rows())
        .map_err(|_| Error::invalid_param("vectors", "more than u32::MAX rows"))?;
    let mut out = Vec::with_capacity(HEADER + m.data().len() * T::SIZE);
    out.extend_from_slice(&rows.to_le_bytes());
    out.extend_from_slice(&(m.dim() as u32).to_le_bytes());
    for &v in m.data() {
        v.push_le(&mut out);
    }
    Ok(out)
}

/// Parses `.fbin` bytes. `file` names the source in errors.
///
/// Errors: `Corruption` (with the byte offset) for a truncated header, a dimension
/// outside `1..=MAX_DIM`, a size that does not match the header (checked before
/// anything is allocated), or a NaN/infinite component.
pub fn parse_fbin(bytes: &[u8], file: impl AsRef<Path>) -> Result<Vectors> {
    parse_bin(bytes, file.as_ref())
}

/// Parses `.ibin` bytes.
pub fn parse_ibin(bytes: &[u8], file: impl AsRef<Path>) -> Result<Matrix<i32>> {
    parse_bin(bytes, file.as_ref())
}

/// Parses `.u8bin` bytes.
pub fn parse_u8bin(bytes: &[u8], file: impl AsRef<Path>) -> Result<Matrix<u8>> {
    parse_bin(bytes, file.as_ref())
}

/// Encodes vectors as `.fbin`. Refuses non-finite values.
pub fn encode_fbin(m: &Vectors) -> Result<Vec<u8>> {
    encode_bin(m)
}

/// Encodes a matrix as `.ibin`.
pub fn encode_ibin(m: &Matrix<i32>) -> Result<Vec<u8>> {
    encode_bin(m)
}

/// Encodes a matrix as `.u8bin`.
pub fn encode_u8bin(m: &Matrix<u8>) -> Result<Vec<u8>> {
    encode_bin(m)
}

/// Reads an `.fbin` file.
pub fn read_fbin(path: impl AsRef<Path>) -> Result<Vectors> {
    let path = path.as_ref();
    parse_fbin(&read_file(path)?, path)
}

/// Reads an `.ibin` file.
pub fn read_ibin(path: impl AsRef<Path>) -> Result<Matrix<i32>> {
    let path = path.as_ref();
    parse_ibin(&read_file(path)?, path)
}

/// Reads a `.u8bin` file.
pub fn read_u8bin(path: impl AsRef<Path>) -> Result<Matrix<u8>> {
    let path = path.as_ref();
    parse_u8bin(&read_file(path)?, path)
}

/// Writes an `.fbin` file (atomically: through a temporary file and a rename).
pub fn write_fbin(path: impl AsRef<Path>, m: &Vectors) -> Result<()> {
    write_file(path.as_ref(), &encode_fbin(m)?)
}

/// Writes an `.ibin` file.
pub fn write_ibin(path: impl AsRef<Path>, m: &Matrix<i32>) -> Result<()> {
    write_file(path.as_ref(), &encode_ibin(m)?)
}

/// Writes a `.u8bin` file.
pub fn write_u8bin(path: impl AsRef<Path>, m: &Matrix<u8>) -> Result<()> {
    write_file(path.as_ref(), &encode_u8bin(m)?)
}

/// Parses big-ann-benchmarks ground truth: header, ids, and (when present)
/// distances.
///
/// Errors: `Corruption` with the byte offset for a truncated header, `k` outside
/// `1..=MAX_DIM`, a size that is neither `8 + 4nk` nor `8 + 8nk`, a negative id or a
/// non-finite distance.
pub fn parse_groundtruth_bin(bytes: &[u8], file: impl AsRef<Path>) -> Result<NeighborTable> {
    let file = file.as_ref();
    let n = u32_at(bytes, 0, file, "query count")? as u64;
    let k = check_dim(i64::from(u32_at(bytes, 4, file, "k")?), 4, file)?;
    let row = 4 * k as u64;
    let ids_bytes = n * row;
    let avail = (bytes.len() - HEADER) as u64;
    let with_distances = if avail == 2 * ids_bytes {
        true
    } else if avail == ids_bytes {
        false
    } else if avail < ids_bytes {
        return Err(Error::corruption(
            file,
            HEADER as u64 + (avail / row) * row,
            format!(
                "truncated: the header declares {n} queries × {k} ids ({ids_bytes} bytes) \
                 but the file holds {avail} bytes after the header"
            ),
        ));
    } else if avail < 2 * ids_bytes {
        let got = avail - ids_bytes;
        return Err(Error::corruption(
            file,
            HEADER as u64 + ids_bytes + (got / row) * row,
            format!(
                "truncated distances: {got} of {ids_bytes} bytes after the ids of {n} queries × {k}"
            ),
        ));
    } else {
        return Err(Error::corruption(
            file,
            HEADER as u64 + 2 * ids_bytes,
            format!(
                "{} trailing bytes after the ids and distances of {n} queries × {k}",
                avail - 2 * ids_bytes
            ),
        ));
    };
    let ids_end = HEADER + ids_bytes as usize;
    let mut ids = Vec::with_capacity(n as usize * k);
    for (i, b) in bytes[HEADER..ids_end].chunks_exact(4).enumerate() {
        let id = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if id < 0 {
            return Err(Error::corruption(
                file,
                (HEADER + 4 * i) as u64,
                format!("negative id {id} for query {}, rank {}", i / k, i % k),
            ));
        }
        ids.push(id as u32);
    }
    let distances = if with_distances {
        let mut d = Vec::with_capacity(ids.len());
        decode_into(&bytes[ids_end..], ids_end as u64, &mut d, file, k, 0)?;
        Some(d)
    } else {
        None
    };
    Ok(NeighborTable {
        k,
        ids,
        distances,
        source: Some(IdSource {
            file: file.to_path_buf(),
            first: HEADER as u64,
            row_stride: row,
        }),
    })
}

/// Encodes ground truth in big-ann-benchmarks' format (ids then distances).
pub fn encode_groundtruth_bin(gt: &GroundTruth) -> Result<Vec<u8>> {
    let n = u32::try_from(gt.queries())
        .map_err(|_| Error::invalid_param("ground_truth", "more than u32::MAX queries"))?;
    if gt.k() > MAX_DIM {
        return Err(Error::invalid_param(
            "k",
            format!("must be at most {MAX_DIM}, got {}", gt.k()),
        ));
    }
    check_writable(gt.distances(), gt.k())?;
    if let Some(&id) = gt.ids().iter().find(|&&id| id > i32::MAX as u32) {
        return Err(Error::invalid_param(
            "ground_truth",
            format!("id {id} does not fit the format's int32"),
        ));
    }
    let mut out = Vec::with_capacity(HEADER + 8 * gt.ids().len());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(gt.k() as u32).to_le_bytes());
    for &id in gt.ids() {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for &d in gt.distances() {
        out.extend_from_slice(&d.to_le_bytes());
    }
    Ok(out)
}

/// Reads a big-ann-benchmarks ground-truth file.
pub fn read_groundtruth_bin(path: impl AsRef<Path>) -> Result<NeighborTable> {
    let path = path.as_ref();
    parse_groundtruth_bin(&read_file(path)?, path)
}

/// Writes ground truth in big-ann-benchmarks' format.
pub fn write_groundtruth_bin(path: impl AsRef<Path>, gt: &GroundTruth) -> Result<()> {
    write_file(path.as_ref(), &encode_groundtruth_bin(gt)?)
}

/// Turns `.ivecs` neighbour ids (TEXMEX ground truth) into a table without
/// distances; a negative id is `Corruption` at its offset.
pub fn ivecs_neighbors(m: &Matrix<i32>, file: impl AsRef<Path>) -> Result<NeighborTable> {
    let file = file.as_ref();
    let k = m.dim();
    let row_stride = 4 + 4 * k as u64;
    let mut ids = Vec::with_capacity(m.data().len());
    for (i, &id) in m.data().iter().enumerate() {
        if id < 0 {
            let off = (i / k) as u64 * row_stride + 4 + 4 * (i % k) as u64;
            return Err(Error::corruption(
                file,
                off,
                format!("negative id {id} for query {}, rank {}", i / k, i % k),
            ));
        }
        ids.push(id as u32);
    }
    Ok(NeighborTable {
        k,
        ids,
        distances: None,
        source: Some(IdSource {
            file: file.to_path_buf(),
            first: 4,
            row_stride,
        }),
    })
}
