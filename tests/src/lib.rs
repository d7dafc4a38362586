//! Shared conformance suites: every [`VectorStorage`] and every [`VectorIndex`]
//! backend runs the same named checks of its trait's contract (the pattern of
//! tantivy's `src/directory/tests.rs`).
//!
//! # Plugging in a new backend
//! Write a three-line test file under `tests/tests/`:
//!
//! ```no_run
//! # use omen_storage::MemoryStorage;
//! # use omen_flat::FlatIndex;
//! #[test]
//! fn my_storage_conforms() {
//!     omen_tests::storage_suite(&|dim| Box::new(MemoryStorage::new(dim).unwrap()));
//! }
//!
//! #[test]
//! fn my_index_conforms() {
//!     omen_tests::index_suite(&|dim, metric| Box::new(FlatIndex::new(dim, metric).unwrap()));
//! }
//! ```
//!
//! * [`storage_suite`] takes a factory `dim -> Box<dyn VectorStorage>` returning a
//!   fresh, empty storage on every call.
//! * [`index_suite`] takes a factory `(dim, metric) -> Box<dyn VectorIndex>`
//!   returning a fresh, empty index; the suite stores vectors in a
//!   [`MemoryStorage`] ([`index_suite_with_storage`] takes a storage factory
//!   too). Every result is compared with a [`FlatIndex`] built on the same storage
//!   and searched with [`SearchParams::exhaustive`], so an approximate index passes
//!   exactly when its exhaustive mode is exact.
//! * Every check is also a `pub fn` of its own, to run one alone while debugging.
//!   A suite runs all its checks, names each on stderr, and fails at the end
//!   listing every check that failed.
//!
//! # Comparing results
//! Two exact searches may disagree by float rounding (a SIMD kernel sums in a
//! different order from another, a tiled batch kernel from the one-to-many one).
//! [`assert_neighbors_match`] therefore compares rank by rank on distance with a
//! relative tolerance of [`DISTANCE_TOLERANCE`], and lets two slots swap only when
//! their distances are that close; every returned distance must also match the
//! scalar reference distance of the slot's stored vector.
//!
//! For [`Metric::Cosine`] the suite feeds unit vectors and queries, as the engine
//! does (it normalises on insert and search), so an index may treat cosine as
//! `1 - a·b`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::simd::Kernels;
use omen_core::{
    Error, Metric, Neighbor, SearchParams, SearchRequest, SearchScratch, SlotId, VectorIndex,
    VectorStorage,
};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

mod kind;
pub use kind::{
    kind_durable_round_trip, kind_refuses_unknown_keys, kind_saved_state_round_trips, kind_suite,
};
use std::sync::atomic::{AtomicBool, Ordering};

/// Factory of fresh, empty storages of the given dimension.
pub type StorageFactory<'a> = &'a dyn Fn(usize) -> Box<dyn VectorStorage>;

/// Factory of fresh, empty indexes of the given dimension and metric.
pub type IndexFactory<'a> = &'a dyn Fn(usize, Metric) -> Box<dyn VectorIndex>;

/// Relative tolerance on distances between two exact searches (see the crate docs).
pub const DISTANCE_TOLERANCE: f32 = 1e-5;

/// Every metric an index must support.
pub const METRICS: [Metric; 3] = [Metric::L2, Metric::InnerProduct, Metric::Cosine];

/// Runs named checks, catching each one's panic, and fails listing all failures.
fn run_checks(suite: &str, checks: &[(&'static str, &dyn Fn())]) {
    let mut failed = Vec::new();
    for (name, check) in checks {
        eprintln!("{suite}: {name}");
        if catch_unwind(AssertUnwindSafe(check)).is_err() {
            eprintln!("{suite}: {name} FAILED");
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "{suite}: failed checks: {failed:?}");
}

/// Seeded uniform rows in [-1, 1).
pub fn random_rows(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Seeded rows around a few centres (so that neighbourhoods are not uniform),
/// unit-normalised when `unit`.
pub fn clustered_rows(seed: u64, n: usize, dim: usize, unit: bool) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..8 * dim).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let mut rows = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.gen_range(0..8);
        rows.extend((0..dim).map(|j| centres[c * dim + j] + rng.gen_range(-0.5f32..0.5)));
    }
    if unit {
        normalise_rows(&mut rows, dim);
    }
    rows
}

/// Normalises every `dim`-wide row to unit length (rows must be non-zero).
pub fn normalise_rows(rows: &mut [f32], dim: usize) {
    for r in rows.chunks_exact_mut(dim) {
        let n = r
            .iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt();
        assert!(n > 0.0, "zero row cannot be normalised");
        r.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

/// The row whose every component is `value`: torn reads show as mixed values.
fn constant_row(value: usize, dim: usize) -> Vec<f32> {
    vec![value as f32; dim]
}

fn tolerance(d: f32) -> f32 {
    DISTANCE_TOLERANCE * d.abs().max(1.0)
}

/// Checks that `got` is an exact answer given the reference answer `want` for
/// the same query: same length, sorted by (distance, slot) with distinct slots,
/// rank-by-rank distances within tolerance, and every reported distance equal
/// (within tolerance) to `metric`'s scalar distance from `query` to the slot's
/// stored row. Slots may therefore differ from `want` only among near-ties.
pub fn assert_neighbors_match(
    storage: &dyn VectorStorage,
    metric: Metric,
    query: &[f32],
    got: &[Neighbor],
    want: &[Neighbor],
) {
    assert_eq!(
        got.len(),
        want.len(),
        "result lengths differ:\n got {got:?}\nwant {want:?}"
    );
    let scalar = Kernels::scalar();
    let mut seen = HashSet::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            seen.insert(g.slot),
            "slot {} returned twice: {got:?}",
            g.slot
        );
        if i > 0 {
            assert!(got[i - 1] <= *g, "results not sorted: {got:?}");
        }
        assert!(
            (g.distance - w.distance).abs() <= tolerance(w.distance),
            "rank {i}: distance {} vs reference {}\n got {got:?}\nwant {want:?}",
            g.distance,
            w.distance
        );
        let row = storage
            .get(g.slot)
            .unwrap_or_else(|| panic!("returned slot {} is not published", g.slot));
        let truth = metric.distance(&scalar, query, row);
        assert!(
            (g.distance - truth).abs() <= tolerance(truth),
            "slot {}: reported distance {} but the stored vector is at {truth}",
            g.slot,
            g.distance
        );
    }
}

/// Results are sorted, distinct, present in `index` and allowed by `keep`.
fn assert_well_formed(index: &dyn VectorIndex, got: &[Neighbor], keep: &dyn Fn(SlotId) -> bool) {
    let mut seen = HashSet::new();
    for (i, n) in got.iter().enumerate() {
        assert!(seen.insert(n.slot), "slot {} twice in {got:?}", n.slot);
        assert!(
            index.contains(n.slot),
            "slot {} is not in the index",
            n.slot
        );
        assert!(keep(n.slot), "slot {} does not pass the filter", n.slot);
        if i > 0 {
            assert!(got[i - 1] <= *n, "results not sorted: {got:?}");
        }
    }
}

fn search(
    index: &dyn VectorIndex,
    storage: &dyn VectorStorage,
    query: &[f32],
    k: usize,
    filter: Option<&dyn omen_core::SlotFilter>,
) -> Vec<Neighbor> {
    let params = SearchParams::exhaustive();
    let mut req = SearchRequest::new(query, k, &params);
    req.filter = filter;
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    index.search(storage, &req, &mut scratch, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------
// Storage suite
// ---------------------------------------------------------------------------

/// Runs every storage check against storages made by `factory`.
pub fn storage_suite(factory: StorageFactory<'_>) {
    run_checks(
        "storage",
        &[
            ("append_get_round_trip", &|| {
                storage_append_get_round_trip(factory)
            }),
            ("wrong_dimensions_refused", &|| {
                storage_wrong_dimensions_refused(factory)
            }),
            ("batch_all_or_nothing", &|| {
                storage_batch_all_or_nothing(factory)
            }),
            ("blocks_cover_all_rows_in_order", &|| {
                storage_blocks_cover_all_rows_in_order(factory)
            }),
            ("growth_does_not_move_rows", &|| {
                storage_growth_does_not_move_rows(factory)
            }),
            ("concurrent_reader_sees_whole_rows", &|| {
                storage_concurrent_reader_sees_whole_rows(factory)
            }),
            ("large_counts", &|| storage_large_counts(factory)),
        ],
    );
}

/// Appended rows come back unchanged at consecutive slots; nothing past `len`.
pub fn storage_append_get_round_trip(factory: StorageFactory<'_>) {
    for dim in [1usize, 3, 16, 50, 129] {
        let s = factory(dim);
        assert!(!s.name().is_empty());
        assert_eq!(s.dim(), dim);
        assert!(s.is_empty() && s.get(0).is_none() && s.block(0).is_none());
        let rows = random_rows(dim as u64, 300, dim);
        for (i, r) in rows.chunks_exact(dim).enumerate() {
            assert_eq!(s.append(r).unwrap(), i as SlotId);
            assert_eq!(s.len(), i + 1);
        }
        for (i, r) in rows.chunks_exact(dim).enumerate() {
            assert_eq!(s.get(i as SlotId).unwrap(), r, "dim {dim} slot {i}");
        }
        assert!(s.get(300).is_none() && s.block(300).is_none());
        assert!(s.get(SlotId::MAX).is_none());
        assert!(s.memory_bytes() >= 300 * dim * 4);
    }
}

/// Wrong widths are `DimensionMismatch` and publish nothing.
pub fn storage_wrong_dimensions_refused(factory: StorageFactory<'_>) {
    let s = factory(4);
    s.append(&[1.0; 4]).unwrap();
    for bad in [0usize, 3, 5, 8] {
        assert!(
            matches!(
                s.append(&vec![2.0; bad]),
                Err(Error::DimensionMismatch { expected: 4, .. })
            ),
            "append of width {bad}"
        );
    }
    for bad in [3usize, 5, 9, 4001] {
        assert!(
            matches!(
                s.append_batch(&vec![2.0; bad]),
                Err(Error::DimensionMismatch { expected: 4, .. })
            ),
            "batch of {bad} floats"
        );
    }
    assert_eq!(s.len(), 1);
    assert_eq!(s.get(0).unwrap(), &[1.0; 4]);
    assert!(s.get(1).is_none());
}

/// A batch occupies consecutive slots from the old `len`, appears whole, and a
/// refused batch publishes none of its rows.
pub fn storage_batch_all_or_nothing(factory: StorageFactory<'_>) {
    let dim = 5;
    let s = factory(dim);
    assert_eq!(s.append_batch(&[]).unwrap(), 0..0);
    assert_eq!(s.len(), 0);
    let mut next = 0usize;
    for (i, n) in [1usize, 2, 7, 64, 1000, 3].into_iter().enumerate() {
        let rows = random_rows(100 + i as u64, n, dim);
        // A refused batch (one float short) first: nothing changes.
        assert!(s.append_batch(&rows[..rows.len() - 1]).is_err());
        assert_eq!(s.len(), next);
        let r = s.append_batch(&rows).unwrap();
        assert_eq!(r, next as SlotId..(next + n) as SlotId);
        for (j, row) in rows.chunks_exact(dim).enumerate() {
            assert_eq!(s.get((next + j) as SlotId).unwrap(), row);
        }
        next += n;
        assert_eq!(s.len(), next);
        assert_eq!(s.append_batch(&[]).unwrap(), next as SlotId..next as SlotId);
    }
}

/// `blocks()` walks every published row exactly once, in order, and `block(s)`
/// starts at row `s` for any `s`.
pub fn storage_blocks_cover_all_rows_in_order(factory: StorageFactory<'_>) {
    let dim = 3;
    let s = factory(dim);
    let rows = random_rows(7, 5000, dim);
    let mut at = 0;
    for n in [1usize, 1, 5, 100, 1, 2000, 17, 2875] {
        s.append_batch(&rows[at * dim..(at + n) * dim]).unwrap();
        at += n;
    }
    assert_eq!(s.len(), 5000);
    let mut covered = 0usize;
    for (start, block) in s.blocks() {
        assert_eq!(start as usize, covered, "blocks are not contiguous");
        assert!(!block.is_empty() && block.len() % dim == 0);
        assert_eq!(block, &rows[covered * dim..covered * dim + block.len()]);
        covered += block.len() / dim;
    }
    assert_eq!(covered, 5000);
    for start in [0usize, 1, 2, 3, 63, 64, 1023, 1024, 1025, 4095, 4999] {
        let b = s.block(start as SlotId).unwrap();
        assert!(!b.is_empty() && b.len().is_multiple_of(dim) && start + b.len() / dim <= 5000);
        assert_eq!(b, &rows[start * dim..start * dim + b.len()]);
    }
    assert!(s.block(5000).is_none());
}

/// Slices handed out before many appends keep their address and contents.
pub fn storage_growth_does_not_move_rows(factory: StorageFactory<'_>) {
    let dim = 8;
    let s = factory(dim);
    let first = random_rows(11, 200, dim);
    s.append_batch(&first).unwrap();
    let held: Vec<&[f32]> = (0..200).map(|i| s.get(i).unwrap()).collect();
    let held_block = s.block(0).unwrap();
    let ptrs: Vec<*const f32> = held.iter().map(|r| r.as_ptr()).collect();
    let more = random_rows(12, 1000, dim);
    for round in 0..100 {
        if round % 2 == 0 {
            s.append_batch(&more).unwrap();
        } else {
            for r in more.chunks_exact(dim).take(50) {
                s.append(r).unwrap();
            }
        }
    }
    assert_eq!(s.len(), 200 + 50 * 1000 + 50 * 50);
    for (i, r) in held.iter().enumerate() {
        assert_eq!(*r, &first[i * dim..(i + 1) * dim], "row {i} changed");
        assert_eq!(
            s.get(i as SlotId).unwrap().as_ptr(),
            ptrs[i],
            "row {i} moved"
        );
    }
    assert_eq!(held_block, &first[..held_block.len()]);
    assert_eq!(s.block(0).unwrap().as_ptr(), held_block.as_ptr());
}

/// Readers running while a writer appends see `len` grow monotonically and every
/// published row whole (rows are constant, so a torn row shows mixed values).
pub fn storage_concurrent_reader_sees_whole_rows(factory: StorageFactory<'_>) {
    let dim = 24;
    let s = factory(dim);
    let total = 30_000usize;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let s = &*s;
        let done = &done;
        scope.spawn(move || {
            let mut i = 0usize;
            while i < total {
                let n = [1usize, 3, 1, 40, 1, 200][i % 6].min(total - i);
                if n == 1 {
                    s.append(&constant_row(i + 1, dim)).unwrap();
                } else {
                    let rows: Vec<f32> =
                        (i..i + n).flat_map(|r| constant_row(r + 1, dim)).collect();
                    s.append_batch(&rows).unwrap();
                }
                i += n;
            }
            done.store(true, Ordering::Release);
        });
        for reader in 0..2 {
            scope.spawn(move || {
                let mut last = 0usize;
                let mut checks = 0usize;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let len = s.len();
                    assert!(len >= last, "len went back from {last} to {len}");
                    last = len;
                    if reader == 0 {
                        let mut covered = 0usize;
                        for (start, block) in s.blocks() {
                            for (j, row) in block.chunks_exact(dim).enumerate() {
                                let want = (start as usize + j + 1) as f32;
                                assert!(
                                    row.iter().all(|&x| x == want),
                                    "torn row {}: {row:?}",
                                    start as usize + j
                                );
                            }
                            covered += block.len() / dim;
                        }
                        assert!(covered >= len);
                    } else if len > 0 {
                        // Probe the newest rows, where a publication bug would show.
                        for slot in len.saturating_sub(8)..len {
                            let row = s.get(slot as SlotId).expect("published row");
                            assert!(
                                row.iter().all(|&x| x == (slot + 1) as f32),
                                "torn row {slot}: {row:?}"
                            );
                        }
                    }
                    checks += 1;
                    if finished {
                        break;
                    }
                }
                assert_eq!(last, total);
                assert!(checks > 0);
            });
        }
    });
}

/// Many rows in many batches: counts, slots and contents stay right.
pub fn storage_large_counts(factory: StorageFactory<'_>) {
    let dim = 2;
    let s = factory(dim);
    let n = 600_000usize;
    let mut rows = Vec::with_capacity(4096 * dim);
    let mut i = 0usize;
    while i < n {
        let b = (4096).min(n - i);
        rows.clear();
        rows.extend((i..i + b).flat_map(|r| [r as f32, -(r as f32)]));
        assert_eq!(
            s.append_batch(&rows).unwrap(),
            i as SlotId..(i + b) as SlotId
        );
        i += b;
    }
    assert_eq!(s.len(), n);
    for slot in (0..n).step_by(997).chain([n - 1]) {
        assert_eq!(
            s.get(slot as SlotId).unwrap(),
            &[slot as f32, -(slot as f32)]
        );
    }
    let covered: usize = s.blocks().map(|(_, b)| b.len() / dim).sum();
    assert_eq!(covered, n);
    assert!(s.memory_bytes() >= n * dim * 4);
}

// ---------------------------------------------------------------------------
// Index suite
// ---------------------------------------------------------------------------

/// Runs every index check against indexes made by `factory`, over
/// [`MemoryStorage`].
pub fn index_suite(factory: IndexFactory<'_>) {
    index_suite_with_storage(factory, &|dim| {
        Box::new(MemoryStorage::new(dim).expect("memory storage"))
    });
}

/// Runs every index check against indexes made by `factory`, storing vectors in
/// storages made by `storage`.
pub fn index_suite_with_storage(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let f = (factory, storage);
    run_checks(
        "index",
        &[
            ("add_search_remove", &|| index_add_search_remove(f.0, f.1)),
            ("errors_leave_index_unchanged", &|| {
                index_errors_leave_index_unchanged(f.0, f.1)
            }),
            ("bad_requests_refused", &|| {
                index_bad_requests_refused(f.0, f.1)
            }),
            ("k_beyond_len_returns_all", &|| {
                index_k_beyond_len_returns_all(f.0, f.1)
            }),
            ("filters", &|| index_filters(f.0, f.1)),
            ("ties_break_by_slot", &|| index_ties_break_by_slot(f.0, f.1)),
            ("exhaustive_equals_flat_every_metric", &|| {
                index_exhaustive_equals_flat_every_metric(f.0, f.1)
            }),
            ("incremental_adds_in_any_order", &|| {
                index_incremental_adds_in_any_order(f.0, f.1)
            }),
            ("stats_count_searches", &|| {
                index_stats_count_searches(f.0, f.1)
            }),
            ("concurrent_search_while_adding", &|| {
                index_concurrent_search_while_adding(f.0, f.1)
            }),
        ],
    );
}

/// A storage holding `rows` and an index (from `factory`) plus a flat reference
/// holding all of them.
pub struct Fixture {
    /// The vectors.
    pub storage: Box<dyn VectorStorage>,
    /// The index under test.
    pub index: Box<dyn VectorIndex>,
    /// The exact reference, holding the same slots as `index` if kept in step.
    pub reference: FlatIndex,
    /// The metric of both.
    pub metric: Metric,
}

impl Fixture {
    /// Stores `rows` and adds them all to the index and the reference.
    pub fn new(
        factory: IndexFactory<'_>,
        storage: StorageFactory<'_>,
        dim: usize,
        metric: Metric,
        rows: &[f32],
    ) -> Fixture {
        let storage = storage(dim);
        let index = factory(dim, metric);
        assert_eq!(index.dim(), dim);
        assert_eq!(index.metric(), metric);
        assert!(!index.name().is_empty());
        let reference = FlatIndex::new(dim, metric).unwrap();
        let slots = storage.append_batch(rows).unwrap();
        index.add(&*storage, slots.clone()).unwrap();
        reference.add(&*storage, slots).unwrap();
        Fixture {
            storage,
            index,
            reference,
            metric,
        }
    }

    /// Removes `slot` from both.
    pub fn remove(&self, slot: SlotId) {
        self.index.remove(slot).unwrap();
        self.reference.remove(slot).unwrap();
    }

    /// Checks single and batched exhaustive searches of `queries` against the
    /// reference's single searches.
    pub fn check_queries(
        &self,
        queries: &[f32],
        k: usize,
        filter: Option<&dyn omen_core::SlotFilter>,
    ) {
        let dim = self.storage.dim();
        let s = &*self.storage;
        let keep = |slot: SlotId| filter.is_none_or(|f| f.allows(slot));
        let mut batch = Vec::new();
        let params = SearchParams::exhaustive();
        self.index
            .search_batch(s, queries, k, &params, filter, &mut batch)
            .unwrap();
        assert_eq!(batch.len(), queries.len() / dim);
        for (qi, q) in queries.chunks_exact(dim).enumerate() {
            let want = search(&self.reference, s, q, k, filter);
            let got = search(&*self.index, s, q, k, filter);
            assert_well_formed(&*self.index, &got, &keep);
            assert_neighbors_match(s, self.metric, q, &got, &want);
            assert_well_formed(&*self.index, &batch[qi], &keep);
            assert_neighbors_match(s, self.metric, q, &batch[qi], &want);
        }
    }
}

/// Added slots are found (a stored vector finds itself first), removed ones never.
pub fn index_add_search_remove(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 16;
    let rows = clustered_rows(21, 500, dim, false);
    let fx = Fixture::new(factory, storage, dim, Metric::L2, &rows);
    assert_eq!(fx.index.len(), 500);
    assert!((0..500).all(|s| fx.index.contains(s)));
    assert!(!fx.index.contains(500));
    for slot in [0u32, 17, 499] {
        let q = fx.storage.get(slot).unwrap().to_vec();
        let got = search(&*fx.index, &*fx.storage, &q, 5, None);
        assert_eq!(got[0].slot, slot);
        assert!(got[0].distance.abs() <= 1e-5);
    }
    for slot in (0..500).step_by(3) {
        fx.remove(slot);
    }
    assert_eq!(fx.index.len(), 500 - 167);
    assert!(!fx.index.contains(0) && fx.index.contains(1));
    assert!(matches!(
        fx.index.remove(0),
        Err(Error::UnknownSlot { slot: 0 })
    ));
    assert!(matches!(
        fx.index.remove(9999),
        Err(Error::UnknownSlot { .. })
    ));
    assert_eq!(fx.index.len(), 500 - 167);
    for slot in [0u32, 3, 498] {
        let q = fx.storage.get(slot).unwrap().to_vec();
        let got = search(&*fx.index, &*fx.storage, &q, 10, None);
        assert!(
            got.iter().all(|n| n.slot % 3 != 0),
            "removed slot returned: {got:?}"
        );
    }
    fx.check_queries(&clustered_rows(22, 20, dim, false), 10, None);
}

/// Refused adds and removes (`UnknownSlot`, `SlotExists`) change nothing.
pub fn index_errors_leave_index_unchanged(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 8;
    let rows = clustered_rows(31, 100, dim, false);
    let storage = storage(dim);
    storage.append_batch(&rows).unwrap();
    let index = factory(dim, Metric::L2);
    index.add(&*storage, 0..60).unwrap();
    let q = &rows[..dim];
    let before = search(&*index, &*storage, q, 20, None);
    // Partly unpublished range.
    assert!(matches!(
        index.add(&*storage, 90..110),
        Err(Error::UnknownSlot { .. })
    ));
    // Wholly unpublished range.
    assert!(matches!(
        index.add(&*storage, 200..201),
        Err(Error::UnknownSlot { .. })
    ));
    // Overlaps present slots, includes new ones.
    assert!(matches!(
        index.add(&*storage, 50..70),
        Err(Error::SlotExists { .. })
    ));
    assert!(matches!(
        index.add(&*storage, 59..60),
        Err(Error::SlotExists { slot: 59 })
    ));
    assert!(matches!(
        index.remove(60),
        Err(Error::UnknownSlot { slot: 60 })
    ));
    assert_eq!(index.len(), 60);
    assert!((0..60).all(|s| index.contains(s)));
    assert!((60..110).all(|s| !index.contains(s)));
    assert_eq!(search(&*index, &*storage, q, 20, None), before);
    // The refused slots can still be added properly afterwards.
    index.add(&*storage, 60..100).unwrap();
    assert_eq!(index.len(), 100);
    index.add(&*storage, 100..100).unwrap();
    assert_eq!(index.len(), 100);
}

/// k = 0, wrong query widths and zero knobs are refused, single and batched.
pub fn index_bad_requests_refused(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 6;
    let rows = clustered_rows(41, 50, dim, false);
    let fx = Fixture::new(factory, storage, dim, Metric::L2, &rows);
    let s = &*fx.storage;
    let params = SearchParams::exhaustive();
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    let q = &rows[..dim];
    let r = fx.index.search(
        s,
        &SearchRequest::new(q, 0, &params),
        &mut scratch,
        &mut out,
    );
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "k", .. })),
        "{r:?}"
    );
    for bad in [0usize, dim - 1, dim + 1] {
        let qq = vec![0.5f32; bad];
        let r = fx.index.search(
            s,
            &SearchRequest::new(&qq, 3, &params),
            &mut scratch,
            &mut out,
        );
        assert!(
            matches!(r, Err(Error::DimensionMismatch { .. })),
            "width {bad}: {r:?}"
        );
    }
    // A knob no index takes is refused, by the search and by the check alone
    // (never silently ignored), and so is a zero beam (or a beam the index does
    // not take).
    let bogus = SearchParams::new().with("no_such_knob", 1);
    for p in [bogus, SearchParams::new().with("ef", 0)] {
        let r = fx
            .index
            .search(s, &SearchRequest::new(q, 3, &p), &mut scratch, &mut out);
        assert!(
            matches!(r, Err(Error::InvalidParameter { .. })),
            "{p:?}: {r:?}"
        );
        assert!(fx.index.check_search_params(&p).is_err(), "{p:?}");
        let r = fx
            .index
            .search_batch(s, &rows[..2 * dim], 3, &p, None, &mut Vec::new());
        assert!(
            matches!(r, Err(Error::InvalidParameter { .. })),
            "{p:?}: {r:?}"
        );
    }
    assert!(fx.index.check_search_params(&params).is_ok());
    let mut batch = Vec::new();
    assert!(matches!(
        fx.index
            .search_batch(s, &rows[..2 * dim], 0, &params, None, &mut batch),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        fx.index
            .search_batch(s, &rows[..2 * dim - 1], 3, &params, None, &mut batch),
        Err(Error::DimensionMismatch { .. })
    ));
    assert_eq!(fx.index.len(), 50);
    // An empty batch is fine and answers nothing.
    fx.index
        .search_batch(s, &[], 3, &params, None, &mut batch)
        .unwrap();
    assert!(batch.is_empty());
    // An empty index answers nothing.
    let empty = factory(dim, Metric::L2);
    assert!(search(&*empty, s, q, 5, None).is_empty());
}

/// k larger than the index returns every present slot, closest first.
pub fn index_k_beyond_len_returns_all(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 5;
    let rows = clustered_rows(51, 40, dim, false);
    let fx = Fixture::new(factory, storage, dim, Metric::L2, &rows);
    for slot in [0u32, 7, 8, 39, 20] {
        fx.remove(slot);
    }
    let q = clustered_rows(52, 3, dim, false);
    for k in [35usize, 36, 100, 10_000] {
        for qq in q.chunks_exact(dim) {
            let got = search(&*fx.index, &*fx.storage, qq, k, None);
            assert_eq!(got.len(), 35.min(k));
        }
        fx.check_queries(&q, k, None);
    }
}

/// Filters restrict results and compose with removal, single and batched.
pub fn index_filters(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 12;
    let rows = clustered_rows(61, 1500, dim, false);
    let fx = Fixture::new(factory, storage, dim, Metric::L2, &rows);
    for slot in (0..1500).step_by(10) {
        fx.remove(slot);
    }
    let q = clustered_rows(62, 10, dim, false);
    let even = |s: SlotId| s.is_multiple_of(2);
    let rare = |s: SlotId| s % 97 == 5;
    let none = |_: SlotId| false;
    fx.check_queries(&q, 10, Some(&even));
    fx.check_queries(&q, 10, Some(&rare));
    fx.check_queries(&q, 50, Some(&rare));
    for qq in q.chunks_exact(dim) {
        assert!(search(&*fx.index, &*fx.storage, qq, 10, Some(&none)).is_empty());
        let got = search(&*fx.index, &*fx.storage, qq, 100, Some(&rare));
        // 5, 102, 199, ... below 1500, none a multiple of 10 except those removed.
        let want = (0..1500u32).filter(|s| s % 97 == 5 && s % 10 != 0).count();
        assert_eq!(got.len(), want);
    }
}

/// Identical vectors at different slots come back in slot order.
pub fn index_ties_break_by_slot(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 4;
    let mut rows = clustered_rows(71, 200, dim, false);
    let dup = rows[..dim].to_vec();
    for slot in [13usize, 150, 77, 5, 199] {
        rows[slot * dim..(slot + 1) * dim].copy_from_slice(&dup);
    }
    let fx = Fixture::new(factory, storage, dim, Metric::L2, &rows);
    let got = search(&*fx.index, &*fx.storage, &dup, 6, None);
    let slots: Vec<SlotId> = got.iter().map(|n| n.slot).collect();
    assert_eq!(slots, vec![0, 5, 13, 77, 150, 199]);
    let mut batch = Vec::new();
    fx.index
        .search_batch(
            &*fx.storage,
            &dup,
            6,
            &SearchParams::exhaustive(),
            None,
            &mut batch,
        )
        .unwrap();
    assert_eq!(batch[0].iter().map(|n| n.slot).collect::<Vec<_>>(), slots);
}

/// For every metric, exhaustive search equals flat search, single and batched,
/// over odd dimensions and several k.
pub fn index_exhaustive_equals_flat_every_metric(
    factory: IndexFactory<'_>,
    storage: StorageFactory<'_>,
) {
    for (mi, metric) in METRICS.into_iter().enumerate() {
        for dim in [3usize, 50] {
            let unit = metric == Metric::Cosine;
            let seed = 80 + mi as u64 * 10 + dim as u64;
            let rows = clustered_rows(seed, 3000, dim, unit);
            let fx = Fixture::new(factory, storage, dim, metric, &rows);
            for slot in (0..3000).step_by(11) {
                fx.remove(slot);
            }
            let queries = clustered_rows(seed + 1, 24, dim, unit);
            for k in [1usize, 10, 64] {
                fx.check_queries(&queries, k, None);
            }
        }
    }
}

/// Slots added in several ranges, out of order, behave like one add.
pub fn index_incremental_adds_in_any_order(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 10;
    let rows = clustered_rows(91, 2000, dim, false);
    let storage = storage(dim);
    storage.append_batch(&rows).unwrap();
    let index = factory(dim, Metric::InnerProduct);
    let reference = FlatIndex::new(dim, Metric::InnerProduct).unwrap();
    for r in [1000..2000u32, 0..1, 500..1000, 1..500] {
        index.add(&*storage, r.clone()).unwrap();
        reference.add(&*storage, r).unwrap();
    }
    assert_eq!(index.len(), 2000);
    let fx = Fixture {
        storage,
        index,
        reference,
        metric: Metric::InnerProduct,
    };
    fx.check_queries(&clustered_rows(92, 10, dim, false), 10, None);
}

/// `stats().searches` counts every query answered, single or batched.
pub fn index_stats_count_searches(factory: IndexFactory<'_>, storage: StorageFactory<'_>) {
    let dim = 8;
    let rows = clustered_rows(101, 300, dim, false);
    let fx = Fixture::new(factory, storage, dim, Metric::L2, &rows);
    let before = fx.index.stats();
    let q = clustered_rows(102, 7, dim, false);
    let params = SearchParams::exhaustive();
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    let st = fx
        .index
        .search(
            &*fx.storage,
            &SearchRequest::new(&q[..dim], 3, &params),
            &mut scratch,
            &mut out,
        )
        .unwrap();
    assert!(st.distance_computations > 0);
    let mut batch = Vec::new();
    let bst = fx
        .index
        .search_batch(&*fx.storage, &q, 3, &params, None, &mut batch)
        .unwrap();
    assert!(bst.distance_computations >= 7);
    let after = fx.index.stats();
    assert_eq!(after.searches - before.searches, 8);
    assert_eq!(
        after.search_distance_computations - before.search_distance_computations,
        st.distance_computations + bst.distance_computations
    );
}

/// Searches running while another thread appends and adds return well-formed
/// results over published, present slots; afterwards the index equals flat.
pub fn index_concurrent_search_while_adding(
    factory: IndexFactory<'_>,
    storage: StorageFactory<'_>,
) {
    let dim = 16;
    let rows = clustered_rows(111, 6000, dim, false);
    let storage = storage(dim);
    let index = factory(dim, Metric::L2);
    let first = storage.append_batch(&rows[..500 * dim]).unwrap();
    index.add(&*storage, first).unwrap();
    let queries = clustered_rows(112, 16, dim, false);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (s, ix, done) = (&*storage, &*index, &done);
        scope.spawn(move || {
            for chunk in rows[500 * dim..].chunks(250 * dim) {
                let slots = s.append_batch(chunk).unwrap();
                ix.add(s, slots).unwrap();
            }
            done.store(true, Ordering::Release);
        });
        for t in 0..2 {
            let queries = &queries;
            scope.spawn(move || {
                let params = SearchParams::exhaustive();
                let (mut scratch, mut out, mut batch) =
                    (SearchScratch::new(), Vec::new(), Vec::new());
                let scalar = Kernels::scalar();
                let mut rounds = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let q = &queries[(rounds % 16) * dim..(rounds % 16 + 1) * dim];
                    if t == 0 {
                        ix.search(
                            s,
                            &SearchRequest::new(q, 10, &params),
                            &mut scratch,
                            &mut out,
                        )
                        .unwrap();
                    } else {
                        ix.search_batch(s, q, 10, &params, None, &mut batch)
                            .unwrap();
                        out = std::mem::take(&mut batch[0]);
                    }
                    assert!(out.len() == 10, "an index of 500+ slots returned {out:?}");
                    assert_well_formed(ix, &out, &|_| true);
                    for n in &out {
                        let row = s.get(n.slot).expect("returned slot is published");
                        let truth = Metric::L2.distance(&scalar, q, row);
                        assert!((n.distance - truth).abs() <= tolerance(truth));
                    }
                    rounds += 1;
                    if finished {
                        break;
                    }
                }
            });
        }
    });
    let reference = FlatIndex::new(dim, Metric::L2).unwrap();
    reference.add(&*storage, 0..6000).unwrap();
    assert_eq!(index.len(), 6000);
    let fx = Fixture {
        storage,
        index,
        reference,
        metric: Metric::L2,
    };
    fx.check_queries(&queries, 10, None);
}
