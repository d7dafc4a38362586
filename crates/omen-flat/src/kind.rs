//! The flat index as a registered kind: no parameters, nothing saved (it is
//! rebuilt from the live slots on reopen).

use crate::FlatIndex;
use omen_core::{IndexKind, IndexSpec, Metric, ParamSpec, Params, Result, VectorIndex};

/// The kind of [`FlatIndex`], registered as `flat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatKind;

/// The one [`FlatKind`] value the registry lists.
pub static FLAT: FlatKind = FlatKind;

impl FlatKind {
    /// The spec of a flat index (it takes no parameters).
    pub fn spec(&'static self) -> IndexSpec {
        IndexSpec::new(self, Params::new())
    }
}

impl IndexKind for FlatKind {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn description(&self) -> &'static str {
        "exact search: every stored vector is scanned (the ground truth)"
    }

    fn build_params(&self) -> &'static [ParamSpec] {
        &[]
    }

    fn search_params(&self) -> &'static [ParamSpec] {
        &[]
    }

    fn create(&self, dim: usize, metric: Metric, params: &Params) -> Result<Box<dyn VectorIndex>> {
        params.check_keys("flat build", &[])?;
        Ok(Box::new(FlatIndex::new(dim, metric)?))
    }
}

impl From<&'static FlatKind> for IndexSpec {
    fn from(kind: &'static FlatKind) -> IndexSpec {
        IndexSpec::new(kind, Params::new())
    }
}
