use crate::error::{Error, Result};
use crate::SlotId;

/// Per-query knobs. Each index reads the ones it understands and ignores the rest;
/// `None` means the index's own default.
///
/// [`SearchParams::exhaustive`] asks every index for an exact answer (ef ≥ n for
/// HNSW, nprobe = nlist and a re-rank of every candidate for IVF-PQ): with it, every
/// index must return exactly what the flat index returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SearchParams {
    /// HNSW beam width on layer 0.
    pub ef: Option<usize>,
    /// IVF lists probed.
    pub nprobe: Option<usize>,
    /// IVF-PQ: candidates kept by approximate distance per result, re-scored exactly.
    pub rerank_factor: Option<usize>,
    /// Ask for exact results regardless of the other knobs.
    pub exhaustive: bool,
}

impl SearchParams {
    /// The index defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exact search, whatever the index.
    pub fn exhaustive() -> Self {
        SearchParams {
            exhaustive: true,
            ..Self::default()
        }
    }

    /// Sets the HNSW beam width.
    pub fn with_ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Sets the number of IVF lists probed.
    pub fn with_nprobe(mut self, nprobe: usize) -> Self {
        self.nprobe = Some(nprobe);
        self
    }

    /// Sets the IVF-PQ re-rank factor.
    pub fn with_rerank_factor(mut self, f: usize) -> Self {
        self.rerank_factor = Some(f);
        self
    }

    /// Refuses values that no index accepts (zeros).
    pub fn validate(&self) -> Result<()> {
        if self.ef == Some(0) {
            return Err(Error::invalid_param("ef", "must be at least 1"));
        }
        if self.nprobe == Some(0) {
            return Err(Error::invalid_param("nprobe", "must be at least 1"));
        }
        if self.rerank_factor == Some(0) {
            return Err(Error::invalid_param("rerank_factor", "must be at least 1"));
        }
        Ok(())
    }
}

/// A predicate over slots: only slots for which it returns `true` may be returned.
pub trait SlotFilter: Sync {
    /// Whether `slot` may appear in the results.
    fn allows(&self, slot: SlotId) -> bool;
}

impl<F: Fn(SlotId) -> bool + Sync> SlotFilter for F {
    #[inline]
    fn allows(&self, slot: SlotId) -> bool {
        self(slot)
    }
}

/// One query: the vector, how many neighbours, the knobs and an optional filter.
#[derive(Clone, Copy)]
pub struct SearchRequest<'a> {
    /// The query vector (already normalised for the cosine metric).
    pub query: &'a [f32],
    /// Neighbours wanted; must be at least 1. More than the index holds returns all.
    pub k: usize,
    /// Index knobs.
    pub params: &'a SearchParams,
    /// Only slots this allows are returned.
    pub filter: Option<&'a dyn SlotFilter>,
}

impl<'a> SearchRequest<'a> {
    /// A request with default parameters and no filter.
    pub fn new(query: &'a [f32], k: usize, params: &'a SearchParams) -> Self {
        SearchRequest {
            query,
            k,
            params,
            filter: None,
        }
    }

    /// Adds a filter.
    pub fn with_filter(mut self, filter: &'a dyn SlotFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Checks k, the dimension and the parameters (the vector's values are checked
    /// by [`crate::validate::check_vector`]).
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid_param("k", "must be at least 1"));
        }
        if self.query.len() != dim {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: self.query.len(),
            });
        }
        self.params.validate()
    }

    /// Whether `slot` passes the filter (always, without one).
    #[inline]
    pub fn allows(&self, slot: SlotId) -> bool {
        self.filter.is_none_or(|f| f.allows(slot))
    }
}
