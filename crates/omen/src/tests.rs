//! Unit tests of the collection: every bad input leaves it unchanged, upsert and
//! delete semantics, cosine normalisation, concurrency.

use crate::*;
use omen_core::{Neighbor, SearchRequest, SearchScratch, SearchStats, SlotId};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn coll(dim: usize, metric: Metric) -> Collection {
    CollectionConfig::new(dim, metric).build().unwrap()
}

/// A collection of 3-d vectors with five ids.
fn filled(metric: Metric) -> Collection {
    let c = coll(3, metric);
    for i in 0..5 {
        let f = i as f32;
        c.insert(&format!("v{i}"), &[f + 1.0, 2.0 - f, 0.5 * f])
            .unwrap();
    }
    c
}

/// Everything observable about a collection, to compare before and after a failed op.
#[derive(Debug, PartialEq)]
struct Snapshot {
    len: usize,
    slots: usize,
    tombstones: usize,
    vectors: Vec<(String, Option<Vec<f32>>)>,
    search: Vec<crate::Hit>,
}

fn snapshot(c: &Collection) -> Snapshot {
    let names = ["v0", "v1", "v2", "v3", "v4", "new", "x", "y"];
    let st = c.stats();
    Snapshot {
        len: c.len(),
        slots: st.storage_slots,
        tombstones: st.tombstones,
        vectors: names.iter().map(|n| (n.to_string(), c.get(n))).collect(),
        search: c.search(&[0.3, 0.2, 0.1], 100).unwrap(),
    }
}

/// Runs `op` on a filled collection of every metric and checks that it fails with
/// an error `is_expected` accepts and changes nothing.
fn assert_rejected(op: impl Fn(&Collection) -> Result<()>, is_expected: impl Fn(&Error) -> bool) {
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let c = filled(metric);
        let before = snapshot(&c);
        match op(&c) {
            Ok(()) => panic!("{metric}: expected an error, got Ok"),
            Err(e) => assert!(is_expected(&e), "{metric}: unexpected error {e:?}"),
        }
        assert_eq!(
            snapshot(&c),
            before,
            "{metric}: a failed op changed the collection"
        );
    }
}

#[test]
fn wrong_dimension_is_rejected() {
    let dm = |e: &Error| {
        matches!(
            e,
            Error::DimensionMismatch {
                expected: 3,
                got: 2
            }
        )
    };
    assert_rejected(|c| c.insert("new", &[1.0, 2.0]), dm);
    assert_rejected(|c| c.upsert("v1", &[1.0, 2.0]), dm);
    assert_rejected(|c| c.upsert("new", &[1.0, 2.0]), dm);
    assert_rejected(
        |c| c.insert("new", &[1.0, 2.0, 3.0, 4.0]),
        |e| {
            matches!(
                e,
                Error::DimensionMismatch {
                    expected: 3,
                    got: 4
                }
            )
        },
    );
    // 7 floats is not a whole number of 3-wide rows.
    assert_rejected(
        |c| c.insert_batch(&["x", "y"], &[1.0; 7]),
        |e| {
            matches!(
                e,
                Error::DimensionMismatch {
                    expected: 3,
                    got: 1
                }
            )
        },
    );
    assert_rejected(
        |c| c.insert_batch(&["x", "y"], &[1.0; 9]),
        |e| matches!(e, Error::InvalidParameter { name: "ids", .. }),
    );
}

#[test]
fn non_finite_values_are_rejected() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let nf = move |e: &Error| {
            matches!(
                e,
                Error::NonFinite {
                    row: 0,
                    component: 2,
                    ..
                }
            )
        };
        assert_rejected(move |c| c.insert("new", &[1.0, 2.0, bad]), nf);
        assert_rejected(move |c| c.upsert("v2", &[1.0, 2.0, bad]), nf);
        assert_rejected(
            move |c| c.insert_batch(&["x", "y"], &[1.0, 1.0, 1.0, 0.0, bad, 0.0]),
            |e| {
                matches!(
                    e,
                    Error::NonFinite {
                        row: 1,
                        component: 1,
                        ..
                    }
                )
            },
        );
    }
}

#[test]
fn zero_vector_is_rejected_under_cosine_only() {
    let c = filled(Metric::Cosine);
    let before = snapshot(&c);
    assert!(matches!(
        c.insert("new", &[0.0; 3]),
        Err(Error::ZeroVector { row: 0 })
    ));
    assert!(matches!(
        c.upsert("v0", &[0.0; 3]),
        Err(Error::ZeroVector { row: 0 })
    ));
    assert!(matches!(
        c.insert_batch(&["x", "y"], &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        Err(Error::ZeroVector { row: 1 })
    ));
    assert!(matches!(
        c.search(&[0.0; 3], 1),
        Err(Error::ZeroVector { row: 0 })
    ));
    assert_eq!(snapshot(&c), before);
    // Under L2 a zero vector is an ordinary point.
    let c = filled(Metric::L2);
    c.insert("new", &[0.0; 3]).unwrap();
    assert_eq!(
        c.search(&[0.0; 3], 1).unwrap()[0],
        (Arc::<str>::from("new"), 0.0)
    );
}

#[test]
fn huge_norms_are_rejected_under_l2_and_ip() {
    let huge = 1e20f32;
    for metric in [Metric::L2, Metric::InnerProduct] {
        let c = filled(metric);
        let before = snapshot(&c);
        for r in [
            c.insert("new", &[huge, 0.0, 0.0]),
            c.upsert("v1", &[0.0, huge, 0.0]),
            c.insert_batch(&["x", "y"], &[1.0, 1.0, 1.0, 0.0, 0.0, huge]),
        ] {
            assert!(
                matches!(r, Err(Error::InvalidParameter { name: "vector", .. })),
                "{metric}: {r:?}"
            );
        }
        assert!(matches!(
            c.search(&[huge, 0.0, 0.0], 1),
            Err(Error::InvalidParameter { name: "vector", .. })
        ));
        assert_eq!(snapshot(&c), before);
        // Just under the bound is accepted and every distance stays finite.
        let big = (MAX_SQUARED_NORM / 2.0).sqrt() as f32;
        c.insert("x", &[big, big, 0.0]).unwrap();
        c.insert("y", &[-big, 0.0, big]).unwrap();
        for (_, d) in c.search(&[-big, -big, 0.0], 10).unwrap() {
            assert!(d.is_finite(), "{metric}: distance {d}");
        }
    }
    // Cosine normalises in f64 instead, so large vectors are fine.
    let c = filled(Metric::Cosine);
    c.insert("new", &[huge, huge, 0.0]).unwrap();
    assert_eq!(c.search(&[1.0, 1.0, 0.0], 1).unwrap()[0].0, "new".into());
}

#[test]
fn bad_ids_are_rejected() {
    let long = "x".repeat(MAX_ID_LEN + 1);
    let invalid = |e: &Error| matches!(e, Error::InvalidId { .. });
    for id in ["", "a\0b", long.as_str()] {
        let id = id.to_string();
        let id2 = id.clone();
        let id3 = id.clone();
        let id4 = id.clone();
        assert_rejected(move |c| c.insert(&id, &[1.0, 2.0, 3.0]), invalid);
        assert_rejected(move |c| c.upsert(&id2, &[1.0, 2.0, 3.0]), invalid);
        assert_rejected(move |c| c.delete(&id3), invalid);
        assert_rejected(
            move |c| c.insert_batch(&["x".to_string(), id4.clone()], &[1.0; 6]),
            invalid,
        );
    }
    // The limit itself is accepted, counted in bytes.
    let c = coll(1, Metric::L2);
    c.insert(&"é".repeat(MAX_ID_LEN / 2), &[1.0]).unwrap();
    assert!(matches!(
        c.insert(&format!("{}e", "é".repeat(MAX_ID_LEN / 2)), &[1.0]),
        Err(Error::InvalidId { .. })
    ));
}

#[test]
fn duplicate_ids_are_rejected() {
    let dup =
        |want: &'static str| move |e: &Error| matches!(e, Error::DuplicateId { id } if id == want);
    assert_rejected(|c| c.insert("v3", &[1.0, 2.0, 3.0]), dup("v3"));
    assert_rejected(|c| c.insert_batch(&["x", "v0"], &[1.0; 6]), dup("v0"));
    assert_rejected(|c| c.insert_batch(&["x", "y", "x"], &[1.0; 9]), dup("x"));
}

#[test]
fn unknown_delete_and_bad_k_are_rejected() {
    assert_rejected(
        |c| c.delete("nope"),
        |e| matches!(e, Error::UnknownId { id } if id == "nope"),
    );
    let k0 = |e: &Error| matches!(e, Error::InvalidParameter { name: "k", .. });
    assert_rejected(|c| c.search(&[1.0, 0.0, 0.0], 0).map(drop), k0);
    assert_rejected(
        |c| {
            c.search_batch_with(&[1.0, 0.0, 0.0], 0, &SearchParams::default())
                .map(drop)
        },
        k0,
    );
    assert_rejected(
        |c| {
            c.search_filtered(&[1.0, 0.0, 0.0], 0, &SearchParams::default(), |_| true)
                .map(drop)
        },
        k0,
    );
    assert_rejected(
        |c| c.search(&[1.0, 0.0], 1).map(drop),
        |e| {
            matches!(
                e,
                Error::DimensionMismatch {
                    expected: 3,
                    got: 2
                }
            )
        },
    );
    assert_rejected(
        |c| c.search(&[1.0, f32::NAN, 0.0], 1).map(drop),
        |e| matches!(e, Error::NonFinite { component: 1, .. }),
    );
    assert_rejected(
        |c| {
            c.search_batch_with(
                &[1.0, 0.0, 0.0, 1.0, f32::NAN, 0.0],
                1,
                &SearchParams::default(),
            )
            .map(drop)
        },
        |e| {
            matches!(
                e,
                Error::NonFinite {
                    row: 1,
                    component: 1,
                    ..
                }
            )
        },
    );
    assert_rejected(
        |c| {
            c.search_with(&[1.0, 0.0, 0.0], 1, &SearchParams::new().with("ef", 0))
                .map(drop)
        },
        // The flat index takes no knobs: `ef` is refused by name, not ignored.
        |e| matches!(e, Error::InvalidParameter { name: "params", reason } if reason.contains("\"ef\"")),
    );
}

#[test]
fn a_bad_row_rejects_the_whole_batch() {
    let c = coll(2, Metric::L2);
    let r = c.insert_batch(&["a", "b", "c"], &[1.0, 1.0, 2.0, 2.0, 3.0, f32::NAN]);
    assert!(matches!(r, Err(Error::NonFinite { row: 2, .. })));
    assert!(c.is_empty());
    assert_eq!(c.stats().storage_slots, 0);
    assert!(c.get("a").is_none());
    assert!(c.search(&[1.0, 1.0], 5).unwrap().is_empty());
    c.insert_batch(&["a", "b", "c"], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
        .unwrap();
    assert_eq!(c.len(), 3);
    // An empty batch is a no-op, not an error.
    c.insert_batch::<&str>(&[], &[]).unwrap();
    assert_eq!(c.len(), 3);
}

#[test]
fn upsert_replaces_and_tombstones_the_old_slot() {
    let c = coll(2, Metric::L2);
    c.upsert("a", &[0.0, 0.0]).unwrap(); // an upsert of a new id inserts it
    c.insert("b", &[10.0, 10.0]).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c.stats().tombstones, 0);
    c.upsert("a", &[9.0, 9.0]).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c.get("a"), Some(vec![9.0, 9.0]));
    let st = c.stats();
    assert_eq!((st.storage_slots, st.tombstones), (3, 1));
    // The old vector is gone from search; the new one is found.
    let hits = c.search(&[0.0, 0.0], 10).unwrap();
    assert_eq!(
        hits,
        vec![
            (Arc::<str>::from("a"), 162.0),
            (Arc::<str>::from("b"), 200.0)
        ]
    );
    // Insert still refuses the id.
    assert!(matches!(
        c.insert("a", &[1.0, 1.0]),
        Err(Error::DuplicateId { .. })
    ));
}

#[test]
fn delete_then_reinsert_the_same_id() {
    let c = coll(2, Metric::L2);
    c.insert("a", &[1.0, 0.0]).unwrap();
    c.insert("b", &[0.0, 1.0]).unwrap();
    c.delete("a").unwrap();
    assert!(!c.contains("a"));
    assert_eq!(c.get("a"), None);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c.search(&[1.0, 0.0], 5).unwrap(),
        vec![(Arc::<str>::from("b"), 2.0)]
    );
    assert!(matches!(c.delete("a"), Err(Error::UnknownId { .. })));
    c.insert("a", &[5.0, 5.0]).unwrap();
    assert_eq!(c.get("a"), Some(vec![5.0, 5.0]));
    assert_eq!(
        c.search(&[5.0, 5.0], 1).unwrap(),
        vec![(Arc::<str>::from("a"), 0.0)]
    );
    let st = c.stats();
    assert_eq!((st.len, st.storage_slots, st.tombstones), (2, 3, 1));
}

#[test]
fn cosine_normalises_vectors_and_queries() {
    let c = coll(2, Metric::Cosine);
    c.insert("a", &[3.0, 4.0]).unwrap();
    c.insert("b", &[-10.0, 0.0]).unwrap();
    let a = c.get("a").unwrap();
    assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.8).abs() < 1e-6);
    // Scaling the query changes nothing; distances are cosine distances.
    for scale in [1e-3f32, 1.0, 1e6] {
        let hits = c.search(&[0.0, scale], 2).unwrap();
        assert_eq!(hits[0].0, "a".into());
        assert!((hits[0].1 - 0.2).abs() < 1e-6, "{hits:?}");
        assert_eq!(hits[1].0, "b".into());
        assert!((hits[1].1 - 1.0).abs() < 1e-6, "{hits:?}");
    }
    let hits = c.search(&[6.0, 8.0], 1).unwrap();
    assert!(hits[0].1.abs() < 1e-6);
}

#[test]
fn k_larger_than_the_collection_returns_everything_sorted() {
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let c = filled(metric);
        let hits = c.search(&[1.0, 1.0, 1.0], 1000).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].1 <= w[1].1), "{hits:?}");
        let mut ids: Vec<_> = hits.iter().map(|h| h.0.to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["v0", "v1", "v2", "v3", "v4"]);
    }
    assert!(coll(3, Metric::L2)
        .search(&[1.0; 3], 10)
        .unwrap()
        .is_empty());
}

#[test]
fn distances_follow_the_metric_convention() {
    let c = coll(2, Metric::InnerProduct);
    c.insert("a", &[1.0, 2.0]).unwrap();
    c.insert("b", &[3.0, -1.0]).unwrap();
    // 1 - q·v: q = (1, 1) gives 1 - 3 = -2 for a and 1 - 2 = -1 for b.
    assert_eq!(
        c.search(&[1.0, 1.0], 2).unwrap(),
        vec![(Arc::<str>::from("a"), -2.0), (Arc::<str>::from("b"), -1.0)]
    );
}

#[test]
fn batch_search_matches_single_searches() {
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        let c = filled(metric);
        c.delete("v2").unwrap();
        c.upsert("v3", &[-1.0, 0.5, 2.0]).unwrap();
        let queries = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, -2.0, 0.5, 0.25];
        let batch = c
            .search_batch_with(&queries, 3, &SearchParams::default())
            .unwrap();
        assert_eq!(batch.len(), 3);
        // The batched path may use a tiled kernel that sums in another order:
        // same ids (the data has no near-ties), distances within rounding.
        for (q, got) in queries.chunks(3).zip(&batch) {
            let want = c.search(q, 3).unwrap();
            assert_eq!(got.len(), want.len(), "{metric}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0, "{metric}: {got:?} vs {want:?}");
                assert!(
                    (g.1 - w.1).abs() <= 1e-5 * (1.0 + w.1.abs()),
                    "{metric}: {got:?} vs {want:?}"
                );
            }
        }
        assert!(c
            .search_batch_with(&[], 3, &SearchParams::default())
            .unwrap()
            .is_empty());
    }
}

#[test]
fn filtered_search_returns_k_passing_ids() {
    let c = filled(Metric::L2);
    c.delete("v0").unwrap();
    let even = |id: &str| id.ends_with(['0', '2', '4']);
    let hits = c
        .search_filtered(&[1.0, 2.0, 0.0], 2, &SearchParams::default(), even)
        .unwrap();
    let ids: Vec<_> = hits.iter().map(|h| &*h.0).collect();
    assert_eq!(ids, ["v2", "v4"]);
    let all: Vec<_> = c
        .search(&[1.0, 2.0, 0.0], 10)
        .unwrap()
        .into_iter()
        .filter(|(id, _)| even(id))
        .collect();
    assert_eq!(hits, all);
}

#[test]
fn stats_count_slots_tombstones_and_memory() {
    let c = filled(Metric::L2);
    c.delete("v1").unwrap();
    c.upsert("v2", &[0.0, 0.0, 1.0]).unwrap();
    c.search(&[0.0; 3], 2).unwrap();
    let st = c.stats();
    assert_eq!((st.len, st.storage_slots, st.tombstones), (4, 6, 2));
    assert!(st.storage_memory_bytes >= 6 * 3 * 4, "{st:?}");
    assert!(st.id_map_memory_bytes > 0);
    assert!(st.index.searches >= 1, "{st:?}");
    assert_eq!(c.isa(), isa());
    assert_eq!(c.index_name(), "flat");
    assert_eq!(c.storage_name(), "memory");
}

#[test]
fn config_and_backends_are_checked() {
    assert!(matches!(
        CollectionConfig::new(0, Metric::L2).build(),
        Err(Error::InvalidParameter { name: "dim", .. })
    ));
    let storage = || Box::new(omen_storage::MemoryStorage::new(3).unwrap());
    let flat = |d, m| Box::new(omen_flat::FlatIndex::new(d, m).unwrap());
    assert!(Collection::with_backends(3, Metric::L2, storage(), flat(3, Metric::L2)).is_ok());
    assert!(
        Collection::with_backends(3, Metric::Cosine, storage(), flat(3, Metric::InnerProduct))
            .is_ok()
    );
    assert!(Collection::with_backends(3, Metric::L2, storage(), flat(4, Metric::L2)).is_err());
    assert!(Collection::with_backends(3, Metric::L2, storage(), flat(3, Metric::Cosine)).is_err());
    assert!(Collection::with_backends(4, Metric::L2, storage(), flat(4, Metric::L2)).is_err());
    let used = storage();
    used.append(&[1.0, 2.0, 3.0]).unwrap();
    assert!(matches!(
        Collection::with_backends(3, Metric::L2, used, flat(3, Metric::L2)),
        Err(Error::InvalidParameter {
            name: "backends",
            ..
        })
    ));
}

/// An index decorator whose `add` fails on demand.
struct FailingIndex {
    inner: Box<dyn VectorIndex>,
    fail: Arc<AtomicBool>,
}

impl VectorIndex for FailingIndex {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn metric(&self) -> Metric {
        self.inner.metric()
    }
    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::CapacityExceeded {
                what: "injected".into(),
            });
        }
        self.inner.add(storage, slots)
    }
    fn remove(&self, slot: SlotId) -> Result<()> {
        self.inner.remove(slot)
    }
    fn contains(&self, slot: SlotId) -> bool {
        self.inner.contains(slot)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn check_search_params(&self, params: &SearchParams) -> Result<()> {
        self.inner.check_search_params(params)
    }
    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.inner.search_unchecked(storage, req, scratch, out)
    }
    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
    fn stats(&self) -> IndexStats {
        self.inner.stats()
    }
}

#[test]
fn a_failed_index_add_leaves_ids_unchanged() {
    let fail = Arc::new(AtomicBool::new(false));
    let failing = Box::new(FailingIndex {
        inner: Box::new(omen_flat::FlatIndex::new(2, Metric::L2).unwrap()),
        fail: Arc::clone(&fail),
    });
    let c = Collection::with_backends(
        2,
        Metric::L2,
        Box::new(omen_storage::MemoryStorage::new(2).unwrap()),
        failing,
    )
    .unwrap();
    c.insert("a", &[1.0, 1.0]).unwrap();
    fail.store(true, Ordering::SeqCst);
    for r in [
        c.insert("b", &[2.0, 2.0]),
        c.insert_batch(&["c", "d"], &[3.0, 3.0, 4.0, 4.0]),
        c.upsert("a", &[5.0, 5.0]),
        c.upsert("e", &[5.0, 5.0]),
    ] {
        assert!(matches!(r, Err(Error::CapacityExceeded { .. })), "{r:?}");
    }
    assert_eq!(c.len(), 1);
    assert_eq!(c.get("a"), Some(vec![1.0, 1.0]));
    for id in ["b", "c", "d", "e"] {
        assert!(!c.contains(id));
    }
    assert_eq!(
        c.search(&[0.0, 0.0], 10).unwrap(),
        vec![(Arc::<str>::from("a"), 2.0)]
    );
    fail.store(false, Ordering::SeqCst);
    c.insert("b", &[2.0, 2.0]).unwrap();
    assert_eq!(c.len(), 2);
}

#[test]
fn searches_run_concurrently_with_writes() {
    let dim = 8;
    let c = coll(dim, Metric::L2);
    let n = 600;
    let vec_of = |i: usize, gen: usize| -> Vec<f32> {
        (0..dim)
            .map(|j| ((i * 31 + j * 7 + gen * 13) % 17) as f32)
            .collect()
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..n {
                c.insert(&format!("id{i}"), &vec_of(i, 0)).unwrap();
                if i % 3 == 0 {
                    c.upsert(&format!("id{}", i / 2), &vec_of(i / 2, 1))
                        .unwrap();
                }
                if i % 5 == 0 && i > 10 {
                    c.delete(&format!("id{}", i - 10)).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        for t in 0..2 {
            let c = &c;
            let done = &done;
            s.spawn(move || {
                let mut rounds = 0;
                while !done.load(Ordering::SeqCst) || rounds < 10 {
                    let q = vec_of(rounds * 7 + t, 2);
                    let before = c.len();
                    let hits = c.search(&q, 10).unwrap();
                    // Never a duplicate id, always sorted, and a full page when at
                    // least ten ids stay live throughout (each writer step inserts
                    // before it deletes, so the count never falls more than one
                    // below what `len` showed before the search).
                    let mut ids: Vec<&str> = hits.iter().map(|h| &*h.0).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    assert_eq!(ids.len(), hits.len(), "duplicate ids in {hits:?}");
                    assert!(hits.windows(2).all(|w| w[0].1 <= w[1].1));
                    if before >= 11 {
                        assert_eq!(hits.len(), 10, "short page with {before} live: {hits:?}");
                    }
                    let batch = c.search_batch(&q, 5).unwrap();
                    assert!(batch[0].len() <= 5);
                    rounds += 1;
                }
            });
        }
    });
    // After the writers stop, results agree with a brute-force scan over `get`.
    let q = vec_of(3, 2);
    let mut want: Vec<(String, f32)> = (0..n)
        .filter_map(|i| {
            let id = format!("id{i}");
            c.get(&id).map(|v| {
                let d: f32 = v.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
                (id, d)
            })
        })
        .collect();
    want.sort_by(|a, b| a.1.total_cmp(&b.1));
    let got = c.search(&q, 20).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g.1 - w.1).abs() < 1e-3, "{got:?} vs {want:?}");
        assert!((c.get(&g.0).map(|v| v
            .iter()
            .zip(&q)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()))
        .is_some_and(|d| (d - g.1).abs() < 1e-3));
    }
    assert_eq!(c.len(), want.len());
}

#[test]
fn collection_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Collection>();
}

#[test]
fn concurrent_upserts_never_hide_or_duplicate_an_id() {
    let c = coll(4, Metric::L2);
    for i in 0..200 {
        let f = 10.0 + i as f32;
        c.insert(&format!("far{i}"), &[f, -f, f, 1.0]).unwrap();
    }
    c.insert("hot", &[0.0; 4]).unwrap();
    let done = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Make sure the searches overlap the writes even on a loaded machine.
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            for i in 0..2000 {
                let x = if i % 2 == 0 { 0.5 } else { 0.25 };
                c.upsert("hot", &[x, 0.0, 0.0, 0.0]).unwrap();
                // Churn elsewhere too, so that the id map keeps changing.
                let far = format!("far{}", i % 200);
                c.delete(&far).unwrap();
                c.insert(&far, &[1e3, 0.0, 0.0, 0.0]).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        s.spawn(|| {
            let mut searches = 0;
            while !done.load(Ordering::SeqCst) || searches < 100 {
                started.store(true, Ordering::SeqCst);
                let hits = c.search(&[0.0; 4], 3).unwrap();
                assert_eq!(hits.len(), 3, "{hits:?}");
                assert_eq!(
                    hits.iter().filter(|h| &*h.0 == "hot").count(),
                    1,
                    "{hits:?}"
                );
                assert_eq!(hits[0].0, "hot".into(), "{hits:?}");
                assert!([0.0, 0.25, 0.0625].contains(&hits[0].1), "{hits:?}");
                searches += 1;
            }
        });
    });
    assert_eq!(c.len(), 201);
    assert_eq!(c.stats().tombstones, 2000 * 2);
}
