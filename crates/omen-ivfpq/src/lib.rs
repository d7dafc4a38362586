//! IVF-PQ index for Omen: a coarse k-means quantizer splits the space into `nlist`
//! cells; each vector is stored in its cell's inverted list as the product-quantised
//! code of its residual (vector minus cell centroid); a search probes the `nprobe`
//! closest cells, ranks their codes by approximate distance, keeps
//! `k × rerank_factor` candidates and re-scores them exactly against the full
//! vectors in storage.
//!
//! * [`kmeans`]: k-means shared by the coarse quantizer and PQ.
//! * [`pq`]: product quantizer (4 or 8 bits per sub-quantizer).
//! * [`fastscan`]: the 4-bit block layout and its scalar/AVX2/AVX-512BW scan (it lives in
//!   `omen-simd`, re-exported here).
//!
//! # Metrics
//! Every metric builds one distance table per query (and, for 4 bits, quantises it
//! once); a probed list adds only numbers it already has.
//! * `L2`: `|q - c - r̂|² = |q - c|² - 2 q·r̂ + (|r̂|² + 2 c·r̂)`. The first term is
//!   the coarse distance, computed anyway to choose the lists; the second is the
//!   query's table of `-2 q·b` over the PQ centroids `b`; the third depends only on
//!   the list and the code, and each list entry keeps it as one float (its *term*,
//!   see [`pq::ProductQuantizer::list_terms_table`]), added to the table sum by
//!   the scan. FAISS instead adds a precomputed per-list table (`nlist × m × ksub`
//!   floats) to the query's table and quantises the result for every probed list;
//!   per-entry terms cost 4 bytes per vector and leave nothing to do per list.
//!   The terms are not stored in the file: loading recomputes them from the
//!   centroids, the codebooks and the codes.
//! * `InnerProduct` and `Cosine` (vectors and queries unit-normalised by the
//!   collection): `1 - q·x ≈ 1 - q·c - q·r̂`, as FAISS's by-residual inner-product
//!   scan does: the table of `-q·r̂` terms is built (and, for 4 bits, quantised)
//!   once per query, and each list adds its own `1 - q·c`. Lists are assigned by the
//!   largest inner product; the coarse quantizer is trained with spherical k-means
//!   for cosine and plain k-means for inner product.
//!
//! Candidates at most the pool's running threshold are collected in a buffer and
//! cut back to the best `k × rerank_factor` by selection (`src/pool.rs`), not
//! kept in a heap.
//!
//! Re-ranking always uses the exact metric, through omen-simd's kernels for
//! scattered rows (`l2_sq_rows` and friends: the candidates' rows are gathered a
//! batch at a time, the next batch's rows prefetched meanwhile), which give the
//! same numbers as the flat index's one-to-many kernels; returned distances are
//! exact.
//!
//! # Search parameters
//! [`SearchParams::nprobe`](omen_core::SearchParams) (default
//! [`IvfPqParams::nprobe`]) lists are probed and `k × rerank_factor` candidates
//! re-scored. [`SearchParams::exhaustive`](omen_core::SearchParams::exhaustive)
//! probes every list and re-scores every candidate, so the result is exactly the
//! flat index's. `nprobe` above `nlist` is `InvalidParameter`.
//!
//! # Filtered search
//! A filter is applied inside the list scan (a rejected slot never enters the
//! re-rank pool). A very selective filter would leave the probed lists with too
//! few matching rows, so a filtered query first estimates the filter's
//! selectivity from 256 sampled present slots and re-ranks every matching row
//! exactly when fewer than [`FILTER_FLAT_FRACTION`] (2 %) are expected to match,
//! or when the probed lists (`nprobe / nlist` of the rows) are expected to hold
//! fewer than [`FILTER_FLAT_POOL_FACTOR`] times the re-rank pool of them; and a
//! query whose lists gave fewer than `k` results is answered that way too, so
//! `k` results come back whenever `k` rows match.
//!
//! # 4-bit fast scan
//! With `nbits = 4` the codes are stored in FAISS's interleaved blocks of 32 and
//! scanned with byte shuffles against a u8-quantised table ([`fastscan`]): AVX-512BW
//! or AVX2 when the CPU has them (detected at run time by `omen-simd`, following the
//! distance kernels' choice, so `OMEN_ISA=scalar` forces the portable scan), with
//! results identical to the scalar scan.
//!
//! # Training
//! Training is explicit ([`IvfPqIndex::train`]) or automatic: once the index holds
//! [`IvfPqParams::train_size`] slots (0 disables this), the next `add` trains on
//! (a sample of up to `train_size` of) them. Slots added before training are
//! *buffered*: kept as slot numbers, answered by exact scan, and encoded into the
//! lists by the first `add` after training (or [`IvfPqIndex::flush`]). Searching an
//! untrained index is therefore exact (a flat scan of the buffered slots).
//!
//! Retraining ([`IvfPqIndex::retrain`]) trains a new model and re-encodes every
//! present slot from storage; searches keep using the old model until the new one
//! is swapped in whole. It also drops the codes of removed slots.
//!
//! # Deletes
//! [`VectorIndex::remove`] clears the slot's bit in the present bitset (a tombstone);
//! its code stays in its list and is skipped by searches until a compaction
//! ([`IvfPqIndex::compact`]) rewrites the lists without it, which the next `add`
//! does by itself once removed codes pass [`COMPACT_FRACTION`] of the entries (as
//! FAISS's `remove_ids` compacts at once): under churn, list scans and memory
//! follow the live rows. Retraining drops them too. A removed slot cannot be added
//! again (`SlotExists`): storage slots are never reused.
//!
//! # Concurrency
//! Each inverted list sits behind its own `RwLock` (from `omen_core::sync`); adds
//! append under the write lock, searches scan under the read lock. A slot becomes
//! visible when its present bit is set, after its code was appended, so a search
//! sees either the whole entry or nothing. Writers (`add`, `train`, `retrain`,
//! `flush`) are serialised by one mutex.
//!
//! # Not implemented
//! OPQ (a learned rotation before PQ) is not implemented and was not measured: on
//! GloVe-50 the plain residual PQ with re-ranking already beats the FAISS fast-scan
//! baseline, and a rotation adds a `dim × dim` product per query.
//!
//! # Persistence
//! [`IvfPqIndex::to_bytes`]/[`IvfPqIndex::from_bytes`] (and `save`/`load`) write and
//! validate the format described in `FORMAT.md`.

pub use omen_core::simd::fastscan;
mod kind;
/// k-means, shared with the other indexes (it lives in `omen-core`).
pub use omen_core::kmeans;
mod persist;
mod pool;
/// Product quantisation, shared with the other indexes (it lives in `omen-core`).
pub use omen_core::pq;

use fastscan::{Scanner, BLOCK};
use kmeans::{KMeansInit, KMeansParams};
use omen_core::simd::{prefetch, Kernels};
use omen_core::sync::atomic::{AtomicU64, Ordering};
use omen_core::sync::{self, Arc, Mutex, RwLock};
use omen_core::validate::check_finite;
use omen_core::{
    Error, IndexStats, Metric, Neighbor, Result, SearchParams, SearchRequest, SearchScratch,
    SearchStats, SlotFilter, SlotId, TopK, VectorIndex, VectorStorage,
};
use pool::{order_key, CandidatePool};
use pq::ProductQuantizer;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::ops::Range;

pub use kind::{default_pq_m, IvfPqKind, IvfPqSearch, DEFAULT_NLIST, IVFPQ};

/// Parameters of an IVF-PQ index.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IvfPqParams {
    /// Number of inverted lists (coarse centroids).
    pub nlist: usize,
    /// Number of PQ sub-quantizers; must divide the dimension.
    pub m: usize,
    /// Bits per sub-quantizer code: 4 (fast scan) or 8.
    pub nbits: u32,
    /// Automatic training threshold and sample size: training happens when this many
    /// slots are held, on all of them. 0 means train only when asked.
    pub train_size: usize,
    /// Default candidates kept per result and re-scored exactly.
    pub rerank_factor: usize,
    /// Default number of lists probed.
    pub nprobe: usize,
    /// Seed of every random choice in training.
    pub seed: u64,
    /// Lloyd iterations for the coarse quantizer and for each sub-quantizer.
    pub kmeans_iters: usize,
}

impl IvfPqParams {
    /// `nlist` lists and `m` sub-quantizers of 4 bits; auto-training at
    /// `max(39 · nlist, 1024)` slots (FAISS's lower bound of 39 points per
    /// centroid), re-rank factor 10, nprobe `min(16, nlist)`, seed 0, 20 iterations.
    pub fn new(nlist: usize, m: usize) -> Self {
        IvfPqParams {
            nlist,
            m,
            nbits: 4,
            train_size: nlist.saturating_mul(39).max(1024),
            rerank_factor: 10,
            nprobe: nlist.clamp(1, 16),
            seed: 0,
            kmeans_iters: 20,
        }
    }

    /// Sets the bits per code (4 or 8).
    pub fn with_nbits(mut self, nbits: u32) -> Self {
        self.nbits = nbits;
        self
    }

    /// Sets the automatic-training threshold (0: explicit only).
    pub fn with_train_size(mut self, n: usize) -> Self {
        self.train_size = n;
        self
    }

    /// Sets the default nprobe.
    pub fn with_nprobe(mut self, n: usize) -> Self {
        self.nprobe = n;
        self
    }

    /// Sets the default re-rank factor.
    pub fn with_rerank_factor(mut self, f: usize) -> Self {
        self.rerank_factor = f;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the k-means iterations.
    pub fn with_kmeans_iters(mut self, iters: usize) -> Self {
        self.kmeans_iters = iters;
        self
    }

    /// Checks the parameters against a dimension.
    pub fn validate(&self, dim: usize) -> Result<()> {
        if dim == 0 {
            return Err(Error::invalid_param("dim", "must be at least 1"));
        }
        if self.nlist == 0 || self.nlist > u32::MAX as usize {
            return Err(Error::invalid_param("nlist", "must be in 1..=2^32-1"));
        }
        ProductQuantizer::check_shape(dim, self.m, self.nbits)?;
        if self.nprobe == 0 || self.nprobe > self.nlist {
            return Err(Error::invalid_param(
                "nprobe",
                format!("must be in 1..={} (nlist), got {}", self.nlist, self.nprobe),
            ));
        }
        if self.rerank_factor == 0 {
            return Err(Error::invalid_param("rerank_factor", "must be at least 1"));
        }
        let need = self.nlist.max(1 << self.nbits);
        if self.train_size != 0 && self.train_size < need {
            return Err(Error::invalid_param(
                "train_size",
                format!("must be 0 or at least {need} (nlist and 2^nbits)"),
            ));
        }
        Ok(())
    }
}

/// One inverted list: slot numbers and codes, in insertion order.
#[derive(Default, Debug)]
pub(crate) struct InvList {
    pub(crate) ids: Vec<SlotId>,
    /// 8 bits: `m` bytes per entry. 4 bits: [`fastscan`] blocks of 32 entries.
    pub(crate) codes: Vec<u8>,
    /// L2 only (empty otherwise): each entry's term `|r̂|² + 2 c·r̂` (see the crate
    /// docs), one float per entry; for 4 bits, zero-padded to whole blocks so the
    /// scan reads 32 at a time.
    pub(crate) terms: Vec<f32>,
}

/// The trained state: immutable except for the lists' contents.
pub(crate) struct Model {
    pub(crate) coarse: Vec<f32>,
    pub(crate) pq: ProductQuantizer,
    pub(crate) lists: Vec<RwLock<InvList>>,
    /// Whether list entries carry L2 terms (the metric is L2).
    pub(crate) l2_terms: bool,
}

impl Model {
    fn nlist(&self) -> usize {
        self.lists.len()
    }
}

/// Which slots the index holds. `present`: added and not removed. `known`: ever
/// added. `pending`: held but not yet encoded (answered by exact scan).
#[derive(Default, Debug)]
pub(crate) struct Members {
    pub(crate) present: Vec<u64>,
    pub(crate) known: Vec<u64>,
    pub(crate) pending_bits: Vec<u64>,
    pub(crate) pending: Vec<SlotId>,
    pub(crate) len: usize,
    /// Entries of removed slots still in the lists (tombstones), dropped by
    /// [`IvfPqIndex::compact`].
    pub(crate) dead: usize,
}

#[inline]
fn bit(v: &[u64], s: SlotId) -> bool {
    v.get(s as usize / 64)
        .is_some_and(|w| w >> (s % 64) & 1 == 1)
}

#[inline]
fn set_bit(v: &mut Vec<u64>, s: SlotId, on: bool) {
    let w = s as usize / 64;
    if w >= v.len() {
        if !on {
            return;
        }
        v.resize(w + 1, 0);
    }
    if on {
        v[w] |= 1 << (s % 64);
    } else {
        v[w] &= !(1 << (s % 64));
    }
}

impl Members {
    /// Whether a list entry for `s` should be returned.
    #[inline]
    fn visible_in_lists(&self, s: SlotId) -> bool {
        bit(&self.present, s) && !bit(&self.pending_bits, s)
    }

    /// Whether removed entries have passed [`COMPACT_FRACTION`] of the lists'.
    fn compaction_due(&self) -> bool {
        let live = self.len - self.pending.len();
        self.dead > 0 && self.dead as f64 > COMPACT_FRACTION * (live + self.dead) as f64
    }
}

/// Once the codes of removed slots are more than this fraction of the lists'
/// entries, the next `add` drops them ([`IvfPqIndex::compact`]): a scan then
/// reads no more than 1 / (1 - 0.2) = 1.25 times the live entries, and memory
/// follows the live rows under churn (a sliding window) instead of every row
/// ever added.
pub const COMPACT_FRACTION: f64 = 0.2;

/// IVF-PQ index over one storage. See the crate documentation.
///
/// ```
/// use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
/// use omen_ivfpq::{IvfPqIndex, IvfPqParams};
/// use omen_storage::MemoryStorage;
///
/// let dim = 8;
/// let rows: Vec<f32> = (0..2000 * dim).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
/// let storage = MemoryStorage::new(dim)?;
/// let slots = storage.append_batch(&rows)?;
/// // 16 lists, 4 sub-quantizers of 4 bits; trains itself once 1,024 slots are held.
/// let index = IvfPqIndex::new(dim, Metric::L2, IvfPqParams::new(16, 4))?;
/// index.add(&storage, slots)?;
/// assert!(index.is_trained());
/// let params = SearchParams::new().with("nprobe", 4).with("rerank_factor", 10);
/// let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
/// index.search(&storage, &SearchRequest::new(&rows[..dim], 5, &params), &mut scratch, &mut out)?;
/// assert_eq!(out[0].slot, 0);
/// # Ok::<(), omen_core::Error>(())
/// ```
pub struct IvfPqIndex {
    dim: usize,
    metric: Metric,
    params: IvfPqParams,
    kernels: &'static Kernels,
    scanner: Scanner,
    model: RwLock<Option<Arc<Model>>>,
    members: RwLock<Members>,
    writer: Mutex<()>,
    searches: AtomicU64,
    search_dc: AtomicU64,
    build_dc: AtomicU64,
}

impl std::fmt::Debug for IvfPqIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IvfPqIndex")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("trained", &self.is_trained())
            .field("len", &self.len())
            .finish()
    }
}

/// Rows per call of the tiled kernel when assigning lists. The kernel packs both
/// operands on every call: 256 rows keep the repacking of the centroids small next
/// to the arithmetic, and the distance tile (256 × nlist floats) within L2.
const ASSIGN_TILE: usize = 256;

/// Re-ranking gathers this many candidates' rows at a time, prefetching them while
/// the previous batch's distances are computed.
const RERANK_BATCH: usize = 16;

/// Most queries per block of a batch search: their coarse distances are one call
/// of the tiled kernel, their probed lists are read once for the whole block
/// (list-major), and the block is the unit of work handed to a thread. 256
/// measured ~9% less CPU than 64 at nprobe 16 on GloVe-50 (4-bit, AVX-512) and
/// 1024 nothing more; smaller batches are cut into at least two blocks per
/// thread (down to [`MIN_BATCH_BLOCK`]) so that every thread has work.
const BATCH_BLOCK: usize = 256;

/// Fewest queries per block when a batch is cut for the threads.
const MIN_BATCH_BLOCK: usize = 16;

/// Queries per block for a batch of `nq` on `threads` threads.
fn batch_block(nq: usize, threads: usize) -> usize {
    nq.div_ceil(2 * threads.max(1))
        .clamp(MIN_BATCH_BLOCK, BATCH_BLOCK)
}

/// The 4-bit scan asks for a list's codes and terms this many blocks ahead of
/// the block it scans.
const SCAN_AHEAD: usize = 4;

/// Asks for the first [`SCAN_AHEAD`] blocks (codes and terms) of list `li`, so
/// that they load while the list before it is scanned.
#[inline]
fn prefetch_list_head(model: &Model, li: usize) {
    let Some(list) = model.lists.get(li) else {
        return;
    };
    let list = sync::read(list);
    let head = if model.pq.nbits() == 4 {
        SCAN_AHEAD * fastscan::block_bytes(model.pq.m())
    } else {
        SCAN_AHEAD * BLOCK * model.pq.m()
    };
    prefetch(list.codes.get(..head).unwrap_or(&list.codes));
    prefetch(list.terms.get(..SCAN_AHEAD * BLOCK).unwrap_or(&list.terms));
}

/// What a request resolves to before any list is read.
/// Below this estimated fraction of matching rows, a filtered query re-ranks the
/// matching rows exactly instead of probing lists: the probed lists would hold
/// too few of them to fill the re-rank pool.
pub const FILTER_FLAT_FRACTION: f64 = 0.02;
/// ... or when the probed lists are expected to hold fewer matching rows than
/// this many times the re-rank pool (`k x rerank_factor`).
pub const FILTER_FLAT_POOL_FACTOR: f64 = 2.0;
/// Present slots sampled to estimate a filter's selectivity.
const FILTER_SAMPLES: usize = 256;

struct Plan {
    /// Lists to probe (all of them when exhaustive, none when untrained).
    nprobe: usize,
    /// Candidates kept for exact re-ranking.
    cap: usize,
}

/// What every query's pass over one list shares, in the list-major batch scan.
struct ListScan<'a> {
    block: &'a ScanBlock<'a>,
    list: &'a InvList,
    /// The list's number.
    li: usize,
}

/// What a list-major batch scan shares across its lists.
struct ScanBlock<'a> {
    model: &'a Model,
    /// The block's quantised tables, `lb` bytes each.
    luts: &'a [u8],
    lut_params: &'a [(f32, f32)],
    lb: usize,
    /// The block's coarse distances, `nlist` per query.
    coarse: &'a [f32],
    nlist: usize,
    mem: &'a Members,
    filter: Option<&'a dyn SlotFilter>,
}

/// Per-thread search state kept in [`SearchScratch::extra`].
#[derive(Default)]
struct IvfScratch {
    /// Coarse distance and number of each list, as [`order_key`]s.
    probes: Vec<u64>,
    coarse_d: Vec<f32>,
    top: TopK,
    table: Vec<f32>,
    lut: Vec<u8>,
    pool: CandidatePool,
    /// Batch search: the coarse distances of a block of queries.
    tile: Vec<f32>,
    /// Batch search: the tiled kernel's packing space.
    tile_scratch: Vec<f32>,
    /// List-major batch scan: each query's quantised table, back to back.
    luts: Vec<u8>,
    /// List-major batch scan: each query's `(1 / scale, bias)`.
    lut_params: Vec<(f32, f32)>,
    /// List-major batch scan: each query's candidate pool.
    pools: Vec<CandidatePool>,
    /// List-major batch scan: `list << 32 | query` for every probe of the block
    /// but each query's closest list.
    pairs: Vec<u64>,
    /// List-major batch scan: `list << 32 | query` for each query's closest list,
    /// scanned before `pairs` so that every pool has a threshold early.
    firsts: Vec<u64>,
}

/// Below this many probes (and a quarter of the lists) the probes are selected by
/// insertion into a sorted array, above by `select_nth_unstable`.
const PROBE_INSERT_MAX: usize = 64;

/// The `nprobe` lists closest by coarse distance `d`, closest first, as
/// [`order_key`]s (ties broken by list number).
fn select_probes(d: &[f32], nprobe: usize, out: &mut Vec<u64>) {
    out.clear();
    let n = d.len();
    let nprobe = nprobe.min(n);
    if nprobe == 0 {
        return;
    }
    if nprobe > PROBE_INSERT_MAX || nprobe * 4 > n {
        out.extend(d.iter().enumerate().map(|(i, &x)| order_key(x, i as u32)));
        if nprobe < n {
            out.select_nth_unstable(nprobe - 1);
            out.truncate(nprobe);
        }
        out.sort_unstable();
        return;
    }
    // Few probes among many lists: most distances lose one float comparison
    // against the worst kept; the few that win are inserted in order.
    out.extend(
        d[..nprobe]
            .iter()
            .enumerate()
            .map(|(i, &x)| order_key(x, i as u32)),
    );
    out.sort_unstable();
    let Some(&first_worst) = out.last() else {
        return;
    };
    let (mut worst_key, mut worst) = (first_worst, pool::from_key(first_worst).0);
    // Sixteen distances per step against the worst kept, as a bit mask (the
    // compiler turns the loop into vector compares): after the first few dozen
    // lists almost every step's mask is empty. Only a distance greater than the
    // worst kept is certainly out; ties, both zeros and NaNs go on to the exact
    // key comparison. The worst only falls during a step, so the mask is a
    // superset of the entries that win.
    for (c, chunk) in d[nprobe..].chunks(PROBE_STEP).enumerate() {
        let mut mask = 0u32;
        for (i, &x) in chunk.iter().enumerate() {
            // Not `x <= worst`: a NaN on either side must pass to the key compare.
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            let pass = !(x > worst);
            mask |= u32::from(pass) << i;
        }
        while mask != 0 {
            let i = nprobe + c * PROBE_STEP + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let key = order_key(d[i], i as u32);
            if key < worst_key {
                let at = out.partition_point(|&k| k < key);
                out.pop();
                out.insert(at, key);
                if let Some(&w) = out.last() {
                    (worst_key, worst) = (w, pool::from_key(w).0);
                }
            }
        }
    }
}

/// Coarse distances compared per step by [`select_probes`].
const PROBE_STEP: usize = 16;

/// The rows of one re-ranking batch.
struct RowBatch<'a> {
    rows: [&'a [f32]; RERANK_BATCH],
    slots: [SlotId; RERANK_BATCH],
    len: usize,
}

impl RowBatch<'_> {
    fn new() -> Self {
        RowBatch {
            rows: [&[]; RERANK_BATCH],
            slots: [0; RERANK_BATCH],
            len: 0,
        }
    }
}

/// Encoded new entries, grouped for appending.
struct Encoded {
    lists: Vec<u32>,
    codes: Vec<u8>,
}

impl IvfPqIndex {
    /// An empty, untrained index.
    pub fn new(dim: usize, metric: Metric, params: IvfPqParams) -> Result<IvfPqIndex> {
        params.validate(dim)?;
        Ok(Self::from_state(
            dim,
            metric,
            params,
            None,
            Members::default(),
        ))
    }

    pub(crate) fn from_state(
        dim: usize,
        metric: Metric,
        params: IvfPqParams,
        model: Option<Model>,
        members: Members,
    ) -> IvfPqIndex {
        IvfPqIndex {
            dim,
            metric,
            params,
            kernels: Kernels::best(),
            scanner: Scanner::best(),
            model: RwLock::new(model.map(Arc::new)),
            members: RwLock::new(members),
            writer: Mutex::new(()),
            searches: AtomicU64::new(0),
            search_dc: AtomicU64::new(0),
            build_dc: AtomicU64::new(0),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &IvfPqParams {
        &self.params
    }

    /// Whether the quantizers are trained.
    pub fn is_trained(&self) -> bool {
        sync::read(&self.model).is_some()
    }

    /// Number of slots held but not yet encoded (answered by exact scan).
    pub fn pending_len(&self) -> usize {
        sync::read(&self.members).pending.len()
    }

    /// The fast-scan implementation in use (`scalar`, `avx2`, `avx512bw`).
    pub fn scanner_name(&self) -> &'static str {
        self.scanner.name()
    }

    /// Forces the fast-scan implementation (for benchmarks and tests).
    pub fn set_scanner(&mut self, scanner: Scanner) {
        self.scanner = scanner;
    }

    /// Bytes per encoded vector held in the lists (codes, slot numbers and, for L2,
    /// terms; by length, not capacity), averaged over list entries; 0 when there
    /// are none.
    pub fn list_bytes_per_vector(&self) -> f64 {
        let Some(model) = self.snapshot() else {
            return 0.0;
        };
        let (mut bytes, mut n) = (0usize, 0usize);
        for l in &model.lists {
            let l = sync::read(l);
            bytes += l.ids.len() * 4 + l.codes.len() + l.terms.len() * 4;
            n += l.ids.len();
        }
        if n == 0 {
            0.0
        } else {
            bytes as f64 / n as f64
        }
    }

    fn snapshot(&self) -> Option<Arc<Model>> {
        sync::read(&self.model).clone()
    }

    /// Trains the coarse quantizer and the product quantizer on `sample` (row-major,
    /// at least `max(nlist, 2^nbits)` rows). Slots added before are encoded by the
    /// next `add` or [`flush`](Self::flush). Errors: `InvalidParameter` if already
    /// trained (see [`retrain`](Self::retrain)) or the sample is too small;
    /// `DimensionMismatch`, `NonFinite` for a bad sample.
    pub fn train(&self, sample: &[f32]) -> Result<()> {
        let _w = sync::lock(&self.writer);
        if self.is_trained() {
            return Err(Error::invalid_param(
                "train",
                "index is already trained; use retrain",
            ));
        }
        let model = self.train_model(sample)?;
        *sync::write(&self.model) = Some(Arc::new(model));
        Ok(())
    }

    /// Encodes slots buffered before training into the lists (a no-op when untrained
    /// or nothing is buffered). `add` does this on its own.
    pub fn flush(&self, storage: &dyn VectorStorage) -> Result<()> {
        let _w = sync::lock(&self.writer);
        self.flush_locked(storage)
    }

    /// Trains a new model on `sample` and re-encodes every present slot from
    /// `storage` with it, then swaps it in; removed slots' codes are dropped. On
    /// error the index is unchanged.
    pub fn retrain(&self, storage: &dyn VectorStorage, sample: &[f32]) -> Result<()> {
        let _w = sync::lock(&self.writer);
        let model = self.train_model(sample)?;
        let slots: Vec<SlotId> = {
            let mem = sync::read(&self.members);
            let mut v = Vec::with_capacity(mem.len);
            for (w, &word) in mem.present.iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    v.push((w * 64) as SlotId + x.trailing_zeros());
                    x &= x - 1;
                }
            }
            v
        };
        let enc = self.encode(storage, &model, &slots)?;
        Self::append(&model, &slots, &enc);
        let mut mem = sync::write(&self.members);
        *sync::write(&self.model) = Some(Arc::new(model));
        // The new lists hold only what was present when they were encoded.
        mem.dead = slots.iter().filter(|&&s| !bit(&mem.present, s)).count();
        for &s in &mem.pending.clone() {
            set_bit(&mut mem.pending_bits, s, false);
        }
        mem.pending.clear();
        Ok(())
    }

    /// Drops the codes of removed slots from every inverted list now, keeping
    /// the others in order (the next `add` does it by itself once they pass
    /// [`COMPACT_FRACTION`] of the entries). Searches run meanwhile: each list
    /// is rewritten under its own write lock, taken after the membership read
    /// lock as a search takes them.
    pub fn compact(&self) {
        let _w = sync::lock(&self.writer);
        self.compact_locked();
    }

    /// [`compact`](Self::compact) with the writer lock held.
    fn compact_locked(&self) {
        let Some(model) = self.snapshot() else {
            return;
        };
        let m = model.pq.m();
        let four = model.pq.nbits() == 4;
        let bb = fastscan::block_bytes(m);
        let mut code = vec![0u8; m];
        let zero = vec![0u8; m];
        let mut dropped = 0usize;
        for l in &model.lists {
            let mem = sync::read(&self.members);
            let mut list = sync::write(l);
            let list = &mut *list;
            let n = list.ids.len();
            let mut w = 0usize;
            for pos in 0..n {
                let s = list.ids[pos];
                if !bit(&mem.present, s) {
                    continue;
                }
                if w != pos {
                    list.ids[w] = s;
                    if four {
                        let src = &list.codes[(pos / BLOCK) * bb..(pos / BLOCK + 1) * bb];
                        for (j, c) in code.iter_mut().enumerate() {
                            *c = fastscan::get_code(src, pos % BLOCK, j);
                        }
                        let dst = &mut list.codes[(w / BLOCK) * bb..(w / BLOCK + 1) * bb];
                        fastscan::set_codes(dst, w % BLOCK, &code);
                    } else {
                        list.codes.copy_within(pos * m..(pos + 1) * m, w * m);
                    }
                    if model.l2_terms {
                        list.terms[w] = list.terms[pos];
                    }
                }
                w += 1;
            }
            if w == n {
                continue;
            }
            dropped += n - w;
            list.ids.truncate(w);
            if four {
                let blocks = w.div_ceil(BLOCK);
                list.codes.truncate(blocks * bb);
                // The last block's unused entries read as zero, as when appended.
                for i in w..blocks * BLOCK {
                    let dst = &mut list.codes[(i / BLOCK) * bb..(i / BLOCK + 1) * bb];
                    fastscan::set_codes(dst, i % BLOCK, &zero);
                }
                if model.l2_terms {
                    list.terms.truncate(blocks * BLOCK);
                    list.terms[w..].iter_mut().for_each(|t| *t = 0.0);
                }
            } else {
                list.codes.truncate(w * m);
                if model.l2_terms {
                    list.terms.truncate(w);
                }
            }
            list.ids.shrink_to_fit();
            list.codes.shrink_to_fit();
            list.terms.shrink_to_fit();
        }
        let mut mem = sync::write(&self.members);
        mem.dead = mem.dead.saturating_sub(dropped);
    }

    fn train_model(&self, sample: &[f32]) -> Result<Model> {
        let n = omen_core::validate::check_rows(sample, self.dim)?;
        let p = &self.params;
        let need = p.nlist.max(1 << p.nbits);
        if n < need {
            return Err(Error::invalid_param(
                "train",
                format!(
                    "training needs at least {need} vectors (nlist = {}, 2^nbits = {}), got {n}",
                    p.nlist,
                    1 << p.nbits
                ),
            ));
        }
        let mut kp = KMeansParams::new(p.nlist);
        kp.iters = p.kmeans_iters;
        kp.seed = p.seed;
        kp.max_sample = n;
        kp.init = KMeansInit::Random;
        kp.spherical = self.metric == Metric::Cosine;
        let coarse = kmeans::kmeans(self.kernels, sample, self.dim, &kp)?.centroids;
        let assign = self.assign_lists(&coarse, sample);
        let mut resid = sample.to_vec();
        for (row, &l) in resid.chunks_exact_mut(self.dim).zip(&assign) {
            let c = &coarse[l as usize * self.dim..(l as usize + 1) * self.dim];
            row.iter_mut().zip(c).for_each(|(x, c)| *x -= c);
        }
        let pq = ProductQuantizer::train(
            self.kernels,
            &resid,
            self.dim,
            p.m,
            p.nbits,
            p.seed.wrapping_add(1),
            p.kmeans_iters,
        )?;
        let lists = (0..p.nlist)
            .map(|_| RwLock::new(InvList::default()))
            .collect();
        self.build_dc.fetch_add(
            (n * p.nlist * (p.kmeans_iters + 1)) as u64,
            Ordering::Relaxed,
        );
        Ok(Model {
            coarse,
            pq,
            lists,
            l2_terms: self.metric == Metric::L2,
        })
    }

    /// The list of each row: nearest centroid for L2, largest inner product otherwise.
    fn assign_lists(&self, coarse: &[f32], rows: &[f32]) -> Vec<u32> {
        let dim = self.dim;
        let mut out = vec![0u32; rows.len() / dim];
        rows.par_chunks(ASSIGN_TILE * dim)
            .zip(out.par_chunks_mut(ASSIGN_TILE))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(tile, scratch): &mut (Vec<f32>, Vec<f32>), (r, o)| {
                    self.assign_tile(coarse, r, o, tile, scratch)
                },
            );
        out
    }

    /// [`assign_lists`](Self::assign_lists) for one tile of rows, with reusable
    /// buffers.
    fn assign_tile(
        &self,
        coarse: &[f32],
        rows: &[f32],
        out: &mut [u32],
        tile: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
    ) {
        let dim = self.dim;
        let nlist = coarse.len() / dim;
        let nq = rows.len() / dim;
        tile.resize(nq * nlist, 0.0);
        if self.metric == Metric::L2 {
            self.kernels.l2_sq_tile(rows, coarse, dim, tile, scratch);
            for (o, t) in out.iter_mut().zip(tile.chunks_exact(nlist)) {
                *o = kmeans::argmin(t).0 as u32;
            }
        } else {
            self.kernels.dot_tile(rows, coarse, dim, tile, scratch);
            for (o, t) in out.iter_mut().zip(tile.chunks_exact(nlist)) {
                *o = kmeans::argmax(t).0 as u32;
            }
        }
    }

    /// Computes list and code of each slot, reading the rows from storage a tile at
    /// a time (no copy of the whole batch).
    fn encode(
        &self,
        storage: &dyn VectorStorage,
        model: &Model,
        slots: &[SlotId],
    ) -> Result<Encoded> {
        let dim = self.dim;
        let m = model.pq.m();
        for &s in slots {
            storage.get(s).ok_or(Error::UnknownSlot { slot: s })?;
        }
        let mut lists = vec![0u32; slots.len()];
        let mut codes = vec![0u8; slots.len() * m];
        let k = self.kernels;
        slots
            .par_chunks(ASSIGN_TILE)
            .zip(lists.par_chunks_mut(ASSIGN_TILE))
            .zip(codes.par_chunks_mut(ASSIGN_TILE * m))
            .for_each_init(
                || {
                    (
                        Vec::new(),
                        Vec::new(),
                        Vec::new(),
                        vec![0f32; dim],
                        Vec::new(),
                    )
                },
                |(rows, tile, scratch, resid, pq_scratch), ((ss, l), c)| {
                    rows.clear();
                    for &s in ss {
                        // Published rows stay published: checked above.
                        match storage.get(s) {
                            Some(v) => rows.extend_from_slice(v),
                            None => rows.resize(rows.len() + dim, 0.0),
                        }
                    }
                    self.assign_tile(&model.coarse, rows, l, tile, scratch);
                    for ((x, code), &li) in rows
                        .chunks_exact(dim)
                        .zip(c.chunks_exact_mut(m))
                        .zip(l.iter())
                    {
                        let cen = &model.coarse[li as usize * dim..(li as usize + 1) * dim];
                        for ((d, &a), &b) in resid.iter_mut().zip(x).zip(cen) {
                            *d = a - b;
                        }
                        model.pq.encode(k, resid, code, pq_scratch);
                    }
                },
            );
        self.build_dc.fetch_add(
            (slots.len() * (model.nlist() + m * model.pq.ksub())) as u64,
            Ordering::Relaxed,
        );
        Ok(Encoded { lists, codes })
    }

    /// Appends encoded entries to their lists (each list locked once), with their
    /// L2 terms when the model keeps them.
    fn append(model: &Model, slots: &[SlotId], enc: &Encoded) {
        let m = model.pq.m();
        let four = model.pq.nbits() == 4;
        let bb = fastscan::block_bytes(m);
        let dim = model.pq.dim();
        let term_len = if model.l2_terms {
            m * model.pq.ksub()
        } else {
            0
        };
        let mut term_table = vec![0f32; term_len];
        // Counting sort by list, stable in slot order.
        let nlist = model.nlist();
        let mut start = vec![0usize; nlist + 1];
        for &l in &enc.lists {
            start[l as usize + 1] += 1;
        }
        for i in 0..nlist {
            start[i + 1] += start[i];
        }
        let mut order = vec![0usize; slots.len()];
        let mut fill = start.clone();
        for (i, &l) in enc.lists.iter().enumerate() {
            order[fill[l as usize]] = i;
            fill[l as usize] += 1;
        }
        for l in 0..nlist {
            let group = &order[start[l]..start[l + 1]];
            if group.is_empty() {
                continue;
            }
            if model.l2_terms {
                let c = &model.coarse[l * dim..(l + 1) * dim];
                model.pq.list_terms_table(c, &mut term_table);
            }
            let mut list = sync::write(&model.lists[l]);
            let list = &mut *list;
            let add = group.len();
            // Exact reservation for bulk loads keeps memory per vector at its floor;
            // amortised growth for trickles.
            if add >= list.ids.len() {
                list.ids.reserve_exact(add);
            } else {
                list.ids.reserve(add);
            }
            if four {
                let blocks_after = (list.ids.len() + add).div_ceil(BLOCK);
                let need = blocks_after * bb - list.codes.len();
                if add >= list.ids.len() {
                    list.codes.reserve_exact(need);
                } else {
                    list.codes.reserve(need);
                }
            } else if add >= list.ids.len() {
                list.codes.reserve_exact(add * m);
            } else {
                list.codes.reserve(add * m);
            }
            if model.l2_terms {
                let need = if four {
                    (list.ids.len() + add).div_ceil(BLOCK) * BLOCK - list.terms.len()
                } else {
                    add
                };
                if add >= list.ids.len() {
                    list.terms.reserve_exact(need);
                } else {
                    list.terms.reserve(need);
                }
            }
            for &i in group {
                let code = &enc.codes[i * m..(i + 1) * m];
                let pos = list.ids.len();
                if four {
                    if pos.is_multiple_of(BLOCK) {
                        list.codes.resize(list.codes.len() + bb, 0);
                        if model.l2_terms {
                            list.terms.resize(list.terms.len() + BLOCK, 0.0);
                        }
                    }
                    let b = pos / BLOCK;
                    fastscan::set_codes(&mut list.codes[b * bb..(b + 1) * bb], pos % BLOCK, code);
                } else {
                    list.codes.extend_from_slice(code);
                    if model.l2_terms {
                        list.terms.push(0.0);
                    }
                }
                if model.l2_terms {
                    list.terms[pos] = model.pq.code_term(&term_table, code.iter().copied());
                }
                list.ids.push(slots[i]);
            }
        }
    }

    fn flush_locked(&self, storage: &dyn VectorStorage) -> Result<()> {
        let Some(model) = self.snapshot() else {
            return Ok(());
        };
        let pending = sync::read(&self.members).pending.clone();
        if pending.is_empty() {
            return Ok(());
        }
        let enc = self.encode(storage, &model, &pending)?;
        Self::append(&model, &pending, &enc);
        let mut mem = sync::write(&self.members);
        for &s in &pending {
            set_bit(&mut mem.pending_bits, s, false);
        }
        mem.pending.clear();
        Ok(())
    }

    /// Draws the automatic training sample from the buffered and the new slots.
    fn auto_sample(&self, storage: &dyn VectorStorage, new: &Range<SlotId>) -> Result<Vec<f32>> {
        let mut slots = sync::read(&self.members).pending.clone();
        slots.extend(new.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(self.params.seed ^ 0x5EED);
        let take = self.params.train_size.min(slots.len());
        let mut idx = sample(&mut rng, slots.len(), take).into_vec();
        idx.sort_unstable();
        let mut rows = Vec::with_capacity(take * self.dim);
        for i in idx {
            let s = slots[i];
            rows.extend_from_slice(storage.get(s).ok_or(Error::UnknownSlot { slot: s })?);
        }
        Ok(rows)
    }

    /// Scans one list into the candidate pool: the estimate of an entry is
    /// `offset + table sum` (`offset + sum / scale` for 4 bits), plus its term for
    /// L2. Returns the number of entries scanned.
    #[allow(clippy::too_many_arguments)]
    fn scan_list(
        &self,
        model: &Model,
        list: &InvList,
        offset: f32,
        lut_scale: f32,
        mem: &Members,
        req: &SearchRequest<'_>,
        sc: &mut IvfScratch,
    ) -> u64 {
        let m = model.pq.m();
        let n = list.ids.len();
        let terms = model.l2_terms;
        if model.pq.nbits() == 8 {
            let t = &sc.table[..m * 256];
            for (i, (&slot, code)) in list.ids.iter().zip(list.codes.chunks_exact(m)).enumerate() {
                let mut d = offset;
                for (row, &c) in t.chunks_exact(256).zip(code) {
                    // A u8 index into a 256-entry row needs no bounds check.
                    let row: &[f32; 256] = match row.try_into() {
                        Ok(r) => r,
                        Err(_) => continue,
                    };
                    d += row[c as usize];
                }
                if terms {
                    d += list.terms.get(i).copied().unwrap_or(0.0);
                }
                if d <= sc.pool.threshold() && mem.visible_in_lists(slot) && req.allows(slot) {
                    sc.pool.push(slot, d);
                }
            }
        } else {
            let bb = fastscan::block_bytes(m);
            let inv = 1.0 / lut_scale;
            let mut est = [0f32; BLOCK];
            // The ids of a block are read only for its hits, too sparsely for the
            // hardware prefetcher: they are asked for two blocks ahead.
            prefetch(list.ids.get(..2 * BLOCK).unwrap_or(&list.ids));
            for (b, block) in list.codes.chunks_exact(bb).enumerate() {
                let first = b * BLOCK;
                if let Some(ids) = list.ids.get(first + 2 * BLOCK..) {
                    prefetch(&ids[..ids.len().min(BLOCK)]);
                }
                // Codes and terms [`SCAN_AHEAD`] blocks ahead (the first blocks
                // were asked for by `prefetch_list_head`): a list spans a few pages,
                // and the hardware prefetcher starts over on each.
                let ahead = (b + SCAN_AHEAD) * bb;
                if let Some(c) = list.codes.get(ahead..ahead + bb) {
                    prefetch(c);
                }
                if terms {
                    let ahead = first + SCAN_AHEAD * BLOCK;
                    if let Some(t) = list.terms.get(ahead..ahead + BLOCK) {
                        prefetch(t);
                    }
                }
                let valid = n.saturating_sub(first).min(BLOCK);
                let t: Option<&[f32; BLOCK]> = if terms {
                    list.terms
                        .get(first..first + BLOCK)
                        .and_then(|t| t.try_into().ok())
                } else {
                    None
                };
                let mut hits = self.scanner.scan_filter(
                    block,
                    &sc.lut,
                    m,
                    offset,
                    inv,
                    t,
                    sc.pool.threshold(),
                    &mut est,
                );
                if valid < BLOCK {
                    hits &= (1u32 << valid) - 1;
                }
                while hits != 0 {
                    let i = hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    let slot = list.ids[first + i];
                    if mem.visible_in_lists(slot) && req.allows(slot) {
                        sc.pool.push(slot, est[i]);
                    }
                }
            }
        }
        n as u64
    }

    /// Exact distances from `q` to the rows of `rows`.
    fn distances_rows(&self, q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        let k = self.kernels;
        match self.metric {
            Metric::L2 => k.l2_sq_rows(q, rows, out),
            // Cosine: rows and queries are unit vectors (the metric's contract,
            // `Metric::normalizes`), so `1 - a·b` ranks as cosine does, at the
            // cost of one dot product; `finish_query` recomputes the reported
            // distances of the final k with the metric's own kernel.
            Metric::InnerProduct | Metric::Cosine => {
                k.dot_rows(q, rows, out);
                out.iter_mut().for_each(|d| *d = 1.0 - *d);
            }
            other => {
                for (o, r) in out.iter_mut().zip(rows) {
                    *o = other.distance(k, q, r);
                }
            }
        }
    }

    /// Offers the exact distances from `q` to the rows of `slots` to `top`; returns
    /// how many were computed. Rows are gathered [`RERANK_BATCH`] at a time; the
    /// next batch's rows are looked up and prefetched before the current batch's
    /// distances are computed, so that the cache misses of scattered rows overlap.
    fn rerank(
        &self,
        storage: &dyn VectorStorage,
        q: &[f32],
        mut slots: impl Iterator<Item = SlotId>,
        top: &mut TopK,
    ) -> Result<u64> {
        let (mut cur, mut next) = (RowBatch::new(), RowBatch::new());
        let mut d = [0f32; RERANK_BATCH];
        let mut computed = 0u64;
        loop {
            next.len = 0;
            for s in slots.by_ref() {
                // (`ok_or` would build and drop an `Error` for every row.)
                let Some(v) = storage.get(s) else {
                    return Err(Error::UnknownSlot { slot: s });
                };
                prefetch(v);
                next.rows[next.len] = v;
                next.slots[next.len] = s;
                next.len += 1;
                if next.len == RERANK_BATCH {
                    break;
                }
            }
            let n = cur.len;
            if n > 0 {
                self.distances_rows(q, &cur.rows[..n], &mut d[..n]);
                for (&s, &dist) in cur.slots[..n].iter().zip(&d[..n]) {
                    top.push(Neighbor::new(s, dist));
                }
                computed += n as u64;
            }
            if next.len == 0 {
                return Ok(computed);
            }
            std::mem::swap(&mut cur, &mut next);
        }
    }

    /// The number of lists to probe and the candidate pool's capacity for `k`
    /// neighbours under `params`, checked against this index.
    fn plan(&self, model: Option<&Model>, k: usize, params: &SearchParams) -> Result<Plan> {
        let exhaustive = params.exhaustive;
        let knobs = IvfPqSearch::from_params(params)?;
        let np = knobs.nprobe.unwrap_or(self.params.nprobe);
        if np > self.params.nlist {
            return Err(Error::invalid_param(
                "nprobe",
                format!("must be in 1..={} (nlist), got {np}", self.params.nlist),
            ));
        }
        let nprobe = match model {
            Some(m) if exhaustive => m.nlist(),
            Some(_) => np,
            None => 0,
        };
        let rf = knobs.rerank_factor.unwrap_or(self.params.rerank_factor);
        let cap = if exhaustive {
            usize::MAX
        } else {
            k.saturating_mul(rf)
        };
        Ok(Plan { nprobe, cap })
    }

    /// Coarse distances from `q` to every centroid: |q - c|² for L2, 1 - q·c for
    /// IP/cosine; both are also the lists' offsets in the estimates.
    fn coarse_distances(&self, model: &Model, q: &[f32], out: &mut Vec<f32>) {
        out.resize(model.nlist(), 0.0);
        let k = self.kernels;
        if self.metric == Metric::L2 {
            k.l2_sq_many(q, &model.coarse, out);
        } else {
            k.dot_many(q, &model.coarse, out);
            out.iter_mut().for_each(|d| *d = 1.0 - *d);
        }
    }

    /// The candidate phase of one search: probes picked from the coarse distances
    /// `coarse_d`, one distance table, and the probed lists scanned into
    /// `sc.pool`. Returns the distance computations (estimates included).
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        model: &Model,
        coarse_d: &[f32],
        plan: &Plan,
        mem: &Members,
        req: &SearchRequest<'_>,
        sc: &mut IvfScratch,
    ) -> u64 {
        let q = req.query;
        let k = self.kernels;
        let mut computed = coarse_d.len() as u64;
        select_probes(coarse_d, plan.nprobe, &mut sc.probes);
        // One table per query: -q·b (IP, cosine) or -2 q·b (L2) over the PQ
        // centroids b, quantised once for 4 bits.
        let pq = &model.pq;
        sc.table.resize(pq.m() * pq.ksub(), 0.0);
        pq.neg_ip_table(k, q, &mut sc.table);
        if model.l2_terms {
            // Exact: doubling only changes the exponent.
            sc.table.iter_mut().for_each(|t| *t *= 2.0);
        }
        let four = pq.nbits() == 4;
        let (scale, bias) = if four {
            fastscan::quantize_lut(&sc.table, pq.m(), &mut sc.lut)
        } else {
            (1.0, 0.0)
        };
        let list_of = |key: u64| (key & u64::from(u32::MAX)) as usize;
        if let Some(&first) = sc.probes.first() {
            prefetch_list_head(model, list_of(first));
        }
        for pi in 0..sc.probes.len() {
            let li = list_of(sc.probes[pi]);
            // The next list's first blocks load while this one is scanned.
            if let Some(&next) = sc.probes.get(pi + 1) {
                prefetch_list_head(model, list_of(next));
            }
            let list = sync::read(&model.lists[li]);
            if list.ids.is_empty() {
                continue;
            }
            let d = coarse_d.get(li).copied().unwrap_or(f32::INFINITY);
            let offset = if four { d + bias } else { d };
            computed += self.scan_list(model, &list, offset, scale, mem, req, sc);
        }
        computed
    }

    /// The exact phase of one search: the pool's candidates and the buffered
    /// (not yet encoded) slots re-ranked into `out`, nearest first.
    fn finish_query(
        &self,
        storage: &dyn VectorStorage,
        candidates: impl Iterator<Item = SlotId>,
        mem: &Members,
        req: &SearchRequest<'_>,
        top: &mut TopK,
        out: &mut Vec<Neighbor>,
    ) -> Result<u64> {
        top.reset(req.k);
        let mut computed = self.rerank(storage, req.query, candidates, top)?;
        let pending = mem
            .pending
            .iter()
            .copied()
            .filter(|&s| bit(&mem.present, s) && req.allows(s));
        computed += self.rerank(storage, req.query, pending, top)?;
        top.drain_sorted_into(out);
        if self.metric == Metric::Cosine {
            // The re-rank ranked by `1 - a·b`; the reported number is the
            // metric's, as every index reports it.
            for n in out.iter_mut() {
                if let Some(v) = storage.get(n.slot) {
                    n.distance = self.metric.distance(self.kernels, req.query, v);
                }
            }
            out.sort_unstable();
        }
        Ok(computed)
    }

    /// Fraction of sampled present slots that `filter` allows (1 when none).
    fn selectivity(mem: &Members, filter: &dyn SlotFilter) -> f64 {
        let cap = (mem.present.len() * 64) as u64;
        if cap == 0 || mem.len == 0 {
            return 1.0;
        }
        if let Some(bits) = filter.bitmap() {
            let both: u64 = bits
                .iter()
                .zip(&mem.present)
                .map(|(a, b)| u64::from((a & b).count_ones()))
                .sum();
            return both as f64 / mem.len as f64;
        }
        let mut state = 0x0123_4567_89ab_cdef_u64;
        let (mut seen, mut allowed) = (0usize, 0usize);
        for _ in 0..FILTER_SAMPLES * 8 {
            if seen >= FILTER_SAMPLES {
                break;
            }
            let s = (omen_core::splitmix64(&mut state) % cap) as SlotId;
            if bit(&mem.present, s) {
                seen += 1;
                allowed += usize::from(filter.allows(s));
            }
        }
        if seen == 0 {
            1.0
        } else {
            allowed as f64 / seen as f64
        }
    }

    /// Whether a query with `filter` should re-rank the matching rows exactly
    /// rather than probe lists (see [`FILTER_FLAT_FRACTION`]).
    fn filter_prefers_flat(
        model: Option<&Model>,
        plan: &Plan,
        mem: &Members,
        filter: &dyn SlotFilter,
    ) -> bool {
        let Some(model) = model else {
            return false; // untrained: already an exact scan
        };
        let p = Self::selectivity(mem, filter);
        let reachable = p * mem.len as f64 * plan.nprobe as f64 / model.nlist().max(1) as f64;
        p < FILTER_FLAT_FRACTION || reachable < FILTER_FLAT_POOL_FACTOR * plan.cap as f64
    }

    /// The exact answer among the rows `req`'s filter allows: every present,
    /// allowed slot re-ranked from storage.
    fn flat_filtered(
        &self,
        storage: &dyn VectorStorage,
        mem: &Members,
        req: &SearchRequest<'_>,
        top: &mut TopK,
        out: &mut Vec<Neighbor>,
    ) -> Result<u64> {
        out.clear();
        let allowed = req.filter.and_then(|f| f.bitmap());
        let listed = mem.present.iter().enumerate().flat_map(move |(w, &word)| {
            let pending = mem.pending_bits.get(w).copied().unwrap_or(0);
            // A bitmap filter is applied a word at a time.
            let allow = allowed.map_or(u64::MAX, |a| a.get(w).copied().unwrap_or(0));
            let mut bits = word & !pending & allow;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    (w * 64) as SlotId + b
                })
            })
        });
        // finish_query adds the allowed pending (unlisted) slots itself.
        self.finish_query(
            storage,
            listed.filter(|&s| req.allows(s)),
            mem,
            req,
            top,
            out,
        )
    }

    fn search_inner(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let model = self.snapshot();
        let plan = self.plan(model.as_deref(), req.k, req.params)?;
        let sc = scratch.extra_or_insert_with(IvfScratch::default);
        sc.pool.reset(plan.cap);
        let mut computed = 0u64;
        let mem = sync::read(&self.members);
        if let Some(f) = req.filter {
            if Self::filter_prefers_flat(model.as_deref(), &plan, &mem, f) {
                computed += self.flat_filtered(storage, &mem, req, &mut sc.top, out)?;
                return Ok(SearchStats {
                    distance_computations: computed,
                });
            }
        }
        if let Some(model) = &model {
            let mut coarse_d = std::mem::take(&mut sc.coarse_d);
            self.coarse_distances(model, req.query, &mut coarse_d);
            computed += self.scan(model, &coarse_d, &plan, &mem, req, sc);
            sc.coarse_d = coarse_d;
        }
        let IvfScratch { pool, top, .. } = sc;
        computed += self.finish_query(storage, pool.finish(), &mem, req, top, out)?;
        // A filtered query that found fewer than k in its lists: the exact answer
        // has min(k, matching) results.
        if req.filter.is_some() && out.len() < req.k {
            computed += self.flat_filtered(storage, &mem, req, top, out)?;
        }
        drop(mem);
        Ok(SearchStats {
            distance_computations: computed,
        })
    }

    /// The candidate phase of a block of queries over 4-bit codes, list by list:
    /// each query's probes and table as in [`Self::scan`], then every probed list
    /// read once for all the queries of the block that probe it, up to
    /// [`fastscan::MULTI`] of them per pass of the kernel. Each query's pool
    /// (`sc.pools[j]`) ends up holding what a single search's would: a pool keeps
    /// the same candidates whatever the order of the offers. Returns the distance
    /// computations (estimates included).
    #[allow(clippy::too_many_arguments)]
    fn scan_lists(
        &self,
        model: &Model,
        tile: &[f32],
        plan: &Plan,
        queries: &[f32],
        mem: &Members,
        filter: Option<&dyn SlotFilter>,
        sc: &mut IvfScratch,
    ) -> u64 {
        let nlist = model.nlist();
        let pq = &model.pq;
        let lb = fastscan::block_bytes(pq.m());
        let nq = queries.len() / self.dim;
        sc.luts.resize(nq * lb, 0);
        sc.lut_params.clear();
        sc.pairs.clear();
        sc.firsts.clear();
        if sc.pools.len() < nq {
            sc.pools.resize_with(nq, CandidatePool::default);
        }
        let mut computed = 0u64;
        for (j, q) in queries.chunks_exact(self.dim).enumerate() {
            let coarse_d = tile.get(j * nlist..(j + 1) * nlist).unwrap_or(&[]);
            computed += coarse_d.len() as u64;
            select_probes(coarse_d, plan.nprobe, &mut sc.probes);
            sc.table.resize(pq.m() * pq.ksub(), 0.0);
            pq.neg_ip_table(self.kernels, q, &mut sc.table);
            if model.l2_terms {
                sc.table.iter_mut().for_each(|t| *t *= 2.0);
            }
            let (scale, bias) = fastscan::quantize_lut(&sc.table, pq.m(), &mut sc.lut);
            sc.luts[j * lb..(j + 1) * lb].copy_from_slice(&sc.lut[..lb]);
            sc.lut_params.push((1.0 / scale, bias));
            sc.pools[j].reset(plan.cap);
            let pair = |key: u64| (key & u64::from(u32::MAX)) << 32 | j as u64;
            // `probes` is closest first.
            if let Some((&first, rest)) = sc.probes.split_first() {
                sc.firsts.push(pair(first));
                sc.pairs.extend(rest.iter().map(|&key| pair(key)));
            }
        }
        sc.firsts.sort_unstable();
        sc.pairs.sort_unstable();
        let IvfScratch {
            luts,
            lut_params,
            pools,
            pairs,
            firsts,
            ..
        } = sc;
        let scan = ScanBlock {
            model,
            luts,
            lut_params,
            lb,
            coarse: tile,
            nlist,
            mem,
            filter,
        };
        // List-major order visits a query's lists in list number order, not
        // closest first: its pool would hold no threshold until hundreds of
        // estimates had been pushed. Each query's closest list goes first, so
        // that the list-major pass filters against a threshold from the start
        // (fewer pushes and cuts; the pools' contents are the same).
        computed += self.scan_pairs(&scan, firsts, pools);
        computed += self.scan_pairs(&scan, pairs, pools);
        computed
    }

    /// Scans the lists of `pairs` (`list << 32 | query`, sorted), each list once
    /// for all the queries probing it, in groups of [`fastscan::MULTI`].
    fn scan_pairs(&self, scan: &ScanBlock<'_>, pairs: &[u64], pools: &mut [CandidatePool]) -> u64 {
        let model = scan.model;
        let mut computed = 0u64;
        let list_of = |pair: u64| (pair >> 32) as usize;
        let query_of = |pair: u64| (pair & u64::from(u32::MAX)) as usize;
        let mut at = 0;
        while let Some(&first) = pairs.get(at) {
            let li = list_of(first);
            let end = at + pairs[at..].partition_point(|&p| list_of(p) == li);
            if let Some(&next) = pairs.get(end) {
                prefetch_list_head(model, list_of(next));
            }
            let list = sync::read(&model.lists[li]);
            if !list.ids.is_empty() {
                let ctx = ListScan {
                    block: scan,
                    list: &list,
                    li,
                };
                for (g, group) in pairs[at..end].chunks(fastscan::MULTI).enumerate() {
                    let js = |i: usize| query_of(group[i]);
                    // After the first group the list is in cache: no prefetches.
                    let cold = g == 0;
                    computed += match group.len() {
                        1 => self.scan_list_for::<1>(&ctx, std::array::from_fn(js), pools, cold),
                        2 => self.scan_list_for::<2>(&ctx, std::array::from_fn(js), pools, cold),
                        3 => self.scan_list_for::<3>(&ctx, std::array::from_fn(js), pools, cold),
                        _ => self.scan_list_for::<4>(&ctx, std::array::from_fn(js), pools, cold),
                    };
                }
            }
            at = end;
        }
        computed
    }

    /// Scans one list (4-bit codes) for the `Q` queries `js` of a block at once,
    /// into their pools; returns the estimates made.
    fn scan_list_for<const Q: usize>(
        &self,
        ctx: &ListScan<'_>,
        js: [usize; Q],
        pools: &mut [CandidatePool],
        cold: bool,
    ) -> u64 {
        let list = ctx.list;
        let m = ctx.block.model.pq.m();
        let n = list.ids.len();
        let bb = fastscan::block_bytes(m);
        let offsets: [f32; Q] = std::array::from_fn(|q| {
            let j = js[q];
            let d = ctx
                .block
                .coarse
                .get(j * ctx.block.nlist + ctx.li)
                .copied()
                .unwrap_or(f32::INFINITY);
            d + ctx.block.lut_params.get(j).map_or(0.0, |p| p.1)
        });
        let mut est = [[0f32; BLOCK]; Q];
        if cold {
            prefetch(list.ids.get(..2 * BLOCK).unwrap_or(&list.ids));
        }
        for (b, block) in list.codes.chunks_exact(bb).enumerate() {
            // The prefetches of `scan_list`, written out again: the same lines as
            // a shared `#[inline(always)]` helper made this loop ~35% slower
            // (GloVe-50 L2, nprobe 16, CLI batch, measured 2026-12-05).
            let first = b * BLOCK;
            if cold {
                if let Some(ids) = list.ids.get(first + 2 * BLOCK..) {
                    prefetch(&ids[..ids.len().min(BLOCK)]);
                }
                let ahead = (b + SCAN_AHEAD) * bb;
                if let Some(c) = list.codes.get(ahead..ahead + bb) {
                    prefetch(c);
                }
            }
            let t: Option<&[f32; BLOCK]> = if ctx.block.model.l2_terms {
                let ahead = first + SCAN_AHEAD * BLOCK;
                if cold {
                    if let Some(t) = list.terms.get(ahead..ahead + BLOCK) {
                        prefetch(t);
                    }
                }
                list.terms
                    .get(first..first + BLOCK)
                    .and_then(|t| t.try_into().ok())
            } else {
                None
            };
            let qs: [fastscan::QueryLut<'_>; Q] = std::array::from_fn(|q| {
                let j = js[q];
                fastscan::QueryLut {
                    lut: ctx
                        .block
                        .luts
                        .get(j * ctx.block.lb..(j + 1) * ctx.block.lb)
                        .unwrap_or(&[]),
                    offset: offsets[q],
                    inv: ctx.block.lut_params.get(j).map_or(1.0, |p| p.0),
                    thr: pools.get(j).map_or(f32::INFINITY, CandidatePool::threshold),
                }
            });
            let masks = self.scanner.scan_filter_multi(block, &qs, m, t, &mut est);
            let valid = n.saturating_sub(first).min(BLOCK);
            let keep = if valid < BLOCK {
                (1u32 << valid) - 1
            } else {
                u32::MAX
            };
            for ((&j, &mask), e) in js.iter().zip(&masks).zip(&est) {
                let Some(pool) = pools.get_mut(j) else {
                    continue;
                };
                let mut hits = mask & keep;
                while hits != 0 {
                    let i = hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    let slot = list.ids[first + i];
                    if ctx.block.mem.visible_in_lists(slot)
                        && ctx.block.filter.is_none_or(|f| f.allows(slot))
                    {
                        pool.push(slot, e[i]);
                    }
                }
            }
        }
        (n * Q) as u64
    }

    /// One block of a batch (at most [`BATCH_BLOCK`] queries, already checked):
    /// the coarse distances of all of them from one call of the tiled kernel,
    /// then each query's candidate and exact phases as in a single search.
    #[allow(clippy::too_many_arguments)]
    fn search_block(
        &self,
        storage: &dyn VectorStorage,
        model: Option<&Model>,
        plan: &Plan,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
        scratch: &mut SearchScratch,
        outs: &mut [Vec<Neighbor>],
    ) -> Result<SearchStats> {
        let dim = self.dim;
        let sc = scratch.extra_or_insert_with(IvfScratch::default);
        let mut tile = std::mem::take(&mut sc.tile);
        let nlist = model.map_or(0, Model::nlist);
        if let Some(model) = model {
            tile.resize(outs.len() * nlist, 0.0);
            if self.metric == Metric::L2 {
                self.kernels.l2_sq_tile(
                    queries,
                    &model.coarse,
                    dim,
                    &mut tile,
                    &mut sc.tile_scratch,
                );
            } else {
                self.kernels
                    .dot_tile(queries, &model.coarse, dim, &mut tile, &mut sc.tile_scratch);
                tile.iter_mut().for_each(|d| *d = 1.0 - *d);
            }
        }
        let mem = sync::read(&self.members);
        let mut computed = 0u64;
        let result = (|| {
            if let Some(f) = filter {
                if Self::filter_prefers_flat(model, plan, &mem, f) {
                    for (q, out) in queries.chunks_exact(dim).zip(outs.iter_mut()) {
                        let req = SearchRequest::new(q, k, params).with_filter(f);
                        computed += self.flat_filtered(storage, &mem, &req, &mut sc.top, out)?;
                    }
                    return Ok(());
                }
            }
            if let Some(model) = model.filter(|m| m.pq.nbits() == 4) {
                computed += self.scan_lists(model, &tile, plan, queries, &mem, filter, sc);
                let IvfScratch { pools, top, .. } = &mut *sc;
                for ((q, out), pool) in queries.chunks_exact(dim).zip(outs.iter_mut()).zip(pools) {
                    let mut req = SearchRequest::new(q, k, params);
                    req.filter = filter;
                    computed += self.finish_query(storage, pool.finish(), &mem, &req, top, out)?;
                    if filter.is_some() && out.len() < k {
                        computed += self.flat_filtered(storage, &mem, &req, top, out)?;
                    }
                }
                return Ok(());
            }
            for (j, (q, out)) in queries.chunks_exact(dim).zip(outs.iter_mut()).enumerate() {
                let mut req = SearchRequest::new(q, k, params);
                req.filter = filter;
                sc.pool.reset(plan.cap);
                if let Some(model) = model {
                    let coarse_d = tile.get(j * nlist..(j + 1) * nlist).unwrap_or(&[]);
                    computed += self.scan(model, coarse_d, plan, &mem, &req, sc);
                }
                let IvfScratch { pool, top, .. } = &mut *sc;
                computed += self.finish_query(storage, pool.finish(), &mem, &req, top, out)?;
                if filter.is_some() && out.len() < k {
                    computed += self.flat_filtered(storage, &mem, &req, top, out)?;
                }
            }
            Ok(())
        })();
        drop(mem);
        sc.tile = tile;
        result.map(|()| SearchStats {
            distance_computations: computed,
        })
    }
}

impl VectorIndex for IvfPqIndex {
    fn name(&self) -> &'static str {
        "ivfpq"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()> {
        let _w = sync::lock(&self.writer);
        omen_core::validate::check_storage_dim(self.dim, storage)?;
        {
            let mem = sync::read(&self.members);
            for s in slots.clone() {
                let v = storage.get(s).ok_or(Error::UnknownSlot { slot: s })?;
                check_finite(v, (s - slots.start) as usize)?;
                if bit(&mem.known, s) {
                    return Err(Error::SlotExists { slot: s });
                }
            }
        }
        if slots.is_empty() {
            return Ok(());
        }
        let mut model = self.snapshot();
        if model.is_none() {
            let held = sync::read(&self.members).pending.len() + slots.len();
            let ts = self.params.train_size;
            if ts != 0 && held >= ts {
                let sample = self.auto_sample(storage, &slots)?;
                let m = Arc::new(self.train_model(&sample)?);
                *sync::write(&self.model) = Some(m.clone());
                model = Some(m);
            }
        }
        match model {
            None => {
                let mut mem = sync::write(&self.members);
                for s in slots {
                    set_bit(&mut mem.known, s, true);
                    set_bit(&mut mem.present, s, true);
                    set_bit(&mut mem.pending_bits, s, true);
                    mem.pending.push(s);
                    mem.len += 1;
                }
                Ok(())
            }
            Some(model) => {
                self.flush_locked(storage)?;
                let ids: Vec<SlotId> = slots.collect();
                let enc = self.encode(storage, &model, &ids)?;
                Self::append(&model, &ids, &enc);
                let mut mem = sync::write(&self.members);
                for &s in &ids {
                    set_bit(&mut mem.known, s, true);
                    set_bit(&mut mem.present, s, true);
                }
                mem.len += ids.len();
                let due = mem.compaction_due();
                drop(mem);
                if due {
                    self.compact_locked();
                }
                Ok(())
            }
        }
    }

    fn remove(&self, slot: SlotId) -> Result<()> {
        let mut mem = sync::write(&self.members);
        if !bit(&mem.present, slot) {
            return Err(Error::UnknownSlot { slot });
        }
        set_bit(&mut mem.present, slot, false);
        mem.len -= 1;
        if bit(&mem.pending_bits, slot) {
            set_bit(&mut mem.pending_bits, slot, false);
            mem.pending.retain(|&s| s != slot);
        } else {
            // Its code stays in its list until the next compaction.
            mem.dead += 1;
        }
        Ok(())
    }

    fn contains(&self, slot: SlotId) -> bool {
        bit(&sync::read(&self.members).present, slot)
    }

    fn len(&self) -> usize {
        sync::read(&self.members).len
    }

    fn build_params(&self) -> omen_core::Params {
        self.params.to_params()
    }

    fn check_search_params(&self, params: &SearchParams) -> Result<()> {
        self.plan(None, 1, params).map(|_| ())
    }

    fn is_trained(&self) -> bool {
        IvfPqIndex::is_trained(self)
    }

    fn train(&self, storage: &dyn VectorStorage, sample: &[f32]) -> Result<()> {
        IvfPqIndex::train(self, sample)?;
        self.flush(storage)
    }

    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let stats = self.search_inner(storage, req, scratch, out)?;
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.search_dc
            .fetch_add(stats.distance_computations, Ordering::Relaxed);
        Ok(stats)
    }

    /// Queries in blocks of at most [`BATCH_BLOCK`], blocks in parallel: each block's
    /// coarse distances come from one call of the tiled kernel. Every query is
    /// checked before any is answered (errors name the row). Answers are those of [`VectorIndex::search`], except that the
    /// tiled kernel sums the coarse distances in another order, so an estimate
    /// can differ in its last bits.
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
        let model = self.snapshot();
        let plan = self.plan(model.as_deref(), k, params)?;
        out.resize_with(nq, Vec::new);
        let block = batch_block(nq, rayon::current_num_threads());
        let stats: Result<Vec<SearchStats>> = queries
            .par_chunks(block * dim)
            .zip(out.par_chunks_mut(block))
            .map_init(SearchScratch::new, |scratch, (qs, outs)| {
                self.search_block(
                    storage,
                    model.as_deref(),
                    &plan,
                    qs,
                    k,
                    params,
                    filter,
                    scratch,
                    outs,
                )
            })
            .collect();
        let mut total = SearchStats::default();
        for s in stats? {
            total += s;
        }
        self.searches.fetch_add(nq as u64, Ordering::Relaxed);
        self.search_dc
            .fetch_add(total.distance_computations, Ordering::Relaxed);
        Ok(total)
    }

    fn memory_bytes(&self) -> usize {
        let mut bytes = 0;
        if let Some(model) = self.snapshot() {
            bytes += model.coarse.capacity() * 4 + model.pq.memory_bytes();
            for l in &model.lists {
                let l = sync::read(l);
                bytes += l.ids.capacity() * 4
                    + l.codes.capacity()
                    + l.terms.capacity() * 4
                    + std::mem::size_of::<RwLock<InvList>>();
            }
        }
        let mem = sync::read(&self.members);
        bytes += (mem.present.capacity() + mem.known.capacity() + mem.pending_bits.capacity()) * 8
            + mem.pending.capacity() * 4;
        bytes
    }

    fn stats(&self) -> IndexStats {
        IndexStats {
            searches: self.searches.load(Ordering::Relaxed),
            search_distance_computations: self.search_dc.load(Ordering::Relaxed),
            build_distance_computations: self.build_dc.load(Ordering::Relaxed),
        }
    }

    fn persist(&self) -> Option<Vec<u8>> {
        Some(self.to_bytes())
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Publication of list appends: a reader that sees a slot's present bit sees its
    //! whole entry (id and code), and a list is never seen half-grown.
    use super::*;

    #[test]
    fn list_append_is_published_whole() {
        loom::model(|| {
            let pq = match ProductQuantizer::from_parts(2, 2, 4, vec![0.0; 32]) {
                Ok(pq) => pq,
                Err(e) => panic!("{e}"),
            };
            let model = Arc::new(Model {
                coarse: vec![0.0; 2],
                pq,
                lists: vec![RwLock::new(InvList::default())],
                l2_terms: false,
            });
            let members = Arc::new(RwLock::new(Members::default()));
            let (m2, mem2) = (model.clone(), members.clone());
            let writer = loom::thread::spawn(move || {
                for s in 0..2u32 {
                    let enc = Encoded {
                        lists: vec![0],
                        codes: vec![s as u8 + 1, s as u8 + 3],
                    };
                    IvfPqIndex::append(&m2, &[s], &enc);
                    let mut m = sync::write(&mem2);
                    set_bit(&mut m.known, s, true);
                    set_bit(&mut m.present, s, true);
                    m.len += 1;
                }
            });
            {
                // The search path's order: membership, then the list.
                let mem = sync::read(&members);
                let list = sync::read(&model.lists[0]);
                let bb = fastscan::block_bytes(2);
                assert_eq!(list.codes.len(), list.ids.len().div_ceil(BLOCK) * bb);
                for (i, &s) in list.ids.iter().enumerate() {
                    if mem.visible_in_lists(s) {
                        let block = &list.codes[(i / BLOCK) * bb..(i / BLOCK + 1) * bb];
                        assert_eq!(fastscan::get_code(block, i % BLOCK, 0), s as u8 + 1);
                        assert_eq!(fastscan::get_code(block, i % BLOCK, 1), s as u8 + 3);
                    }
                }
                for s in 0..2u32 {
                    if bit(&mem.present, s) {
                        assert!(list.ids.contains(&s), "slot {s} visible before its code");
                    }
                }
                assert_eq!(mem.len, (0..2).filter(|&s| bit(&mem.present, s)).count());
            }
            if writer.join().is_err() {
                panic!("writer panicked");
            }
        });
    }
}

#[cfg(all(test, loom))]
mod loom_compact {
    //! Compaction beside searches and removes: a search sees, for every visible
    //! slot, its own code (never a neighbour's moved half-way), and afterwards the
    //! tombstone count equals the removed entries left in the lists.
    use super::*;

    #[test]
    fn compaction_beside_search_and_remove() {
        loom::model(|| {
            let pq = match ProductQuantizer::from_parts(2, 2, 4, vec![0.0; 32]) {
                Ok(pq) => pq,
                Err(e) => panic!("{e}"),
            };
            let bb = fastscan::block_bytes(2);
            let mut list = InvList {
                ids: vec![0, 1, 2],
                codes: vec![0; bb],
                terms: Vec::new(),
            };
            for s in 0..3u8 {
                fastscan::set_codes(&mut list.codes, s as usize, &[s + 1, s + 5]);
            }
            let model = Model {
                coarse: vec![0.0; 2],
                pq,
                lists: vec![RwLock::new(list)],
                l2_terms: false,
            };
            let mut members = Members::default();
            for s in 0..3u32 {
                set_bit(&mut members.known, s, true);
            }
            set_bit(&mut members.present, 0, true);
            set_bit(&mut members.present, 2, true);
            members.len = 2;
            members.dead = 1;
            let params = IvfPqParams::new(1, 2).with_nbits(4);
            let idx = Arc::new(IvfPqIndex::from_state(
                2,
                Metric::L2,
                params,
                Some(model),
                members,
            ));
            let i2 = idx.clone();
            let compactor = loom::thread::spawn(move || i2.compact());
            let i3 = idx.clone();
            let remover = loom::thread::spawn(move || {
                if i3.remove(2).is_err() {
                    panic!("remove(2) failed");
                }
            });
            let Some(model) = idx.snapshot() else {
                panic!("no model")
            };
            {
                // The search path's order: membership, then the list.
                let mem = sync::read(&idx.members);
                let list = sync::read(&model.lists[0]);
                assert_eq!(list.codes.len(), list.ids.len().div_ceil(BLOCK) * bb);
                for (i, &s) in list.ids.iter().enumerate() {
                    if mem.visible_in_lists(s) {
                        assert_eq!(fastscan::get_code(&list.codes, i, 0), s as u8 + 1);
                        assert_eq!(fastscan::get_code(&list.codes, i, 1), s as u8 + 5);
                    }
                }
                assert!(list.ids.contains(&0), "a live slot was dropped");
            }
            if compactor.join().is_err() || remover.join().is_err() {
                panic!("a thread panicked");
            }
            let mem = sync::read(&idx.members);
            let list = sync::read(&model.lists[0]);
            let left = list.ids.iter().filter(|&&s| !bit(&mem.present, s)).count();
            assert_eq!(mem.dead, left);
            assert_eq!(mem.len, 1);
            assert_eq!(list.ids[0], 0);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn probes_are_the_nearest_lists_in_order(
            // Few distinct values: ties broken by list number.
            d in proptest::collection::vec(prop_oneof![(0u8..20).prop_map(|x| x as f32 - 5.0), Just(-0.0f32), Just(f32::INFINITY), Just(f32::NAN), Just(f32::NEG_INFINITY)], 0..300),
            nprobe in 0usize..80,
        ) {
            let mut want: Vec<u64> = d.iter().enumerate().map(|(i, &x)| order_key(x, i as u32)).collect();
            want.sort_unstable();
            want.truncate(nprobe);
            let mut got = Vec::new();
            select_probes(&d, nprobe, &mut got);
            prop_assert_eq!(got, want);
        }
    }
}
