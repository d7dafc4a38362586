//! `HnswIndex` against the index conformance suite (the suite compares it with the
//! flat index under `SearchParams::exhaustive`, which HNSW answers by a flat scan;
//! its default searches walk the graph).
use omen_hnsw::{HnswIndex, HnswParams};

#[test]
fn hnsw_index_conforms() {
    omen_tests::index_suite(&|dim, metric| {
        Box::new(HnswIndex::new(dim, metric, HnswParams::default().with_m(8)).unwrap())
    });
}
