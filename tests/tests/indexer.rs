//! Indexing behind writes: opening does no index work, every search is exact
//! over the unindexed tail and sees each live id once at every indexed mark, the
//! tail bound holds writers back, and a crash mid-indexing loses nothing.

use omen::{
    Collection, CollectionConfig, DurableOptions, IndexSpec, IndexingMode, Metric, SearchParams,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

const DIM: usize = 8;

fn hnsw() -> IndexSpec {
    omen_hnsw::HnswParams::default().into()
}

fn ivfpq() -> IndexSpec {
    omen_ivfpq::IvfPqParams::new(16, 4)
        .with_train_size(2_000)
        .into()
}

fn rows(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n * DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn names(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("id-{i}")).collect()
}

/// The exact `k` nearest ids of `q` in `state` (squared L2, ties by id order
/// are not checked: the data is random).
fn exact(state: &BTreeMap<String, Vec<f32>>, q: &[f32], k: usize) -> Vec<String> {
    let mut d: Vec<(f32, &String)> = state
        .iter()
        .map(|(id, v)| (v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), id))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    d.into_iter().take(k).map(|(_, id)| id.clone()).collect()
}

/// Every query's ids equal the exact answer, with no id twice.
fn check_exact(c: &Collection, state: &BTreeMap<String, Vec<f32>>, queries: &[f32], ctx: &str) {
    let params = SearchParams::exhaustive();
    for (i, q) in queries.chunks_exact(DIM).enumerate() {
        let hits = c
            .search_with(q, 10, &params)
            .unwrap_or_else(|e| panic!("{ctx}: search: {e}"));
        let got: Vec<String> = hits.iter().map(|h| h.0.to_string()).collect();
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            got.len(),
            "{ctx}: query {i}: an id twice: {got:?}"
        );
        assert_eq!(got, exact(state, q, 10), "{ctx}: query {i}");
    }
    let batch = c
        .search_batch_with(queries, 10, &params)
        .unwrap_or_else(|e| panic!("{ctx}: batch search: {e}"));
    for (i, (hits, q)) in batch.iter().zip(queries.chunks_exact(DIM)).enumerate() {
        let got: Vec<String> = hits.iter().map(|h| h.0.to_string()).collect();
        assert_eq!(got, exact(state, q, 10), "{ctx}: batch query {i}");
    }
}

/// Opening a collection whose log holds 100,000 unindexed vectors does no index
/// distance computation; searches are exact at once; the indexer then catches up
/// and the collection verifies.
#[test]
fn open_with_a_large_log_does_no_index_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(DIM, Metric::L2).index(hnsw());
    let manual = || DurableOptions::default().indexing(IndexingMode::Manual);
    let mut rng = StdRng::seed_from_u64(11);
    let mut state = BTreeMap::new();
    {
        let c = Collection::create(&dir, &cfg, manual()).unwrap();
        // A few indexed rows in a checkpoint, then 100,000 rows in the log.
        let v = rows(&mut rng, 1_000);
        let ids = names(0, 1_000);
        c.insert_batch(&ids, &v).unwrap();
        for (id, r) in ids.iter().zip(v.chunks_exact(DIM)) {
            state.insert(id.clone(), r.to_vec());
        }
        c.wait_indexed().unwrap();
        c.checkpoint().unwrap();
        for chunk in 0..100 {
            let v = rows(&mut rng, 1_000);
            let ids = names(1_000 + chunk * 1_000, 1_000);
            c.insert_batch(&ids, &v).unwrap();
            for (id, r) in ids.iter().zip(v.chunks_exact(DIM)) {
                state.insert(id.clone(), r.to_vec());
            }
        }
        // Some tail rows replaced and deleted, and some indexed ones.
        for i in [5usize, 700, 5_000, 77_000] {
            let id = format!("id-{i}");
            let v = rows(&mut rng, 1);
            c.upsert(&id, &v).unwrap();
            state.insert(id, v);
        }
        for i in [6usize, 701, 5_001, 77_001] {
            let id = format!("id-{i}");
            c.delete(&id).unwrap();
            state.remove(&id);
        }
        assert_eq!(c.unindexed_rows(), 100_004);
        drop(c); // not closed: close would checkpoint
    }
    let c = Collection::open(&dir, manual()).unwrap();
    let info = c.recovery_info().unwrap().clone();
    assert_eq!(info.replayed_records, 108);
    assert_eq!(info.unindexed_rows, 100_004);
    assert_eq!(
        c.stats().index.build_distance_computations,
        0,
        "open computed index distances"
    );
    // Every acknowledged write is there.
    let live: BTreeMap<String, Vec<f32>> = c.live_entries().into_iter().collect();
    assert_eq!(live, state);
    assert_eq!(state.len(), 101_000 - 4);
    let queries = rows(&mut rng, 20);
    check_exact(&c, &state, &queries, "after open, nothing indexed");
    assert_eq!(c.stats().index.build_distance_computations, 0);
    c.verify().unwrap();
    // Part indexed: still exact, each id once.
    c.index_pending(50_000).unwrap();
    assert_eq!(c.unindexed_rows(), 50_004);
    check_exact(&c, &state, &queries, "half indexed");
    c.verify().unwrap();
    c.wait_indexed().unwrap();
    assert_eq!(c.unindexed_rows(), 0);
    assert!(c.stats().index.build_distance_computations > 0);
    check_exact(&c, &state, &queries, "all indexed");
    c.verify().unwrap();
    // Saved: the next open has nothing to index.
    c.close().unwrap();
    let c = Collection::open(&dir, manual()).unwrap();
    assert_eq!(c.recovery_info().unwrap().unindexed_rows, 0);
    assert_eq!(c.recovery_info().unwrap().replayed_records, 0);
    check_exact(&c, &state, &queries, "reopened");
}

/// At every indexed mark, for every index kind, searches are exact and see each
/// live id once; upserts and deletes on both sides of the mark apply at once.
#[test]
fn each_live_id_is_seen_once_at_every_indexed_mark() {
    for kind in [IndexSpec::from(&omen::FLAT), hnsw(), ivfpq()] {
        let ctx0 = kind.name();
        let c = CollectionConfig::new(DIM, Metric::L2)
            .index(kind.clone())
            .indexing(IndexingMode::Manual)
            .build()
            .unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut state = BTreeMap::new();
        let v = rows(&mut rng, 4_000);
        let ids = names(0, 4_000);
        c.insert_batch(&ids, &v).unwrap();
        for (id, r) in ids.iter().zip(v.chunks_exact(DIM)) {
            state.insert(id.clone(), r.to_vec());
        }
        let queries = rows(&mut rng, 8);
        let mut step = 0;
        loop {
            check_exact(&c, &state, &queries, &format!("{ctx0} step {step}"));
            // Writes on both sides of the mark between steps.
            let i = rng.gen_range(0..4_000);
            let id = format!("id-{i}");
            if let std::collections::btree_map::Entry::Occupied(mut e) = state.entry(id.clone()) {
                if step % 2 == 0 {
                    c.delete(&id).unwrap();
                    e.remove();
                } else {
                    let v = rows(&mut rng, 1);
                    c.upsert(&id, &v).unwrap();
                    e.insert(v);
                }
            }
            step += 1;
            if c.index_pending(700).unwrap() == 0 {
                break;
            }
        }
        check_exact(&c, &state, &queries, &format!("{ctx0} done"));
        assert_eq!(c.unindexed_rows(), 0, "{ctx0}");
        assert_eq!(c.stats().len, state.len(), "{ctx0}");
        c.verify().unwrap();
    }
}

/// With the background indexer running, searches racing it are exact and see
/// each live id once (the state is fixed while they run).
#[test]
fn searches_racing_the_background_indexer_are_exact() {
    let c = CollectionConfig::new(DIM, Metric::L2)
        .index(hnsw())
        .indexing(IndexingMode::Manual)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let v = rows(&mut rng, 20_000);
    let ids = names(0, 20_000);
    c.insert_batch(&ids, &v).unwrap();
    let state: BTreeMap<String, Vec<f32>> = c.live_entries().into_iter().collect();
    let queries = rows(&mut rng, 4);
    std::thread::scope(|s| {
        s.spawn(|| while c.index_pending(512).unwrap() > 0 {});
        let mut rounds = 0;
        while c.unindexed_rows() > 0 || rounds < 3 {
            check_exact(&c, &state, &queries, &format!("round {rounds}"));
            rounds += 1;
        }
    });
    c.verify().unwrap();
}

/// Writers wait while the tail is at its bound: after every write the tail is
/// within it, and every row is indexed once `wait_indexed` returns.
#[test]
fn the_tail_bound_holds_writers_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(DIM, Metric::L2).index(hnsw());
    let opts = DurableOptions::default().indexing(IndexingMode::Background { max_tail: 1_000 });
    let c = Collection::create(&dir, &cfg, opts).unwrap();
    assert_eq!(
        c.indexing_mode(),
        IndexingMode::Background { max_tail: 1_000 }
    );
    let mut rng = StdRng::seed_from_u64(9);
    for b in 0..40 {
        let v = rows(&mut rng, 250);
        c.insert_batch(&names(b * 250, 250), &v).unwrap();
        let tail = c.unindexed_rows();
        assert!(
            tail <= 1_000,
            "batch {b}: {tail} rows unindexed, bound 1,000"
        );
    }
    c.wait_indexed().unwrap();
    assert_eq!(c.unindexed_rows(), 0);
    assert_eq!(c.len(), 10_000);
    c.verify().unwrap();
    c.close().unwrap();
    let c = Collection::open(&dir, DurableOptions::default()).unwrap();
    assert_eq!(c.recovery_info().unwrap().unindexed_rows, 0);
    assert_eq!(c.len(), 10_000);
}

/// A read-only open writes nothing (a torn log tail stays as it is), and every
/// write is refused.
#[test]
fn read_only_open_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(DIM, Metric::L2).index(hnsw());
    let mut rng = StdRng::seed_from_u64(13);
    {
        let c = Collection::create(&dir, &cfg, DurableOptions::default()).unwrap();
        c.insert_batch(&names(0, 500), &rows(&mut rng, 500))
            .unwrap();
        drop(c);
    }
    // A torn tail: half a record of garbage at the end of the log.
    let wal = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
        f.write_all(&[0xAB; 37]).unwrap();
    }
    let listing = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let bytes = if p.is_file() {
                    std::fs::read(&p).unwrap()
                } else {
                    Vec::new()
                };
                (name, bytes)
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(&dir);
    let c = Collection::open(&dir, DurableOptions::default().read_only(true)).unwrap();
    assert_eq!(c.len(), 500);
    assert!(c.recovery_info().unwrap().read_only);
    assert_eq!(c.recovery_info().unwrap().truncated_bytes, 37);
    assert_eq!(c.search(&[0.0; DIM], 3).unwrap().len(), 3);
    let e = c.insert("x", &[0.0; DIM]).unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert!(c.delete("id-1").is_err());
    assert!(c
        .checkpoint()
        .unwrap_err()
        .to_string()
        .contains("read-only"));
    c.verify().unwrap();
    c.close().unwrap();
    assert_eq!(
        listing(&dir),
        before,
        "a read-only open changed the directory"
    );
}

/// Rows a reopened collection finds unindexed are recovery's debt, not the
/// writers' backlog: a write after a crash is admitted at once, whatever the
/// bound (a crash loop must make progress), and only rows written since the open
/// count against `max_tail`.
#[test]
fn rows_unindexed_at_open_do_not_hold_writers_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(DIM, Metric::L2).index(hnsw());
    let mut rng = StdRng::seed_from_u64(17);
    {
        let c = Collection::create(
            &dir,
            &cfg,
            DurableOptions::default().indexing(IndexingMode::Manual),
        )
        .unwrap();
        c.insert_batch(&names(0, 50_000), &rows(&mut rng, 50_000))
            .unwrap();
        drop(c); // a crash: 50,000 rows in the log, none indexed
    }
    let bound = IndexingMode::Background { max_tail: 100 };
    let c = Collection::open(&dir, DurableOptions::default().indexing(bound)).unwrap();
    assert_eq!(c.recovery_info().unwrap().unindexed_rows, 50_000);
    c.insert_batch(&names(50_000, 50), &rows(&mut rng, 50))
        .unwrap();
    // Admitted without waiting for the 50,000 recovered rows to be indexed (an
    // HNSW build of seconds): had it waited for the bound, at most 150 rows
    // would be unindexed now.
    assert!(c.unindexed_rows() > 10_000, "{}", c.unindexed_rows());
    c.wait_indexed().unwrap();
    assert_eq!(c.len(), 50_050);
    c.verify().unwrap();
}
