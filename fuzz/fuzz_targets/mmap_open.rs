//! Arbitrary bytes as the chunk files of an `MmapStorage`, then
//! `MmapStorage::open`: never a panic or a fault; every error is `Corruption`
//! naming a chunk file of the directory with an offset inside that file (or 0 for a
//! missing one); a storage that opens publishes exactly the rows asked for, and
//! every one of them can be read (and appended after, for small geometries).
//!
//! Input: byte 0 picks the dimension (1..=8), bytes 1..3 the row count (u16), byte
//! 3 flags (bit 0: expand each part as 44 header bytes + zero padding to the
//! 4096-byte page + the rest as rows, so short inputs reach the checks after the
//! header; bit 1: write a second chunk file), byte 4 where the rest splits between
//! `chunk-00.omv` and `chunk-01.omv`.
//!
//! Under `cfg(fuzzing)` the header CRC is not compared, so forged headers reach
//! the field and length checks behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::{Error, SlotId, VectorStorage};
use omen_storage::{MmapStorage, MMAP_HEADER_BYTES};
use std::path::PathBuf;
use std::sync::OnceLock;

/// One directory per fuzzing process, emptied before every input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("omen-fuzz-mmap-")
            .tempdir()
            .expect("temp dir")
            .keep()
    })
}

/// The bytes of one chunk file made from `part`.
fn chunk_bytes(part: &[u8], expand: bool) -> Vec<u8> {
    if !expand {
        return part.to_vec();
    }
    let head = part.len().min(44);
    let mut f = part[..head].to_vec();
    f.resize(MMAP_HEADER_BYTES, 0);
    f.extend_from_slice(&part[head..]);
    f
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let dim = (data[0] % 8) as usize + 1;
    let rows = u16::from_le_bytes([data[1], data[2]]) as usize;
    let (expand, two) = (data[3] & 1 != 0, data[3] & 2 != 0);
    let rest = &data[5..];
    let split = if two {
        rest.len() * data[4] as usize / 255
    } else {
        rest.len()
    };
    let dir = dir();
    for b in 0..32 {
        let _ = std::fs::remove_file(dir.join(format!("chunk-{b:02}.omv")));
    }
    let mut lens = vec![chunk_bytes(&rest[..split], expand)];
    if two {
        lens.push(chunk_bytes(&rest[split..], expand));
    }
    for (b, bytes) in lens.iter().enumerate() {
        std::fs::write(dir.join(format!("chunk-{b:02}.omv")), bytes).expect("write chunk");
    }
    match MmapStorage::open(dir, dim, rows) {
        Ok(s) => {
            assert_eq!(s.len(), rows);
            assert_eq!(s.dim(), dim);
            let mut seen = 0usize;
            for slot in 0..rows {
                let r = s.get(slot as SlotId).expect("published row");
                assert_eq!(r.len(), dim);
                seen += r.iter().filter(|x| x.is_nan()).count();
            }
            let sd: &dyn VectorStorage = &s;
            let covered: usize = sd.blocks().map(|(_, b)| b.len() / dim).sum();
            assert_eq!(covered, rows);
            assert!(s.get(rows as SlotId).is_none());
            std::hint::black_box(seen);
            // Appending overwrites unpublished rows or creates the next chunk file;
            // keep the files small.
            if s.chunk_rows() <= 64 {
                let row = vec![1.5f32; dim];
                let slot = s.append(&row).expect("append");
                assert_eq!(s.get(slot), Some(&row[..]));
                s.flush().expect("flush");
            }
        }
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file.parent(), Some(dir.as_path()), "{file:?}");
            let b = lens
                .iter()
                .enumerate()
                .find(|(b, _)| file.ends_with(format!("chunk-{b:02}.omv")));
            match b {
                Some((_, bytes)) => assert!(offset <= bytes.len() as u64),
                None => assert_eq!(offset, 0, "missing file {file:?}"),
            }
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
