//! Whole-collection snapshots: every live id with its vector, in one checksummed
//! file, written atomically. This is how the `omen db` commands keep a collection
//! between runs until the write-ahead log and checkpoints land; loading rebuilds the
//! index from the vectors.
//!
//! # Format (`docs/FORMAT.md`, "collection snapshot")
//! All integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `OMENSNP1` |
//! | 8 | 4 | format version: 2 written; 1 (CRC-32/IEEE checksums) still read |
//! | 12 | 4 | dimension |
//! | 16 | 1 | metric: 0 = l2, 1 = ip, 2 = cosine |
//! | 17 | 3 | reserved, zero |
//! | 20 | 8 | record count |
//! | 28 | 4 | CRC-32C of bytes 0..28 |
//! | 32 | … | records: `u32` id length, id bytes (UTF-8), `dim` × `f32` |
//! | end − 4 | 4 | CRC-32C of the records |
//!
//! Written to `<file>.tmp`, fsynced, renamed over `<file>`, and the directory
//! fsynced, so a crash leaves either the old snapshot or the new one.

use crate::collection::Collection;
use omen_core::codec::{
    check_checksum, crc32, crc32_ieee_legacy, metric_code, metric_from_code, ByteReader, ByteWriter,
};
use omen_core::validate::MAX_ID_LEN;
use omen_core::{Error, Metric, Result};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"OMENSNP1";
/// Version 2 checksums with CRC-32C; version 1 (still read) used CRC-32/IEEE.
const VERSION: u32 = 2;
const HEADER: usize = 32;

/// A snapshot's contents: its header and every (id, vector) record.
pub type SnapshotContents = (SnapshotHeader, Vec<(String, Vec<f32>)>);

/// The header of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Vector width.
    pub dim: usize,
    /// The collection's metric.
    pub metric: Metric,
    /// Live ids stored.
    pub count: u64,
}

impl Collection {
    /// Writes every live id and its stored vector to `path` atomically (see the
    /// module docs of `omen::snapshot`).
    pub fn save_snapshot(&self, path: &Path) -> Result<()> {
        let live = self.live_entries();
        let dim = self.dim();
        let mut w = ByteWriter::with_capacity(HEADER + live.len() * (8 + 4 * dim) + 4);
        w.bytes(MAGIC)
            .u32(VERSION)
            .u32(dim as u32)
            .u8(metric_code(self.metric()))
            .zeros(3)
            .u64(live.len() as u64);
        let hcrc = w.crc32_from(0);
        w.u32(hcrc);
        for (id, v) in &live {
            w.str_u32(id).f32s(v);
        }
        let crc = w.crc32_from(HEADER);
        w.u32(crc);
        write_atomically(path, &w.finish())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        d.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Parses a snapshot's bytes (`name` labels errors). Returns the header and the
/// records as (id, vector) pairs. Every inconsistency is a `Corruption` error with
/// the byte offset; no input panics or allocates beyond what the bytes hold.
pub fn parse_snapshot(bytes: &[u8], name: &Path) -> Result<SnapshotContents> {
    if bytes.len() < HEADER + 4 {
        return Err(Error::corruption(
            name,
            bytes.len() as u64,
            format!("{} bytes: too short for a snapshot header", bytes.len()),
        ));
    }
    let mut r = ByteReader::new(&bytes[..HEADER], name);
    r.expect_magic(MAGIC, "an omen collection snapshot")?;
    let version = r.u32("version")?;
    let checksum: fn(&[u8]) -> u32 = match version {
        1 => crc32_ieee_legacy,
        VERSION => crc32,
        v => return Err(r.error_at(8, format!("unsupported snapshot version {v}"))),
    };
    let dim = r.u32("dimension")? as usize;
    let code = r.u8("metric")?;
    let reserved = r.bytes(3, "reserved bytes")?;
    let count = r.u64("record count")?;
    let stored = r.u32("header checksum")?;
    // The fuzzer cannot forge checksums; skipping them lets it reach the parser.
    if !cfg!(fuzzing) {
        check_checksum(stored, checksum(&bytes[..28]), name, 28, "header")?;
    }
    if dim == 0 {
        return Err(r.error_at(12, "dimension 0"));
    }
    let metric = metric_from_code(code)
        .ok_or_else(|| r.error_at(16, format!("unknown metric code {code}")))?;
    if let Some(i) = reserved.iter().position(|&b| b != 0) {
        return Err(r.error_at(17 + i, "reserved bytes are not zero"));
    }
    let end = bytes.len() - 4;
    let body = &bytes[HEADER..end];
    let min_record = 4 + 1 + 4 * dim;
    if count > (body.len() / min_record) as u64 {
        return Err(r.error_at(
            20,
            format!("record count {count} cannot fit in {} bytes", body.len()),
        ));
    }
    let stored = ByteReader::at(&bytes[end..], name, end as u64).u32("records checksum")?;
    if !cfg!(fuzzing) {
        check_checksum(stored, checksum(body), name, end as u64, "records")?;
    }
    let mut r = ByteReader::at(body, name, HEADER as u64);
    let mut records = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = r.position();
        let len = r.u32("record id length")? as usize;
        if len == 0 || len > MAX_ID_LEN {
            return Err(r.error_at(
                at,
                format!("record {i}: id length {len} outside 1..={MAX_ID_LEN}"),
            ));
        }
        let id = r.utf8(len, "record id")?.to_string();
        let v = r.finite_f32s(dim, "record vector")?.into_owned();
        records.push((id, v));
    }
    r.expect_end(&format!("{count} records"))?;
    Ok((SnapshotHeader { dim, metric, count }, records))
}

/// Reads a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<SnapshotContents> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_snapshot(&bytes, path)
}

impl Collection {
    /// Inserts every record of the snapshot at `path` into this (empty) collection,
    /// in one batch. Errors: the snapshot's `Corruption`; `InvalidParameter` if its
    /// dimension or metric differ from this collection's, or the collection is not
    /// empty; the insert's own errors (a duplicate id in a damaged file, ...).
    pub fn load_snapshot(&self, path: &Path) -> Result<SnapshotHeader> {
        let (h, records) = read_snapshot(path)?;
        if h.dim != self.dim() || h.metric != self.metric() {
            return Err(Error::invalid_param(
                "snapshot",
                format!(
                    "{} holds dim {} metric {}, the collection is dim {} metric {}",
                    path.display(),
                    h.dim,
                    h.metric,
                    self.dim(),
                    self.metric()
                ),
            ));
        }
        if !self.is_empty() {
            return Err(Error::invalid_param(
                "snapshot",
                "can only be loaded into an empty collection",
            ));
        }
        let ids: Vec<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
        let mut rows = Vec::with_capacity(records.len() * h.dim);
        for (_, v) in &records {
            rows.extend_from_slice(v);
        }
        if !ids.is_empty() {
            self.insert_batch(&ids, &rows)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectionConfig;

    #[test]
    fn round_trip_keeps_ids_and_vectors() {
        let dir = std::env::temp_dir().join(format!("omen-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snap.bin");
        let c = CollectionConfig::new(3, Metric::L2).build().unwrap();
        c.insert("a", &[1.0, 2.0, 3.0]).unwrap();
        c.insert("b", &[4.0, 5.0, 6.0]).unwrap();
        c.upsert("a", &[7.0, 8.0, 9.0]).unwrap();
        c.insert("c", &[0.0, 0.0, 1.0]).unwrap();
        c.delete("c").unwrap();
        c.save_snapshot(&path).unwrap();
        let d = CollectionConfig::new(3, Metric::L2).build().unwrap();
        let h = d.load_snapshot(&path).unwrap();
        assert_eq!(h.count, 2);
        assert_eq!(d.get("a"), Some(vec![7.0, 8.0, 9.0]));
        assert_eq!(d.get("b"), Some(vec![4.0, 5.0, 6.0]));
        assert!(!d.contains("c"));

        // Every single-byte corruption and every truncation is an error, not a panic.
        let bytes = std::fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                matches!(parse_snapshot(&b, &path), Err(Error::Corruption { .. })),
                "flip at {i}"
            );
        }
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    parse_snapshot(&bytes[..n], &path),
                    Err(Error::Corruption { .. })
                ),
                "truncate at {n}"
            );
        }
        // A different metric is refused.
        let e = CollectionConfig::new(3, Metric::Cosine).build().unwrap();
        assert!(matches!(
            e.load_snapshot(&path),
            Err(Error::InvalidParameter { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_1_snapshots_with_the_ieee_crc_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.bin");
        let c = CollectionConfig::new(2, Metric::Cosine).build().unwrap();
        c.insert("a", &[1.0, 0.0]).unwrap();
        c.insert("bb", &[0.0, 2.0]).unwrap();
        c.save_snapshot(&path).unwrap();
        let v2 = std::fs::read(&path).unwrap();
        assert_eq!(&v2[8..12], &2u32.to_le_bytes());
        let with = |version: u32, crc: fn(&[u8]) -> u32| {
            let mut b = v2.clone();
            b[8..12].copy_from_slice(&version.to_le_bytes());
            let h = crc(&b[..28]);
            b[28..32].copy_from_slice(&h.to_le_bytes());
            let end = b.len() - 4;
            let r = crc(&b[HEADER..end]);
            b[end..].copy_from_slice(&r.to_le_bytes());
            b
        };
        let want = parse_snapshot(&v2, &path).unwrap();
        let old = parse_snapshot(&with(1, crc32_ieee_legacy), &path).unwrap();
        assert_eq!(old, want);
        assert_eq!(want.0.metric, Metric::Cosine);
        // Each version is checked with its own algorithm only.
        for b in [with(1, crc32), with(2, crc32_ieee_legacy)] {
            assert!(matches!(
                parse_snapshot(&b, &path),
                Err(Error::Corruption { offset: 28, .. })
            ));
        }
        assert!(matches!(
            parse_snapshot(&with(3, crc32), &path),
            Err(Error::Corruption { offset: 8, .. })
        ));
    }
}
