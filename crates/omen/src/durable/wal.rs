//! Write-ahead log records: encoding, and the recovery scan of one log file.
//!
//! Layout (see `docs/FORMAT.md`, "write-ahead log"): a 32-byte file header, then
//! records, each starting at a multiple of 8:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `len` |
//! | 4 | 4 | CRC-32C of bytes 8 .. 24 + len |
//! | 8 | 8 | sequence number |
//! | 16 | 8 | `synced_upto`: a file offset the writer knew to be durable |
//! | 24 | len | payload |
//! | 24 + len | 0–7 | zero padding to a multiple of 8 |

use omen_core::codec::{crc32, ByteReader, ByteWriter};
use omen_core::validate::MAX_ID_LEN;
use omen_core::{Error, Result};
use std::path::Path;

pub(crate) const WAL_MAGIC: &[u8; 8] = b"OMENWAL1";
pub(crate) const WAL_VERSION: u32 = 1;
pub(crate) const WAL_HEADER: usize = 32;
pub(crate) const RECORD_HEADER: usize = 24;
/// The largest payload accepted (1 GiB): bounds what a damaged length can make
/// recovery allocate.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

/// What a record does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// New ids (one or a batch), each with its vector.
    Insert = 1,
    /// One id, inserted or replaced.
    Upsert = 2,
    /// Ids removed.
    Delete = 3,
}

impl Op {
    fn from_code(c: u8) -> Option<Op> {
        match c {
            1 => Some(Op::Insert),
            2 => Some(Op::Upsert),
            3 => Some(Op::Delete),
            _ => None,
        }
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub seq: u64,
    pub op: Op,
    pub ids: Vec<String>,
    /// `ids.len() * dim` floats for inserts and upserts; empty for deletes.
    pub rows: Vec<f32>,
}

/// The 32-byte header of log file `gen`.
pub(crate) fn file_header(dim: usize, gen: u64) -> [u8; WAL_HEADER] {
    let mut w = ByteWriter::with_capacity(WAL_HEADER);
    w.bytes(WAL_MAGIC)
        .u32(WAL_VERSION)
        .u32(dim as u32)
        .u64(gen)
        .u32(0);
    let crc = w.crc32_from(0);
    w.u32(crc);
    let mut h = [0u8; WAL_HEADER];
    h.copy_from_slice(w.as_slice());
    h
}

/// Appends one record to `buf` (which starts at a multiple of 8 in the file).
/// `ids` and `rows` are trusted: the collection validated them.
pub(crate) fn encode<S: AsRef<str>>(
    buf: &mut Vec<u8>,
    seq: u64,
    synced_upto: u64,
    op: Op,
    ids: &[S],
    rows: &[f32],
) {
    let mut w = ByteWriter::from_vec(std::mem::take(buf));
    let start = w.len();
    // Length and checksum are filled in once the payload is written.
    w.u32(0).u32(0).u64(seq).u64(synced_upto);
    w.u8(op as u8).zeros(3).u32(ids.len() as u32);
    for id in ids {
        w.str_u16(id.as_ref());
    }
    w.f32s(rows);
    let len = w.len() - start - RECORD_HEADER;
    w.set_u32(start, len as u32);
    let crc = w.crc32_from(start + 8);
    w.set_u32(start + 4, crc);
    let pad = (8 - (w.len() - start) % 8) % 8;
    w.zeros(pad);
    *buf = w.finish();
}

/// A record frame that passed its checksum, at `offset`, ending (padding
/// included) at `end`.
struct Frame<'a> {
    seq: u64,
    synced_upto: u64,
    payload: &'a [u8],
    end: usize,
}

/// The frame at `at`, if its length fits and its checksum holds.
fn frame_at<'a>(bytes: &'a [u8], file: &'a Path, at: usize) -> Option<Frame<'a>> {
    let mut r = ByteReader::at(bytes.get(at..)?, file, at as u64);
    if r.remaining() < RECORD_HEADER {
        return None;
    }
    let len = r.u32("record length").ok()? as usize;
    if len > MAX_PAYLOAD || len == 0 {
        return None;
    }
    let stored = r.u32("record checksum").ok()?;
    let covered = r.buffer().get(8..RECORD_HEADER + len)?;
    if stored != crc32(covered) && !cfg!(fuzzing) {
        return None;
    }
    let seq = r.u64("sequence number").ok()?;
    let synced_upto = r.u64("synced_upto").ok()?;
    let payload = r.bytes(len, "payload").ok()?;
    Some(Frame {
        seq,
        synced_upto,
        payload,
        end: at + RECORD_HEADER + len + (8 - (RECORD_HEADER + len) % 8) % 8,
    })
}

/// Decodes a payload that passed its checksum. `off` is the record's offset;
/// errors name the offset of the field at fault and the record's sequence number.
fn decode_payload(payload: &[u8], seq: u64, dim: usize, file: &Path, off: usize) -> Result<Record> {
    let base = (off + RECORD_HEADER) as u64;
    decode_fields(ByteReader::at(payload, file, base), seq, dim).map_err(|e| match e {
        Error::Corruption {
            file,
            offset,
            detail,
        } => Error::Corruption {
            file,
            offset,
            detail: format!("record {seq}: {detail}"),
        },
        other => other,
    })
}

fn decode_fields(mut r: ByteReader<'_>, seq: u64, dim: usize) -> Result<Record> {
    let code = r.u8("op")?;
    let op = Op::from_code(code).ok_or_else(|| r.error_at(0, format!("unknown op {code}")))?;
    r.zeros(3, "reserved bytes")?;
    // Each id takes at least 3 bytes; refuse counts the payload cannot hold before
    // allocating for them.
    let count = r.count_u32(3, "id count")?;
    if count == 0 {
        return Err(r.error_at(4, "no ids"));
    }
    if op == Op::Upsert && count != 1 {
        return Err(r.error_at(4, format!("upsert of {count} ids")));
    }
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let at = r.position();
        let len = r.u16("id length")? as usize;
        if len == 0 || len > MAX_ID_LEN {
            return Err(r.error_at(at, format!("id {i}: bad length {len}")));
        }
        let id = r.utf8(len, "id")?;
        if id.contains('\0') {
            return Err(r.error_at(at + 2, format!("id {i} contains NUL")));
        }
        ids.push(id.to_owned());
    }
    let floats = if op == Op::Delete {
        0
    } else {
        count.saturating_mul(dim)
    };
    if r.remaining() != floats.saturating_mul(4) {
        return Err(r.error(format!(
            "{} bytes of vectors, expected {}",
            r.remaining(),
            floats.saturating_mul(4)
        )));
    }
    let rows = r.finite_f32s(floats, "row")?.into_owned();
    Ok(Record { seq, op, ids, rows })
}

/// What the scan of one log file found.
pub(crate) struct Scan {
    /// Records in order.
    pub records: Vec<Record>,
    /// Where the valid records end: the file is truncated here when `torn`.
    pub valid_len: u64,
    /// The file's tail (from `valid_len`) holds bytes that never became durable:
    /// a torn or partial last write.
    pub torn: bool,
}

/// Scans log file `file` (its bytes), expecting generation `gen`, dimension `dim`
/// and the first sequence number `first_seq`.
///
/// The tail rule: a record that fails its checks ends the log. It is a torn
/// tail, and truncated, when no later valid record claims (by its
/// `synced_upto`) that bytes at or past it were durable, and `last` is true
/// (only the newest log file can have an unsynced tail: older ones were synced
/// whole before the next one was created). Otherwise it is corruption, reported
/// with the file and offset.
pub(crate) fn scan(
    bytes: &[u8],
    file: &Path,
    dim: usize,
    gen: u64,
    first_seq: u64,
    last: bool,
) -> Result<Scan> {
    let header_ok = bytes.len() >= WAL_HEADER && {
        let h = file_header(dim, gen);
        // The stored header must be exactly the one this generation writes.
        bytes[..WAL_HEADER] == h || (cfg!(fuzzing) && bytes[..8] == *WAL_MAGIC)
    };
    if !header_ok {
        // A new log file whose header never became durable holds no records.
        if last && !later_claims(bytes, file, 0, 0) {
            return Ok(Scan {
                records: Vec::new(),
                valid_len: 0,
                torn: true,
            });
        }
        let detail = if bytes.len() < WAL_HEADER {
            format!("{} bytes: too short for a log header", bytes.len())
        } else if bytes[..8] != *WAL_MAGIC {
            "bad magic: not an omen write-ahead log".to_string()
        } else {
            format!("log header does not match generation {gen}, dimension {dim} (or its checksum fails)")
        };
        return Err(Error::corruption(file, 0, detail));
    }
    let mut records = Vec::new();
    let mut at = WAL_HEADER;
    let mut expect = first_seq;
    while at < bytes.len() {
        let frame = frame_at(bytes, file, at).filter(|f| f.seq == expect);
        let Some(f) = frame else {
            if last && !later_claims(bytes, file, at + 8, at as u64) {
                return Ok(Scan {
                    records,
                    valid_len: at as u64,
                    torn: true,
                });
            }
            let detail = match frame_at(bytes, file, at) {
                Some(f) => format!("sequence number {} where {expect} was expected", f.seq),
                None => "damaged record (bad length or checksum) before the end of the log".into(),
            };
            return Err(Error::corruption(file, at as u64, detail));
        };
        records.push(decode_payload(f.payload, f.seq, dim, file, at)?);
        expect += 1;
        if f.end > bytes.len() {
            // The record is whole but its padding was cut: the file is set to the
            // padded length so that the next record starts aligned.
            return Ok(Scan {
                records,
                valid_len: f.end as u64,
                torn: true,
            });
        }
        at = f.end;
    }
    Ok(Scan {
        records,
        valid_len: bytes.len() as u64,
        torn: false,
    })
}

/// Whether a valid record starting at or after `from` (8-aligned) claims that the
/// log was durable past `offset`.
fn later_claims(bytes: &[u8], file: &Path, from: usize, offset: u64) -> bool {
    let mut at = from.div_ceil(8) * 8;
    while at + RECORD_HEADER <= bytes.len() {
        if let Some(f) = frame_at(bytes, file, at) {
            if f.synced_upto > offset {
                return true;
            }
        }
        at += 8;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[(Op, Vec<&str>, Vec<f32>)], dim: usize) -> Vec<u8> {
        let mut b = file_header(dim, 3).to_vec();
        for (i, (op, ids, rows)) in records.iter().enumerate() {
            let synced = b.len() as u64;
            encode(&mut b, 10 + i as u64, synced, *op, ids, rows);
        }
        b
    }

    #[test]
    fn round_trip_and_torn_tails() {
        let recs = vec![
            (Op::Insert, vec!["a", "b"], vec![1.0, 2.0, 3.0, 4.0]),
            (Op::Upsert, vec!["a"], vec![5.0, 6.0]),
            (Op::Delete, vec!["b"], vec![]),
        ];
        let b = log(&recs, 2);
        let p = Path::new("wal");
        let s = scan(&b, p, 2, 3, 10, true).unwrap();
        assert!(!s.torn);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[0].ids, vec!["a", "b"]);
        assert_eq!(s.records[1].rows, vec![5.0, 6.0]);
        assert_eq!(s.records[2].op, Op::Delete);
        // Every truncation of the last file is a torn tail holding a prefix.
        let mut ends = vec![WAL_HEADER];
        let mut body_ends = vec![];
        for i in 0..3 {
            let f = frame_at(&b, p, ends[i]).unwrap();
            body_ends.push(ends[i] + RECORD_HEADER + f.payload.len());
            ends.push(f.end);
        }
        for n in 0..b.len() {
            let s = scan(&b[..n], p, 2, 3, 10, true).unwrap();
            let whole = body_ends.iter().filter(|&&e| e <= n).count();
            assert_eq!(s.records.len(), whole, "truncated at {n}");
            assert_eq!(s.torn, !ends.contains(&n), "truncated at {n}");
            if s.torn {
                assert_eq!(s.valid_len as usize % 8, 0);
            }
            for (r, want) in s.records.iter().zip(&recs) {
                assert_eq!(r.op, want.0);
            }
            // The same truncation in an older file is corruption (unless it only
            // removed whole records at the end, which an older file cannot tell).
            if let Err(e) = scan(&b[..n], p, 2, 3, 10, false) {
                assert!(matches!(e, Error::Corruption { .. }));
            }
        }
        // Damage to the first record, with later records claiming it durable, is
        // corruption even in the last file.
        let mut d = b.clone();
        d[WAL_HEADER + 30] ^= 1;
        assert!(matches!(
            scan(&d, p, 2, 3, 10, true),
            Err(Error::Corruption { offset, .. }) if offset == WAL_HEADER as u64
        ));
        // A wrong first sequence number is corruption.
        assert!(scan(&b, p, 2, 3, 11, false).is_err());
    }
}
