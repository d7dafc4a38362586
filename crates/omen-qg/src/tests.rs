//! Unit tests: recall of the walk on codes on every metric, exact distances,
//! training (automatic and explicit), removals, parameters, persistence and damage,
//! searches during adds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use omen_core::VectorStorage;
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// `n` rows of a mixture of 20 Gaussian clusters in `dim` dimensions (unit rows
/// for the inner-product metrics).
fn mixture(n: usize, dim: usize, metric: Metric, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let wide = Normal::new(0.0f32, 3.0).unwrap();
    let narrow = Normal::new(0.0f32, 1.0).unwrap();
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dim).map(|_| wide.sample(&mut rng)).collect())
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[rng.gen_range(0..centres.len())];
        let mut row: Vec<f32> = c.iter().map(|x| x + narrow.sample(&mut rng)).collect();
        if metric != Metric::L2 {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        out.extend_from_slice(&row);
    }
    out
}

struct Setup {
    storage: MemoryStorage,
    index: QgIndex,
    flat: FlatIndex,
    queries: Vec<f32>,
}

fn setup(n: usize, dim: usize, metric: Metric, params: QgParams) -> Setup {
    let data = mixture(n + 100, dim, metric, 7);
    let (base, queries) = data.split_at(n * dim);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(base).unwrap();
    let index = QgIndex::new(dim, metric, params).unwrap();
    index.add(&storage, 0..n as u32).unwrap();
    let flat = FlatIndex::new(dim, metric).unwrap();
    flat.add(&storage, 0..n as u32).unwrap();
    Setup {
        storage,
        index,
        flat,
        queries: queries.to_vec(),
    }
}

/// Recall@k of `index` against the flat index over the setup's queries.
/// `s.index`'s answer to `q` (k = 10) under `p`, into `out`.
fn search_into(
    s: &Setup,
    q: &[f32],
    p: &SearchParams,
    scratch: &mut SearchScratch,
    out: &mut Vec<Neighbor>,
) {
    s.index
        .search(&s.storage, &SearchRequest::new(q, 10, p), scratch, out)
        .unwrap();
}

fn recall(s: &Setup, index: &dyn VectorIndex, k: usize, params: &SearchParams) -> f64 {
    let dim = s.index.dim();
    let (mut hits, mut total) = (0, 0);
    let mut scratch = SearchScratch::new();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for q in s.queries.chunks_exact(dim) {
        index
            .search(
                &s.storage,
                &SearchRequest::new(q, k, params),
                &mut scratch,
                &mut got,
            )
            .unwrap();
        s.flat
            .search(
                &s.storage,
                &SearchRequest::new(q, k, &SearchParams::new()),
                &mut scratch,
                &mut want,
            )
            .unwrap();
        assert_eq!(got.len(), k);
        total += k;
        hits += got
            .iter()
            .filter(|g| want.iter().any(|w| w.slot == g.slot))
            .count();
    }
    hits as f64 / total as f64
}

#[test]
fn the_walk_on_codes_finds_the_neighbours_on_every_metric() {
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let s = setup(3_000, 32, metric, QgParams::new().with_train_at(1_000));
        assert!(s.index.is_trained(), "{metric:?}: trained at 1,000 slots");
        let before = s.index.graph.stats().searches;
        let r64 = recall(&s, &s.index, 10, &SearchParams::new().with("ef", 64));
        // The walk answered, not the graph search.
        assert_eq!(s.index.graph.stats().searches, before, "{metric:?}");
        assert!(r64 >= 0.9, "{metric:?}: recall@10 {r64} at ef 64");
        let wide = SearchParams::new().with("ef", 400).with("rerank", 400);
        let r400 = recall(&s, &s.index, 10, &wide);
        assert!(r400 >= 0.99, "{metric:?}: recall@10 {r400} at ef 400");
        // A narrow re-rank costs recall: the parameter is honoured.
        let narrow = SearchParams::new().with("ef", 64).with("rerank", 10);
        let r10 = recall(&s, &s.index, 10, &narrow);
        assert!(
            r10 < r64,
            "{metric:?}: rerank 10 {r10} vs every expanded node {r64}"
        );
    }
}

/// The re-rank rule changes what is scored, never the walk. By default every
/// expanded node is scored, the final beam among them, so each query's answer
/// is at least as close, rank by rank, as with any `rerank` (which scores only
/// the final beam's best estimates); and a wider `rerank` scores a superset of a
/// narrower one's nodes, so its answer is at least as close too.
#[test]
fn scoring_every_expanded_node_dominates_a_rerank() {
    for metric in [Metric::L2, Metric::Cosine] {
        let s = setup(3_000, 32, metric, QgParams::new().with_train_at(1_000));
        let mut scratch = SearchScratch::new();
        let mut answer = |p: &SearchParams, q: &[f32]| {
            let mut out = Vec::new();
            s.index
                .search(
                    &s.storage,
                    &SearchRequest::new(q, 10, p),
                    &mut scratch,
                    &mut out,
                )
                .unwrap();
            out
        };
        let dominates = |a: &[Neighbor], b: &[Neighbor]| {
            assert_eq!(a.len(), b.len(), "{metric:?}");
            for (x, y) in a.iter().zip(b) {
                assert!(x.distance <= y.distance, "{metric:?}: {x:?} vs {y:?}");
            }
        };
        let mut closer = 0;
        for q in s.queries.chunks_exact(32).take(100) {
            let all = answer(&SearchParams::new().with("ef", 48), q);
            let full = answer(&SearchParams::new().with("ef", 48).with("rerank", 48), q);
            let part = answer(&SearchParams::new().with("ef", 48).with("rerank", 12), q);
            dominates(&all, &full);
            dominates(&full, &part);
            closer += usize::from(full != part);
        }
        // The narrow rule misses neighbours: the test can tell the rules apart.
        assert!(closer > 0, "{metric:?}: no query answered closer");
    }
}

/// By default (every expanded node scored as the walk goes) and under a
/// `rerank` (the final beam's best estimates scored once it ends) alike, the
/// answer is `k` nodes at exact squared L2 distances, sorted.
#[test]
fn distances_are_exact_and_sorted() {
    let s = setup(2_000, 16, Metric::L2, QgParams::new().with_train_at(500));
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    let rerank = SearchParams::new().with("ef", 64).with("rerank", 20);
    for (q, p) in s
        .queries
        .chunks_exact(16)
        .take(20)
        .flat_map(|q| [(q, SearchParams::new()), (q, rerank.clone())])
    {
        search_into(&s, q, &p, &mut scratch, &mut out);
        assert_eq!(out.len(), 10);
        for w in out.windows(2) {
            assert!(w[0] <= w[1]);
        }
        for n in &out {
            let v = s.storage.get(n.slot).unwrap();
            let d: f32 = q.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
            assert!(
                (d - n.distance).abs() <= 1e-3 * d.max(1.0),
                "{d} vs {}",
                n.distance
            );
        }
    }
}

#[test]
fn untrained_answers_through_the_graph_then_trains_at_the_threshold() {
    let dim = 16;
    let data = mixture(1_200, dim, Metric::L2, 3);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(&data).unwrap();
    let index = QgIndex::new(dim, Metric::L2, QgParams::new().with_train_at(1_000)).unwrap();
    index.add(&storage, 0..600).unwrap();
    assert!(!index.is_trained());
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    let p = SearchParams::new();
    index
        .search(
            &storage,
            &SearchRequest::new(&data[..dim], 5, &p),
            &mut scratch,
            &mut out,
        )
        .unwrap();
    assert_eq!(out[0].slot, 0);
    assert_eq!(index.graph.stats().searches, 1, "answered by the graph");
    index.add(&storage, 600..1_200).unwrap();
    assert!(index.is_trained());
    // Every slot, including those added before training, is reachable on codes:
    // its own vector finds it.
    let p = SearchParams::new().with("ef", 32);
    for s in (0..1_200u32).step_by(37) {
        let q = storage.get(s).unwrap().to_vec();
        index
            .search(
                &storage,
                &SearchRequest::new(&q, 1, &p),
                &mut scratch,
                &mut out,
            )
            .unwrap();
        assert_eq!(out[0].slot, s);
    }
    assert_eq!(index.graph.stats().searches, 1, "the walk answered");
    let mem = index.memory_breakdown();
    assert!(mem.blocks >= 1_200 * layer::stride_for(16));
    // Codes are packed two to a byte, and their table is sized exactly.
    assert!(mem.codes >= 1_200 * 8 && mem.codes < 1_200 * 9, "{mem:?}");
    assert!(mem.graph > 0 && mem.codebooks == 16 * dim * 4);
    assert_blocks_code_their_lists(&index);
}

#[test]
fn explicit_training_then_adds_and_a_second_training_is_refused() {
    let dim = 8;
    let data = mixture(800, dim, Metric::L2, 5);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(&data).unwrap();
    let index = QgIndex::new(dim, Metric::L2, QgParams::new()).unwrap();
    let e = index.train(&storage, &data[..8 * dim]).unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
    assert!(!index.is_trained());
    index.train(&storage, &data[..400 * dim]).unwrap();
    assert!(index.is_trained());
    index.add(&storage, 0..500).unwrap();
    index.add(&storage, 500..800).unwrap();
    let e = index.train(&storage, &data[..400 * dim]).unwrap_err();
    assert!(e.to_string().contains("already trained"), "{e}");
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    let p = SearchParams::new();
    for s in [0u32, 499, 500, 799] {
        let q = storage.get(s).unwrap().to_vec();
        index
            .search(
                &storage,
                &SearchRequest::new(&q, 1, &p),
                &mut scratch,
                &mut out,
            )
            .unwrap();
        assert_eq!(out[0].slot, s);
    }
}

/// Every node's block codes its current layer-0 list lane by lane (the walk
/// reads the ids from the graph and the codes from the block, so a block left
/// stale by an add would mis-estimate its lanes).
fn assert_blocks_code_their_lists(index: &QgIndex) {
    let layer = read(&index.layer);
    let layer = layer.as_ref().expect("trained");
    let m = layer.m();
    let (mut ids, mut code) = (Vec::new(), vec![0u8; m]);
    let mut checked = 0;
    for u in 0..layer.blocks.slots() as u32 {
        if !index.graph.links(u, 0, &mut ids) {
            continue;
        }
        let block = layer
            .blocks
            .bytes(u)
            .unwrap_or_else(|| panic!("node {u} has no block"));
        assert!(
            !index.graph.view().is_changed(u),
            "node {u} still marked changed"
        );
        for (lane, &v) in ids.iter().enumerate().take(layer::DEGREE) {
            assert!(
                layer.code_into(v, &mut code),
                "node {u}'s neighbour {v} uncoded"
            );
            for (j, &c) in code.iter().enumerate() {
                assert_eq!(
                    fastscan::get_code(block, lane, j),
                    c,
                    "node {u}, lane {lane} (id {v}), sub-quantizer {j}: a stale block"
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn blocks_follow_every_list_an_add_or_a_repair_changes() {
    // Many small adds after training: each changes lists of older nodes
    // (back-links, re-pruned lists), which must be re-coded.
    let dim = 16;
    let data = mixture(3_000, dim, Metric::L2, 21);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(&data).unwrap();
    let index = QgIndex::new(dim, Metric::L2, QgParams::new().with_train_at(300)).unwrap();
    for from in (0..3_000u32).step_by(150) {
        index.add(&storage, from..from + 150).unwrap();
    }
    assert_blocks_code_their_lists(&index);
    // Removing a third and adding more runs a repair, which rewires lists.
    for slot in (0..3_000u32).step_by(3) {
        index.remove(slot).unwrap();
    }
    let more = mixture(600, dim, Metric::L2, 22);
    storage.append_batch(&more).unwrap();
    let before = index.graph.tombstones();
    index.add(&storage, 3_000..3_600).unwrap();
    assert!(index.graph.tombstones() < before, "the add ran a repair");
    assert_blocks_code_their_lists(&index);
    // And a reload rebuilds the same blocks.
    let back = QgIndex::from_bytes(&index.to_bytes(), Path::new("b.qg")).unwrap();
    assert_blocks_code_their_lists(&back);
}

#[test]
fn removed_slots_are_never_returned_and_k_still_come_back() {
    let s = setup(2_000, 16, Metric::L2, QgParams::new().with_train_at(500));
    for slot in (0..2_000u32).step_by(2) {
        s.index.remove(slot).unwrap();
        s.flat.remove(slot).unwrap();
    }
    assert_eq!(s.index.len(), 1_000);
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    // Both scoring rules: the walk's, and a rerank of the final beam (which
    // may hold removed nodes: the walk still passes through them).
    let rerank = SearchParams::new().with("ef", 32).with("rerank", 10);
    for p in [SearchParams::new(), rerank] {
        for q in s.queries.chunks_exact(16) {
            search_into(&s, q, &p, &mut scratch, &mut out);
            assert_eq!(out.len(), 10);
            assert!(out.iter().all(|n| n.slot % 2 == 1), "{out:?}");
        }
    }
    let r = recall(&s, &s.index, 10, &SearchParams::new().with("ef", 128));
    assert!(r >= 0.9, "recall after removing half: {r}");
    // Adding more after removals (a repair may run) keeps every block usable.
    let more = mixture(500, 16, Metric::L2, 11);
    let from = s.storage.len() as u32;
    s.storage.append_batch(&more).unwrap();
    s.index.add(&s.storage, from..from + 500).unwrap();
    let q = s.storage.get(from + 7).unwrap().to_vec();
    s.index
        .search(
            &s.storage,
            &SearchRequest::new(&q, 1, &SearchParams::new()),
            &mut scratch,
            &mut out,
        )
        .unwrap();
    assert_eq!(out[0].slot, from + 7);
}

#[test]
fn bad_parameters_are_refused_by_name() {
    let e = QgIndex::new(50, Metric::L2, QgParams::new().with_pq_m(7)).unwrap_err();
    assert!(e.to_string().contains("divisible"), "{e}");
    let e = QgIndex::new(50, Metric::L2, QgParams::new().with_train_at(3)).unwrap_err();
    assert!(e.to_string().contains("train_at"), "{e}");
    let e = QgParams::from_params(&Params::new().with("nlist", 4)).unwrap_err();
    assert!(e.to_string().contains("valid: m, ef_construction"), "{e}");
    assert_eq!(default_pq_m(50), 50);
    assert_eq!(default_pq_m(128), 128);
    assert_eq!(default_pq_m(256), 128);
    assert_eq!(default_pq_m(960), 120);
    assert_eq!(default_pq_m(100), 100);
    assert_eq!(default_pq_m(97), 97);
    assert_eq!(default_pq_m(262), 2);
    let p = QgParams::new().with_pq_m(25).with_ef_search(33);
    assert_eq!(QgParams::from_params(&p.to_params(50)).unwrap(), p);
    let s = setup(300, 8, Metric::L2, QgParams::new().with_train_at(100));
    for (bad, key) in [
        (SearchParams::new().with("nprobe", 3), "nprobe"),
        (SearchParams::new().with("ef", 0), "ef"),
        (SearchParams::new().with("rerank", 0), "rerank"),
    ] {
        let e = s.index.check_search_params(&bad).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
        let mut out = Vec::new();
        let e = s
            .index
            .search(
                &s.storage,
                &SearchRequest::new(&s.queries[..8], 3, &bad),
                &mut SearchScratch::new(),
                &mut out,
            )
            .unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    assert_eq!(QgSearch::default().resolve(10, 64), (64, None));
    assert_eq!(QgSearch::default().resolve(10, 384), (384, None));
    assert_eq!(QgSearch::default().resolve(500, 64), (500, None));
    let knobs =
        QgSearch::from_params(&SearchParams::new().with("ef", 5).with("rerank", 80)).unwrap();
    assert_eq!(knobs.resolve(10, 64), (80, Some(80)));
    let knobs = QgSearch::from_params(&SearchParams::new().with("rerank", 3)).unwrap();
    assert_eq!(knobs.resolve(10, 64), (64, Some(10)));
}

#[test]
fn a_saved_index_answers_as_before_and_damage_is_an_error_at_an_offset() {
    let s = setup(
        1_500,
        16,
        Metric::Cosine,
        QgParams::new().with_train_at(400),
    );
    s.index.remove(3).unwrap();
    let bytes = s.index.to_bytes();
    let file = Path::new("index.qg");
    let back = QgIndex::from_bytes(&bytes, file).unwrap();
    assert!(back.is_trained() && back.len() == s.index.len() && !back.contains(3));
    assert_eq!(back.build_params(), s.index.build_params());
    assert_eq!(back.to_bytes(), bytes, "a reload writes the same bytes");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut scratch = SearchScratch::new();
    let p = SearchParams::new().with("ef", 40);
    let before = back.graph.stats().build_distance_computations;
    for q in s.queries.chunks_exact(16) {
        let r = SearchRequest::new(q, 10, &p);
        s.index
            .search(&s.storage, &r, &mut scratch, &mut a)
            .unwrap();
        back.search(&s.storage, &r, &mut scratch, &mut b).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(
        back.graph.stats().build_distance_computations,
        before,
        "no rebuild"
    );
    // Every truncation and a flip of every byte: an error naming the file, never a
    // panic (the checksum catches the flips; the fuzz target reaches past it).
    for len in (0..bytes.len()).step_by(97) {
        let e = QgIndex::from_bytes(&bytes[..len], file).unwrap_err();
        assert!(matches!(e, Error::Corruption { .. }), "{len}: {e}");
    }
    for at in (0..bytes.len()).step_by(89) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x41;
        match QgIndex::from_bytes(&bad, file) {
            Err(Error::Corruption {
                file: f, offset, ..
            }) => {
                assert_eq!(f, file);
                assert!(offset <= bytes.len() as u64);
            }
            other => panic!("flip at {at}: {other:?}"),
        }
    }
    // An untrained index saves and loads too.
    let small = QgIndex::new(16, Metric::L2, QgParams::new()).unwrap();
    let st = MemoryStorage::new(16).unwrap();
    st.append_batch(&mixture(50, 16, Metric::L2, 1)).unwrap();
    small.add(&st, 0..50).unwrap();
    let back = QgIndex::from_bytes(&small.to_bytes(), file).unwrap();
    assert!(!back.is_trained() && back.len() == 50);
}

#[test]
fn fill_layer0_fills_every_block_and_is_saved() {
    let s = setup(
        1_200,
        16,
        Metric::L2,
        QgParams::new().with_train_at(400).with_fill_layer0(true),
    );
    let mut ids = Vec::new();
    for u in 0..1_200u32 {
        s.index.graph().links(u, 0, &mut ids);
        assert_eq!(ids.len(), 32, "node {u}: every block's 32 lanes are full");
    }
    let p = SearchParams::new().with("ef", 64);
    let r = recall(&s, &s.index, 10, &p);
    assert!(r > 0.9, "recall@10 {r}");
    let bytes = s.index.to_bytes();
    assert_eq!(bytes[17], 3, "flags: keep_pruned | fill_layer0");
    let file = Path::new("fill.qg");
    let back = QgIndex::from_bytes(&bytes, file).unwrap();
    assert!(back.params().fill_layer0);
    assert_eq!(back.to_bytes(), bytes);
    // A header that disagrees with its embedded graph is damage, as is an
    // unknown flag bit, even behind a valid checksum.
    let reseal = |mut b: Vec<u8>| {
        let end = b.len() - 4;
        let crc = omen_core::codec::crc32(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    for (flags, says) in [
        (1u8, "fill_layer0 true; the index says"),
        (7, "flags byte 0x07"),
    ] {
        let mut bad = bytes.clone();
        bad[17] = flags;
        match QgIndex::from_bytes(&reseal(bad), file) {
            Err(Error::Corruption { detail, .. }) => assert!(detail.contains(says), "{detail}"),
            other => panic!("flags {flags}: {other:?}"),
        }
    }
}

#[test]
fn searches_during_adds_find_every_finished_add() {
    let dim = 16;
    let n = 3_000;
    let data = mixture(n, dim, Metric::L2, 9);
    let storage = MemoryStorage::new(dim).unwrap();
    storage.append_batch(&data).unwrap();
    let index = QgIndex::new(dim, Metric::L2, QgParams::new().with_train_at(500)).unwrap();
    index.add(&storage, 0..500).unwrap();
    let done = std::sync::atomic::AtomicU32::new(500);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for start in (500..n as u32).step_by(250) {
                index.add(&storage, start..start + 250).unwrap();
                done.store(start + 250, std::sync::atomic::Ordering::Release);
            }
        });
        let mut scratch = SearchScratch::new();
        let mut out = Vec::new();
        let p = SearchParams::new().with("ef", 64);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        while done.load(std::sync::atomic::Ordering::Acquire) < n as u32 {
            let upto = done.load(std::sync::atomic::Ordering::Acquire);
            let s = rng.gen_range(0..upto);
            let q = storage.get(s).unwrap().to_vec();
            index
                .search(
                    &storage,
                    &SearchRequest::new(&q, 1, &p),
                    &mut scratch,
                    &mut out,
                )
                .unwrap();
            // Its own vector (distance 0) is found once its add returned.
            assert_eq!(out[0].distance, 0.0, "slot {s} of {upto}");
        }
    });
    assert_eq!(index.len(), n);
}

/// The batch path interleaves walks; each answer must be the one a single search
/// gives, whatever the pool size, the number of queries (fewer than, and many
/// times, the interleaved walks), removals, filters and ef.
#[test]
fn batch_answers_equal_single_searches() {
    let s = setup(3_000, 16, Metric::L2, QgParams::new().with_train_at(500));
    for slot in (0..3_000u32).step_by(7) {
        s.index.remove(slot).unwrap();
    }
    let dim = 16;
    let nq = s.queries.len() / dim;
    assert!(nq > 8 * WALKS);
    let odd = omen_core::SlotBitmap::from_slots((0..3_000u32).filter(|x| x % 2 == 1));
    let mut scratch = SearchScratch::new();
    let mut one = Vec::new();
    for (ef, k) in [(16usize, 10usize), (64, 10), (200, 1), (32, 40)] {
        let p = SearchParams::new().with("ef", ef);
        for filter in [None, Some(&odd as &dyn SlotFilter)] {
            for &n in &[1usize, WALKS - 1, WALKS + 1, nq] {
                let qs = &s.queries[..n * dim];
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut batch = Vec::new();
                    pool.install(|| {
                        s.index
                            .search_batch(&s.storage, qs, k, &p, filter, &mut batch)
                    })
                    .unwrap();
                    assert_eq!(batch.len(), n);
                    for (i, q) in qs.chunks_exact(dim).enumerate() {
                        let mut req = SearchRequest::new(q, k, &p);
                        req.filter = filter;
                        s.index
                            .search(&s.storage, &req, &mut scratch, &mut one)
                            .unwrap();
                        assert_eq!(batch[i], one, "ef {ef} k {k} n {n} query {i}");
                        assert!(batch[i].iter().all(|x| x.slot % 7 != 0));
                    }
                }
            }
        }
    }
}
