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

    /// The allowed slots as a bitmap (bit `s % 64` of word `s / 64`; slots past
    /// the end are not allowed), when the filter is one: an index that scans the
    /// matching rows of a selective filter then visits only the set bits instead
    /// of asking [`allows`](Self::allows) of every slot. `None` (the default) for
    /// a predicate.
    fn bitmap(&self) -> Option<&[u64]> {
        None
    }
}

/// A filter given as the set of allowed slots, kept as a bitmap: [`SlotFilter`]
/// with [`bitmap`](SlotFilter::bitmap), so a selective filter's flat scan costs
/// its matching rows, not the index's size.
///
/// ```
/// use omen_core::{SlotBitmap, SlotFilter};
/// let f = SlotBitmap::from_slots([3, 70]);
/// assert!(f.allows(3) && f.allows(70) && !f.allows(4) && !f.allows(1000));
/// assert_eq!(f.count(), 2);
/// assert_eq!(f.iter().collect::<Vec<_>>(), vec![3, 70]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotBitmap {
    words: Vec<u64>,
}

impl SlotBitmap {
    /// No slot allowed.
    pub fn new() -> Self {
        SlotBitmap::default()
    }

    /// Allows the given slots.
    pub fn from_slots(slots: impl IntoIterator<Item = SlotId>) -> Self {
        let mut b = SlotBitmap::new();
        for s in slots {
            b.insert(s);
        }
        b
    }

    /// The bitmap of `words` (bit `s % 64` of word `s / 64` allows slot `s`).
    pub fn from_words(words: Vec<u64>) -> Self {
        SlotBitmap { words }
    }

    /// Slot `i` allowed iff `mask[i]`.
    pub fn from_mask(mask: &[bool]) -> Self {
        let mut words = vec![0u64; mask.len().div_ceil(64)];
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            words[i / 64] |= 1 << (i % 64);
        }
        SlotBitmap { words }
    }

    /// Allows `slot`.
    pub fn insert(&mut self, slot: SlotId) {
        let w = slot as usize / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (slot % 64);
    }

    /// How many slots are allowed.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The allowed slots, ascending.
    pub fn iter(&self) -> impl Iterator<Item = SlotId> + '_ {
        bitmap_slots(&self.words)
    }
}

/// The set bits of `words` as slots, ascending.
pub fn bitmap_slots(words: &[u64]) -> impl Iterator<Item = SlotId> + '_ {
    words.iter().enumerate().flat_map(|(w, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                (w * 64) as SlotId + b
            })
        })
    })
}

impl SlotFilter for SlotBitmap {
    #[inline]
    fn allows(&self, slot: SlotId) -> bool {
        self.words
            .get(slot as usize / 64)
            .is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }

    fn bitmap(&self) -> Option<&[u64]> {
        Some(&self.words)
    }
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
