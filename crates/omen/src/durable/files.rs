//! The checkpoint files: the manifest, vector segments and the id file. Their
//! byte layouts are in `docs/FORMAT.md` ("durable collection directory").

use crate::registry::params_from_json;
use omen_core::codec::{check_crc32, crc32, crc32_append, ByteReader, ByteWriter};
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
    m.name()
}

pub(crate) fn metric_from_name(s: &str) -> Option<Metric> {
    match s {
        "l2" => Some(Metric::L2),
        "ip" => Some(Metric::InnerProduct),
        "cosine" => Some(Metric::Cosine),
        _ => None,
    }
}

/// A checksum check; skipped under the fuzzer, which cannot forge checksums, so
/// that it reaches the parsing behind them.
fn check_crc(stored: u32, data: &[u8], file: &Path, offset: u64, what: &str) -> Result<()> {
    if cfg!(fuzzing) {
        return Ok(());
    }
    check_crc32(stored, data, file, offset, what)
}

/// A reader over the `header` bytes of a checkpoint file, past its magic and a
/// known version.
fn read_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    header: usize,
    file: &'a Path,
    what: &str,
) -> Result<ByteReader<'a>> {
    let Some(head) = bytes.get(..header) else {
        return Err(Error::corruption(
            file,
            bytes.len() as u64,
            format!("{} bytes: too short for a {what} header", bytes.len()),
        ));
    };
    let mut r = ByteReader::new(head, file);
    r.expect_magic(magic, &format!("an omen {what}"))?;
    let v = r.u32("version")?;
    let known = if magic == MANIFEST_MAGIC {
        (1..=MANIFEST_VERSION).contains(&v)
    } else {
        v == VERSION
    };
    if !known {
        return Err(r.error_at(8, format!("unsupported {what} version {v}")));
    }
    Ok(r)
}

/// The manifest's bytes.
pub(crate) fn encode_manifest(m: &Manifest) -> Vec<u8> {
    // Serialising plain strings and integers cannot fail.
    let body = serde_json::to_vec_pretty(m).unwrap_or_default();
    let mut w = ByteWriter::with_capacity(MANIFEST_HEADER + body.len());
    w.bytes(MANIFEST_MAGIC)
        .u32(MANIFEST_VERSION)
        .u32(body.len() as u32)
        .u32(crc32(&body));
    let h = w.crc32_from(0);
    w.u32(h).bytes(&body);
    w.finish()
}

/// Parses a manifest and checks it against itself (rows covered by segments,
/// known names).
pub(crate) fn parse_manifest(bytes: &[u8], file: &Path) -> Result<Manifest> {
    let mut r = read_header(bytes, MANIFEST_MAGIC, MANIFEST_HEADER, file, "manifest")?;
    let len = r.u32("body length")? as usize;
    let body_crc = r.u32("body checksum")?;
    let header_crc = r.u32("header checksum")?;
    check_crc(header_crc, &bytes[..20], file, 20, "manifest header")?;
    if len > MAX_MANIFEST || MANIFEST_HEADER + len != bytes.len() {
        return Err(r.error_at(
            12,
            format!(
                "body length {len} does not match the file's {} bytes",
                bytes.len()
            ),
        ));
    }
    let body = &bytes[MANIFEST_HEADER..];
    check_crc(body_crc, body, file, 16, "manifest body")?;
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
    let mut w = ByteWriter::new();
    for b in blocks {
        w.clear();
        w.f32s(b);
        crc = crc32_append(crc, w.as_slice());
    }
    crc
}

/// A segment file holding `rows` (row-major) starting at row `first_row`.
pub(crate) fn encode_segment(dim: usize, first_row: u64, rows: &[&[f32]]) -> (Vec<u8>, u32) {
    let n: usize = rows.iter().map(|r| r.len()).sum::<usize>() / dim.max(1);
    let mut w = ByteWriter::with_capacity(SEGMENT_HEADER + n * dim * 4);
    // The checksums at 32 and 36 are filled in once the rows are written.
    w.bytes(SEGMENT_MAGIC)
        .u32(VERSION)
        .u32(dim as u32)
        .u64(first_row)
        .u64(n as u64)
        .zeros(8);
    for r in rows {
        w.f32s(r);
    }
    let data_crc = w.crc32_from(SEGMENT_HEADER);
    w.set_u32(32, data_crc);
    let h = crc32(&w.as_slice()[..36]);
    w.set_u32(36, h);
    (w.finish(), data_crc)
}

/// Parses a segment file expected to hold `want.rows` rows from `want.first_row`;
/// returns the rows (borrowed from `bytes` when they are aligned for f32, which
/// a heap buffer is: the 40-byte header keeps them 4-aligned).
pub(crate) fn parse_segment<'a>(
    bytes: &'a [u8],
    file: &'a Path,
    dim: usize,
    want: &Segment,
) -> Result<std::borrow::Cow<'a, [f32]>> {
    let mut r = read_header(bytes, SEGMENT_MAGIC, SEGMENT_HEADER, file, "vector segment")?;
    let d = r.u32("dimension")? as usize;
    let first = r.u64("first row")?;
    let rows = r.u64("row count")?;
    let data_crc = r.u32("data checksum")?;
    let header_crc = r.u32("header checksum")?;
    check_crc(header_crc, &bytes[..36], file, 36, "segment header")?;
    if d != dim {
        return Err(r.error_at(12, format!("dimension {d}, expected {dim}")));
    }
    if first != want.first_row || rows != want.rows {
        return Err(r.error_at(
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
        return Err(r.error_at(
            24,
            format!(
                "{rows} rows of dimension {dim} do not match the file's {} bytes",
                bytes.len()
            ),
        ));
    }
    let data = &bytes[SEGMENT_HEADER..];
    check_crc(data_crc, data, file, 32, "segment data")?;
    if data_crc != want.crc && !cfg!(fuzzing) {
        return Err(r.error_at(32, "segment checksum differs from the manifest's"));
    }
    ByteReader::at(data, file, SEGMENT_HEADER as u64).finite_f32s(data.len() / 4, "vector")
}

/// The id file: every live id with its slot.
pub(crate) fn encode_ids(live: &[(std::sync::Arc<str>, SlotId)]) -> Vec<u8> {
    let mut body = ByteWriter::with_capacity(live.len() * 16);
    for (id, slot) in live {
        body.u32(*slot).str_u16(id);
    }
    let mut w = ByteWriter::with_capacity(IDS_HEADER + body.len());
    w.bytes(IDS_MAGIC)
        .u32(VERSION)
        .u32(0)
        .u64(live.len() as u64)
        .u32(crc32(body.as_slice()));
    let h = w.crc32_from(0);
    w.u32(h).bytes(body.as_slice());
    w.finish()
}

/// Parses an id file: `(id, slot)` pairs, each slot below `rows`, ids valid.
/// Uniqueness is checked by the caller while building the map.
pub(crate) fn parse_ids(bytes: &[u8], file: &Path, rows: u64) -> Result<Vec<(String, SlotId)>> {
    let mut r = read_header(bytes, IDS_MAGIC, IDS_HEADER, file, "id file")?;
    let reserved = r.u32("reserved field")?;
    let count = r.u64("id count")?;
    let body_crc = r.u32("body checksum")?;
    let header_crc = r.u32("header checksum")?;
    check_crc(header_crc, &bytes[..28], file, 28, "id file header")?;
    if reserved != 0 {
        return Err(r.error_at(12, format!("reserved field is {reserved}, not 0")));
    }
    let body = &bytes[IDS_HEADER..];
    if count > (body.len() / 7) as u64 {
        return Err(r.error_at(
            16,
            format!("{count} ids cannot fit in {} bytes", body.len()),
        ));
    }
    check_crc(body_crc, body, file, 24, "id file body")?;
    let mut r = ByteReader::at(body, file, IDS_HEADER as u64);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = r.position();
        let slot = r.u32("slot")?;
        let len = r.u16("id length")? as usize;
        if u64::from(slot) >= rows {
            return Err(r.error_at(
                at,
                format!("id {i}: slot {slot} outside the {rows} stored rows"),
            ));
        }
        if len == 0 || len > omen_core::validate::MAX_ID_LEN {
            return Err(r.error_at(at + 4, format!("id {i}: bad length {len}")));
        }
        let id = r.utf8(len, "id")?;
        if id.contains('\0') {
            return Err(r.error_at(at + 6, format!("id {i} contains NUL")));
        }
        out.push((id.to_owned(), slot));
    }
    r.expect_end(&format!("{count} ids"))?;
    Ok(out)
}
