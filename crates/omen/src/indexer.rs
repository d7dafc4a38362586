//! Indexing behind writes.
//!
//! A write is acknowledged once it is logged and its rows are in the storage and
//! the id map; adding them to the index is separate work. The id map's *indexed
//! watermark* `W` splits the slots: every current slot below `W` is in the index,
//! and the current slots from `W` up to the map's published end (the *unindexed
//! tail*) are not, so every search scans them exactly with the metric's kernels
//! and merges them with the index's hits by distance (see `Collection::search_one`).
//!
//! # The hand-off (checked by the loom models in `loom_tests.rs`)
//! * The indexer holds `index_lock` for a whole step. It reads `W` and the
//!   published end under the map's read lock, adds the runs of slots in
//!   `[W, W + chunk)` that are current to the index, then, under the map's write
//!   lock, moves `W` past the chunk and collects the slots it added that died
//!   meanwhile; it removes those from the index.
//! * A writer that kills a slot does so under the map's write lock; if the slot is
//!   below `W` then it is in the index and the writer retires it (at once if
//!   `index_lock` is free, else by queueing it for the lock's holder); if not, it
//!   is the indexer's. So every dead slot leaves the index exactly once.
//! * A search reads the map's version and `W` together, searches the index, and
//!   keeps only its hits below `W` that are current in the unchanged map; the
//!   tail scan covers `[W, published)`. Slots the indexer added at or above `W`
//!   meanwhile are dropped from the index's answer (they are in the tail scan), so
//!   no slot is seen twice and none is missed.
//! * A checkpoint holds the writer lock and `index_lock` while it cuts the state
//!   and drains the retire queue first: the index it saves holds exactly the
//!   current slots below the `W` it records.

use crate::idmap::IdMap;
use omen_core::sync::{lock, read, wait, write, Condvar, Mutex, RwLock};
use omen_core::{Error, Metric, Result, SlotId, VectorIndex, VectorStorage};
use std::ops::Range;

/// How a collection's writes reach its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexingMode {
    /// Each write is added to the index before it returns (the default of an
    /// in-memory collection). Opening a durable collection in this mode indexes
    /// its unindexed tail before `open` returns.
    Inline,
    /// A background thread adds written rows to the index; a write returns once it
    /// is logged and stored, and searches scan the not-yet-indexed rows exactly.
    /// Writers wait while `max_tail` rows are unindexed, which bounds the cost of
    /// that scan (the default of a durable collection).
    Background {
        /// The most rows left unindexed before writers wait (a batch larger than
        /// this is admitted once the tail is empty).
        max_tail: usize,
    },
    /// Nothing indexes until [`Collection::index_pending`] or
    /// [`Collection::wait_indexed`] is called; writes never wait. For tests, bulk
    /// loads, and read-only commands that only look rows up.
    ///
    /// [`Collection::index_pending`]: crate::Collection::index_pending
    /// [`Collection::wait_indexed`]: crate::Collection::wait_indexed
    Manual,
}

impl IndexingMode {
    /// The default bound on the unindexed tail: 65,536 rows (an exact scan of
    /// 65,536 128-d rows is about 1 ms per query with AVX-512).
    pub const DEFAULT_MAX_TAIL: usize = 65_536;

    /// Background indexing with the default tail bound.
    pub fn background() -> Self {
        IndexingMode::Background {
            max_tail: Self::DEFAULT_MAX_TAIL,
        }
    }

    /// A short label for reports: `inline`, `background(65536)`, `manual`.
    pub fn label(&self) -> String {
        match self {
            IndexingMode::Inline => "inline".into(),
            IndexingMode::Background { max_tail } => format!("background({max_tail})"),
            IndexingMode::Manual => "manual".into(),
        }
    }
}

/// Rows the indexer adds per step. A checkpoint waits for at most one step (it
/// needs the index still), so a step is kept short: 4,096 HNSW rows are about a
/// quarter of a second on two cores.
pub(crate) const CHUNK: SlotId = 4096;

/// What the indexer and the waiting writers share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Held by whoever changes the index's set of slots in bulk: an indexer step,
    /// an inline write, a checkpoint's cut, `verify`.
    pub(crate) index_lock: Mutex<()>,
    /// Dead slots below the watermark whose writer found `index_lock` taken; the
    /// lock's next holder removes them from the index.
    to_retire: Mutex<Vec<SlotId>>,
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// Mirrors of the id map's published end and watermark, for waiting.
    published: SlotId,
    indexed: SlotId,
    /// The published end when the collection was opened: the rows below it that
    /// are not yet indexed are recovery's debt (index work a crash lost, or rows a
    /// checkpoint saved unindexed), not live ingest's backlog, so writers never
    /// wait for them (a crash loop must make progress).
    recovered_end: SlotId,
    shutdown: bool,
    /// Why indexing stopped, if it failed.
    failed: Option<String>,
}

impl Shared {
    pub(crate) fn new(published: SlotId, indexed: SlotId) -> Shared {
        let s = Shared::default();
        {
            let mut st = lock(&s.state);
            st.published = published;
            st.indexed = indexed;
        }
        s
    }

    /// Marks the rows below `end` (the published end at open) as recovery's.
    pub(crate) fn set_recovered_end(&self, end: SlotId) {
        lock(&self.state).recovered_end = end;
    }

    /// A writer published rows up to `end`: wake the indexer.
    pub(crate) fn published(&self, end: SlotId) {
        let mut st = lock(&self.state);
        st.published = st.published.max(end);
        self.cv.notify_all();
    }

    /// The watermark moved to `w`: wake writers waiting for room and waiters.
    pub(crate) fn indexed_to(&self, w: SlotId) {
        let mut st = lock(&self.state);
        st.indexed = st.indexed.max(w);
        self.cv.notify_all();
    }

    /// Records why indexing stopped and wakes everyone waiting for it.
    pub(crate) fn fail(&self, why: String) {
        let mut st = lock(&self.state);
        if st.failed.is_none() {
            st.failed = Some(why);
        }
        self.cv.notify_all();
    }

    /// Why indexing stopped, if it failed.
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    pub(crate) fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.shutdown = true;
        self.cv.notify_all();
    }

    /// Waits (back-pressure) until `n` more rows fit under `max_tail`: while the
    /// rows written since open and not yet indexed are not none and would pass
    /// the bound (rows recovered at open and not yet indexed do not count: see
    /// `recovered_end`). Returns at once for `n` = 0, after a failure or on
    /// shutdown (the write then meets the failure itself).
    pub(crate) fn wait_for_room(&self, n: usize, max_tail: usize) {
        if n == 0 {
            return;
        }
        let mut st = lock(&self.state);
        loop {
            let tail = st.published.saturating_sub(st.indexed) as usize;
            let debt = st.recovered_end.saturating_sub(st.indexed) as usize;
            let live = tail.saturating_sub(debt);
            if live == 0 || live.saturating_add(n) <= max_tail || st.shutdown || st.failed.is_some()
            {
                return;
            }
            st = wait(&self.cv, st);
        }
    }

    /// Waits until the watermark reaches `end`. Errors: the indexer's failure, or
    /// `Poisoned`-like shutdown.
    pub(crate) fn wait_indexed(&self, end: SlotId) -> Result<()> {
        let mut st = lock(&self.state);
        loop {
            if let Some(why) = &st.failed {
                return Err(indexing_failed(why));
            }
            if st.indexed >= end {
                return Ok(());
            }
            if st.shutdown {
                return Err(Error::invalid_param(
                    "collection",
                    "the indexer stopped (the collection is closing)",
                ));
            }
            st = wait(&self.cv, st);
        }
    }

    /// Blocks the indexer thread until there is work; `false` on shutdown or
    /// failure.
    pub(crate) fn wait_for_work(&self) -> bool {
        let mut st = lock(&self.state);
        loop {
            if st.shutdown || st.failed.is_some() {
                return false;
            }
            if st.published > st.indexed {
                return true;
            }
            st = wait(&self.cv, st);
        }
    }

    /// Takes a dead slot below the watermark out of the index: now if nobody holds
    /// `index_lock`, else through the queue its holder drains.
    pub(crate) fn retire(&self, index: &dyn VectorIndex, slot: SlotId) {
        let guard = match self.index_lock.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        match guard {
            Some(_g) => {
                self.drain_retired(index);
                remove(index, slot);
            }
            None => lock(&self.to_retire).push(slot),
        }
    }

    /// Removes the queued dead slots from the index. Call with `index_lock` held.
    pub(crate) fn drain_retired(&self, index: &dyn VectorIndex) {
        let slots = std::mem::take(&mut *lock(&self.to_retire));
        for s in slots {
            remove(index, s);
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice +10 on Linux, where
/// nice is per thread), for the indexer's threads: ingest and searches run first.
/// Elsewhere it does nothing.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority(2) takes plain integers and touches no memory of ours;
    // `who` = 0 names the calling thread. A failure (no permission) only leaves the
    // priority as it was, so its result is ignored.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// The id map no longer reports a retired slot, so a failure here (only possible
/// if the index lost the slot: a bug) cannot show in results.
pub(crate) fn remove(index: &dyn VectorIndex, slot: SlotId) {
    let removed = index.remove(slot);
    debug_assert!(removed.is_ok(), "index lost slot {slot}: {removed:?}");
}

pub(crate) fn indexing_failed(why: &str) -> Error {
    Error::invalid_param(
        "collection",
        format!(
            "indexing failed ({why}); reopen the collection to rebuild the index from its files"
        ),
    )
}

/// One indexer step: adds up to `chunk` rows past the watermark to the index and
/// moves the watermark past them. `Ok(false)` when there was nothing to do.
pub(crate) fn step(
    storage: &dyn VectorStorage,
    index: &dyn VectorIndex,
    ids: &RwLock<IdMap>,
    shared: &Shared,
    chunk: SlotId,
) -> Result<bool> {
    let _g = lock(&shared.index_lock);
    shared.drain_retired(index);
    let (b, runs) = {
        let m = read(ids);
        let a = m.indexed();
        let end = m.published();
        if a >= end {
            drop(m);
            shared.indexed_to(a);
            return Ok(false);
        }
        let b = end.min(a.saturating_add(chunk.max(1)));
        (b, current_runs(&m, a..b))
    };
    for r in &runs {
        index.add(storage, r.clone())?;
    }
    let dead: Vec<SlotId> = {
        let mut m = write(ids);
        m.set_indexed(b);
        runs.iter()
            .flat_map(Clone::clone)
            .filter(|&s| m.current_id(s).is_none())
            .collect()
    };
    for s in dead {
        remove(index, s);
    }
    shared.indexed_to(b);
    Ok(true)
}

/// The maximal runs of current slots within `range`.
fn current_runs(m: &IdMap, range: Range<SlotId>) -> Vec<Range<SlotId>> {
    let mut runs = Vec::new();
    let mut start: Option<SlotId> = None;
    for s in range.clone() {
        match (m.current_id(s).is_some(), start) {
            (true, None) => start = Some(s),
            (false, Some(st)) => {
                runs.push(st..s);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(st) = start {
        runs.push(st..range.end);
    }
    runs
}

/// The `k` nearest current slots of the tail `[from, published)` to `query`
/// (already prepared: normalised under cosine) under `metric` (the index's), as
/// `(distance, slot)` closest first, ties by slot; slots whose id `keep` refuses
/// are skipped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_tail(
    storage: &dyn VectorStorage,
    metric: Metric,
    m: &IdMap,
    from: SlotId,
    query: &[f32],
    k: usize,
    keep: Option<&(dyn Fn(&str) -> bool + Sync)>,
    out: &mut Vec<(f32, SlotId)>,
) {
    out.clear();
    let kernels = omen_core::simd::Kernels::best();
    let dim = storage.dim();
    let end = m.published();
    let mut s = from;
    let mut dist = Vec::new();
    while s < end {
        let Some(block) = storage.block(s) else { break };
        let rows = (block.len() / dim).min((end - s) as usize);
        if rows == 0 {
            break;
        }
        let block = &block[..rows * dim];
        dist.resize(rows, 0.0);
        metric.distance_many(kernels, query, block, &mut dist);
        for (i, &d) in dist.iter().enumerate() {
            let slot = s + i as SlotId;
            let full = out.len() == k;
            if full && out.last().is_some_and(|&(w, _)| d >= w) {
                continue;
            }
            let Some(id) = m.current_id(slot) else {
                continue;
            };
            if keep.is_some_and(|f| !f(id)) {
                continue;
            }
            // Slots grow, so an equal distance goes after those already kept.
            let at = out.partition_point(|&(w, _)| w <= d);
            if full {
                out.pop();
            }
            out.insert(at, (d, slot));
        }
        s += rows as SlotId;
    }
}
