//! Loom models of the index's protocols. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p omen-hnsw --lib`.
//!
//! Under loom a chunk holds two nodes, so that small models cross chunk
//! boundaries (growth under the write lock racing readers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use loom::thread;
use omen_core::sync::Arc;
use omen_core::SearchParams;

/// Immutable rows: the storage's own protocol is modelled in omen-storage.
struct Rows {
    data: Vec<f32>,
}

impl VectorStorage for Rows {
    fn name(&self) -> &'static str {
        "rows"
    }
    fn dim(&self) -> usize {
        1
    }
    fn len(&self) -> usize {
        self.data.len()
    }
    fn append(&self, _: &[f32]) -> Result<SlotId> {
        Err(Error::invalid_param("append", "read-only"))
    }
    fn append_batch(&self, _: &[f32]) -> Result<Range<SlotId>> {
        Err(Error::invalid_param("append", "read-only"))
    }
    fn get(&self, slot: SlotId) -> Option<&[f32]> {
        self.data.get(slot as usize..slot as usize + 1)
    }
    fn block(&self, start: SlotId) -> Option<&[f32]> {
        self.data.get(start as usize..).filter(|b| !b.is_empty())
    }
    fn memory_bytes(&self) -> usize {
        self.data.len() * 4
    }
}

fn index() -> HnswIndex {
    let p = HnswParams::default()
        .with_m(2)
        .with_ef_construction(2)
        .with_seed(1);
    HnswIndex::new(1, Metric::L2, p).unwrap()
}

fn find(
    index: &HnswIndex,
    rows: &Rows,
    q: f32,
    k: usize,
    scratch: &mut SearchScratch,
) -> Vec<Neighbor> {
    let p = SearchParams::new().with("ef", 2);
    let mut out = Vec::new();
    let query = [q];
    index
        .search(rows, &SearchRequest::new(&query, k, &p), scratch, &mut out)
        .unwrap();
    out
}

/// Two inserts into an empty index race to publish the entry point: both end up
/// present and reachable, whichever wins.
#[test]
fn entry_point_publication_races_an_insert() {
    loom::model(|| {
        let rows = Arc::new(Rows {
            data: vec![0.0, 1.0],
        });
        let idx = Arc::new(index());
        let (r2, i2) = (rows.clone(), idx.clone());
        let t = thread::spawn(move || i2.add(&*r2, 1..2).unwrap());
        idx.add(&*rows, 0..1).unwrap();
        t.join().unwrap();
        assert_eq!(idx.len(), 2);
        assert!(idx.top_level().is_some());
        let mut scratch = SearchScratch::new();
        for s in 0..2u32 {
            let got = find(&idx, &rows, s as f32, 1, &mut scratch);
            assert_eq!(got, vec![Neighbor::new(s, 0.0)]);
        }
    });
}

/// An insert that grows the graph by a chunk and rewrites neighbour lists races a
/// reader that reuses one scratch (visited set, heaps) for two searches: every
/// answer holds distinct present slots with their true distances, closest first,
/// and as many as were present when the search began.
#[test]
fn neighbour_list_update_races_a_reader_reusing_its_scratch() {
    loom::model(|| {
        let rows = Arc::new(Rows {
            data: vec![0.0, 4.0, 1.0],
        });
        let idx = Arc::new(index());
        idx.add(&*rows, 0..2).unwrap();
        let (r2, i2) = (rows.clone(), idx.clone());
        let t = thread::spawn(move || i2.add(&*r2, 2..3).unwrap());
        let mut scratch = SearchScratch::new();
        for _ in 0..2 {
            let got = find(&idx, &rows, 0.9, 3, &mut scratch);
            assert!(got.len() >= 2, "{got:?}");
            assert!(got.windows(2).all(|w| w[0] < w[1]));
            for n in &got {
                let v = rows.data[n.slot as usize];
                assert_eq!(n.distance, (v - 0.9) * (v - 0.9));
            }
        }
        t.join().unwrap();
        let got = find(&idx, &rows, 0.9, 1, &mut scratch);
        assert_eq!(got[0].slot, 2);
    });
}

/// A remove racing a search: the search returns the removed slot or not, but
/// nothing else changes, and afterwards it is gone.
#[test]
fn remove_races_a_search() {
    loom::model(|| {
        let rows = Arc::new(Rows {
            data: vec![0.0, 1.0],
        });
        let idx = Arc::new(index());
        idx.add(&*rows, 0..2).unwrap();
        let i2 = idx.clone();
        let t = thread::spawn(move || i2.remove(0).unwrap());
        let mut scratch = SearchScratch::new();
        let got = find(&idx, &rows, 0.0, 2, &mut scratch);
        assert!(!got.is_empty() && got.iter().any(|n| n.slot == 1));
        t.join().unwrap();
        let got = find(&idx, &rows, 0.0, 2, &mut scratch);
        assert_eq!(got, vec![Neighbor::new(1, 1.0)]);
    });
}

/// The changed-mark protocol an index layered on the graph relies on (qg's code
/// blocks): a writer marks a level-0 list before writing it, and a reader reads
/// the ids, then the mark; when the mark reads clear, the ids it read are the
/// list as it stood when the mark was last cleared, never a newer one or a mix.
#[test]
fn loom_a_clear_changed_mark_means_the_list_read_is_the_one_coded() {
    loom::model(|| {
        let mut g = graph::Graph::new(1, 2);
        g.grow_to(2);
        graph::write_list(g.list(0, 0).unwrap(), [1u32].into_iter());
        g.clear_changed(0);
        let g = Arc::new(g);
        let w = {
            let g = g.clone();
            thread::spawn(move || {
                g.mark_changed(0);
                graph::write_list(g.list(0, 0).unwrap(), [5u32, 6].into_iter());
            })
        };
        let mut ids = Vec::new();
        graph::read_list(g.list(0, 0).unwrap(), &mut ids);
        if !g.is_changed(0) {
            assert_eq!(
                ids,
                vec![1],
                "a clear mark with a list newer than the clear"
            );
        }
        w.join().unwrap();
        assert!(g.is_changed(0));
        graph::read_list(g.list(0, 0).unwrap(), &mut ids);
        assert_eq!(ids, vec![5, 6]);
    });
}
