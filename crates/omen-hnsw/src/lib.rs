//! HNSW graph index for Omen (Malkov & Yashunin 2018).
//!
//! [`HnswIndex`] implements [`VectorIndex`] with the paper's algorithms, following
//! the choices of hnswlib (`hnswalg.h`) where the paper leaves room:
//! * levels drawn as `floor(-ln U · mL)` with `mL = 1/ln M` from a seeded
//!   generator; greedy descent through the upper layers; a beam of width `ef` on
//!   layer 0 (`ef_construction` while inserting);
//! * neighbours chosen by the heuristic (Algorithm 4): a candidate is kept when it
//!   is closer to the new node than to every neighbour already kept; a new node
//!   gets `M` links on every layer, a list overflowing its capacity (`M`, or
//!   `M0 = 2M` on layer 0) is re-pruned with the same heuristic. Filling with pruned
//!   candidates is optional ([`HnswParams::keep_pruned`]).
//!
//! One deliberate difference from hnswlib: an insert first searches every layer
//! and chooses all its neighbours, then links bottom-up (layer 0 first). A node
//! therefore becomes reachable on a layer only once its lists on all lower layers
//! are complete, so a concurrent walk never descends into an empty list and no
//! back link can be overwritten by the new node's own list. (hnswlib gets the same
//! effect by holding the new node's lock for its whole insertion and locking every
//! list it reads during construction.)
//!
//! # Concurrency
//! All methods take `&self`. Inserts run in parallel with each other and with
//! searches; there is no lock around the graph's lists: each node has a small
//! mutex taken by writers of its lists only, readers load the lists' atomic words
//! without locking (see `graph.rs` for the argument). The entry point and top level
//! are one `AtomicU64` read at the start of every search; inserts that raise the
//! top level are serialised by a mutex, as in hnswlib. A `RwLock` around the chunk
//! table is taken for writing only when an `add` reserves its nodes (allocating
//! chunks and upper-level tables), and for reading, per node, by inserts and, per
//! query, by searches. [`add`](VectorIndex::add) of 256 slots or more inserts them
//! in parallel with rayon. The shared state goes through `omen_core::sync`, so the
//! loom models in `loom_tests.rs` check the protocols.
//!
//! # Memory
//! Per node: a `(2M + 1)`-word level-0 slot, a 32-byte record (state word, a
//! futex mutex, the pointer to its upper-level lists), one bit of a dense
//! "present" bitmap, and `(M + 1)` words per upper level (1/(M-1) levels on
//! average). [`memory_bytes`](VectorIndex::memory_bytes) counts all of it,
//! allocated chunks included; at M = 16 that is about 170 bytes per vector.
//!
//! # Search path
//! Per-thread scratch (one-byte generation-stamped visited marks, candidate and
//! result heaps) lives in [`SearchScratch`]'s `extra` slot, so a warmed-up query
//! allocates nothing. Vectors are read from the storage in place; the unvisited
//! neighbours of an expanded node have their vectors prefetched together, and the
//! next candidate's list is prefetched while the current one is scored.
//!
//! # Deletes
//! [`remove`](VectorIndex::remove) tombstones a node: it is still routed through
//! but never returned. When tombstones exceed [`HnswParams::repair_threshold`] of
//! the graph's nodes, the next `add` (or an explicit [`HnswIndex::repair`]) rewires
//! every live list that links to a tombstoned node: its candidates are its live
//! neighbours and the live neighbours of its deleted neighbours, re-pruned by the
//! heuristic and refilled to capacity (hnswlib's `repairConnectionsForUpdate`, in
//! the FreshDiskANN manner). `remove` has no storage to read vectors from, which
//! is why the repair waits for the next call that has one.
//!
//! # Search
//! Exact answers ([`SearchParams::exhaustive`](omen_core::SearchParams::exhaustive), or a beam `ef` at least the
//! number of present nodes) are a flat scan of the present nodes, not a graph
//! walk: exact by construction, documented rather than hoped for, and cheaper
//! than a walk that would visit every node anyway. A filtered search first estimates the filter's selectivity from 256
//! sampled nodes and scans the matching nodes flat when fewer than 2% (or fewer
//! than `8·ef`) are expected to match; otherwise it walks the graph, routing
//! through every node and returning only the ones the filter allows, and falls
//! back to the flat scan when the walk finds fewer than `k` (so `k` results come
//! back whenever `k` match).
//!
//! # Persistence
//! [`HnswIndex::save`] and [`HnswIndex::load`] write and read the graph in the
//! format described in `FORMAT.md`; loading validates every field and link.

mod graph;
mod kind;
mod params;
mod persist;
mod search;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use kind::{HnswKind, HnswSearch, HNSW};
pub use params::HnswParams;
/// The filtered-search switch (see "Search" above): a filtered query scans the
/// matching nodes flat when the estimated fraction that match is below
/// `FILTER_FLAT_FRACTION`, or fewer than `FILTER_FLAT_EF_FACTOR x ef` nodes are
/// expected to match.
pub use search::{FLAT_EF_FACTOR as FILTER_FLAT_EF_FACTOR, FLAT_FRACTION as FILTER_FLAT_FRACTION};

use graph::{
    level_of, pack, read_list, status_of, Graph, DELETED, MAX_LEVEL, PRESENT, PURGED, RESERVED,
};
pub use graph::{GraphView, List};
use omen_core::simd::Kernels;
use omen_core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use omen_core::sync::{lock, read, write, Mutex, RwLock};
use omen_core::{
    Error, IndexStats, Metric, Neighbor, Result, SearchRequest, SearchScratch, SearchStats, SlotId,
    VectorIndex, VectorStorage,
};
use search::{Work, ROW_CACHE};
use std::ops::Range;

/// `add` calls with at least this many slots insert them in parallel.
const PARALLEL_MIN: usize = 256;

/// The entry word when the graph is empty.
const NO_ENTRY: u64 = u64::MAX;

#[inline]
fn entry_word(slot: SlotId, level: usize) -> u64 {
    ((level as u64) << 32) | slot as u64
}

#[inline]
fn entry_parts(word: u64) -> (SlotId, usize) {
    (word as u32, (word >> 32) as usize)
}

/// A hierarchical navigable small-world graph over the slots of a storage.
///
/// ```
/// use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
/// use omen_hnsw::{HnswIndex, HnswParams};
/// use omen_storage::MemoryStorage;
///
/// let storage = MemoryStorage::new(2)?;
/// let slots = storage.append_batch(&[0.0, 0.0, 1.0, 0.0, 5.0, 5.0])?;
/// let index = HnswIndex::new(2, Metric::L2, HnswParams::default())?;
/// index.add(&storage, slots)?;
/// let params = SearchParams::new();
/// let req = SearchRequest::new(&[0.9, 0.0], 2, &params);
/// let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
/// index.search(&storage, &req, &mut scratch, &mut out)?;
/// assert_eq!(out.iter().map(|n| n.slot).collect::<Vec<_>>(), vec![1, 0]);
/// # Ok::<(), omen_core::Error>(())
/// ```
pub struct HnswIndex {
    dim: usize,
    metric: Metric,
    params: HnswParams,
    ml: f64,
    kernels: &'static Kernels,
    graph: RwLock<Graph>,
    /// `level << 32 | slot` of the entry point, or `NO_ENTRY`.
    entry: AtomicU64,
    /// Serialises inserts that may change the entry point.
    entry_lock: Mutex<()>,
    /// SplitMix64 state of the level generator.
    rng: Mutex<u64>,
    present: AtomicUsize,
    /// Removed nodes whose in-links are not yet repaired.
    tombstones: AtomicUsize,
    repairing: AtomicBool,
    searches: AtomicU64,
    search_distances: AtomicU64,
    build_distances: AtomicU64,
}

use omen_core::splitmix64 as splitmix;

impl HnswIndex {
    /// An empty index of `dim`-wide vectors under `metric`. `dim == 0` or parameters
    /// out of range are `InvalidParameter`.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Result<HnswIndex> {
        if dim == 0 || dim > u32::MAX as usize {
            return Err(Error::invalid_param("dim", "must be in 1..=2^32-1"));
        }
        params.validate()?;
        Ok(Self::build(dim, metric, params, Graph::new(0, 0)))
    }

    fn build(dim: usize, metric: Metric, params: HnswParams, graph: Graph) -> HnswIndex {
        let graph = if graph.capacity() == 0 {
            Graph::new(params.m, params.m0())
        } else {
            graph
        };
        HnswIndex {
            dim,
            metric,
            ml: 1.0 / (params.m as f64).ln(),
            kernels: Kernels::best(),
            graph: RwLock::new(graph),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            rng: Mutex::new(params.seed),
            params,
            present: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            repairing: AtomicBool::new(false),
            searches: AtomicU64::new(0),
            search_distances: AtomicU64::new(0),
            build_distances: AtomicU64::new(0),
        }
    }

    /// The parameters the index was built with.
    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Removed nodes whose in-links have not been repaired yet.
    pub fn tombstones(&self) -> usize {
        self.tombstones.load(Ordering::Relaxed)
    }

    /// The current top level, or `None` while the index is empty.
    pub fn top_level(&self) -> Option<usize> {
        let w = self.entry.load(Ordering::Acquire);
        (w != NO_ENTRY).then(|| entry_parts(w).1)
    }

    /// The entry point's slot (the node searches start from), or `None` while the
    /// index is empty.
    pub fn entry_point(&self) -> Option<SlotId> {
        let w = self.entry.load(Ordering::Acquire);
        (w != NO_ENTRY).then(|| entry_parts(w).0)
    }

    /// Copies node `slot`'s links at `level` into `out` (cleared first) and returns
    /// whether the node is in the graph (inserted or being inserted, or removed but
    /// still routed through) and reaches that level. A snapshot for tools that read
    /// the graph (a layout built from it, an analysis); it takes the graph's read
    /// lock, so it is consistent with concurrent inserts as a search is. Removed
    /// nodes keep their lists until repair; [`VectorIndex::contains`] says which
    /// are live.
    pub fn links(&self, slot: SlotId, level: usize, out: &mut Vec<u32>) -> bool {
        out.clear();
        let g = read(&self.graph);
        let in_graph = g.node(slot).is_some_and(|n| {
            let w = n.word();
            status_of(w) != graph::ABSENT && level <= level_of(w)
        });
        if !in_graph {
            return false;
        }
        match g.list(slot, level) {
            Some(list) => {
                read_list(list, out);
                true
            }
            None => false,
        }
    }

    /// Every node whose level-0 list was written (by an insert, a back-link or a
    /// repair) since its mark was last cleared ([`GraphView::clear_changed`]), in
    /// slot order. An index that keeps per-node data derived from the lists (qg's
    /// code blocks) rebuilds exactly these after an add, and ignores its data for
    /// a node while the mark is set.
    pub fn changed_lists(&self) -> Vec<SlotId> {
        let mut out = Vec::new();
        read(&self.graph).changed(&mut out);
        out
    }

    /// A read view of the graph's lists, holding the graph's read lock (inserts
    /// proceed; a growth of the graph waits for the view to drop). For walks that
    /// read many lists without taking the lock per list.
    pub fn view(&self) -> GraphView<'_> {
        GraphView(read(&self.graph))
    }

    /// The distance the graph is walked and built with. For cosine the engine
    /// hands in unit vectors, so `1 - a·b` ranks as cosine distance does, at the
    /// cost of one dot product; results are re-scored with [`Self::exact_dist`].
    #[inline]
    fn dist(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            Metric::L2 => self.kernels.l2_sq(a, b),
            _ => 1.0 - self.kernels.dot(a, b),
        }
    }

    /// [`Metric::distance`]: the number every index reports.
    #[inline]
    fn exact_dist(&self, a: &[f32], b: &[f32]) -> f32 {
        self.metric.distance(self.kernels, a, b)
    }

    fn check_storage(&self, storage: &dyn VectorStorage) -> Result<()> {
        omen_core::validate::check_storage_dim(self.dim, storage)
    }

    fn draw_level(&self, rng: &mut u64) -> usize {
        // U in (0, 1]: ln never sees 0.
        let u = ((splitmix(rng) >> 11) + 1) as f64 / (1u64 << 53) as f64;
        ((-u.ln() * self.ml) as usize).min(MAX_LEVEL)
    }

    fn repair_due(&self) -> bool {
        let t = self.tombstones.load(Ordering::Relaxed);
        let total = t + self.present.load(Ordering::Relaxed);
        t > 0 && t as f64 > self.params.repair_threshold * total as f64
    }

    /// Rewires every live list that links to a removed node (see the crate
    /// documentation), then marks those nodes repaired. Runs concurrently with
    /// searches and inserts; a second caller while one runs returns at once.
    pub fn repair(&self, storage: &dyn VectorStorage) -> Result<()> {
        self.check_storage(storage)?;
        if self
            .repairing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Ok(());
        }
        let dc = self.repair_graph(storage);
        self.build_distances.fetch_add(dc, Ordering::Relaxed);
        self.repairing.store(false, Ordering::Release);
        Ok(())
    }

    /// Inserts one reserved node; returns the distances computed.
    fn insert(&self, g: &Graph, storage: &dyn VectorStorage, q: SlotId, work: &mut Work) -> u64 {
        let mut dc = 0u64;
        let (Some(v), Some(node)) = (storage.get(q), g.node(q)) else {
            return 0;
        };
        let level = level_of(node.word());
        let mut ep = self.entry.load(Ordering::Acquire);
        let _entry_guard = if ep == NO_ENTRY || level > entry_parts(ep).1 {
            let guard = lock(&self.entry_lock);
            ep = self.entry.load(Ordering::Acquire);
            Some(guard)
        } else {
            None
        };
        if ep == NO_ENTRY {
            node.state.store(pack(PRESENT, level), Ordering::Release);
            g.set_live(q, true);
            self.present.fetch_add(1, Ordering::AcqRel);
            self.entry.store(entry_word(q, level), Ordering::Release);
            return 0;
        }
        let (ep_slot, top) = entry_parts(ep);
        let mut cur = match storage.get(ep_slot) {
            Some(ev) => Neighbor::new(ep_slot, self.dist(v, ev)),
            None => Neighbor::new(ep_slot, f32::INFINITY),
        };
        dc += 1;
        for lc in (level + 1..=top).rev() {
            cur = self.greedy(g, storage, v, cur, lc, work, &mut dc);
        }
        let mut eps = std::mem::take(&mut work.eps);
        eps.clear();
        eps.push(cur);
        // Phase 1: search every layer top-down and choose the neighbours, writing
        // nothing. Phase 2 links bottom-up, so that by the time a node becomes
        // reachable on a layer, its lists on every lower layer are complete: a walk
        // descending through it never lands on an empty list, and nobody can add a
        // back link to a list this insert is about to write.
        let mut levels = std::mem::take(&mut work.levels);
        let linked = level.min(top);
        levels.resize_with(linked + 1, Vec::new);
        for lc in (0..=linked).rev() {
            self.search_layer(
                g,
                storage,
                v,
                &eps,
                self.params.ef_construction,
                lc,
                Some(q),
                false,
                None,
                false,
                work,
                &mut dc,
            );
            eps.clear();
            eps.extend(work.top.drain().map(search::unkey));
            eps.sort_unstable();
            // Link to live nodes; routing through removed ones is fine, linking to
            // them wastes a slot until the repair. Only if nothing live was found.
            work.found.clear();
            work.found.extend(eps.iter().copied().filter(|n| {
                // The live bit answers for almost every node from a dense bitmap;
                // only the rest need their state word.
                g.is_live(n.slot)
                    || g.node(n.slot)
                        .is_some_and(|x| status_of(x.word()) == RESERVED)
            }));
            if work.found.is_empty() {
                work.found.extend_from_slice(&eps);
            }
            let found = std::mem::take(&mut work.found);
            let m = if lc == 0 && self.params.fill_layer0 {
                self.params.m0()
            } else {
                self.params.m
            };
            self.select(
                storage,
                &found,
                m,
                self.params.keep_pruned,
                &mut levels[lc],
                work,
                &mut dc,
            );
            work.found = found;
        }
        for (lc, sel) in levels.iter().enumerate().take(linked + 1) {
            self.set_own_list(g, storage, q, v, lc, sel, work, &mut dc);
            for s in sel {
                self.connect(g, storage, s.slot, q, s.distance, lc, work, &mut dc);
            }
        }
        work.levels = levels;
        work.eps = eps;
        node.state.store(pack(PRESENT, level), Ordering::Release);
        g.set_live(q, true);
        self.present.fetch_add(1, Ordering::AcqRel);
        if level > top {
            self.entry.store(entry_word(q, level), Ordering::Release);
        }
        dc
    }

    /// Writes node `q`'s list at `level`. A fresh node's list is empty; a re-added
    /// one may hold links (and others may have linked to it meanwhile), which are
    /// merged with the new choice rather than dropped.
    #[allow(clippy::too_many_arguments)]
    fn set_own_list(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        q: SlotId,
        v: &[f32],
        level: usize,
        sel: &[Neighbor],
        work: &mut Work,
        dc: &mut u64,
    ) {
        let Some(list) = g.list(q, level) else {
            return;
        };
        let _l = lock(g.lock(q));
        read_list(list, &mut work.ids);
        if level == 0 {
            g.mark_changed(q);
        }
        if work.ids.is_empty() {
            graph::write_list(list, sel.iter().map(|n| n.slot));
            return;
        }
        let mut cands = std::mem::take(&mut work.tmp);
        cands.clear();
        cands.extend_from_slice(sel);
        for &id in &work.ids {
            if id != q && !sel.iter().any(|n| n.slot == id) {
                if let Some(x) = storage.get(id) {
                    *dc += 1;
                    cands.push(Neighbor::new(id, self.dist(v, x)));
                }
            }
        }
        cands.sort_unstable();
        let mut out = std::mem::take(&mut work.sel2);
        self.select(
            storage,
            &cands,
            g.cap(level),
            self.params.keep_pruned,
            &mut out,
            work,
            dc,
        );
        graph::write_list(list, out.iter().map(|n| n.slot));
        work.sel2 = out;
        work.tmp = cands;
    }

    /// Adds the link `s -> q` at `level`, re-pruning `s`'s list by the heuristic when
    /// it is full.
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        s: SlotId,
        q: SlotId,
        d_sq: f32,
        level: usize,
        work: &mut Work,
        dc: &mut u64,
    ) {
        let Some(list) = g.list(s, level) else {
            return;
        };
        let _l = lock(g.lock(s));
        read_list(list, &mut work.ids);
        if work.ids.contains(&q) {
            return;
        }
        if level == 0 {
            g.mark_changed(s);
        }
        if graph::push_list(list, q) {
            return;
        }
        let Some(sv) = storage.get(s) else {
            return;
        };
        let mut cands = std::mem::take(&mut work.tmp);
        cands.clear();
        cands.push(Neighbor::new(q, d_sq));
        for &id in &work.ids {
            if let Some(x) = storage.get(id) {
                cands.push(Neighbor::new(id, self.dist(sv, x)));
                *dc += 1;
            }
        }
        cands.sort_unstable();
        let mut out = std::mem::take(&mut work.sel2);
        self.select(
            storage,
            &cands,
            g.cap(level),
            self.params.keep_pruned,
            &mut out,
            work,
            dc,
        );
        graph::write_list(list, out.iter().map(|n| n.slot));
        work.sel2 = out;
        work.tmp = cands;
    }

    /// The neighbour heuristic (Algorithm 4) over `cands`, sorted closest first:
    /// keeps a candidate when it is closer to the base than to every one kept, up to
    /// `m`; with `keep_pruned`, fills up to `m` with the pruned ones.
    #[allow(clippy::too_many_arguments)]
    fn select(
        &self,
        storage: &dyn VectorStorage,
        cands: &[Neighbor],
        m: usize,
        keep_pruned: bool,
        out: &mut Vec<Neighbor>,
        work: &mut Work,
        dc: &mut u64,
    ) {
        out.clear();
        if cands.len() <= m {
            out.extend_from_slice(cands);
            return;
        }
        work.pruned.clear();
        // Rows of the kept neighbours, so that each pairwise distance costs no
        // storage lookup (a virtual call); beyond the cache, rows are looked up.
        let mut kept: [&[f32]; ROW_CACHE] = [&[]; ROW_CACHE];
        for &c in cands {
            if out.len() >= m {
                break;
            }
            let Some(cv) = storage.get(c.slot) else {
                continue;
            };
            let mut good = true;
            for (i, s) in out.iter().enumerate() {
                let sv = match kept.get(i) {
                    Some(r) => Some(*r),
                    None => storage.get(s.slot),
                };
                if let Some(sv) = sv {
                    *dc += 1;
                    if self.dist(cv, sv) < c.distance {
                        good = false;
                        break;
                    }
                }
            }
            if good {
                if let Some(r) = kept.get_mut(out.len()) {
                    *r = cv;
                }
                out.push(c);
            } else {
                work.pruned.push(c);
            }
        }
        if keep_pruned {
            let room = m.saturating_sub(out.len());
            out.extend(work.pruned.iter().take(room).copied());
        }
    }

    /// Rewires live lists that link to `DELETED` nodes; returns distances computed.
    ///
    /// The graph's read lock is never held across the parallel loop: a rayon
    /// worker waiting inside it may run another job (an insert of another batch)
    /// that takes the read lock again, and with a writer queued in between
    /// (`grow_to`), a read lock held across the loop would deadlock. Each node's
    /// repair takes the read lock for itself instead.
    fn repair_graph(&self, storage: &dyn VectorStorage) -> u64 {
        use rayon::prelude::*;
        let (cap, doomed) = {
            let g = read(&self.graph);
            let cap = g.capacity();
            let doomed: Vec<bool> = (0..cap as u32)
                .map(|id| g.node(id).is_some_and(|n| status_of(n.word()) == DELETED))
                .collect();
            (cap, doomed)
        };
        if !doomed.iter().any(|&d| d) {
            return 0;
        }
        let fix = |work: &mut Work, u: u32| -> u64 {
            let g = read(&self.graph);
            let g: &Graph = &g;
            let mut dc = 0u64;
            let Some(node) = g.node(u) else { return 0 };
            let word = node.word();
            if !matches!(status_of(word), PRESENT | RESERVED) {
                return 0;
            }
            for lc in 0..=level_of(word) {
                self.repair_list(g, storage, u, lc, &doomed, work, &mut dc);
            }
            dc
        };
        let dc: u64 = if cfg!(loom) || cap < PARALLEL_MIN {
            let mut work = Work::default();
            (0..cap as u32).map(|u| fix(&mut work, u)).sum()
        } else {
            (0..cap as u32)
                .into_par_iter()
                .map_init(Work::default, |w, u| fix(w, u))
                .sum()
        };
        let g = read(&self.graph);
        let mut repaired = 0;
        for (id, _) in doomed.iter().enumerate().filter(|(_, &d)| d) {
            if let Some(n) = g.node(id as u32) {
                let w = n.word();
                if status_of(w) == DELETED
                    && n.state
                        .compare_exchange(
                            w,
                            pack(PURGED, level_of(w)),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    repaired += 1;
                }
            }
        }
        self.tombstones.fetch_sub(repaired, Ordering::AcqRel);
        self.move_entry_off_removed(&g);
        dc
    }

    #[allow(clippy::too_many_arguments)]
    fn repair_list(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        u: SlotId,
        lc: usize,
        doomed: &[bool],
        work: &mut Work,
        dc: &mut u64,
    ) {
        let (Some(list), Some(uv)) = (g.list(u, lc), storage.get(u)) else {
            return;
        };
        read_list(list, &mut work.ids);
        if !work
            .ids
            .iter()
            .any(|&i| doomed.get(i as usize).copied().unwrap_or(false))
        {
            return;
        }
        // Held to the write: a back link that a concurrent insert adds meanwhile
        // would otherwise be overwritten, leaving that node without an in-link.
        let _l = lock(g.lock(u));
        read_list(list, &mut work.ids);
        let live = |id: u32| {
            g.node(id)
                .is_some_and(|n| matches!(status_of(n.word()), PRESENT | RESERVED))
        };
        work.visited.reset(g.capacity());
        work.visited.insert(u);
        let mut cands = std::mem::take(&mut work.tmp);
        cands.clear();
        let mut second = std::mem::take(&mut work.ids2);
        let first = std::mem::take(&mut work.ids);
        for &id in &first {
            if doomed.get(id as usize).copied().unwrap_or(false) {
                if let Some(dl) = g.list(id, lc) {
                    read_list(dl, &mut second);
                    for &j in &second {
                        if live(j) && work.visited.insert(j) {
                            if let Some(x) = storage.get(j) {
                                *dc += 1;
                                cands.push(Neighbor::new(j, self.dist(uv, x)));
                            }
                        }
                    }
                }
            } else if live(id) && work.visited.insert(id) {
                if let Some(x) = storage.get(id) {
                    *dc += 1;
                    cands.push(Neighbor::new(id, self.dist(uv, x)));
                }
            }
        }
        work.ids = first;
        work.ids2 = second;
        cands.sort_unstable();
        let mut out = std::mem::take(&mut work.sel2);
        self.select(storage, &cands, g.cap(lc), true, &mut out, work, dc);
        if lc == 0 {
            g.mark_changed(u);
        }
        graph::write_list(list, out.iter().map(|n| n.slot));
        work.sel2 = out;
        work.tmp = cands;
    }

    /// After a repair, routes searches from a live node of the highest level rather
    /// than from a removed one whose lists are no longer maintained.
    fn move_entry_off_removed(&self, g: &Graph) {
        let _guard = lock(&self.entry_lock);
        let ep = self.entry.load(Ordering::Acquire);
        if ep == NO_ENTRY {
            return;
        }
        let (slot, _) = entry_parts(ep);
        if g.node(slot).is_some_and(|n| status_of(n.word()) == PRESENT) {
            return;
        }
        let mut best: Option<(usize, u32)> = None;
        for id in 0..g.capacity() as u32 {
            if let Some(n) = g.node(id) {
                let w = n.word();
                if status_of(w) == PRESENT && best.is_none_or(|(l, _)| level_of(w) > l) {
                    best = Some((level_of(w), id));
                }
            }
        }
        if let Some((level, id)) = best {
            self.entry.store(entry_word(id, level), Ordering::Release);
        }
    }
}

impl VectorIndex for HnswIndex {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        use rayon::prelude::*;
        self.check_storage(storage)?;
        if slots.is_empty() {
            return Ok(());
        }
        omen_core::validate::check_published(storage, &slots)?;
        // A non-finite vector would poison every distance that touches it.
        for (row, s) in slots.clone().enumerate() {
            let v = storage.get(s).ok_or(Error::UnknownSlot { slot: s })?;
            omen_core::validate::check_vector(v, self.dim, row)?;
        }
        if self.repair_due() {
            self.repair(storage)?;
        }
        {
            let mut g = write(&self.graph);
            for s in slots.clone() {
                if let Some(n) = g.node(s) {
                    if matches!(status_of(n.word()), PRESENT | RESERVED) {
                        return Err(Error::SlotExists { slot: s });
                    }
                }
            }
            g.grow_to(slots.end as usize);
            let mut rng = lock(&self.rng);
            for s in slots.clone() {
                let Some(word) = g.node(s).map(|n| n.word()) else {
                    continue;
                };
                let level = match status_of(word) {
                    graph::ABSENT => self.draw_level(&mut rng),
                    status => {
                        if status == DELETED {
                            self.tombstones.fetch_sub(1, Ordering::AcqRel);
                        }
                        level_of(word)
                    }
                };
                g.set_levels(s, level);
                if let Some(n) = g.node(s) {
                    n.state.store(pack(RESERVED, level), Ordering::Release);
                }
            }
        }
        let one = |work: &mut Work, s: SlotId| {
            let g = read(&self.graph);
            self.insert(&g, storage, s, work)
        };
        let n = slots.len();
        let dc: u64 = if !cfg!(loom) && n >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
            slots.into_par_iter().map_init(Work::default, one).sum()
        } else {
            let mut work = Work::default();
            slots.map(|s| one(&mut work, s)).sum()
        };
        self.build_distances.fetch_add(dc, Ordering::Relaxed);
        Ok(())
    }

    fn remove(&self, slot: SlotId) -> Result<()> {
        let g = read(&self.graph);
        let node = g.node(slot).ok_or(Error::UnknownSlot { slot })?;
        let word = node.word();
        if status_of(word) != PRESENT
            || node
                .state
                .compare_exchange(
                    word,
                    pack(DELETED, level_of(word)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return Err(Error::UnknownSlot { slot });
        }
        g.set_live(slot, false);
        self.tombstones.fetch_add(1, Ordering::AcqRel);
        self.present.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    fn contains(&self, slot: SlotId) -> bool {
        read(&self.graph).is_live(slot)
    }

    fn len(&self) -> usize {
        self.present.load(Ordering::Acquire)
    }

    fn build_params(&self) -> omen_core::Params {
        self.params.to_params()
    }

    fn check_search_params(&self, params: &omen_core::SearchParams) -> Result<()> {
        HnswSearch::from_params(params).map(|_| ())
    }

    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.check_storage(storage)?;
        let knobs = HnswSearch::from_params(req.params)?;
        let dc = {
            let g = read(&self.graph);
            self.search_graph(&g, storage, req, knobs, scratch, out)
        };
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.search_distances.fetch_add(dc, Ordering::Relaxed);
        Ok(SearchStats {
            distance_computations: dc,
        })
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + read(&self.graph).memory_bytes()
    }

    fn stats(&self) -> IndexStats {
        IndexStats {
            searches: self.searches.load(Ordering::Relaxed),
            search_distance_computations: self.search_distances.load(Ordering::Relaxed),
            build_distance_computations: self.build_distances.load(Ordering::Relaxed),
        }
    }

    fn persist(&self) -> Option<Vec<u8>> {
        Some(self.to_bytes())
    }
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}
