use crate::error::Result;
use crate::keyvalue::{ParamValue, Params};
use crate::SlotId;

/// Per-query parameters: whether the answer must be exact, and the index's own
/// knobs as key/values (`ef` for HNSW, `nprobe` and `rerank_factor` for
/// IVF-PQ, ...). Each index parses its knobs into a typed struct of its own and
/// refuses a key it does not take; an unset key means the index's default.
///
/// [`SearchParams::exhaustive`] asks every index for an exact answer (ef ≥ n for
/// HNSW, nprobe = nlist and a re-rank of every candidate for IVF-PQ): with it, every
/// index must return exactly what the flat index returns.
///
/// ```
/// use omen_core::SearchParams;
/// let p = SearchParams::new().with("ef", 128);
/// assert_eq!(p.knobs().usize("ef").unwrap(), Some(128));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SearchParams {
    /// Ask for exact results regardless of the knobs.
    pub exhaustive: bool,
    knobs: Params,
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

    /// The knobs given as `params`.
    pub fn from_knobs(params: Params) -> Self {
        SearchParams {
            exhaustive: false,
            knobs: params,
        }
    }

    /// Sets one knob.
    pub fn with(mut self, key: &str, value: impl Into<ParamValue>) -> Self {
        self.knobs.set(key, value);
        self
    }

    /// Sets one knob.
    pub fn set(&mut self, key: &str, value: impl Into<ParamValue>) {
        self.knobs.set(key, value);
    }

    /// The knobs.
    pub fn knobs(&self) -> &Params {
        &self.knobs
    }

    /// The knobs, to change.
    pub fn knobs_mut(&mut self) -> &mut Params {
        &mut self.knobs
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

    /// Checks k, the dimension and the query's values: what every index may
    /// assume of a request it is handed (see [`crate::validate::check_query`]).
    pub fn validate(&self, dim: usize) -> Result<()> {
        crate::validate::check_query(self.query, self.k, dim)
    }

    /// Whether `slot` passes the filter (always, without one).
    #[inline]
    pub fn allows(&self, slot: SlotId) -> bool {
        self.filter.is_none_or(|f| f.allows(slot))
    }
}
