//! Unit tests against a naive reference: every distance from `Metric::distance`
//! with the scalar kernels, sorted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use omen_storage::MemoryStorage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_rows(rng: &mut ChaCha8Rng, n: usize, dim: usize) -> Vec<f32> {
    (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn reference(
    storage: &dyn VectorStorage,
    metric: Metric,
    q: &[f32],
    k: usize,
    keep: impl Fn(SlotId) -> bool,
) -> Vec<Neighbor> {
    let scalar = Kernels::scalar();
    let mut all: Vec<Neighbor> = (0..storage.len() as SlotId)
        .filter(|&s| keep(s))
        .map(|s| Neighbor::new(s, metric.distance(&scalar, q, storage.get(s).unwrap())))
        .collect();
    all.sort();
    all.truncate(k);
    all
}

/// Same slots in the same order; distances equal up to kernel rounding.
fn assert_same(got: &[Neighbor], want: &[Neighbor]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        let tol = 1e-5 * w.distance.abs().max(1.0);
        assert!((g.distance - w.distance).abs() <= tol, "{g:?} vs {w:?}");
        if g.slot != w.slot {
            // Only a near-tie may swap.
            let other = want
                .iter()
                .find(|n| n.slot == g.slot)
                .expect("slot in reference");
            assert!((other.distance - w.distance).abs() <= tol, "{g:?} vs {w:?}");
        }
    }
}

#[test]
fn matches_reference_for_every_metric_single_and_batch() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Odd dimension and a small first bucket: many blocks, ragged tails.
    let dim = 13;
    let storage = MemoryStorage::with_chunk_rows(dim, 3).unwrap();
    storage
        .append_batch(&random_rows(&mut rng, 3000, dim))
        .unwrap();
    let queries = random_rows(&mut rng, 150, dim);
    let params = SearchParams::new();
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let index = FlatIndex::new(dim, metric).unwrap();
        index.add(&storage, 0..2500).unwrap();
        for s in (0..2500).step_by(7) {
            index.remove(s).unwrap();
        }
        let keep = |s: SlotId| s < 2500 && s % 7 != 0;
        let mut batch = Vec::new();
        index
            .search_batch(&storage, &queries, 17, &params, None, &mut batch)
            .unwrap();
        assert_eq!(batch.len(), 150);
        let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
        for (qi, q) in queries.chunks_exact(dim).enumerate() {
            let want = reference(&storage, metric, q, 17, keep);
            index
                .search(
                    &storage,
                    &SearchRequest::new(q, 17, &params),
                    &mut scratch,
                    &mut out,
                )
                .unwrap();
            assert_same(&out, &want);
            assert_same(&batch[qi], &want);
        }
        let st = index.stats();
        assert_eq!(st.searches, 300);
        // Every row of the storage is scanned (absent ones are skipped per chunk only).
        assert!(st.search_distance_computations >= 300 * 2500);
    }
}

#[test]
fn filter_k_beyond_len_and_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let dim = 4;
    let storage = MemoryStorage::new(dim).unwrap();
    storage
        .append_batch(&random_rows(&mut rng, 50, dim))
        .unwrap();
    let index = FlatIndex::new(dim, Metric::L2).unwrap();
    index.add(&storage, 0..40).unwrap();
    let params = SearchParams::new();
    let q = random_rows(&mut rng, 1, dim);
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());

    let even = |s: SlotId| s % 2 == 0;
    let req = SearchRequest::new(&q, 1000, &params).with_filter(&even);
    index
        .search(&storage, &req, &mut scratch, &mut out)
        .unwrap();
    assert_same(
        &out,
        &reference(&storage, Metric::L2, &q, 1000, |s| s < 40 && s % 2 == 0),
    );
    assert_eq!(out.len(), 20);
    let mut batch = Vec::new();
    index
        .search_batch(&storage, &q, 1000, &params, Some(&even), &mut batch)
        .unwrap();
    assert_same(&batch[0], &out);

    assert!(matches!(
        index.search(
            &storage,
            &SearchRequest::new(&q, 0, &params),
            &mut scratch,
            &mut out
        ),
        Err(Error::InvalidParameter { name: "k", .. })
    ));
    assert!(matches!(
        index.search(
            &storage,
            &SearchRequest::new(&q[..3], 1, &params),
            &mut scratch,
            &mut out
        ),
        Err(Error::DimensionMismatch {
            expected: 4,
            got: 3
        })
    ));
    assert!(index
        .search_batch(&storage, &q[..3], 1, &params, None, &mut batch)
        .is_err());
    assert!(index
        .search_batch(&storage, &q, 0, &params, None, &mut batch)
        .is_err());
    assert!(matches!(
        index.add(&storage, 45..51),
        Err(Error::UnknownSlot { slot: 50 })
    ));
    assert!(matches!(
        index.add(&storage, 39..45),
        Err(Error::SlotExists { slot: 39 })
    ));
    assert_eq!(index.len(), 40);
    assert!(!index.contains(44));
    let other = MemoryStorage::new(3).unwrap();
    assert!(matches!(
        index.add(&other, 0..0),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(FlatIndex::new(0, Metric::L2).is_err());
    // An empty batch answers nothing and resizes the output.
    index
        .search_batch(&storage, &[], 3, &params, None, &mut batch)
        .unwrap();
    assert!(batch.is_empty());
}

/// A selective bitmap filter is scanned by its set bits (one distance per
/// present allowed row), a dense one through the blocked kernels; both give the
/// reference answer, single and batch, for every metric, removed slots and bits
/// past the end included.
#[test]
fn bitmap_filters_match_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let dim = 13;
    let storage = MemoryStorage::with_chunk_rows(dim, 5).unwrap();
    storage
        .append_batch(&random_rows(&mut rng, 3000, dim))
        .unwrap();
    let queries = random_rows(&mut rng, 20, dim);
    let params = SearchParams::new();
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let index = FlatIndex::new(dim, metric).unwrap();
        index.add(&storage, 0..3000).unwrap();
        index.remove(37).unwrap();
        for (keep, selective) in [
            (
                Box::new(|s: SlotId| s % 100 == 37 || s > 5900) as Box<dyn Fn(SlotId) -> bool>,
                true,
            ),
            (Box::new(|s: SlotId| s % 3 == 1), false),
        ] {
            let bits = omen_core::SlotBitmap::from_slots((0..6000).filter(|&s| keep(s)));
            let live = |s: SlotId| s < 3000 && s != 37 && keep(s);
            let before = index.stats().search_distance_computations;
            let mut batch = Vec::new();
            index
                .search_batch(&storage, &queries, 10, &params, Some(&bits), &mut batch)
                .unwrap();
            let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
            for (qi, q) in queries.chunks_exact(dim).enumerate() {
                let want = reference(&storage, metric, q, 10, live);
                let req = SearchRequest::new(q, 10, &params).with_filter(&bits);
                index
                    .search(&storage, &req, &mut scratch, &mut out)
                    .unwrap();
                assert_same(&out, &want);
                assert_same(&batch[qi], &want);
            }
            let computed = index.stats().search_distance_computations - before;
            if selective {
                // 29 allowed rows (37 removed) per query, single and batch.
                assert_eq!(computed, 2 * 20 * 29, "{metric}");
            } else {
                assert!(computed >= 2 * 20 * 3000, "{metric}");
            }
        }
    }
}
