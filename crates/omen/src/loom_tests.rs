//! loom models of the collection's write protocol against a concurrent search:
//! the id map, the index and the storage are updated in an order that never lets
//! a search report a dead id, an id twice, or miss a live one.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p omen --lib -- loom`

use crate::{Collection, CollectionConfig, Metric};
use loom::sync::Arc;

fn two_points() -> Arc<Collection> {
    let c = CollectionConfig::new(2, Metric::L2).build().unwrap();
    c.insert("a", &[0.0, 0.0]).unwrap();
    c.insert("b", &[3.0, 0.0]).unwrap();
    Arc::new(c)
}

#[test]
fn loom_upsert_racing_search_sees_exactly_one_version() {
    loom::model(|| {
        let c = two_points();
        let writer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || c.upsert("a", &[1.0, 0.0]).unwrap())
        };
        let hits = c.search(&[0.0, 0.0], 2).unwrap();
        // "a" is at 0 (old) or 1 (new), never both and never missing.
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert_eq!(hits[0].0, "a".into(), "{hits:?}");
        assert!(hits[0].1 == 0.0 || hits[0].1 == 1.0, "{hits:?}");
        assert_eq!(hits[1], (std::sync::Arc::<str>::from("b"), 9.0));
        writer.join().unwrap();
        assert_eq!(
            c.search(&[0.0, 0.0], 1).unwrap(),
            vec![(std::sync::Arc::<str>::from("a"), 1.0)]
        );
    });
}

#[test]
fn loom_delete_and_insert_racing_search() {
    loom::model(|| {
        let c = two_points();
        let writer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || {
                c.delete("a").unwrap();
                c.insert("c", &[0.5, 0.0]).unwrap();
            })
        };
        let hits = c.search(&[0.0, 0.0], 3).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| &*h.0).collect();
        // Any linearisation point: before the delete, between, after the insert.
        assert!(
            ids == ["a", "b"] || ids == ["b"] || ids == ["c", "b"],
            "{hits:?}"
        );
        writer.join().unwrap();
        assert_eq!(c.len(), 2);
    });
}

#[test]
fn loom_batch_insert_racing_search() {
    loom::model(|| {
        let c = Arc::new(CollectionConfig::new(2, Metric::L2).build().unwrap());
        c.insert("a", &[3.0, 0.0]).unwrap();
        let writer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || c.insert_batch(&["x", "y"], &[0.0, 0.0, 0.5, 0.0]).unwrap())
        };
        // While the batch is in the index but not yet current, its two slots are
        // the nearest hits and must be skipped by asking the index for more.
        let hits = c.search(&[0.0, 0.0], 1).unwrap();
        assert!(
            hits == [(std::sync::Arc::<str>::from("a"), 9.0)]
                || hits == [(std::sync::Arc::<str>::from("x"), 0.0)],
            "{hits:?}"
        );
        writer.join().unwrap();
        assert_eq!(c.search(&[0.0, 0.0], 1).unwrap()[0].0, "x".into());
    });
}

// ---- The write-ahead log's commit queue and checkpoint cut ----------------

use crate::durable::commit::{CommitQueue, GroupPolicy, LogSink};
use loom::sync::Mutex;

/// A log file in memory: records are 8-byte sequence numbers; `synced` is how
/// many bytes of `data` a sync has made durable.
#[derive(Clone, Default)]
struct MemSink(Arc<Mutex<(Vec<u8>, usize)>>);

impl LogSink for MemSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().0.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        let mut g = self.0.lock().unwrap();
        g.1 = g.0.len();
        Ok(())
    }
}

impl MemSink {
    /// Sequence numbers a crash would keep.
    fn durable(&self) -> Vec<u64> {
        let g = self.0.lock().unwrap();
        g.0[..g.1]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn encode_seq(buf: &mut Vec<u8>, seq: u64, _synced: u64) {
    buf.extend_from_slice(&seq.to_le_bytes());
}

/// Group commit: two writers append and wait for their acknowledgement while the
/// flusher writes and syncs. When a writer is acknowledged, its record and every
/// earlier one are durable, in sequence order, each exactly once.
#[test]
fn loom_group_commit_acknowledges_only_durable_records_in_order() {
    loom::model(|| {
        let sink = MemSink::default();
        let q = Arc::new(CommitQueue::new(sink.clone(), 0, 1));
        let flusher = {
            let q = Arc::clone(&q);
            loom::thread::spawn(move || {
                q.run_flusher(GroupPolicy {
                    max_records: 2,
                    max_bytes: 1 << 20,
                    max_delay: None,
                })
            })
        };
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&q);
                let sink = sink.clone();
                loom::thread::spawn(move || {
                    let seq = q.append(encode_seq).unwrap();
                    q.wait_durable(seq).unwrap();
                    let durable = sink.durable();
                    assert!(
                        durable.len() as u64 >= seq,
                        "acked {seq}, durable {durable:?}"
                    );
                    assert_eq!(durable[..seq as usize], (1..=seq).collect::<Vec<_>>()[..]);
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        q.shutdown();
        flusher.join().unwrap();
        assert_eq!(sink.durable(), vec![1, 2]);
    });
}

/// The checkpoint cut: a writer logs and applies under the writer lock and then
/// waits for durability; the checkpointer, under the same lock, rotates the log
/// to a new file and takes the state. Every acknowledged record is either in the
/// cut state (and in the old log) or durable in the new log — never neither —
/// and the new log holds only records after the cut.
#[test]
fn loom_checkpoint_cut_loses_no_acknowledged_write() {
    loom::model(|| {
        let old = MemSink::default();
        let new = MemSink::default();
        let q = Arc::new(CommitQueue::new(old.clone(), 0, 1));
        // The collection's writer lock and its applied state (sequence numbers).
        let state = Arc::new(Mutex::new(Vec::<u64>::new()));
        let writer = {
            let (q, state) = (Arc::clone(&q), Arc::clone(&state));
            loom::thread::spawn(move || {
                let mut seqs = Vec::new();
                for _ in 0..2 {
                    let seq = {
                        let mut s = state.lock().unwrap();
                        let seq = q.append(encode_seq).unwrap();
                        s.push(seq);
                        seq
                    };
                    // Per-write durability: the writer syncs itself.
                    q.flush(true).unwrap();
                    q.wait_durable(seq).unwrap();
                    seqs.push(seq);
                }
                seqs
            })
        };
        let (cut_state, cut_seq) = {
            let s = state.lock().unwrap();
            q.rotate(new.clone(), 0).unwrap();
            (s.clone(), q.next_seq() - 1)
        };
        let acked = writer.join().unwrap();
        q.flush(true).unwrap();
        let old_durable = old.durable();
        let new_durable = new.durable();
        // The cut state is exactly the records up to the cut, all durable in the
        // old log; the new log holds exactly the later ones.
        assert_eq!(cut_state, (1..=cut_seq).collect::<Vec<_>>());
        assert_eq!(old_durable, cut_state);
        assert!(new_durable.iter().all(|&s| s > cut_seq));
        for seq in acked {
            assert!(
                cut_state.contains(&seq) || new_durable.contains(&seq),
                "acknowledged {seq} lost: cut {cut_state:?}, new log {new_durable:?}"
            );
        }
    });
}

/// The indexer's hand-off: a search racing an indexer step that moves a slot
/// from the unindexed tail into the index sees it exactly once (in the tail scan
/// or in the index, never both, never neither).
#[test]
fn loom_indexer_step_racing_search_sees_each_slot_once() {
    use crate::IndexingMode;
    loom::model(|| {
        let c = CollectionConfig::new(2, Metric::L2)
            .indexing(IndexingMode::Manual)
            .build()
            .unwrap();
        c.insert("a", &[3.0, 0.0]).unwrap();
        c.index_pending(1).unwrap();
        c.insert("x", &[0.0, 0.0]).unwrap();
        let c = Arc::new(c);
        let indexer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || {
                c.index_pending(8).unwrap();
            })
        };
        let hits = c.search(&[0.0, 0.0], 3).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| &*h.0).collect();
        assert_eq!(ids, ["x", "a"], "{hits:?}");
        indexer.join().unwrap();
        assert_eq!(c.unindexed_rows(), 0);
        c.verify().unwrap();
    });
}

/// A delete of a tail slot racing the indexer step that adds it: whichever
/// side of the watermark the delete lands on, the slot leaves the index exactly
/// once, and searches never report it after the delete returned.
#[test]
fn loom_delete_racing_indexer_step() {
    use crate::IndexingMode;
    loom::model(|| {
        let c = CollectionConfig::new(2, Metric::L2)
            .indexing(IndexingMode::Manual)
            .build()
            .unwrap();
        c.insert("a", &[3.0, 0.0]).unwrap();
        c.insert("x", &[0.0, 0.0]).unwrap();
        let c = Arc::new(c);
        let indexer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || {
                c.index_pending(8).unwrap();
            })
        };
        c.delete("x").unwrap();
        let hits = c.search(&[0.0, 0.0], 2).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| &*h.0).collect();
        assert_eq!(ids, ["a"], "{hits:?}");
        indexer.join().unwrap();
        // The index holds exactly the live slots below the watermark.
        c.verify().unwrap();
        assert_eq!(c.len(), 1);
    });
}
