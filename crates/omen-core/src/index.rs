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
    /// closest first.
    fn search(
        &self,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats>;

    /// Answers `queries.len() / dim` queries, in parallel over queries with rayon.
    /// `out` is resized to one result list per query. Implementations may override
    /// this with a tiled kernel; the default runs [`search`](Self::search) per query
    /// with one scratch per worker.
    fn search_batch(
        &self,
        storage: &dyn VectorStorage,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&dyn SlotFilter>,
        out: &mut Vec<Vec<Neighbor>>,
    ) -> Result<SearchStats> {
        let dim = self.dim();
        let nq = crate::validate::check_rows(queries, dim)?;
        out.resize_with(nq, Vec::new);
        let results: Result<Vec<SearchStats>> = queries
            .par_chunks_exact(dim)
            .zip(out.par_iter_mut())
            .map_init(SearchScratch::new, |scratch, (q, o)| {
                let mut req = SearchRequest::new(q, k, params);
                req.filter = filter;
                self.search(storage, &req, scratch, o)
            })
            .collect();
        let mut total = SearchStats::default();
        for s in results? {
            total += s;
        }
        Ok(total)
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
