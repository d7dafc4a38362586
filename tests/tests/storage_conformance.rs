//! `MemoryStorage` against the storage conformance suite.
use omen_storage::MemoryStorage;

#[test]
fn memory_storage_conforms() {
    omen_tests::storage_suite(&|dim| Box::new(MemoryStorage::new(dim).unwrap()));
}

/// A one-row first bucket puts a bucket boundary at every power of two.
#[test]
fn memory_storage_with_tiny_chunks_conforms() {
    omen_tests::storage_suite(&|dim| Box::new(MemoryStorage::with_chunk_rows(dim, 1).unwrap()));
}
