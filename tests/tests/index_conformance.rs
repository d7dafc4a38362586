//! `FlatIndex` against the index conformance suite (it is also the suite's
//! reference, so this checks single against batched search and the contract).
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;

#[test]
fn flat_index_conforms() {
    omen_tests::index_suite(&|dim, metric| Box::new(FlatIndex::new(dim, metric).unwrap()));
}

/// Small storage buckets: scans cross many block boundaries.
#[test]
fn flat_index_over_tiny_chunks_conforms() {
    omen_tests::index_suite_with_storage(
        &|dim, metric| Box::new(FlatIndex::new(dim, metric).unwrap()),
        &|dim| Box::new(MemoryStorage::with_chunk_rows(dim, 2).unwrap()),
    );
}
