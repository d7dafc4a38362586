//! `QgIndex` against the index conformance suite, trained early (`train_at` 16)
//! so that the suite's small sets are searched by the walk on codes, and untrained
//! (its HNSW path).
use omen_qg::{QgIndex, QgParams};

#[test]
fn qg_index_conforms_trained_early() {
    omen_tests::index_suite(&|dim, metric| {
        Box::new(
            QgIndex::new(
                dim,
                metric,
                QgParams::default()
                    .with_m(8)
                    .with_train_at(16)
                    .with_pq_m(omen_qg::default_pq_m(dim)),
            )
            .unwrap(),
        )
    });
}

#[test]
fn qg_index_conforms_untrained() {
    omen_tests::index_suite(&|dim, metric| {
        Box::new(QgIndex::new(dim, metric, QgParams::default().with_m(8)).unwrap())
    });
}
