//! `MemoryStorage` and `MmapStorage` against the storage conformance suite.
#![allow(clippy::unwrap_used)]

use omen_core::VectorStorage;
use omen_storage::{MemoryStorage, MmapStorage};
use std::sync::Mutex;
use tempfile::TempDir;

#[test]
fn memory_storage_conforms() {
    omen_tests::storage_suite(&|dim| Box::new(MemoryStorage::new(dim).unwrap()));
}

/// A one-row first bucket puts a bucket boundary at every power of two.
#[test]
fn memory_storage_with_tiny_chunks_conforms() {
    omen_tests::storage_suite(&|dim| Box::new(MemoryStorage::with_chunk_rows(dim, 1).unwrap()));
}

/// Runs the suite over `MmapStorage`s with `chunk_rows` rows in the first chunk
/// (`None`: the default), each in a fresh temporary directory. The directories
/// outlive every storage the suite makes (it drops them inside each check) and are
/// removed when this function returns, or unwinds.
fn mmap_suite(chunk_rows: Option<usize>) {
    let dirs: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());
    omen_tests::storage_suite(&|dim| -> Box<dyn VectorStorage> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors");
        dirs.lock().unwrap().push(dir);
        Box::new(match chunk_rows {
            Some(rows) => MmapStorage::create_with_chunk_rows(&path, dim, rows).unwrap(),
            None => MmapStorage::create(&path, dim).unwrap(),
        })
    });
    // Every storage is gone; removing the directories now is safe.
    drop(dirs);
}

#[test]
fn mmap_storage_conforms() {
    mmap_suite(None);
}

/// One-row and seven-row (rounded to eight) first chunks: many chunk files, a
/// chunk boundary at every power of two.
#[test]
fn mmap_storage_with_tiny_chunks_conforms() {
    mmap_suite(Some(1));
    mmap_suite(Some(7));
}
