//! Unit tests: exactness against the flat index, recall, deletes and repair,
//! filters, concurrency, persistence and model-based operation sequences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use omen_core::{SearchParams, SlotFilter};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// Debug builds are ~30x slower: shrink the data sets there, keep the full sizes
/// in release.
fn scaled(n: usize) -> usize {
    if cfg!(debug_assertions) {
        n / 5
    } else {
        n
    }
}

/// `n` points of a mixture of `centers` Gaussians in `dim` dimensions, each
/// stretched over its own random subspace of `dim / 2` dimensions (real data has a
/// low intrinsic dimension; isotropic 32-dimensional noise has none), centres
/// uniform in `[-3, 3]^dim`. The clusters depend on `seed / 100` only, so seeds
/// `100a + b` draw different points of one mixture.
fn mixture(n: usize, dim: usize, centers: usize, seed: u64) -> Vec<f32> {
    let idim = (dim / 2).max(1);
    let g = Normal::new(0.0f32, 1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(seed / 100);
    let cs: Vec<f32> = (0..centers * dim)
        .map(|_| rng.gen_range(-3.0..3.0))
        .collect();
    let proj: Vec<f32> = (0..centers * dim * idim)
        .map(|_| g.sample(&mut rng))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * dim);
    let mut z = vec![0f32; idim];
    for _ in 0..n {
        let c = rng.gen_range(0..centers);
        z.iter_mut().for_each(|x| *x = g.sample(&mut rng));
        for d in 0..dim {
            let p = &proj[(c * dim + d) * idim..(c * dim + d + 1) * idim];
            let x: f32 = p.iter().zip(&z).map(|(a, b)| a * b).sum();
            out.push(cs[c * dim + d] + x + 0.1 * g.sample(&mut rng));
        }
    }
    out
}

fn normalise(rows: &mut [f32], dim: usize) {
    for r in rows.chunks_exact_mut(dim) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|x| *x /= n);
    }
}

fn search(
    index: &dyn VectorIndex,
    storage: &dyn VectorStorage,
    q: &[f32],
    k: usize,
    params: &SearchParams,
    filter: Option<&dyn SlotFilter>,
) -> Vec<Neighbor> {
    let mut req = SearchRequest::new(q, k, params);
    req.filter = filter;
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    index.search(storage, &req, &mut scratch, &mut out).unwrap();
    out
}

/// Exact results from two indexes: the same slots at the same ranks, distances
/// equal up to float rounding (the flat index's one-to-many kernels may sum in a
/// different order from `Metric::distance`, which this index reports); two slots
/// may swap only when their distances are that close.
fn assert_close(got: &[Neighbor], want: &[Neighbor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let tol = |d: f32| 1e-5 * d.abs().max(1.0);
    for (a, b) in got.iter().zip(want) {
        assert!(
            (a.distance - b.distance).abs() <= tol(b.distance),
            "{what}: {got:?} vs {want:?}"
        );
        if a.slot != b.slot {
            let partner = want.iter().find(|w| w.slot == a.slot);
            assert!(
                partner.is_some_and(|w| (w.distance - a.distance).abs() <= tol(a.distance)),
                "{what}: {got:?} vs {want:?}"
            );
        }
    }
}

fn recall(got: &[Neighbor], want: &[Neighbor]) -> f64 {
    if want.is_empty() {
        return 1.0;
    }
    let hits = got
        .iter()
        .filter(|g| want.iter().any(|w| w.slot == g.slot))
        .count();
    hits as f64 / want.len() as f64
}

fn setup(
    rows: &[f32],
    dim: usize,
    metric: Metric,
    params: HnswParams,
) -> (MemoryStorage, HnswIndex) {
    let storage = MemoryStorage::new(dim).unwrap();
    let slots = storage.append_batch(rows).unwrap();
    let index = HnswIndex::new(dim, metric, params).unwrap();
    index.add(&storage, slots).unwrap();
    (storage, index)
}

#[test]
fn rejects_bad_input_and_changes_nothing() {
    assert!(matches!(
        HnswIndex::new(0, Metric::L2, HnswParams::default()),
        Err(Error::InvalidParameter { name: "dim", .. })
    ));
    for bad in [
        HnswParams::default().with_m(1),
        HnswParams::default().with_ef_construction(0),
        HnswParams::default().with_ef_search(0),
        HnswParams::default().with_repair_threshold(0.0),
        HnswParams::default().with_repair_threshold(f64::NAN),
    ] {
        assert!(matches!(
            HnswIndex::new(4, Metric::L2, bad),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let storage = MemoryStorage::new(2).unwrap();
    storage
        .append_batch(&[0.0, 0.0, 1.0, 1.0, f32::NAN, 0.0])
        .unwrap();
    let index = HnswIndex::new(2, Metric::L2, HnswParams::default()).unwrap();
    assert!(matches!(
        index.add(&storage, 0..4),
        Err(Error::UnknownSlot { .. })
    ));
    assert!(matches!(
        index.add(&storage, 0..3),
        Err(Error::NonFinite { row: 2, .. })
    ));
    assert_eq!(index.len(), 0);
    index.add(&storage, 0..2).unwrap();
    assert!(matches!(
        index.add(&storage, 1..2),
        Err(Error::SlotExists { slot: 1 })
    ));
    assert_eq!(index.len(), 2);
    let wrong_dim = MemoryStorage::new(3).unwrap();
    assert!(matches!(
        index.add(&wrong_dim, 0..0),
        Err(Error::DimensionMismatch { .. })
    ));
    let p = SearchParams::new();
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    for (q, k) in [
        (&[0.0f32, 0.0][..], 0usize),
        (&[0.0][..], 1),
        (&[f32::INFINITY, 0.0][..], 1),
    ] {
        let req = SearchRequest::new(q, k, &p);
        assert!(index
            .search(&storage, &req, &mut scratch, &mut out)
            .is_err());
    }
    let bad_ef = SearchParams::new().with("ef", 0);
    let req = SearchRequest::new(&[0.0, 0.0], 1, &bad_ef);
    assert!(index
        .search(&storage, &req, &mut scratch, &mut out)
        .is_err());
    assert!(matches!(
        index.remove(7),
        Err(Error::UnknownSlot { slot: 7 })
    ));
    index.remove(0).unwrap();
    assert!(matches!(
        index.remove(0),
        Err(Error::UnknownSlot { slot: 0 })
    ));
    assert!(!index.contains(0) && index.contains(1));
}

#[test]
fn ef_at_least_n_and_exhaustive_equal_flat() {
    let (n, dim) = (600, 12);
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let mut rows = mixture(n, dim, 8, 100);
        if metric == Metric::Cosine {
            normalise(&mut rows, dim);
        }
        let params = HnswParams::default().with_m(8).with_ef_construction(64);
        let (storage, index) = setup(&rows, dim, metric, params);
        let flat = FlatIndex::new(dim, metric).unwrap();
        flat.add(&storage, 0..n as u32).unwrap();
        let mut queries = mixture(40, dim, 8, 101);
        if metric == Metric::Cosine {
            normalise(&mut queries, dim);
        }
        let full = SearchParams::new().with("ef", n);
        // One less than n: a real graph walk, which must reach every node.
        let walk_all = SearchParams::new().with("ef", n - 1);
        let exact = SearchParams::exhaustive();
        let mut hits = 0;
        for q in queries.chunks_exact(dim) {
            let want = search(&flat, &storage, q, 10, &exact, None);
            let m = format!("{metric}");
            assert_close(&search(&index, &storage, q, 10, &exact, None), &want, &m);
            assert_close(&search(&index, &storage, q, 10, &full, None), &want, &m);
            let walk = search(&index, &storage, q, 10, &walk_all, None);
            hits += walk
                .iter()
                .filter(|g| want.iter().any(|w| w.slot == g.slot))
                .count();
            if metric != Metric::InnerProduct {
                assert_close(&walk, &want, &format!("{metric}: ef = n - 1 walk"));
            }
            for n in &walk {
                let v = storage.get(n.slot).unwrap();
                assert_eq!(n.distance, metric.distance(Kernels::best(), q, v));
            }
        }
        // Inner product is not a metric: nodes of small norm can end up with no
        // in-links (hnswlib shares this), so only most of the answer is required.
        assert!(hits >= 40 * 10 * 9 / 10, "{metric}: {hits}/400");
    }
}

#[test]
fn recall_at_default_params_on_a_gaussian_mixture() {
    let (n, dim) = (scaled(20_000), 32);
    let rows = mixture(n, dim, 50, 200);
    let (storage, index) = setup(&rows, dim, Metric::L2, HnswParams::default());
    assert_eq!(index.len(), n);
    let flat = FlatIndex::new(dim, Metric::L2).unwrap();
    flat.add(&storage, 0..n as u32).unwrap();
    let queries = mixture(200, dim, 50, 201);
    let (p, exact) = (SearchParams::new(), SearchParams::exhaustive());
    let mut total = 0.0;
    for q in queries.chunks_exact(dim) {
        let want = search(&flat, &storage, q, 10, &exact, None);
        total += recall(&search(&index, &storage, q, 10, &p, None), &want);
    }
    let r = total / 200.0;
    assert!(r >= 0.95, "recall@10 = {r}");
    let s = index.stats();
    assert_eq!(s.searches, 200);
    assert!(s.search_distance_computations > 0 && s.build_distance_computations > 0);
    // A graph walk does a fraction of a flat scan's work.
    assert!(s.search_distance_computations < 200 * n as u64 / 2);
    let mem = index.memory_bytes();
    assert!(mem >= n * (2 * 16 + 1) * 4 && mem < n * 400, "memory {mem}");
}

#[test]
fn deleting_half_keeps_recall_close_to_a_fresh_build() {
    let (n, dim) = (scaled(10_000), 16);
    let rows = mixture(n, dim, 30, 300);
    let (storage, index) = setup(&rows, dim, Metric::L2, HnswParams::default());
    for s in (0..n as u32).step_by(2) {
        index.remove(s).unwrap();
    }
    assert_eq!(index.len(), n / 2);
    assert_eq!(index.tombstones(), n / 2);
    index.repair(&storage).unwrap();
    assert_eq!(index.tombstones(), 0);
    let fresh = HnswIndex::new(dim, Metric::L2, HnswParams::default()).unwrap();
    for s in (1..n as u32).step_by(2) {
        fresh.add(&storage, s..s + 1).unwrap();
    }
    let flat = FlatIndex::new(dim, Metric::L2).unwrap();
    flat.add(&storage, 0..n as u32).unwrap();
    for s in (0..n as u32).step_by(2) {
        flat.remove(s).unwrap();
    }
    let queries = mixture(300, dim, 30, 301);
    let (p, exact) = (SearchParams::new(), SearchParams::exhaustive());
    let (mut r_del, mut r_fresh) = (0.0, 0.0);
    for q in queries.chunks_exact(dim) {
        let want = search(&flat, &storage, q, 10, &exact, None);
        let got = search(&index, &storage, q, 10, &p, None);
        assert!(
            got.iter().all(|n| n.slot % 2 == 1),
            "a removed slot came back"
        );
        r_del += recall(&got, &want);
        r_fresh += recall(&search(&fresh, &storage, q, 10, &p, None), &want);
    }
    let (r_del, r_fresh) = (r_del / 300.0, r_fresh / 300.0);
    assert!(
        r_del >= r_fresh - 0.01,
        "after deletes {r_del}, fresh {r_fresh}"
    );
    // Removed slots can come back.
    index.add(&storage, 0..1).unwrap();
    assert!(index.contains(0));
    let got = search(&index, &storage, &rows[..dim], 1, &p, None);
    assert_eq!(got[0].slot, 0);
}

#[test]
fn repair_runs_on_add_past_the_threshold() {
    let (n, dim) = (400, 8);
    let rows = mixture(n + 1, dim, 4, 7);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(&rows).unwrap();
    let index = HnswIndex::new(dim, Metric::L2, HnswParams::default()).unwrap();
    index.add(&storage, 0..n as u32).unwrap();
    for s in 0..n as u32 / 20 {
        index.remove(s).unwrap();
    }
    index.add(&storage, n as u32..n as u32 + 1).unwrap();
    assert_eq!(index.tombstones(), n / 20, "5% is below the 10% threshold");
    for s in n as u32 / 20..n as u32 / 5 {
        index.remove(s).unwrap();
    }
    index.add(&storage, 0..1).unwrap();
    assert_eq!(index.tombstones(), 0);
    assert_eq!(index.len(), n + 1 - n / 5 + 1);
}

#[test]
fn filtered_search_returns_k_whenever_k_match() {
    let (n, dim) = (scaled(5_000), 16);
    let rows = mixture(n, dim, 20, 400);
    let (storage, index) = setup(&rows, dim, Metric::L2, HnswParams::default());
    let flat = FlatIndex::new(dim, Metric::L2).unwrap();
    flat.add(&storage, 0..n as u32).unwrap();
    let queries = mixture(50, dim, 20, 401);
    let p = SearchParams::new();
    let exact = SearchParams::exhaustive();
    let bitmap =
        |f: fn(SlotId) -> bool| omen_core::SlotBitmap::from_slots((0..n as u32).filter(|&s| f(s)));
    let filters: Vec<(Box<dyn SlotFilter>, bool)> = vec![
        (Box::new(|s: SlotId| s % 3 == 0), false), // walks the graph
        (Box::new(|s: SlotId| s % 97 == 5), true), // ~1%: flat scan, exact
        (Box::new(|s: SlotId| s < 4), true),       // fewer than k match
        // The same as bitmaps: the flat scan visits only the set bits.
        (Box::new(bitmap(|s| s % 3 == 0)), false),
        (Box::new(bitmap(|s| s % 97 == 5)), true),
        (Box::new(bitmap(|s| s < 4)), true),
    ];
    for (f, exact_expected) in &filters {
        let mut total = 0.0;
        for q in queries.chunks_exact(dim) {
            let want = search(&flat, &storage, q, 10, &exact, Some(f.as_ref()));
            let got = search(&index, &storage, q, 10, &p, Some(f.as_ref()));
            assert_eq!(got.len(), want.len());
            assert!(got.iter().all(|n| f.allows(n.slot)));
            if *exact_expected {
                assert_close(&got, &want, "filtered flat scan");
            }
            total += recall(&got, &want);
        }
        assert!(total / 50.0 >= 0.9, "filtered recall {}", total / 50.0);
    }
}

#[test]
fn concurrent_inserts_and_searches_find_every_slot() {
    let (n, dim, writers) = (scaled(4_000), 16, 3);
    let rows = mixture(n, dim, 10, 10);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(&rows).unwrap();
    let index = HnswIndex::new(
        dim,
        Metric::L2,
        HnswParams::default().with_ef_construction(100),
    )
    .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (index, storage) = (&index, &storage);
            s.spawn(move || {
                // Interleaved small batches, so that every writer races the others.
                let mut start = (w * 25) as u32;
                while (start as usize) < n {
                    let end = (start + 25).min(n as u32);
                    index.add(storage, start..end).unwrap();
                    start += (writers * 25) as u32;
                }
            });
        }
        for r in 0..2 {
            let (index, storage, done, rows) = (&index, &storage, &done, &rows);
            s.spawn(move || {
                let p = SearchParams::new();
                let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
                let mut i = r;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let q = &rows[(i % n) * dim..(i % n + 1) * dim];
                    let req = SearchRequest::new(q, 5, &p);
                    index.search(storage, &req, &mut scratch, &mut out).unwrap();
                    assert!(out.windows(2).all(|w| w[0] <= w[1]));
                    assert!(out.iter().all(|x| (x.slot as usize) < n));
                    i += 7;
                }
            });
        }
        s.spawn(|| {
            while index.len() < n {
                std::thread::yield_now();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    assert_eq!(index.len(), n);
    let p = SearchParams::new().with("ef", 200);
    for s in 0..n {
        let q = &rows[s * dim..(s + 1) * dim];
        let got = search(&index, &storage, q, 1, &p, None);
        assert_eq!(got[0].distance, 0.0, "slot {s} not found by its own vector");
    }
}

#[test]
fn save_load_round_trip_gives_identical_results() {
    let (n, dim) = (scaled(3_000), 8);
    let rows = mixture(n, dim, 10, 500);
    let (storage, index) = setup(
        &rows,
        dim,
        Metric::InnerProduct,
        HnswParams::default().with_m(12),
    );
    for s in (0..n as u32).step_by(7) {
        index.remove(s).unwrap();
    }
    let mut bytes = Vec::new();
    index.save(&mut bytes).unwrap();
    let loaded = HnswIndex::load(&mut &bytes[..], Path::new("g.hnsw")).unwrap();
    assert_eq!(loaded.len(), index.len());
    assert_eq!(loaded.params(), index.params());
    assert_eq!(loaded.metric(), Metric::InnerProduct);
    assert_eq!(loaded.to_bytes(), bytes);
    let p = SearchParams::new().with("ef", 32);
    for q in mixture(50, dim, 10, 501).chunks_exact(dim) {
        assert_eq!(
            search(&index, &storage, q, 10, &p, None),
            search(&loaded, &storage, q, 10, &p, None)
        );
    }
    // The loaded index keeps working.
    loaded.add(&storage, 0..1).unwrap();
    assert!(loaded.contains(0));
    let empty = HnswIndex::new(3, Metric::L2, HnswParams::default()).unwrap();
    let e = HnswIndex::from_bytes(&empty.to_bytes(), Path::new("e")).unwrap();
    assert!(e.is_empty());
}

/// Mean layer-0 out-degree of the nodes `0..n`.
fn mean_degree0(index: &HnswIndex, n: usize) -> f64 {
    let mut ids = Vec::new();
    let total: usize = (0..n as u32)
        .map(|s| {
            index.links(s, 0, &mut ids);
            ids.len()
        })
        .sum();
    total as f64 / n as f64
}

#[test]
fn fill_layer0_gives_a_fixed_out_degree_and_survives_a_round_trip() {
    let (n, dim) = (scaled(2_000), 8);
    let rows = mixture(n, dim, 10, 700);
    let base = HnswParams::default().with_m(8).with_keep_pruned(true);
    let (storage, plain) = setup(&rows, dim, Metric::L2, base.clone());
    let (_, filled) = setup(&rows, dim, Metric::L2, base.with_fill_layer0(true));
    // M0 = 16: a filled list starts at 16 and keep_pruned refills it at every
    // re-prune; a plain one starts at 8 and grows by back links only.
    let mut ids = Vec::new();
    for s in 0..n as u32 {
        filled.links(s, 0, &mut ids);
        assert_eq!(ids.len(), 16, "node {s}'s layer-0 list");
    }
    let dp = mean_degree0(&plain, n);
    assert!(dp < 15.0, "plain mean layer-0 degree {dp}");
    // Exhaustive search still gives the exact answer (the same slots; the
    // kernels may sum in another order than the flat scan).
    let p = SearchParams::new().with("ef", n);
    let flat = FlatIndex::new(dim, Metric::L2).unwrap();
    flat.add(&storage, 0..n as u32).unwrap();
    let slots = |v: Vec<Neighbor>| v.into_iter().map(|x| x.slot).collect::<Vec<_>>();
    for q in mixture(20, dim, 10, 701).chunks_exact(dim) {
        assert_eq!(
            slots(search(&filled, &storage, q, 10, &p, None)),
            slots(search(&flat, &storage, q, 10, &SearchParams::new(), None))
        );
    }
    // The flag is saved (bit 1 of byte 17) and read back.
    let bytes = filled.to_bytes();
    assert_eq!(bytes[17], 3);
    let loaded = HnswIndex::from_bytes(&bytes, Path::new("f.hnsw")).unwrap();
    assert!(loaded.params().fill_layer0);
    assert_eq!(loaded.to_bytes(), bytes);
    assert_eq!(plain.to_bytes()[17], 1);
    // Any other bit is corruption at offset 17, behind a valid checksum too.
    let mut bad = bytes.clone();
    bad[17] = 4;
    let end = bad.len() - 4;
    let crc = omen_core::codec::crc32(&bad[..end]);
    bad[end..].copy_from_slice(&crc.to_le_bytes());
    match HnswIndex::from_bytes(&bad, Path::new("f.hnsw")) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, 17),
        other => panic!("expected corruption at 17, got {other:?}"),
    }
}

#[test]
fn damaged_files_are_corruption_errors() {
    let rows = mixture(60, 4, 3, 13);
    let (_storage, index) = setup(&rows, 4, Metric::L2, HnswParams::default().with_m(4));
    let bytes = index.to_bytes();
    let file = Path::new("g.hnsw");
    let is_corruption = |r: Result<HnswIndex>| matches!(r, Err(Error::Corruption { .. }));
    for len in 0..bytes.len() {
        assert!(
            is_corruption(HnswIndex::from_bytes(&bytes[..len], file)),
            "truncated to {len}"
        );
    }
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            assert!(
                is_corruption(HnswIndex::from_bytes(&b, file)),
                "flip at {i}"
            );
        }
    }
    // Damage behind a valid checksum: the structural checks must catch it.
    let reseal = |mut b: Vec<u8>| {
        let end = b.len() - 4;
        let crc = omen_core::codec::crc32(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let first_link = HEADER_LEN + 2 + 2; // node 0: status, level, count, then ids
    for (at, val) in [
        (first_link, 60u32.to_le_bytes()), // link past the node range
        (first_link, 0u32.to_le_bytes()),  // self link
        (52, 1_000_000u32.to_le_bytes()),  // node count
        (56, 3u32.to_le_bytes()),          // present count
        (64, 1_000_000u32.to_le_bytes()),  // entry point
        (68, 40u32.to_le_bytes()),         // top level
    ] {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&val);
        assert!(
            is_corruption(HnswIndex::from_bytes(&reseal(b), file)),
            "field at {at}"
        );
    }
    let mut b = bytes.clone();
    b[HEADER_LEN + 1] = 200; // level of node 0
    assert!(is_corruption(HnswIndex::from_bytes(&reseal(b), file)));
}

const HEADER_LEN: usize = 72;

#[test]
fn version_1_files_with_the_ieee_crc_still_load() {
    use omen_core::codec::{crc32, crc32_ieee_legacy};
    let rows = mixture(60, 4, 3, 21);
    let (_storage, index) = setup(&rows, 4, Metric::L2, HnswParams::default().with_m(4));
    let v2 = index.to_bytes();
    assert_eq!(&v2[8..12], &2u32.to_le_bytes());
    let file = Path::new("old.hnsw");
    let with = |version: u32, crc: fn(&[u8]) -> u32| {
        let mut b = v2.clone();
        b[8..12].copy_from_slice(&version.to_le_bytes());
        let end = b.len() - 4;
        let c = crc(&b[..end]);
        b[end..].copy_from_slice(&c.to_le_bytes());
        b
    };
    // A version 1 file, as written before CRC-32C: loads, and saves as version 2.
    let old = HnswIndex::from_bytes(&with(1, crc32_ieee_legacy), file).unwrap();
    assert_eq!(old.len(), index.len());
    assert_eq!(old.to_bytes(), v2);
    // Each version is checked with its own algorithm only.
    let end = v2.len() as u64 - 4;
    for bytes in [with(1, crc32), with(2, crc32_ieee_legacy)] {
        match HnswIndex::from_bytes(&bytes, file) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, end),
            other => panic!("expected a checksum error, got {:?}", other.err()),
        }
    }
    match HnswIndex::from_bytes(&with(3, crc32), file) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, 8),
        other => panic!("expected a version error, got {:?}", other.err()),
    }
}

#[test]
fn packed_keys_order_as_neighbors() {
    let ds = [
        f32::NEG_INFINITY,
        -3.5,
        -0.0,
        0.0,
        1e-30,
        1.0,
        2.5,
        f32::INFINITY,
    ];
    let mut ns = Vec::new();
    for &d in &ds {
        for s in [0u32, 1, 7, u32::MAX] {
            ns.push(Neighbor::new(s, d));
        }
    }
    for a in &ns {
        assert_eq!(search::unkey(search::key(*a)), *a);
        assert_eq!(
            search::unkey(search::key(*a)).distance.to_bits(),
            a.distance.to_bits()
        );
        for b in &ns {
            assert_eq!(
                search::key(*a).cmp(&search::key(*b)),
                a.cmp(b),
                "{a:?} {b:?}"
            );
        }
    }
}

#[test]
fn empty_index_and_k_above_len() {
    let storage = MemoryStorage::new(2).unwrap();
    let index = HnswIndex::new(2, Metric::L2, HnswParams::default()).unwrap();
    let p = SearchParams::new();
    assert!(search(&index, &storage, &[0.0, 0.0], 3, &p, None).is_empty());
    storage.append_batch(&[0.0, 0.0, 1.0, 0.0]).unwrap();
    index.add(&storage, 0..2).unwrap();
    let got = search(&index, &storage, &[0.0, 0.0], 5, &p, None);
    assert_eq!(got.iter().map(|n| n.slot).collect::<Vec<_>>(), vec![0, 1]);
    index.remove(0).unwrap();
    index.remove(1).unwrap();
    assert!(search(&index, &storage, &[0.0, 0.0], 5, &p, None).is_empty());
}

#[test]
fn links_and_entry_point_show_the_graph_searches_walk() {
    let empty = HnswIndex::new(4, Metric::L2, HnswParams::default()).unwrap();
    assert_eq!(empty.entry_point(), None);
    let mut links = vec![7];
    assert!(!empty.links(0, 0, &mut links));
    assert!(links.is_empty());

    let (n, dim) = (500usize, 4);
    let rows = mixture(n, dim, 5, 21);
    let (_storage, index) = setup(&rows, dim, Metric::L2, HnswParams::default().with_m(8));
    let top = index.top_level().unwrap();
    let entry = index.entry_point().unwrap();
    // The entry point is the one node at the top level.
    assert!(index.links(entry, top, &mut links));
    assert!(!index.links(entry, top + 1, &mut links));
    // Every node has a layer-0 list of distinct live slots, within m0, not itself;
    // and the nodes are reachable from the entry point on layer 0.
    let mut seen = vec![false; n];
    let mut stack = vec![entry];
    seen[entry as usize] = true;
    while let Some(u) = stack.pop() {
        assert!(index.links(u, 0, &mut links));
        assert!(
            links.len() <= 16 && !links.contains(&u),
            "node {u}: {links:?}"
        );
        let mut sorted = links.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), links.len(), "node {u} links a node twice");
        for &v in &links {
            assert!((v as usize) < n && index.contains(v));
            if !seen[v as usize] {
                seen[v as usize] = true;
                stack.push(v);
            }
        }
    }
    // (Heuristic pruning may strand a node; a wrong accessor strands most.)
    let reached = seen.iter().filter(|&&s| s).count();
    assert!(
        reached * 100 >= n * 95,
        "only {reached} of {n} nodes reachable on layer 0"
    );
    assert!(!index.links(n as u32 + 10, 0, &mut links));
}

#[test]
fn same_seed_same_graph() {
    let rows = mixture(300, 6, 4, 14);
    let a = setup(&rows, 6, Metric::L2, HnswParams::default().with_seed(9)).1;
    let b = setup(&rows, 6, Metric::L2, HnswParams::default().with_seed(9)).1;
    // Below the parallel threshold per call: one inserting thread, deterministic.
    let storage = MemoryStorage::new(6).unwrap();
    storage.append_batch(&rows).unwrap();
    let c = HnswIndex::new(6, Metric::L2, HnswParams::default().with_seed(9)).unwrap();
    let d = HnswIndex::new(6, Metric::L2, HnswParams::default().with_seed(9)).unwrap();
    for s in (0..300u32).step_by(100) {
        c.add(&storage, s..s + 100).unwrap();
        d.add(&storage, s..s + 100).unwrap();
    }
    assert_eq!(c.to_bytes(), d.to_bytes());
    assert_eq!(a.len(), b.len());
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Add(usize),
        Remove(usize),
        Search(Vec<f32>, usize),
    }

    const DIM: usize = 4;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..40).prop_map(Op::Add),
            (0usize..1000).prop_map(Op::Remove),
            (proptest::collection::vec(-5.0f32..5.0, DIM), 1usize..12)
                .prop_map(|(q, k)| Op::Search(q, k)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn operation_sequences_match_a_brute_force_model(
            ops in proptest::collection::vec(op(), 1..40),
            seed in 0u64..1000,
        ) {
            let storage = MemoryStorage::new(DIM).unwrap();
            let params = HnswParams::default().with_m(4).with_ef_construction(32).with_seed(seed);
            let index = HnswIndex::new(DIM, Metric::L2, params).unwrap();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut present: Vec<bool> = Vec::new();
            let (mut hits, mut wanted) = (0usize, 0usize);
            let kernels = Kernels::best();
            for op in ops {
                match op {
                    Op::Add(n) => {
                        let rows: Vec<f32> = (0..n * DIM).map(|_| rand::Rng::gen_range(&mut rng, -5.0..5.0)).collect();
                        let slots = storage.append_batch(&rows).unwrap();
                        index.add(&storage, slots).unwrap();
                        present.resize(present.len() + n, true);
                    }
                    Op::Remove(i) => {
                        let s = if present.is_empty() { 0 } else { i % present.len() };
                        let r = index.remove(s as u32);
                        prop_assert_eq!(r.is_ok(), present.get(s).copied().unwrap_or(false));
                        if let Some(p) = present.get_mut(s) { *p = false; }
                    }
                    Op::Search(q, k) => {
                        let mut want: Vec<Neighbor> = present.iter().enumerate().filter(|(_, &p)| p)
                            .map(|(s, _)| Neighbor::new(s as u32, Metric::L2.distance(kernels, &q, storage.get(s as u32).unwrap())))
                            .collect();
                        want.sort();
                        want.truncate(k);
                        let exact = search(&index, &storage, &q, k, &SearchParams::exhaustive(), None);
                        prop_assert_eq!(&exact, &want);
                        let got = search(&index, &storage, &q, k, &SearchParams::new(), None);
                        prop_assert_eq!(got.len(), want.len());
                        prop_assert!(got.windows(2).all(|w| w[0] <= w[1]));
                        for g in &got {
                            prop_assert!(present[g.slot as usize]);
                            let d = Metric::L2.distance(kernels, &q, storage.get(g.slot).unwrap());
                            prop_assert_eq!(g.distance, d);
                        }
                        hits += got.iter().filter(|g| want.iter().any(|w| w.slot == g.slot)).count();
                        wanted += want.len();
                    }
                }
                prop_assert_eq!(index.len(), present.iter().filter(|&&p| p).count());
            }
            prop_assert!(wanted < 20 || hits as f64 >= 0.9 * wanted as f64, "recall {hits}/{wanted}");
        }
    }
}
