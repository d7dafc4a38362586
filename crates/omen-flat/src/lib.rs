//! Exact (flat) index: the ground truth every other index is tested against.
//!
//! [`FlatIndex`] scans every row of the storage with the one-to-many kernels of
//! [`omen_simd`](omen_core::simd) and keeps the `k` closest present slots in a
//! bounded heap. Results are exact, closest first, ties broken by slot
//! ([`Neighbor`]'s order).
//!
//! # Single query and batch
//! [`VectorIndex::search`] computes each distance with the one-to-many kernel
//! (`l2_sq_many`, `dot_many`, `cosine_many`), i.e. the same number as
//! [`Metric::distance`]. [`VectorIndex::search_batch`] is overridden with a tiled
//! path: blocks of queries against blocks of rows through `l2_sq_tile` /
//! `dot_tile`, in parallel over query blocks with rayon. A SIMD tile kernel may
//! sum in a different order from the one-to-many kernel, so batch distances can
//! differ from single-query ones by float rounding (a few ulps of the terms), and
//! two neighbours whose distances are that close may swap places. Every other
//! difference is a bug. For cosine the tile computes `1 - a·b / sqrt(|a|²|b|²)` from
//! a tiled dot product and per-row norms, the formula of the cosine kernel.
//!
//! # Concurrency
//! All methods take `&self`. The set of present slots is an atomic bitset (see
//! `present.rs` for the argument); a search running while slots are added or
//! removed may or may not return those slots, and never anything else.

mod kind;
mod present;

pub use kind::{FlatKind, FLAT};

use omen_core::simd::{scalar::cosine_from_parts, Kernels};
use omen_core::sync::atomic::{AtomicU64, Ordering};
use omen_core::{
    Error, IndexStats, Metric, Neighbor, Result, SearchParams, SearchRequest, SearchScratch,
    SearchStats, SlotFilter, SlotId, TopK, VectorIndex, VectorStorage,
};
use present::{PresentSet, PresentView};
use rayon::prelude::*;
use std::ops::Range;

/// Rows per kernel call in the single-query scan: 1024 rows of distances (4 KiB)
/// stay in L1 while they are filtered into the heap.
const SCAN_ROWS: usize = 1024;
/// A bitmap filter whose set bits are fewer than 1/`BITMAP_SCAN_RATIO` of the
/// present slots is scanned row by row (its set bits only) instead of through the
/// blocked kernels over every row.
const BITMAP_SCAN_RATIO: usize = 8;

/// Rows per tile in the batched path.
///
/// Tile shape, measured with `examples/flat_scan.rs` on the 2-core Zen4 (AVX-512)
/// box, 3,000 queries over 390,000 × 50, one thread, queries per CPU-second:
/// 64×256 1,425; 128×512 1,750; 256×512 1,940; 512×256 1,930; 512×512 2,013;
/// 256×1024 1,910. Larger query blocks amortise the kernel's repacking of each
/// row block over more queries.
const TILE_ROWS: usize = 512;

/// Queries per tile in the batched path: a block of queries shares each block of
/// rows it loads and packs, so that work falls by this factor.
const TILE_QUERIES: usize = 512;

/// Distances are checked against the heap threshold this many at a time: a test
/// over a whole group vectorises, and most groups hold no candidate.
const GROUP: usize = 16;

/// Exact search over every present slot of a storage.
///
/// ```
/// use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
/// use omen_flat::FlatIndex;
/// use omen_storage::MemoryStorage;
///
/// let storage = MemoryStorage::new(2)?;
/// let slots = storage.append_batch(&[0.0, 0.0, 1.0, 0.0, 5.0, 5.0])?;
/// let index = FlatIndex::new(2, Metric::L2)?;
/// index.add(&storage, slots)?;
/// let params = SearchParams::new();
/// let req = SearchRequest::new(&[0.9, 0.0], 2, &params);
/// let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
/// index.search(&storage, &req, &mut scratch, &mut out)?;
/// assert_eq!(out.iter().map(|n| n.slot).collect::<Vec<_>>(), vec![1, 0]);
/// # Ok::<(), omen_core::Error>(())
/// ```
pub struct FlatIndex {
    dim: usize,
    metric: Metric,
    present: PresentSet,
    searches: AtomicU64,
    search_distance_computations: AtomicU64,
}

impl FlatIndex {
    /// An empty index of `dim`-wide vectors under `metric`. `dim == 0` is
    /// `InvalidParameter`.
    pub fn new(dim: usize, metric: Metric) -> Result<FlatIndex> {
        if dim == 0 {
            return Err(Error::invalid_param("dim", "must be at least 1"));
        }
        Ok(FlatIndex {
            dim,
            metric,
            present: PresentSet::new(),
            searches: AtomicU64::new(0),
            search_distance_computations: AtomicU64::new(0),
        })
    }

    fn check_storage(&self, storage: &dyn VectorStorage) -> Result<()> {
        omen_core::validate::check_storage_dim(self.dim, storage)
    }

    fn record(&self, queries: u64, stats: SearchStats) {
        self.searches.fetch_add(queries, Ordering::Relaxed);
        self.search_distance_computations
            .fetch_add(stats.distance_computations, Ordering::Relaxed);
    }

    /// A bitmap filter selective enough that computing only its rows beats the
    /// blocked kernels over every row: its set bits.
    fn selective_bitmap<'f>(&self, filter: Option<&'f dyn SlotFilter>) -> Option<&'f [u64]> {
        let bits = filter?.bitmap()?;
        let set: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
        (set.saturating_mul(BITMAP_SCAN_RATIO) < self.present.len()).then_some(bits)
    }

    /// Offers to `top` the exact distance of every present slot set in `bits`;
    /// returns how many were computed.
    fn scan_bitmap(
        &self,
        storage: &dyn VectorStorage,
        query: &[f32],
        bits: &[u64],
        top: &mut TopK,
    ) -> u64 {
        let kernels = Kernels::best();
        let present = self.present.view();
        let mut computed = 0;
        for slot in omen_core::bitmap_slots(bits) {
            if !present.contains(slot as usize) {
                continue;
            }
            if let Some(v) = storage.get(slot) {
                computed += 1;
                top.push(Neighbor::new(slot, self.metric.distance(kernels, query, v)));
            }
        }
        computed
    }

    /// The single-query scan; returns the number of distances computed.
    fn scan(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
    ) -> u64 {
        let kernels = Kernels::best();
        let dim = self.dim;
        let query = req.query;
        let top = &mut scratch.top;
        top.reset(req.k);
        if let Some(bits) = self.selective_bitmap(req.filter) {
            return self.scan_bitmap(storage, query, bits, top);
        }
        if scratch.distances.len() < SCAN_ROWS {
            scratch.distances.resize(SCAN_ROWS, 0.0);
        }
        let mut computed = 0u64;
        for (start, rows) in storage.blocks() {
            for (ci, chunk) in rows.chunks(SCAN_ROWS * dim).enumerate() {
                let first = start as usize + ci * SCAN_ROWS;
                let n = chunk.len() / dim;
                let present = self.present.view();
                if !present.any_in(first, n) {
                    continue;
                }
                let d = &mut scratch.distances[..n];
                match self.metric {
                    Metric::L2 => {
                        kernels.l2_sq_many(query, chunk, d);
                        collect(top, d, first, &present, req.filter, |x| x);
                    }
                    Metric::Cosine => {
                        kernels.cosine_many(query, chunk, d);
                        collect(top, d, first, &present, req.filter, |x| x);
                    }
                    // InnerProduct and any later metric defined as 1 - dot.
                    _ => {
                        kernels.dot_many(query, chunk, d);
                        collect(top, d, first, &present, req.filter, |x| 1.0 - x);
                    }
                }
                computed += n as u64;
            }
        }
        computed
    }

    /// Answers the queries of one tile block into `outs`; returns the distances
    /// computed.
    fn search_tile_block(
        &self,
        storage: &dyn VectorStorage,
        queries: &[f32],
        k: usize,
        filter: Option<&dyn SlotFilter>,
        ts: &mut TileScratch,
        outs: &mut [Vec<Neighbor>],
    ) -> u64 {
        let kernels = Kernels::best();
        let dim = self.dim;
        let nq = queries.len() / dim;
        ts.tops.resize_with(nq, TopK::default);
        ts.tops.iter_mut().for_each(|t| t.reset(k));
        if let Some(bits) = self.selective_bitmap(filter) {
            let mut computed = 0;
            for ((q, top), out) in queries.chunks_exact(dim).zip(&mut ts.tops).zip(outs) {
                computed += self.scan_bitmap(storage, q, bits, top);
                top.drain_sorted_into(out);
            }
            return computed;
        }
        let cosine = self.metric == Metric::Cosine;
        if cosine {
            ts.query_norms.clear();
            ts.query_norms
                .extend(queries.chunks_exact(dim).map(|q| kernels.dot(q, q)));
        }
        let mut computed = 0u64;
        for (start, rows) in storage.blocks() {
            for (ci, chunk) in rows.chunks(TILE_ROWS * dim).enumerate() {
                let first = start as usize + ci * TILE_ROWS;
                let nr = chunk.len() / dim;
                let present = self.present.view();
                if !present.any_in(first, nr) {
                    continue;
                }
                let tile = &mut ts.tile;
                tile.resize(nq * nr, 0.0);
                match self.metric {
                    Metric::L2 => kernels.l2_sq_tile(queries, chunk, dim, tile, &mut ts.pack),
                    _ => kernels.dot_tile(queries, chunk, dim, tile, &mut ts.pack),
                }
                if cosine {
                    ts.row_norms.clear();
                    ts.row_norms
                        .extend(chunk.chunks_exact(dim).map(|r| kernels.dot(r, r)));
                }
                computed += (nq * nr) as u64;
                for (qi, (line, top)) in tile.chunks_exact_mut(nr).zip(&mut ts.tops).enumerate() {
                    match self.metric {
                        Metric::L2 => collect(top, line, first, &present, filter, |x| x),
                        Metric::Cosine => {
                            let qn = ts.query_norms[qi];
                            for (x, &rn) in line.iter_mut().zip(&ts.row_norms) {
                                *x = cosine_from_parts(*x, qn, rn);
                            }
                            collect(top, line, first, &present, filter, |x| x);
                        }
                        _ => collect(top, line, first, &present, filter, |x| 1.0 - x),
                    }
                }
            }
        }
        for (top, out) in ts.tops.iter_mut().zip(outs) {
            top.drain_sorted_into(out);
        }
        computed
    }
}

/// Offers rows `first..first + raw.len()` to `top`, with distance
/// `to_distance(raw[i])`, skipping absent slots and those the filter refuses.
///
/// Converting here (for inner product, `1 - dot`) rather than in a separate pass
/// saves a store and a reload of every value; generic so each conversion is
/// inlined into its own vectorised loop.
#[inline(always)]
fn collect<F: Fn(f32) -> f32>(
    top: &mut TopK,
    raw: &[f32],
    first: usize,
    present: &PresentView<'_>,
    filter: Option<&dyn SlotFilter>,
    to_distance: F,
) {
    let mut threshold = top.threshold();
    let offer = |top: &mut TopK, threshold: &mut f32, i: usize, d: f32| {
        if d > *threshold {
            return;
        }
        let slot = first + i;
        if !present.contains(slot) {
            return;
        }
        let slot = slot as SlotId;
        if filter.is_some_and(|f| !f.allows(slot)) {
            return;
        }
        if top.push(Neighbor::new(slot, d)) {
            *threshold = top.threshold();
        }
    };
    let mut groups = raw.chunks_exact(GROUP);
    for (gi, group) in (&mut groups).enumerate() {
        // A branch-free count over a fixed-size group compiles to a few vector
        // instructions; most groups hold no candidate once the heap is full.
        let hits: u32 = group
            .iter()
            .map(|&x| u32::from(to_distance(x) <= threshold))
            .sum();
        if hits == 0 {
            continue;
        }
        for (li, &x) in group.iter().enumerate() {
            offer(top, &mut threshold, gi * GROUP + li, to_distance(x));
        }
    }
    let base = raw.len() - groups.remainder().len();
    for (li, &x) in groups.remainder().iter().enumerate() {
        offer(top, &mut threshold, base + li, to_distance(x));
    }
}

/// Per-worker memory of the batched path.
#[derive(Default)]
struct TileScratch {
    tops: Vec<TopK>,
    tile: Vec<f32>,
    pack: Vec<f32>,
    query_norms: Vec<f32>,
    row_norms: Vec<f32>,
}

impl VectorIndex for FlatIndex {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        self.check_storage(storage)?;
        if slots.is_empty() {
            return Ok(());
        }
        omen_core::validate::check_published(storage, &slots)?;
        self.present.insert_range(slots)
    }

    fn remove(&self, slot: SlotId) -> Result<()> {
        self.present.remove(slot)
    }

    fn contains(&self, slot: SlotId) -> bool {
        self.present.contains(slot)
    }

    fn len(&self) -> usize {
        self.present.len()
    }

    fn check_search_params(&self, params: &SearchParams) -> Result<()> {
        check_knobs(params)
    }

    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.check_storage(storage)?;
        check_knobs(req.params)?;
        let computed = self.scan(storage, req, scratch);
        scratch.top.drain_sorted_into(out);
        let stats = SearchStats {
            distance_computations: computed,
        };
        self.record(1, stats);
        Ok(stats)
    }

    fn search_batch_unchecked(
        &self,
        storage: &dyn VectorStorage,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
        out: &mut Vec<Vec<Neighbor>>,
    ) -> Result<SearchStats> {
        let dim = self.dim;
        let nq = queries.len() / dim;
        check_knobs(params)?;
        self.check_storage(storage)?;
        out.resize_with(nq, Vec::new);
        if nq == 0 {
            return Ok(SearchStats::default());
        }
        // Enough blocks to keep every worker busy, but no larger than a tile.
        let per_block = nq
            .div_ceil(rayon::current_num_threads().max(1))
            .clamp(1, TILE_QUERIES);
        let computed: u64 = queries
            .par_chunks(per_block * dim)
            .zip(out.par_chunks_mut(per_block))
            .map_init(TileScratch::default, |ts, (qs, outs)| {
                self.search_tile_block(storage, qs, k, filter, ts, outs)
            })
            .sum();
        let stats = SearchStats {
            distance_computations: computed,
        };
        self.record(nq as u64, stats);
        Ok(stats)
    }

    fn memory_bytes(&self) -> usize {
        self.present.memory_bytes()
    }

    fn stats(&self) -> IndexStats {
        IndexStats {
            searches: self.searches.load(Ordering::Relaxed),
            search_distance_computations: self.search_distance_computations.load(Ordering::Relaxed),
            build_distance_computations: 0,
        }
    }
}

/// The flat index takes no knobs: a key is refused rather than ignored.
fn check_knobs(params: &SearchParams) -> Result<()> {
    params.knobs().check_keys("flat search", &[])
}

impl std::fmt::Debug for FlatIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatIndex")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
