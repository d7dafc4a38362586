//! Arbitrary bytes in place of one file of a durable collection directory, then
//! `Collection::open`: never a panic or an unbounded allocation; a collection
//! that opens passes (or cleanly fails) `verify()` and answers a search.
//!
//! Input: byte 0 picks the file (`MANIFEST`, the log, the vector segment, the id
//! file, the HNSW index file: `byte % 5`). With bit 7 clear, the rest replaces
//! the file; with it set, the rest patches the valid file (so short inputs reach
//! deep): a little-endian u16 offset, a u16 length to truncate (or zero-extend)
//! the result to (`0xFFFF`: keep the length), then bytes written at the offset. The rest of the directory is
//! a small valid collection (dimension 4, a checkpoint, then logged writes)
//! built once. Under `cfg(fuzzing)` the durable parsers skip their checksum
//! comparisons, so forged contents reach the field checks behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen::fs::{CrashMode, SimFs};
use omen::{Collection, CollectionConfig, Durability, DurableOptions, Metric};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const DIR: &str = "/db";

fn opts(fs: &SimFs) -> DurableOptions {
    DurableOptions::default()
        .durability(Durability::PerWrite)
        .checkpoint_log_bytes(u64::MAX)
        .fs(Arc::new(fs.clone()))
}

/// The closed collection's disk image and its files (`LOCK` excepted), sorted.
fn image() -> &'static (SimFs, Vec<PathBuf>) {
    static IMAGE: OnceLock<(SimFs, Vec<PathBuf>)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let fs = SimFs::new();
        let dir = Path::new(DIR);
        let cfg = CollectionConfig::new(4, Metric::L2)
            .index(omen_hnsw::HnswParams::default());
        let c = Collection::create(dir, &cfg, opts(&fs)).expect("create");
        let v = |i: usize| [i as f32, (i % 5) as f32, 1.0, -(i as f32) / 2.0];
        for i in 0..12 {
            c.insert(&format!("id{i}"), &v(i)).expect("insert");
        }
        c.delete("id3").expect("delete");
        c.checkpoint().expect("checkpoint");
        for i in 12..16 {
            c.insert(&format!("id{i}"), &v(i)).expect("insert");
        }
        c.upsert("id0", &v(40)).expect("upsert");
        c.insert_batch(&["b1", "b2"], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
            .expect("batch");
        c.delete("id4").expect("delete");
        c.close().expect("close");
        let img = fs.crash_image(CrashMode::DropUnsynced);
        let mut files: Vec<PathBuf> = img
            .file_names()
            .into_iter()
            .filter(|p| !p.ends_with("LOCK"))
            .collect();
        files.sort();
        (img, files)
    })
}

/// The file input byte `sel` replaces.
fn pick(files: &[PathBuf], sel: u8) -> Option<&PathBuf> {
    let find = |prefix: &str| {
        files
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .max()
    };
    match sel % 5 {
        0 => find("MANIFEST"),
        1 => find("wal-"),
        2 => find("vectors-"),
        3 => find("ids-"),
        _ => find("index-"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let (base, files) = image();
    let Some(path) = pick(files, sel) else {
        return;
    };
    let fs = base.crash_image(CrashMode::DropUnsynced);
    if sel & 0x80 == 0 {
        fs.put_file(path, bytes);
    } else {
        let Some(mut file) = base.read_durable(path) else {
            return;
        };
        if bytes.len() < 4 {
            return;
        }
        let off = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        let len = u16::from_le_bytes([bytes[2], bytes[3]]);
        let patch = &bytes[4..];
        if file.len() < off + patch.len() {
            file.resize(off + patch.len(), 0);
        }
        file[off..off + patch.len()].copy_from_slice(patch);
        if len != u16::MAX {
            file.resize(usize::from(len), 0);
        }
        fs.put_file(path, &file);
    }
    let Ok(c) = Collection::open(Path::new(DIR), opts(&fs)) else {
        return;
    };
    let _ = c.verify();
    let dim = c.dim();
    // A forged manifest may claim a huge dimension; a query that wide is the
    // caller's allocation, not the library's.
    if dim <= 1 << 12 {
        let q = vec![0.5f32; dim];
        if let Ok(hits) = c.search(&q, 5) {
            assert!(hits.len() <= 5.min(c.len()));
            for (id, _) in &hits {
                assert!(c.contains(id), "search returned {id:?}, not live");
            }
        }
    }
    let _ = c.close();
});
