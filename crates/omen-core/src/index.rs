use crate::error::Result;
use crate::metric::Metric;
use crate::neighbor::Neighbor;
use crate::params::{SearchParams, SearchRequest, SlotFilter};
use crate::scratch::SearchScratch;
use crate::storage::VectorStorage;
use crate::SlotId;
use rayon::prelude::*;
use std::ops::Range;

/// Work done by one search.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Full- or compressed-vector distance evaluations.
    pub distance_computations: u64,
}

impl std::ops::AddAssign for SearchStats {
    fn add_assign(&mut self, o: Self) {
        self.distance_computations += o.distance_computations;
    }
}

/// Counters accumulated by an index since it was created.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Queries answered.
    pub searches: u64,
    /// Distance evaluations made by searches.
    pub search_distance_computations: u64,
    /// Distance evaluations made while adding.
    pub build_distance_computations: u64,
}

/// How neighbours are found.
///
/// # Contract
/// * An index holds a set of slots of one storage. It reads full vectors through the
///   storage it is handed (always the same one) and may keep data of its own (graph
///   links, compressed codes).
/// * [`add`](Self::add) inserts slots that the storage has already published;
///   adding a slot that is not published is `UnknownSlot`, adding one that is
///   already present is `SlotExists`, and on error no slot of the range was added.
/// * [`remove`](Self::remove) hides a slot from results from then on (it may stay
///   in internal structures for routing); removing a slot not present is
///   `UnknownSlot`.
/// * [`search`](Self::search) returns up to `k` present slots that pass the filter,
///   closest first (ties by slot); fewer only when fewer match. With
///   [`SearchParams::exhaustive`], the result equals exact (flat) search.
///   Bad requests (k = 0, wrong dimension) are errors. Searching allocates nothing
///   once `scratch` has warmed up.
/// * All methods take `&self`: implementations synchronise internally, and searches
///   may run concurrently with `add` and `remove`.
pub trait VectorIndex: Send + Sync {
    /// A short name for reports (`flat`, `hnsw`, `ivfpq`).
    fn name(&self) -> &'static str;

    /// Vector width.
    fn dim(&self) -> usize;

    /// The metric distances are computed with.
    fn metric(&self) -> Metric;

    /// Adds the published slots `slots` of `storage`.
    fn add(&self, storage: &dyn VectorStorage, slots: Range<SlotId>) -> Result<()>;

    /// Removes one slot from results.
    fn remove(&self, slot: SlotId) -> Result<()>;

    /// Whether `slot` is present (added and not removed).
    fn contains(&self, slot: SlotId) -> bool;

    /// Number of present slots.
    fn len(&self) -> usize;

    /// Whether no slot is present.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the `req.k` nearest present slots; writes them to `out` (cleared first),
    /// closest first. Checks the query ([`crate::validate::check_query`]: k, the
    /// dimension, finiteness) and then calls
    /// [`search_unchecked`](Self::search_unchecked); implement that one.
    fn search(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        crate::validate::check_query(req.query, req.k, self.dim())?;
        self.search_unchecked(storage, req, scratch, out)
    }

    /// Checks search knobs without searching: `InvalidParameter` for a key this
    /// index does not take or a value out of range, exactly as a search with
    /// `params` would fail. Callers that may not reach the index (an empty
    /// collection, a query answered from elsewhere) call it so that a bad knob
    /// is never silently ignored.
    fn check_search_params(&self, params: &SearchParams) -> Result<()>;

    /// [`search`](Self::search) for a request that passed
    /// [`crate::validate::check_query`]: `req.k >= 1`, `req.query.len() ==
    /// dim()`, every component finite (and of unit norm when the collection's
    /// metric is cosine). The index still validates its own knobs
    /// (`req.params`), refusing a key it does not take.
    fn search_unchecked(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats>;

    /// Answers `queries.len() / dim` queries, in parallel over queries with rayon.
    /// `out` is resized to one result list per query. Checks `k` and every row
    /// once, then calls [`search_batch_unchecked`](Self::search_batch_unchecked).
    fn search_batch(
        &self,
        storage: &dyn VectorStorage,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
        out: &mut Vec<Vec<Neighbor>>,
    ) -> Result<SearchStats> {
        if k == 0 {
            return Err(crate::Error::invalid_param("k", "must be at least 1"));
        }
        crate::validate::check_rows(queries, self.dim())?;
        self.search_batch_unchecked(storage, queries, k, params, filter, out)
    }

    /// [`search_batch`](Self::search_batch) for checked queries (a whole number
    /// of finite rows, `k >= 1`). Implementations may override this with a tiled
    /// kernel; the default runs [`search_unchecked`](Self::search_unchecked) per
    /// query with one scratch per worker.
    fn search_batch_unchecked(
        &self,
        storage: &dyn VectorStorage,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
        out: &mut Vec<Vec<Neighbor>>,
    ) -> Result<SearchStats> {
        search_each(self, storage, queries, k, params, filter, out)
    }

    /// Every build parameter of this index by name, defaults included (what
    /// its kind's `create` would take to build an equal empty index); empty for
    /// an index without parameters.
    fn build_params(&self) -> crate::keyvalue::Params {
        crate::keyvalue::Params::new()
    }

    /// Whether the index can encode what it is given (an IVF-PQ index before
    /// training buffers its slots and answers them exactly); `true` for an
    /// index without a training step.
    fn is_trained(&self) -> bool {
        true
    }

    /// Trains on the row-major `sample` (before the index trains itself, if it
    /// does) and then absorbs the slots added before training, read from
    /// `storage`. An index without a training step: `InvalidParameter`.
    fn train(&self, storage: &dyn VectorStorage, sample: &[f32]) -> Result<()> {
        let _ = (storage, sample);
        Err(crate::Error::invalid_param(
            "train",
            format!("a {} index has no training step", self.name()),
        ))
    }

    /// Bytes of memory held by the index's own structures (not the storage's vectors).
    fn memory_bytes(&self) -> usize;

    /// Counters since creation.
    fn stats(&self) -> IndexStats;

    /// The index's own state (graph links, codebooks, inverted lists; never the
    /// storage's vectors) as bytes for a checkpoint, or `None` when the index keeps
    /// nothing worth saving and is rebuilt on reopen by adding the live slots
    /// (the flat index). Takes a consistent copy: callers hold off writers while
    /// it runs.
    fn persist(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The default [`VectorIndex::search_batch_unchecked`]:
/// [`search_unchecked`](VectorIndex::search_unchecked) per query, in parallel
/// over queries with rayon, one scratch per worker. For an override that keeps
/// this path for the requests it does not specialise (a filter, say).
pub fn search_each<I: VectorIndex + ?Sized>(
    index: &I,
    storage: &dyn VectorStorage,
    queries: &[f32],
    k: usize,
    params: &SearchParams,
    filter: Option<&dyn SlotFilter>,
    out: &mut Vec<Vec<Neighbor>>,
) -> Result<SearchStats> {
    let dim = index.dim();
    let nq = queries.len() / dim.max(1);
    out.resize_with(nq, Vec::new);
    let results: Result<Vec<SearchStats>> = queries
        .par_chunks_exact(dim)
        .zip(out.par_iter_mut())
        .map_init(SearchScratch::new, |scratch, (q, o)| {
            let mut req = SearchRequest::new(q, k, params);
            req.filter = filter;
            index.search_unchecked(storage, &req, scratch, o)
        })
        .collect();
    let mut total = SearchStats::default();
    for s in results? {
        total += s;
    }
    Ok(total)
}

/// Adds `slots` (any order, no duplicates) to `index` in runs of consecutive
/// slots: how an index that saves nothing is rebuilt from a collection's live
/// slots.
pub fn add_slots(
    index: &dyn VectorIndex,
    storage: &dyn VectorStorage,
    slots: &[SlotId],
) -> Result<()> {
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 {
            j += 1;
        }
        index.add(storage, sorted[i]..sorted[j - 1] + 1)?;
        i = j;
    }
    Ok(())
}
