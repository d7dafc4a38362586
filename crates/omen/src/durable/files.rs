//! The checkpoint files: the manifest, vector segments and the id file. Their
//! byte layouts are in `docs/FORMAT.md` ("durable collection directory").

use super::wal::{u32_at, u64_at};
use crate::registry::params_from_json;
use omen_core::{Error, Metric, Result, SlotId};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(crate) const MANIFEST_MAGIC: &[u8; 8] = b"OMENMANI";
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"OMENSEG1";
pub(crate) const IDS_MAGIC: &[u8; 8] = b"OMENIDS1";
pub(crate) const VERSION: u32 = 1;
/// The manifest's version: 2 added `indexed` (rows left unindexed by a
/// checkpoint), 3 `index_params` (the index's build parameters by name).
/// Versions 1 and 2 are still read.
pub(crate) const MANIFEST_VERSION: u32 = 3;
const MANIFEST_HEADER: usize = 24;
const SEGMENT_HEADER: usize = 40;
const IDS_HEADER: usize = 32;
/// The largest manifest accepted (its body is JSON listing files).
const MAX_MANIFEST: usize = 64 << 20;

/// A run of vector rows saved by one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Segment {
    /// The segment file (memory storage), or `None` when the rows live in the
    /// mmap storage's chunk files.
    pub file: Option<String>,
    pub first_row: u64,
    pub rows: u64,
    /// CRC-32C of the rows' bytes (little-endian f32).
    pub crc: u32,
}

/// What a checkpoint saved; the `MANIFEST` file's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The checkpoint's generation.
    pub gen: u64,
    pub dim: usize,
    /// `l2`, `ip` or `cosine`.
    pub metric: String,
    /// The index kind's registered name (`flat`, `hnsw`, `ivfpq`, ...).
    pub index: String,
    /// The build parameters the index was created with, by name: what recreates
    /// an index that saves no file. Absent before version 3 (the built-in
    /// kinds that save nothing take no parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_params: Option<serde_json::Map<String, serde_json::Value>>,
    /// The index's saved state, or `None` when it is rebuilt from the live slots.
    pub index_file: Option<String>,
    /// The storage kind's name ([`StorageKind::name`](crate::StorageKind::name)).
    pub storage: String,
    /// Storage rows the checkpoint covers (live or not).
    pub rows: u64,
    pub segments: Vec<Segment>,
    pub ids_file: String,
    /// Live ids in the id file.
    pub live: u64,
    /// The last log record the checkpoint includes.
    pub last_seq: u64,
    /// The first log generation to replay.
    pub wal_gen: u64,
    /// The indexed watermark: the index file holds exactly the live slots below
    /// it; live slots at or above it are left to the indexer. Absent in version
    /// 1 manifests, where every row was indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed: Option<u64>,
}

pub(crate) fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::L2 => "l2",
        Metric::InnerProduct => "ip",
        _ => "cosine",
    }
}

pub(crate) fn metric_from_name(s: &str) -> Option<Metric> {
    match s {
        "l2" => Some(Metric::L2),
        "ip" => Some(Metric::InnerProduct),
        "cosine" => Some(Metric::Cosine),
        _ => None,
    }
}

fn check_crc(stored: u32, data: &[u8], file: &Path, offset: usize, what: &str) -> Result<()> {
    let actual = crc32c::crc32c(data);
    if stored != actual && !cfg!(fuzzing) {
        return Err(Error::corruption(
            file,
            offset as u64,
            format!("{what} checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
        ));
    }
    Ok(())
}

fn check_magic(
    bytes: &[u8],
    magic: &[u8; 8],
    header: usize,
    file: &Path,
    what: &str,
) -> Result<()> {
    if bytes.len() < header {
        return Err(Error::corruption(
            file,
            bytes.len() as u64,
            format!("{} bytes: too short for a {what} header", bytes.len()),
        ));
    }
    if &bytes[..8] != magic {
        return Err(Error::corruption(
            file,
            0,
            format!("bad magic: not an omen {what}"),
        ));
    }
    let v = u32_at(bytes, 8);
    let known = if magic == MANIFEST_MAGIC {
        (1..=MANIFEST_VERSION).contains(&v)
    } else {
        v == VERSION
    };
    if !known {
        return Err(Error::corruption(
            file,
            8,
            format!("unsupported {what} version {v}"),
        ));
    }
    Ok(())
}

/// The manifest's bytes.
pub(crate) fn encode_manifest(m: &Manifest) -> Vec<u8> {
    // Serialising plain strings and integers cannot fail.
    let body = serde_json::to_vec_pretty(m).unwrap_or_default();
    let mut out = Vec::with_capacity(MANIFEST_HEADER + body.len());
    out.extend_from_slice(MANIFEST_MAGIC);
    out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let h = crc32c::crc32c(&out);
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses a manifest and checks it against itself (rows covered by segments,
/// known names).
pub(crate) fn parse_manifest(bytes: &[u8], file: &Path) -> Result<Manifest> {
    check_magic(bytes, MANIFEST_MAGIC, MANIFEST_HEADER, file, "manifest")?;
    check_crc(u32_at(bytes, 20), &bytes[..20], file, 20, "manifest header")?;
    let len = u32_at(bytes, 12) as usize;
    if len > MAX_MANIFEST || MANIFEST_HEADER + len != bytes.len() {
        return Err(Error::corruption(
            file,
            12,
            format!(
                "body length {len} does not match the file's {} bytes",
                bytes.len()
            ),
        ));
    }
    let body = &bytes[MANIFEST_HEADER..];
    check_crc(u32_at(bytes, 16), body, file, 16, "manifest body")?;
    let m: Manifest = serde_json::from_slice(body).map_err(|e| {
        Error::corruption(file, MANIFEST_HEADER as u64, format!("manifest body: {e}"))
    })?;
    let bad = |what: String| Error::corruption(file, MANIFEST_HEADER as u64, what);
    if m.dim == 0 || m.dim > u32::MAX as usize {
        return Err(bad(format!("dimension {}", m.dim)));
    }
    if m.indexed.is_some_and(|w| w > m.rows) {
        return Err(bad(format!(
            "indexed mark {:?} beyond the {} rows",
            m.indexed, m.rows
        )));
    }
    if metric_from_name(&m.metric).is_none() {
        return Err(bad(format!("unknown metric {:?}", m.metric)));
    }
    let storage = crate::StorageKind::from_name(&m.storage).map_err(|e| bad(e.to_string()))?;
    if let Some(p) = &m.index_params {
        params_from_json(p).map_err(bad)?;
    }
    let mut next = 0u64;
    for s in &m.segments {
        if s.first_row != next || s.rows == 0 {
            return Err(bad(format!(
                "segment at row {} ({} rows) does not follow row {next}",
                s.first_row, s.rows
            )));
        }
        next = s.first_row.saturating_add(s.rows);
        // Rows of a storage that persists them stay in its own files.
        if s.file.is_some() == storage.persists_rows() {
            return Err(bad("segment kind does not match the storage".into()));
        }
        if let Some(f) = &s.file {
            check_file_name(f).map_err(bad)?;
        }
    }
    if next != m.rows || m.rows > u32::MAX as u64 {
        return Err(bad(format!(
            "segments cover {next} rows, the manifest says {}",
            m.rows
        )));
    }
    if m.live > m.rows {
        return Err(bad(format!("{} live ids in {} rows", m.live, m.rows)));
    }
    check_file_name(&m.ids_file).map_err(bad)?;
    if let Some(f) = &m.index_file {
        check_file_name(f).map_err(bad)?;
    }
    Ok(m)
}

/// File names in a manifest are plain names inside the collection directory.
fn check_file_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!("bad file name {name:?}"))
    }
}

/// CRC-32C of rows as stored on disk (little-endian f32).
pub(crate) fn rows_crc(blocks: &mut dyn Iterator<Item = &[f32]>) -> u32 {
    let mut crc = 0u32;
    let mut buf = Vec::new();
    for b in blocks {
        buf.clear();
        for x in b {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, &buf);
    }
    crc
}

/// A segment file holding `rows` (row-major) starting at row `first_row`.
pub(crate) fn encode_segment(dim: usize, first_row: u64, rows: &[&[f32]]) -> (Vec<u8>, u32) {
    let n: usize = rows.iter().map(|r| r.len()).sum::<usize>() / dim.max(1);
    let mut out = Vec::with_capacity(SEGMENT_HEADER + n * dim * 4);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&first_row.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    for r in rows {
        for x in *r {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    let data_crc = crc32c::crc32c(&out[SEGMENT_HEADER..]);
    out[32..36].copy_from_slice(&data_crc.to_le_bytes());
    let h = crc32c::crc32c(&out[..36]);
    out[36..40].copy_from_slice(&h.to_le_bytes());
    (out, data_crc)
}

/// Parses a segment file expected to hold `want.rows` rows from `want.first_row`;
/// returns the rows (borrowed from `bytes` when they are aligned for f32, which
/// a heap buffer is: the 40-byte header keeps them 4-aligned).
pub(crate) fn parse_segment<'a>(
    bytes: &'a [u8],
    file: &Path,
    dim: usize,
    want: &Segment,
) -> Result<std::borrow::Cow<'a, [f32]>> {
    check_magic(bytes, SEGMENT_MAGIC, SEGMENT_HEADER, file, "vector segment")?;
    check_crc(u32_at(bytes, 36), &bytes[..36], file, 36, "segment header")?;
    let d = u32_at(bytes, 12) as usize;
    if d != dim {
        return Err(Error::corruption(
            file,
            12,
            format!("dimension {d}, expected {dim}"),
        ));
    }
    let first = u64_at(bytes, 16);
    let rows = u64_at(bytes, 24);
    if first != want.first_row || rows != want.rows {
        return Err(Error::corruption(
            file,
            16,
            format!(
                "rows {first}..+{rows}, the manifest expects {}..+{}",
                want.first_row, want.rows
            ),
        ));
    }
    let expect = (rows as usize)
        .checked_mul(dim * 4)
        .and_then(|b| b.checked_add(SEGMENT_HEADER));
    if expect != Some(bytes.len()) {
        return Err(Error::corruption(
            file,
            24,
            format!(
                "{rows} rows of dimension {dim} do not match the file's {} bytes",
                bytes.len()
            ),
        ));
    }
    let data = &bytes[SEGMENT_HEADER..];
    check_crc(u32_at(bytes, 32), data, file, 32, "segment data")?;
    if u32_at(bytes, 32) != want.crc && !cfg!(fuzzing) {
        return Err(Error::corruption(
            file,
            32,
            "segment checksum differs from the manifest's",
        ));
    }
    let v = f32s(data);
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::corruption(
            file,
            (SEGMENT_HEADER + 4 * i) as u64,
            "non-finite vector component",
        ));
    }
    Ok(v)
}

/// Little-endian f32 bytes as floats: borrowed without copying on a
/// little-endian target when `data` is 4-aligned, decoded otherwise.
fn f32s(data: &[u8]) -> std::borrow::Cow<'_, [f32]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid f32, and `align_to` only yields a
        // middle slice of correctly aligned, in-bounds f32s; on a little-endian
        // target their bytes are the little-endian encodings.
        let (head, mid, tail) = unsafe { data.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return std::borrow::Cow::Borrowed(mid);
        }
    }
    std::borrow::Cow::Owned(
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// The id file: every live id with its slot.
pub(crate) fn encode_ids(live: &[(std::sync::Arc<str>, SlotId)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(live.len() * 16);
    for (id, slot) in live {
        body.extend_from_slice(&slot.to_le_bytes());
        body.extend_from_slice(&(id.len() as u16).to_le_bytes());
        body.extend_from_slice(id.as_bytes());
    }
    let mut out = Vec::with_capacity(IDS_HEADER + body.len());
    out.extend_from_slice(IDS_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(live.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let h = crc32c::crc32c(&out);
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses an id file: `(id, slot)` pairs, each slot below `rows`, ids valid.
/// Uniqueness is checked by the caller while building the map.
pub(crate) fn parse_ids(bytes: &[u8], file: &Path, rows: u64) -> Result<Vec<(String, SlotId)>> {
    check_magic(bytes, IDS_MAGIC, IDS_HEADER, file, "id file")?;
    check_crc(u32_at(bytes, 28), &bytes[..28], file, 28, "id file header")?;
    let count = u64_at(bytes, 16);
    let body = &bytes[IDS_HEADER..];
    if count > (body.len() / 7) as u64 {
        return Err(Error::corruption(
            file,
            16,
            format!("{count} ids cannot fit in {} bytes", body.len()),
        ));
    }
    check_crc(u32_at(bytes, 24), body, file, 24, "id file body")?;
    let mut out = Vec::with_capacity(count as usize);
    let mut at = IDS_HEADER;
    for i in 0..count {
        if at + 6 > bytes.len() {
            return Err(Error::corruption(
                file,
                at as u64,
                format!("id {i}: truncated"),
            ));
        }
        let slot = u32_at(bytes, at);
        let len = u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]) as usize;
        if u64::from(slot) >= rows {
            return Err(Error::corruption(
                file,
                at as u64,
                format!("id {i}: slot {slot} outside the {rows} stored rows"),
            ));
        }
        let s = at + 6;
        if len == 0 || len > omen_core::validate::MAX_ID_LEN || s + len > bytes.len() {
            return Err(Error::corruption(
                file,
                (at + 4) as u64,
                format!("id {i}: bad length {len}"),
            ));
        }
        let id = std::str::from_utf8(&bytes[s..s + len])
            .map_err(|e| Error::corruption(file, s as u64, format!("id {i} is not UTF-8: {e}")))?;
        if id.contains('\0') {
            return Err(Error::corruption(
                file,
                s as u64,
                format!("id {i} contains NUL"),
            ));
        }
        out.push((id.to_owned(), slot));
        at = s + len;
    }
    if at != bytes.len() {
        return Err(Error::corruption(
            file,
            at as u64,
            format!("{} trailing bytes after {count} ids", bytes.len() - at),
        ));
    }
    Ok(out)
}
