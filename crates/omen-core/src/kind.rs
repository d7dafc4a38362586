//! Index kinds: what an index crate registers so that every front end (the
//! engine, the CLI, the bench config, the Python package) can create, load and
//! parameterise it by name without knowing its type.
//!
//! * [`IndexKind`] is the kind itself: its name, its parameters, how to create an
//!   empty index and how to load a saved one;
//! * [`IndexSpec`] is a kind with its build parameters: what a collection's
//!   configuration names.

use crate::error::{Error, Result};
use crate::index::VectorIndex;
use crate::keyvalue::{ParamSpec, Params};
use crate::metric::Metric;
use std::fmt;
use std::path::Path;

/// A kind of index, registered by name.
///
/// Each index crate provides one `static` value implementing this; the engine's
/// registry lists them. Everything a front end needs to know about a kind is
/// here, so that nothing outside the index's crate matches on its name.
///
/// # Contract
/// * [`create`](Self::create) validates every build parameter (refusing keys
///   not in [`build_params`](Self::build_params)) and returns an empty index of
///   width `dim` computing `metric`. A collection passes
///   [`index_metric`](Self::index_metric) of its own metric.
/// * When [`file_extension`](Self::file_extension) is `Some`, the index's
///   [`persist`](VectorIndex::persist) returns bytes that [`load`](Self::load)
///   turns back into an equal index (the same slots, the same answers). When it
///   is `None`, the index saves nothing and is recreated by `create` with the same
///   parameters and rebuilt by adding the live slots.
/// * Loading damaged bytes is `Corruption` naming `file` and the byte offset,
///   never a panic.
pub trait IndexKind: Send + Sync + 'static {
    /// The registered name (`flat`, `hnsw`, `ivfpq`): lowercase, no spaces.
    fn name(&self) -> &'static str;

    /// One line for help texts.
    fn description(&self) -> &'static str;

    /// The build parameters `create` takes.
    fn build_params(&self) -> &'static [ParamSpec];

    /// The search parameters its indexes take (beyond
    /// [`SearchParams::exhaustive`](crate::SearchParams)).
    fn search_params(&self) -> &'static [ParamSpec];

    /// An empty index.
    /// An empty index of width `dim` computing `metric`.
    fn create(&self, dim: usize, metric: Metric, params: &Params) -> Result<Box<dyn VectorIndex>>;

    /// The extension of its saved state's file, or `None` when it saves nothing
    /// (see the contract).
    fn file_extension(&self) -> Option<&'static str> {
        None
    }

    /// Loads the state [`persist`](VectorIndex::persist) saved, read from `file`.
    fn load(&self, bytes: &[u8], file: &Path) -> Result<Box<dyn VectorIndex>> {
        let _ = bytes;
        Err(Error::corruption(
            file,
            0,
            format!("a {} index saves no file", self.name()),
        ))
    }

    /// The metric its index computes for a collection of `metric`: by default
    /// [`Metric::index_metric`] (cosine collections store unit vectors, so the
    /// index computes inner products).
    fn index_metric(&self, metric: Metric) -> Metric {
        metric.index_metric()
    }

    /// The build parameters under their canonical names, or the error `create`
    /// would give for an unknown key.
    fn check_build_keys(&self, params: &Params) -> Result<Params> {
        params.canonical(&format!("{} build", self.name()), self.build_params())
    }

    /// The search parameters under their canonical names, or an error for a key
    /// its indexes do not take.
    fn check_search_keys(&self, params: &Params) -> Result<Params> {
        params.canonical(&format!("{} search", self.name()), self.search_params())
    }
}

impl fmt::Debug for dyn IndexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexKind({})", self.name())
    }
}

/// A kind with its build parameters: what a collection is configured with.
#[derive(Clone)]
pub struct IndexSpec {
    kind: &'static dyn IndexKind,
    params: Params,
}

impl IndexSpec {
    /// `kind` with `params` (checked when the index is created).
    pub fn new(kind: &'static dyn IndexKind, params: Params) -> Self {
        IndexSpec { kind, params }
    }

    /// The kind.
    pub fn kind(&self) -> &'static dyn IndexKind {
        self.kind
    }

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The build parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// An empty index of this spec for a collection of `metric` (the index
    /// computes [`IndexKind::index_metric`] of it).
    pub fn create(&self, dim: usize, metric: Metric) -> Result<Box<dyn VectorIndex>> {
        self.kind
            .create(dim, self.kind.index_metric(metric), &self.params)
    }
}

impl fmt::Debug for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexSpec({}", self.kind.name())?;
        if !self.params.is_empty() {
            write!(f, " {}", self.params)?;
        }
        f.write_str(")")
    }
}

impl PartialEq for IndexSpec {
    fn eq(&self, o: &Self) -> bool {
        self.kind.name() == o.kind.name() && self.params == o.params
    }
}

impl From<&'static dyn IndexKind> for IndexSpec {
    fn from(kind: &'static dyn IndexKind) -> Self {
        IndexSpec::new(kind, Params::new())
    }
}
