//! `IvfPqIndex` against the index conformance suite: 4-bit fast scan and 8-bit
//! codes. Fixtures of 256 rows or more cross the automatic-training threshold
//! (trained path: lists, re-ranking); smaller ones stay untrained (exact scan of
//! the buffered slots).
use omen_ivfpq::{IvfPqIndex, IvfPqParams};

/// One sub-quantizer per component up to 16 components, else the largest divisor
/// of `dim` not above 16.
fn m_for(dim: usize) -> usize {
    (1..=dim.min(16))
        .rev()
        .find(|m| dim.is_multiple_of(*m))
        .unwrap_or(1)
}

#[test]
fn ivfpq_4bit_conforms() {
    omen_tests::index_suite(&|dim, metric| {
        let p = IvfPqParams::new(8, m_for(dim))
            .with_nbits(4)
            .with_train_size(256)
            .with_kmeans_iters(5);
        Box::new(IvfPqIndex::new(dim, metric, p).unwrap())
    });
}

#[test]
fn ivfpq_8bit_conforms() {
    omen_tests::index_suite(&|dim, metric| {
        let p = IvfPqParams::new(4, m_for(dim))
            .with_nbits(8)
            .with_train_size(256)
            .with_kmeans_iters(5);
        Box::new(IvfPqIndex::new(dim, metric, p).unwrap())
    });
}
