//! Quantized graph ("qg"): an HNSW graph whose layer-0 walk reads only compressed
//! codes, with exact re-ranking of the best estimates.
//!
//! # Design
//! The graph is built with `fill_layer0` and `keep_pruned` (the defaults here), so
//! every layer-0 list holds exactly `2M` = 32 neighbours: a fixed out-degree that
//! fills every lane of a block, where hnswlib's insertion rule leaves about 24 of
//! 32 (GloVe-50). Every node owns one **block**: the 4-bit PQ codes of its 32
//! layer-0 neighbours in the fast-scan layout ([`omen_core::simd::fastscan`]),
//! lane `i` coding the `i`-th id of the node's layer-0 list in the graph, whose
//! ids the walk reads from the list itself (a block does not copy them). A query builds one lookup table (squared L2 or
//! negated inner product per sub-quantizer centroid, quantised to bytes), descends
//! the HNSW upper layers exactly as HNSW does, and then runs a beam search of width
//! `ef` on layer 0 in which visiting a node means reading its block and estimating
//! all 32 neighbours at once with byte shuffles: the estimates alone steer the
//! walk. Visiting a node reads its list (3 cache lines) and its block (13 at
//! GloVe-50), both prefetched. By default each node the walk expands is also
//! scored exactly from the storage (its vector is prefetched with its block), and
//! the `k` closest scored nodes are returned, as SymphonyQG does. With the search
//! key `rerank = r` the walk scores nothing: once it ends, the final beam's `r`
//! best estimates are scored (a plain re-rank, as FAISS's refine step does), their
//! vectors prefetched eight entries ahead. That takes the vector's lines (4 of 20
//! at GloVe-50) out of every visit and reads fewer vectors, each load independent
//! of the others; the default scores a superset (the final beam is expanded), so
//! its answer is never farther. Measured in-process (`qg_search`, 2,000 queries,
//! Intel Xeon VM): on GloVe-50 L2 `rerank = 100` gives the default's recall@10 at
//! `ef` 256-384 (0.9870 / 0.9908 / 0.9935) at 1.08-1.10x its QPS (three
//! alternating runs at `ef` 320); on the 1M x 128 mixture it also gives the
//! default's recall (0.9939 at `ef` 128) but no speed, the walk there expanding
//! about as many nodes as it would score. A narrow `r` costs recall where the
//! codes rank poorly (GloVe-50 L2, `ef` 320: 0.9890 with 50, 0.9792 with 30).
//!
//! The walk prefetches the blocks of the next unexpanded beam entries. The node
//! expanded next is most often one the current visit has just found, so a lone
//! walk still waits for much of its block; a batch search therefore runs two
//! walks per worker, each taking one visit in turn, so that the block a walk needs
//! loads while the other takes its own (each answer is the one a single search
//! gives). Blocks over 1 KiB (more than 64 sub-quantizers) fill the miss buffers
//! alone, and their batches walk one query at a time.
//!
//! The design follows the frontier of graph indexes (SymphonyQG, NGT-QG: codes of
//! the neighbours next to the adjacency list, fast-scan estimation, a small exact
//! re-rank); the codes here are product-quantised with one component per
//! sub-quantizer up to 128 dimensions ([`default_pq_m`]), which on GloVe-50 gave
//! sharper estimates than one-bit RaBitQ codes relative to each node (measured in
//! `bench-suite/examples/qg_probe.rs`: the RaBitQ walk needs a table or an exact
//! distance per visited node and ran at 0.5-0.6x omen HNSW; this one at 1.7-1.9x).
//! Two components per sub-quantizer are not enough: on the 1M x 128 mixture, 64
//! sub-quantizers reached recall@10 0.66 at ef 64 and 128 reached 0.97, at 0.88x
//! the QPS (`qg_search`, `QG_PQ_M`).
//! The codebooks are the shared [`omen_core::pq`] quantizer.
//!
//! # Memory
//! Per node: the HNSW graph (owned by [`omen_hnsw::HnswIndex`], which also does
//! insertion, deletion and repair, and whose layer-0 lists are the walk's ids),
//! one code of `m / 2` bytes, packed (kept to rebuild blocks), and one block of
//! `16 · m` bytes (`m` rounded up to even): the neighbours' codes, duplicated per
//! in-link, the price of estimating 32 neighbours from one region per visit.
//! [`QgIndex::memory_breakdown`] reports each part.
//!
//! # Blocks and lists agree
//! A block codes its node's list lane by lane, so the walk must never pair a list
//! with a block built from an older one. The graph keeps a changed mark per node
//! ([`omen_hnsw::GraphView::is_changed`]): every writer of a layer-0 list (an
//! insert, a back-link, a repair) sets it *before* writing the list, and qg clears
//! it when it publishes the node's rebuilt block. The walk reads the lanes' ids,
//! then the mark: if it is set, the list may be newer than the block, and the
//! node is expanded from the list with exact distances instead (modelled in loom
//! by the HNSW crate). After an add, qg rebuilds exactly the marked nodes.
//!
//! # Life cycle
//! * Before it is trained (fewer than `train_at` present slots and no
//!   [`VectorIndex::train`]) the index is a plain HNSW: queries walk the graph
//!   exactly.
//! * Training fits the codebooks on up to `train_sample` present vectors (or the
//!   given sample), codes every node and builds every block.
//! * [`VectorIndex::add`] inserts into the graph, codes the new slots and rebuilds
//!   the blocks of every node whose list the add wrote (the graph's changed marks:
//!   the new nodes, the nodes that took back-links, the lists a repair rewired),
//!   in chunks, each published under the layer's write lock with the nodes' marks
//!   cleared: a search sees a block before or after an update, never half-written,
//!   and while a node's mark is set it is expanded exactly from its list, so a
//!   slot is reachable once its add returns.
//! * [`VectorIndex::remove`] tombstones the node in the graph; it still routes the
//!   walk and is skipped by the re-rank.
//! * Filtered and exhaustive queries, and queries the walk answers with fewer
//!   than `k` results, are answered by the HNSW search (which has its own exact
//!   fallbacks), so the [`VectorIndex`] contract holds in every case.
//!
//! # Persistence
//! [`QgIndex::to_bytes`]/[`QgIndex::from_bytes`]: the graph file of
//! [`omen_hnsw`], the codebooks and every code, under one header and checksum
//! (`FORMAT.md`). Blocks are rebuilt from the graph and the codes on load, with
//! no distance computation.

mod kind;
mod layer;
mod persist;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use kind::{default_pq_m, QgKind, QgParams, QgSearch, QG};

use layer::{Layer, Update, DEGREE};
use omen_core::pq::ProductQuantizer;
use omen_core::simd::fastscan::{self, Scanner, BLOCK};
use omen_core::simd::{prefetch, Kernels};
use omen_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use omen_core::sync::{lock, read, write, Mutex, RwLock};
use omen_core::{
    Error, IndexStats, Metric, Neighbor, Params, Result, SearchParams, SearchRequest,
    SearchScratch, SearchStats, SlotFilter, SlotId, VectorIndex, VectorStorage,
};
use omen_hnsw::{GraphView, HnswIndex};
use rayon::prelude::*;
use std::ops::Range;

/// k-means iterations of the PQ training.
const PQ_ITERS: usize = 10;
/// Blocks rebuilt per write-lock acquisition during an update.
const UPDATE_CHUNK: usize = 8_192;
/// Candidates prefetched ahead of a lone walk (their blocks start loading while
/// the current block is scanned).
const PREFETCH_AHEAD: usize = 2;
/// ... and of each interleaved walk: the other walks' steps cover the wait, and
/// more blocks in flight (15 lines each at GloVe-50, measured when blocks also held the ids) fill the miss buffers
/// (measured on GloVe-50 L2, 10,000 queries: 2 ahead was 10-25 % slower here
/// and 15 % faster alone).
const PREFETCH_AHEAD_INTERLEAVED: usize = 1;
/// Walks a batch search interleaves on one thread: each takes one step in turn,
/// so the block a walk will expand next (most often a neighbour it has just
/// found) loads while the other walks take theirs. With each step reading a block
/// and a full vector (GloVe-50: 15 + 4 lines), two walks did best (in-process,
/// 10,000 queries, ef 32/64/256: 65k/38.6k/11.4k QPS against 58-62k/34-38k/
/// 9.7-10.4k with four and 52-58k/33-36k/10.0-10.3k with one).
const WALKS: usize = 2;
/// How many beam entries ahead [`QgIndex::walk_finish`] prefetches the vectors
/// of a `rerank`.
const SCORE_AHEAD: usize = 8;
/// Blocks longer than this are walked one query at a time in a batch too: at
/// 128 sub-quantizers (34 lines a block when it held the ids, 8 a vector) interleaving filled the
/// miss buffers and ran 10-30 % below a lone walk (1M x 128, ef 32-256).
const INTERLEAVE_MAX_BLOCK: usize = 1024;

/// The bytes of each part of a [`QgIndex`] (see [`QgIndex::memory_breakdown`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QgMemory {
    /// The HNSW graph (links of every layer).
    pub graph: usize,
    /// Every node's own code (`m / 2` bytes, packed two values to a byte).
    pub codes: usize,
    /// The node blocks (the neighbours' codes; their ids are the graph's lists).
    pub blocks: usize,
    /// The codebooks.
    pub codebooks: usize,
}

/// The quantized-graph index. See the crate documentation.
pub struct QgIndex {
    dim: usize,
    metric: Metric,
    params: QgParams,
    graph: HnswIndex,
    layer: RwLock<Option<Layer>>,
    /// Serialises adds, training and block rebuilds (searches never take it).
    writer: Mutex<()>,
    /// Whether any slot was ever removed: the re-rank checks liveness only then.
    removed_any: AtomicBool,
    kernels: &'static Kernels,
    scanner: Scanner,
    searches: AtomicU64,
    search_distances: AtomicU64,
    build_distances: AtomicU64,
}

impl std::fmt::Debug for QgIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QgIndex")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// A beam entry packed in a `u64` whose integer order is (distance, slot) order:
/// the distance's bits made monotone in the high half, the slot in the low half.
/// The beam's binary search then compares one integer, and moves 8 bytes an entry.
#[inline]
fn entry(dist: f32, slot: SlotId) -> u64 {
    let b = dist.to_bits();
    let ordered = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((ordered as u64) << 32) | slot as u64
}

/// The distance of an [`entry`].
#[inline]
fn entry_dist(e: u64) -> f32 {
    let o = (e >> 32) as u32;
    f32::from_bits(if o & 0x8000_0000 != 0 {
        o & 0x7fff_ffff
    } else {
        !o
    })
}

/// The slot of an [`entry`].
#[inline]
fn entry_slot(e: u64) -> SlotId {
    e as u32
}

/// One mark per slot, cleared per walk by zeroing only the words it touched.
#[derive(Default)]
struct Marks {
    bits: Vec<u64>,
    touched: Vec<u32>,
}

impl Marks {
    /// Clears the previous walk's marks and sizes them for `n` slots.
    fn reset(&mut self, n: usize) {
        for &w in &self.touched {
            if let Some(x) = self.bits.get_mut(w as usize) {
                *x = 0;
            }
        }
        self.touched.clear();
        let words = n.div_ceil(64);
        if self.bits.len() < words {
            self.bits.resize(words, 0);
        }
    }

    /// Marks `v`; returns whether it was unmarked.
    #[inline]
    fn insert(&mut self, v: SlotId) -> bool {
        let (w, bit) = (v as usize / 64, 1u64 << (v % 64));
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        let x = &mut self.bits[w];
        if *x & bit != 0 {
            return false;
        }
        if *x == 0 {
            self.touched.push(w as u32);
        }
        *x |= bit;
        true
    }

    #[inline]
    fn contains(&self, v: SlotId) -> bool {
        self.bits
            .get(v as usize / 64)
            .is_some_and(|x| x >> (v % 64) & 1 == 1)
    }
}

/// Per-search state kept in [`SearchScratch::extra`].
#[derive(Default)]
struct Work {
    /// The beam: at most `ef` [`entry`]s, sorted.
    pool: Vec<u64>,
    ids: Vec<u32>,
    table: Vec<f32>,
    lut: Vec<u8>,
    /// Slots estimated (or scored) in this walk.
    seen: Marks,
    /// Slots expanded in this walk.
    done: Marks,
    /// The beam position expanded next.
    cursor: usize,
    /// Estimate = `base + inv * table sum` (the quantised table's offset and scale).
    base: f32,
    inv: f32,
    /// The node the layer-0 beam started from.
    start: SlotId,
    /// Zero: every expanded node is scored exactly as the walk goes; otherwise
    /// the walk scores nothing and [`QgIndex::walk_finish`] scores this many of
    /// the final beam's best estimates.
    rerank: usize,
    /// The `k` closest scored nodes, sorted.
    exact: Vec<Neighbor>,
    /// How many exact results the walk keeps (the query's `k`).
    k: usize,
    /// Distances and estimates made by this walk.
    dc: u64,
}

impl Work {
    /// Sets the walk's `k` and re-rank rule (`None`: every expanded node).
    fn set_query(&mut self, k: usize, rerank: Option<usize>) {
        self.k = k;
        self.rerank = rerank.unwrap_or(0);
    }

    /// Whether the walk scores each node it expands (no `rerank` given).
    #[inline]
    fn scores_walk(&self) -> bool {
        self.rerank == 0
    }

    /// Keeps slot `u` at exact distance `d` if it is among the `k` closest.
    #[inline]
    fn score(&mut self, u: SlotId, d: f32) {
        keep_closest(&mut self.exact, self.k, u, d);
    }
}

/// Whether node `u`, reached by a walk that started at `start`, may be in its
/// answer: a live node. Only checked where it can fail: once any node was
/// removed, or for the start node, which may be one whose add is still in
/// flight (every other node the walk reaches was published by a finished add).
#[inline]
fn may_answer(view: &GraphView<'_>, removed: bool, start: SlotId, u: SlotId) -> bool {
    !(removed || u == start) || view.is_live(u)
}

/// Keeps slot `u` at distance `d` in `exact` (sorted, at most `k`) if it is among
/// the `k` closest.
#[inline]
fn keep_closest(exact: &mut Vec<Neighbor>, k: usize, u: SlotId, d: f32) {
    let n = Neighbor::new(u, d);
    let at = exact.partition_point(|x| *x <= n);
    if at < k {
        if exact.len() >= k {
            exact.pop();
        }
        exact.insert(at, n);
    }
}

/// Per-worker state of a batch search: one [`Work`] per interleaved walk.
#[derive(Default)]
struct Walks(Vec<Work>);

/// Inserts `e` into the sorted beam of capacity `ef`; returns its position, or
/// `None` when it does not make the beam.
#[inline]
fn pool_insert(pool: &mut Vec<u64>, ef: usize, e: u64) -> Option<usize> {
    if pool.len() >= ef && pool.last().is_some_and(|&l| e >= l) {
        return None;
    }
    let at = pool.partition_point(|&p| p <= e);
    if pool.len() >= ef {
        pool.pop();
    }
    pool.insert(at, e);
    Some(at)
}

impl QgIndex {
    /// An empty index; `InvalidParameter` for a parameter out of range (a `pq_m`
    /// that does not divide `dim`, among others).
    pub fn new(dim: usize, metric: Metric, params: QgParams) -> Result<QgIndex> {
        params.validate(dim)?;
        let graph = HnswIndex::new(dim, metric, params.hnsw())?;
        Ok(Self::from_parts(dim, metric, params, graph, None))
    }

    fn from_parts(
        dim: usize,
        metric: Metric,
        params: QgParams,
        graph: HnswIndex,
        layer: Option<Layer>,
    ) -> QgIndex {
        QgIndex {
            dim,
            metric,
            params,
            graph,
            layer: RwLock::new(layer),
            writer: Mutex::new(()),
            // Set by `remove`, and by a load that finds removed nodes.
            removed_any: AtomicBool::new(false),
            kernels: Kernels::best(),
            scanner: Scanner::best(),
            searches: AtomicU64::new(0),
            search_distances: AtomicU64::new(0),
            build_distances: AtomicU64::new(0),
        }
    }

    /// The parameters the index was built with.
    pub fn params(&self) -> &QgParams {
        &self.params
    }

    /// The HNSW graph underneath (for tools that read it).
    pub fn graph(&self) -> &HnswIndex {
        &self.graph
    }

    /// Bytes of each part of the index (the storage's vectors not included).
    pub fn memory_breakdown(&self) -> QgMemory {
        let l = read(&self.layer);
        QgMemory {
            graph: self.graph.memory_bytes(),
            codes: l.as_ref().map_or(0, |l| l.codes_bytes()),
            blocks: l.as_ref().map_or(0, |l| l.blocks.memory_bytes()),
            codebooks: l.as_ref().map_or(0, |l| l.pq.memory_bytes()),
        }
    }

    /// The distance the walk ranks by: squared L2, or `1 - a·b` for the
    /// inner-product metrics (the engine hands cosine collections unit vectors).
    #[inline]
    fn walk_dist(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            Metric::L2 => self.kernels.l2_sq(a, b),
            _ => 1.0 - self.kernels.dot(a, b),
        }
    }

    /// Codes `slots` (their vectors from `storage`) in parallel.
    fn encode(
        &self,
        pq: &ProductQuantizer,
        storage: &dyn VectorStorage,
        slots: &[SlotId],
    ) -> Result<Vec<u8>> {
        let m = pq.m();
        let mut codes = vec![0u8; slots.len() * m];
        codes
            .par_chunks_mut(m.max(1))
            .zip(slots.par_iter())
            .map_init(Vec::new, |scratch, (code, &s)| {
                let v = storage.get(s).ok_or(Error::UnknownSlot { slot: s })?;
                pq.encode(self.kernels, v, code, scratch);
                Ok(())
            })
            .collect::<Result<()>>()?;
        Ok(codes)
    }

    /// The blocks of `nodes` from the graph's current lists and the layer's
    /// codes (computed in parallel).
    fn make_blocks(&self, layer: &Layer, nodes: &[SlotId]) -> Vec<(SlotId, Vec<u8>)> {
        let stride = layer::stride_for(layer.m());
        nodes
            .par_iter()
            .map_init(Vec::new, |ids, &u| {
                self.graph.links(u, 0, ids);
                let mut b = Vec::with_capacity(stride);
                layer.make_block(ids, &mut b);
                (u, b)
            })
            .collect()
    }

    /// Rebuilds the blocks of `nodes` from the graph's current lists and the
    /// layer's codes, in chunks, each applied under the write lock together with
    /// clearing the nodes' changed marks (until then the walk expands them from
    /// the graph). No list is written meanwhile: adds are serialised by the
    /// writer lock, which the caller holds, and removals write no list.
    fn rebuild_blocks(&self, nodes: &[SlotId], slots: usize) {
        for chunk in nodes.chunks(UPDATE_CHUNK) {
            let blocks = {
                let guard = read(&self.layer);
                let Some(layer) = guard.as_ref() else { return };
                self.make_blocks(layer, chunk)
            };
            let mut guard = write(&self.layer);
            if let Some(layer) = guard.as_mut() {
                layer.apply(Update {
                    codes: Vec::new(),
                    blocks,
                    slots,
                });
                let view = self.graph.view();
                for &u in chunk {
                    view.clear_changed(u);
                }
            }
        }
    }

    /// Every slot the graph holds (present, removed or reserved), below `bound`.
    fn graph_nodes(&self, bound: usize) -> Vec<SlotId> {
        let mut ids = Vec::new();
        (0..bound as u32)
            .filter(|&s| self.graph.links(s, 0, &mut ids))
            .collect()
    }

    /// Trains the codebooks on `sample` (or, when `None`, on up to `train_sample`
    /// present vectors of `storage`), codes every node and builds every block.
    /// Called with the writer lock held.
    fn train_layer(&self, storage: &dyn VectorStorage, sample: Option<&[f32]>) -> Result<()> {
        let m = self.params.pq_m_for(self.dim);
        let owned;
        let sample = match sample {
            Some(s) => s,
            None => {
                let mut rows = Vec::new();
                for s in 0..storage.len() as u32 {
                    if rows.len() >= self.params.train_sample * self.dim {
                        break;
                    }
                    if self.graph.contains(s) {
                        if let Some(v) = storage.get(s) {
                            rows.extend_from_slice(v);
                        }
                    }
                }
                owned = rows;
                &owned
            }
        };
        let pq = ProductQuantizer::train(
            self.kernels,
            sample,
            self.dim,
            m,
            4,
            self.params.seed,
            PQ_ITERS,
        )?;
        let bound = storage.len();
        let nodes = self.graph_nodes(bound);
        let codes = self.encode(&pq, storage, &nodes)?;
        let mut layer = Layer::new(pq);
        layer.reserve_codes(bound);
        for (s, c) in nodes.iter().zip(codes.chunks_exact(m)) {
            layer.set_code(*s, c);
        }
        // Every block is built before the layer is published, and every node's
        // changed mark cleared: the walk never sees a block that is not built.
        layer.blocks.grow_to(bound);
        for chunk in nodes.chunks(UPDATE_CHUNK) {
            for (u, b) in self.make_blocks(&layer, chunk) {
                layer.blocks.set(u, &b);
            }
        }
        {
            let view = self.graph.view();
            for &u in &nodes {
                view.clear_changed(u);
            }
        }
        *write(&self.layer) = Some(layer);
        Ok(())
    }

    /// After the graph took `slots`: codes them and rebuilds the blocks of every
    /// node whose layer-0 list the add changed (the new nodes, the nodes that
    /// took back-links, and those a repair rewired), as the graph marked them.
    /// Called with the writer lock held.
    fn absorb(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        let new: Vec<SlotId> = slots.clone().collect();
        let codes = {
            let guard = read(&self.layer);
            let Some(layer) = guard.as_ref() else {
                return Ok(());
            };
            self.encode(&layer.pq, storage, &new)?
        };
        let bound = (slots.end as usize).max(storage.len());
        if let Some(layer) = write(&self.layer).as_mut() {
            let m = layer.m();
            layer.apply(Update {
                codes: new
                    .iter()
                    .zip(codes.chunks_exact(m))
                    .map(|(&s, c)| (s, c.to_vec()))
                    .collect(),
                blocks: Vec::new(),
                slots: bound,
            });
        }
        // A block codes its node's list lane by lane, so every list the add
        // wrote must be re-coded: not only the new nodes' neighbours, since a
        // node that took a back-link may have dropped it again later in the add.
        let affected = self.graph.changed_lists();
        self.rebuild_blocks(&affected, bound);
        Ok(())
    }

    /// The walk on codes; `None` when the walk cannot answer (no entry point yet).
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        layer: &Layer,
        view: &GraphView<'_>,
        storage: &dyn VectorStorage,
        q: &[f32],
        k: usize,
        ef: usize,
        rerank: Option<usize>,
        work: &mut Work,
        out: &mut Vec<Neighbor>,
    ) -> Option<u64> {
        out.clear();
        work.set_query(k, rerank);
        self.walk_start(layer, view, storage, q, work)?;
        while self.walk_step(layer, view, storage, q, ef, PREFETCH_AHEAD, work) {}
        Some(self.walk_finish(view, storage, q, work, out))
    }

    /// A walk's first part: the exact greedy descent of the upper layers, the
    /// query's table, and a beam holding the layer-0 start node. `None` when the
    /// graph is empty.
    fn walk_start(
        &self,
        layer: &Layer,
        view: &GraphView<'_>,
        storage: &dyn VectorStorage,
        q: &[f32],
        work: &mut Work,
    ) -> Option<()> {
        let ep = self.graph.entry_point()?;
        let top = self.graph.top_level()?;
        let mut dc = 1u64;
        let mut cur = (ep, self.walk_dist(q, storage.get(ep)?));
        for level in (1..=top).rev() {
            loop {
                let mut moved = false;
                work.ids.clear();
                if let Some(list) = view.list(cur.0, level) {
                    work.ids.extend((0..list.len()).map(|i| list.id(i)));
                }
                for &v in &work.ids {
                    if let Some(x) = storage.get(v) {
                        dc += 1;
                        let d = self.walk_dist(q, x);
                        if d < cur.1 {
                            cur = (v, d);
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // One table for the query; estimates are on the walk's scale.
        let m = layer.m();
        work.table.resize(m * layer.pq.ksub(), 0.0);
        let offset = match self.metric {
            Metric::L2 => {
                layer.pq.l2_table(self.kernels, q, &mut work.table);
                0.0
            }
            _ => {
                layer.pq.neg_ip_table(self.kernels, q, &mut work.table);
                1.0
            }
        };
        let (scale, bias) = fastscan::quantize_lut(&work.table, m, &mut work.lut);
        (work.base, work.inv) = (offset + bias, 1.0 / scale);
        let bound = layer.blocks.slots().max(storage.len());
        work.seen.reset(bound);
        work.done.reset(bound);
        work.pool.clear();
        work.seen.insert(cur.0);
        work.pool.push(entry(cur.1, cur.0));
        work.cursor = 0;
        work.start = cur.0;
        work.dc = dc;
        work.exact.clear();
        if let Some(b) = layer.blocks.bytes(cur.0) {
            prefetch(b);
        }
        if let Some(list) = view.list(cur.0, 0) {
            list.prefetch();
        }
        Some(())
    }

    /// Expands the beam's first unexpanded node and prefetches the blocks of the
    /// next `ahead`; returns whether any node is left to expand.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn walk_step(
        &self,
        layer: &Layer,
        view: &GraphView<'_>,
        storage: &dyn VectorStorage,
        q: &[f32],
        ef: usize,
        ahead: usize,
        work: &mut Work,
    ) -> bool {
        let Some(&e) = work.pool.get(work.cursor) else {
            return false;
        };
        let m = layer.m();
        let cb = fastscan::block_bytes(m);
        let u = entry_slot(e);
        work.done.insert(u);
        // The expanded node's vector starts loading beside its block; it is
        // scored once the block is scanned.
        let vector = if work.scores_walk() {
            storage.get(u).inspect(|x| prefetch(x))
        } else {
            None
        };
        let mut next = work.cursor + 1;
        let list = view.list(u, 0);
        let mut expanded = false;
        if let (Some(b), Some(list)) = (layer.blocks.bytes(u), list) {
            let thr = if work.pool.len() >= ef {
                work.pool.last().map_or(f32::INFINITY, |&l| entry_dist(l))
            } else {
                f32::INFINITY
            };
            // The estimates of all 32 lanes and the mask of those that would make
            // the beam, in one pass. A neighbour is not marked unless it passes:
            // its estimate is the same from every block (one codebook, one table)
            // and the beam's bar only rises, so one that fails now fails again.
            let mut est = [0f32; BLOCK];
            let mut mask = self.scanner.scan_filter(
                &b[..cb],
                &work.lut,
                m,
                work.base,
                work.inv,
                None,
                thr,
                &mut est,
            );
            // Lane i codes the list's i-th id; lanes past its length are empty.
            let n = list.len().min(DEGREE);
            if n < DEGREE {
                mask &= (1 << n) - 1;
            }
            let mut ids = [0u32; BLOCK];
            let mut lanes = mask;
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                lanes &= lanes - 1;
                ids[lane] = list.id(lane);
            }
            // Read after the ids: a writer marks a list before writing it, so a
            // clear mark means these ids are the ones the block codes.
            if !view.is_changed(u) {
                expanded = true;
                work.dc += DEGREE as u64;
                while mask != 0 {
                    let lane = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let v = ids[lane];
                    if !work.seen.insert(v) {
                        continue;
                    }
                    if let Some(p) = pool_insert(&mut work.pool, ef, entry(est[lane], v)) {
                        next = next.min(p);
                    }
                }
            }
        }
        if let (false, Some(list)) = (expanded, list) {
            // No current block (its node's list changed in an add still in
            // flight): expand from the graph's list with exact distances.
            for i in 0..list.len() {
                let v = list.id(i);
                if !work.seen.insert(v) {
                    continue;
                }
                let Some(x) = storage.get(v) else { continue };
                work.dc += 1;
                let d = self.walk_dist(q, x);
                if let Some(p) = pool_insert(&mut work.pool, ef, entry(d, v)) {
                    next = next.min(p);
                }
            }
        }
        let mut cursor = next;
        while cursor < work.pool.len() && work.done.contains(entry_slot(work.pool[cursor])) {
            cursor += 1;
        }
        work.cursor = cursor;
        for &e in work.pool[cursor..]
            .iter()
            .filter(|&&e| !work.done.contains(entry_slot(e)))
            .take(ahead)
        {
            let v = entry_slot(e);
            if let Some(b) = layer.blocks.bytes(v) {
                prefetch(b);
            }
            if let Some(list) = view.list(v, 0) {
                list.prefetch();
            }
            if work.scores_walk() {
                if let Some(x) = storage.get(v) {
                    prefetch(x);
                }
            }
        }
        // Scored after the next blocks were asked for: their loads overlap
        // this distance (the expanded node's vector was prefetched earlier).
        if let Some(x) = vector {
            let removed = self.removed_any.load(Ordering::Acquire);
            if may_answer(view, removed, work.start, u) {
                work.dc += 1;
                let d = self.metric.distance(self.kernels, q, x);
                work.score(u, d);
            }
        }
        cursor < work.pool.len()
    }

    /// A walk's last part: under a `rerank` of `r`, scores the final beam's `r`
    /// best estimates exactly (their vectors prefetched [`SCORE_AHEAD`] entries
    /// ahead: independent loads, unlike the walk's); then the `k` closest scored
    /// nodes into `out`. Returns the walk's distance count.
    fn walk_finish(
        &self,
        view: &GraphView<'_>,
        storage: &dyn VectorStorage,
        q: &[f32],
        work: &mut Work,
        out: &mut Vec<Neighbor>,
    ) -> u64 {
        let best = &work.pool[..work.rerank.min(work.pool.len())];
        if !best.is_empty() {
            let removed = self.removed_any.load(Ordering::Acquire);
            for &e in best.iter().take(SCORE_AHEAD) {
                if let Some(x) = storage.get(entry_slot(e)) {
                    prefetch(x);
                }
            }
            for (i, &e) in best.iter().enumerate() {
                if let Some(x) = best
                    .get(i + SCORE_AHEAD)
                    .and_then(|&a| storage.get(entry_slot(a)))
                {
                    prefetch(x);
                }
                let u = entry_slot(e);
                if !may_answer(view, removed, work.start, u) {
                    continue;
                }
                if let Some(x) = storage.get(u) {
                    work.dc += 1;
                    let d = self.metric.distance(self.kernels, q, x);
                    let (w, k) = (&mut work.exact, work.k);
                    keep_closest(w, k, u, d);
                }
            }
        }
        out.clear();
        out.append(&mut work.exact);
        work.dc
    }

    /// The queries `qs` of one batch chunk (answers into `outs`), up to [`WALKS`] walks
    /// at a time taking one step each in turn; queries the walk cannot answer go
    /// to the HNSW search, as in a single search. Returns the distances made.
    #[allow(clippy::too_many_arguments)]
    fn walk_many(
        &self,
        storage: &dyn VectorStorage,
        qs: &[f32],
        k: usize,
        ef: usize,
        rerank: Option<usize>,
        params: &SearchParams,
        scratch: &mut SearchScratch,
        outs: &mut [Vec<Neighbor>],
    ) -> Result<u64> {
        let dim = self.dim;
        let q = |j: usize| qs.get(j * dim..(j + 1) * dim).unwrap_or(&[]);
        let mut dc = 0u64;
        let mut fallback = Vec::new();
        {
            let guard = read(&self.layer);
            if let Some(layer) = guard.as_ref() {
                // Dropped before the fallback below, whose HNSW search takes the
                // graph's lock itself.
                let view = self.graph.view();
                let works = &mut scratch.extra_or_insert_with(Walks::default).0;
                let (walks, ahead) = if layer::stride_for(layer.m()) <= INTERLEAVE_MAX_BLOCK {
                    (WALKS, PREFETCH_AHEAD_INTERLEAVED)
                } else {
                    (1, PREFETCH_AHEAD)
                };
                works.resize_with(walks, Work::default);
                for w in works.iter_mut() {
                    w.set_query(k, rerank);
                }
                // The query each walk answers (`usize::MAX`: none).
                let mut lane = [usize::MAX; WALKS];
                let mut next = 0;
                let n = outs.len();
                let start = |work: &mut Work, next: &mut usize, fallback: &mut Vec<usize>| {
                    while *next < n {
                        let j = *next;
                        *next += 1;
                        if self.walk_start(layer, &view, storage, q(j), work).is_some() {
                            return j;
                        }
                        fallback.push(j);
                    }
                    usize::MAX
                };
                for (l, w) in lane.iter_mut().zip(works.iter_mut()) {
                    *l = start(w, &mut next, &mut fallback);
                }
                let want = k.min(self.graph.len());
                while lane.iter().any(|&j| j != usize::MAX) {
                    for (l, w) in lane.iter_mut().zip(works.iter_mut()) {
                        let j = *l;
                        if j == usize::MAX
                            || self.walk_step(layer, &view, storage, q(j), ef, ahead, w)
                        {
                            continue;
                        }
                        let Some(out) = outs.get_mut(j) else { continue };
                        let d = self.walk_finish(&view, storage, q(j), w, out);
                        if out.len() >= want {
                            dc += d;
                        } else {
                            fallback.push(j);
                        }
                        *l = start(w, &mut next, &mut fallback);
                    }
                }
            } else {
                fallback.extend(0..outs.len());
            }
        }
        for j in fallback {
            let Some(out) = outs.get_mut(j) else { continue };
            let req = SearchRequest::new(q(j), k, params);
            dc += self
                .graph_search(storage, &req, Some(ef), scratch, out)?
                .distance_computations;
        }
        Ok(dc)
    }

    /// The HNSW search with `ef` (filtered, exhaustive and untrained queries).
    fn graph_search(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        ef: Option<usize>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let mut params = SearchParams::new();
        params.exhaustive = req.params.exhaustive;
        if let Some(ef) = ef {
            params = params.with("ef", ef);
        }
        let mut r = SearchRequest::new(req.query, req.k, &params);
        r.filter = req.filter;
        self.graph.search_unchecked(storage, &r, scratch, out)
    }
}

impl VectorIndex for QgIndex {
    fn name(&self) -> &'static str {
        "qg"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        let _w = lock(&self.writer);
        self.graph.add(storage, slots.clone())?;
        let dc = self.graph.stats().build_distance_computations;
        self.build_distances.store(dc, Ordering::Relaxed);
        let trained = read(&self.layer).is_some();
        if !trained {
            if self.graph.len() >= self.params.train_at {
                self.train_layer(storage, None)?;
            }
            return Ok(());
        }
        self.absorb(storage, slots)
    }

    fn remove(&self, slot: SlotId) -> Result<()> {
        self.graph.remove(slot)?;
        self.removed_any.store(true, Ordering::Release);
        Ok(())
    }

    fn contains(&self, slot: SlotId) -> bool {
        self.graph.contains(slot)
    }

    fn len(&self) -> usize {
        self.graph.len()
    }

    fn build_params(&self) -> Params {
        self.params.to_params(self.dim)
    }

    fn check_search_params(&self, params: &SearchParams) -> Result<()> {
        QgSearch::from_params(params).map(|_| ())
    }

    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let knobs = QgSearch::from_params(req.params)?;
        omen_core::validate::check_storage_dim(self.dim, storage)?;
        self.searches.fetch_add(1, Ordering::Relaxed);
        let (ef, rerank) = knobs.resolve(req.k, self.params.ef_search);
        let stats = 'walk: {
            if req.filter.is_some() || req.params.exhaustive {
                break 'walk None;
            }
            let guard = read(&self.layer);
            let Some(layer) = guard.as_ref() else {
                break 'walk None;
            };
            let work = scratch.extra_or_insert_with(Work::default);
            let view = self.graph.view();
            let dc = self.walk(
                layer, &view, storage, req.query, req.k, ef, rerank, work, out,
            );
            drop(view);
            match dc {
                // Fewer than k found while more are present: the graph search,
                // with its exact fallbacks, settles it.
                Some(dc) if out.len() >= req.k.min(self.graph.len()) => Some(SearchStats {
                    distance_computations: dc,
                }),
                _ => None,
            }
        };
        let stats = match stats {
            Some(s) => s,
            None => self.graph_search(storage, req, Some(ef), scratch, out)?,
        };
        self.search_distances
            .fetch_add(stats.distance_computations, Ordering::Relaxed);
        Ok(stats)
    }

    /// Without a filter, on a trained index: up to two walks interleaved per
    /// worker (`walk_many`, each walk taking one node visit in turn); otherwise
    /// one search per query.
    fn search_batch_unchecked(
        &self,
        storage: &dyn VectorStorage,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
        out: &mut Vec<Vec<Neighbor>>,
    ) -> Result<SearchStats> {
        let knobs = QgSearch::from_params(params)?;
        if filter.is_some() || params.exhaustive || !self.is_trained() {
            return omen_core::search_each(self, storage, queries, k, params, filter, out);
        }
        omen_core::validate::check_storage_dim(self.dim, storage)?;
        let (ef, rerank) = knobs.resolve(k, self.params.ef_search);
        let dim = self.dim;
        let nq = queries.len() / dim;
        out.resize_with(nq, Vec::new);
        // Chunks for rayon to balance, each long enough to keep every walk busy.
        let chunk = (nq / (8 * rayon::current_num_threads()))
            .max(4 * WALKS)
            .min(nq.max(1));
        let dcs: Result<Vec<u64>> = queries
            .par_chunks(chunk * dim)
            .zip(out.par_chunks_mut(chunk))
            .map_init(SearchScratch::new, |scratch, (qs, outs)| {
                self.walk_many(storage, qs, k, ef, rerank, params, scratch, outs)
            })
            .collect();
        let dc: u64 = dcs?.iter().sum();
        self.searches.fetch_add(nq as u64, Ordering::Relaxed);
        self.search_distances.fetch_add(dc, Ordering::Relaxed);
        Ok(SearchStats {
            distance_computations: dc,
        })
    }

    fn is_trained(&self) -> bool {
        read(&self.layer).is_some()
    }

    fn train(&self, storage: &dyn VectorStorage, sample: &[f32]) -> Result<()> {
        let _w = lock(&self.writer);
        if read(&self.layer).is_some() {
            return Err(Error::invalid_param(
                "train",
                "the qg index is already trained",
            ));
        }
        omen_core::validate::check_storage_dim(self.dim, storage)?;
        let rows = omen_core::validate::check_rows(sample, self.dim)?;
        if rows < 16 {
            return Err(Error::invalid_param(
                "train",
                format!("a 4-bit codebook needs at least 16 sample rows, got {rows}"),
            ));
        }
        self.train_layer(storage, Some(sample))
    }

    fn memory_bytes(&self) -> usize {
        let m = self.memory_breakdown();
        std::mem::size_of::<Self>() + m.graph + m.codes + m.blocks + m.codebooks
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
