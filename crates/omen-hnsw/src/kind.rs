//! The HNSW index as a registered kind: its parameters by name, and how the
//! engine creates and loads it.

use crate::{HnswIndex, HnswParams};
use omen_core::{
    Error, IndexKind, IndexSpec, Metric, ParamSpec, Params, Result, SearchParams, VectorIndex,
};
use std::path::Path;

/// The kind of [`HnswIndex`], registered as `hnsw`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HnswKind;

/// The one [`HnswKind`] value the registry lists.
pub static HNSW: HnswKind = HnswKind;

const BUILD: &[ParamSpec] = &[
    ParamSpec::new(
        "m",
        "links per node on the upper layers, 2M on layer 0 (2..=2048) [16]",
    ),
    ParamSpec::new("ef_construction", "beam width while inserting [200]"),
    ParamSpec::new("ef_search", "beam width of a query that names none [64]"),
    ParamSpec::new("seed", "seed of the level generator"),
    ParamSpec::new(
        "keep_pruned",
        "fill neighbour lists with pruned candidates (keepPrunedConnections) [false]",
    ),
    ParamSpec::new(
        "fill_layer0",
        "a new node chooses up to 2M layer-0 neighbours, not M (with keep_pruned: a fixed out-degree 2M) [false]",
    ),
    ParamSpec::new(
        "repair_threshold",
        "fraction of removed nodes that triggers link repair, (0, 1] [0.1]",
    ),
];

const SEARCH: &[ParamSpec] = &[ParamSpec::new(
    "ef",
    "beam width on layer 0 (at least k) [the index's ef_search]",
)];

impl HnswParams {
    /// The parameters `params` names, the rest at their defaults; `InvalidParameter`
    /// for an unknown key or a value out of range.
    pub fn from_params(params: &Params) -> Result<HnswParams> {
        params.check_keys("hnsw build", BUILD)?;
        let d = HnswParams::default();
        let p = HnswParams {
            m: params.usize("m")?.unwrap_or(d.m),
            ef_construction: params
                .usize("ef_construction")?
                .unwrap_or(d.ef_construction),
            ef_search: params.usize("ef_search")?.unwrap_or(d.ef_search),
            seed: params.u64("seed")?.unwrap_or(d.seed),
            keep_pruned: params.bool("keep_pruned")?.unwrap_or(d.keep_pruned),
            fill_layer0: params.bool("fill_layer0")?.unwrap_or(d.fill_layer0),
            repair_threshold: params
                .f64("repair_threshold")?
                .unwrap_or(d.repair_threshold),
        };
        p.validate()?;
        Ok(p)
    }

    /// Every parameter by name (what [`from_params`](Self::from_params) reads back).
    pub fn to_params(&self) -> Params {
        Params::new()
            .with("m", self.m)
            .with("ef_construction", self.ef_construction)
            .with("ef_search", self.ef_search)
            .with("seed", self.seed)
            .with("keep_pruned", self.keep_pruned)
            .with("fill_layer0", self.fill_layer0)
            .with("repair_threshold", self.repair_threshold)
    }
}

impl From<HnswParams> for IndexSpec {
    fn from(p: HnswParams) -> IndexSpec {
        IndexSpec::new(&HNSW, p.to_params())
    }
}

impl From<&'static HnswKind> for IndexSpec {
    /// The kind with its default parameters.
    fn from(kind: &'static HnswKind) -> IndexSpec {
        IndexSpec::new(kind, Params::new())
    }
}

/// The knobs of one HNSW search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HnswSearch {
    /// Beam width on layer 0; `None` for the index's `ef_search`.
    pub ef: Option<usize>,
}

impl HnswSearch {
    /// The knobs of `params`; `InvalidParameter` for a key HNSW does not take or
    /// `ef = 0`. Allocates nothing on success.
    pub fn from_params(params: &SearchParams) -> Result<HnswSearch> {
        let knobs = params.knobs();
        if knobs.is_empty() {
            return Ok(HnswSearch::default());
        }
        knobs.check_keys("hnsw search", SEARCH)?;
        let ef = knobs.usize("ef")?;
        if ef == Some(0) {
            return Err(Error::invalid_param("ef", "must be at least 1"));
        }
        Ok(HnswSearch { ef })
    }
}

impl IndexKind for HnswKind {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn description(&self) -> &'static str {
        "HNSW graph (hnswlib's algorithm): approximate, tuned by ef"
    }

    fn build_params(&self) -> &'static [ParamSpec] {
        BUILD
    }

    fn search_params(&self) -> &'static [ParamSpec] {
        SEARCH
    }

    fn create(&self, dim: usize, metric: Metric, params: &Params) -> Result<Box<dyn VectorIndex>> {
        Ok(Box::new(HnswIndex::new(
            dim,
            metric,
            HnswParams::from_params(params)?,
        )?))
    }

    fn file_extension(&self) -> Option<&'static str> {
        Some("hnsw")
    }

    fn load(&self, bytes: &[u8], file: &Path) -> Result<Box<dyn VectorIndex>> {
        Ok(Box::new(HnswIndex::from_bytes(bytes, file)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_refuse_foreign_keys() {
        let p = HnswParams::new().with_m(8).with_ef_search(40).with_seed(7);
        assert_eq!(HnswParams::from_params(&p.to_params()).unwrap(), p);
        let e = HnswParams::from_params(&Params::new().with("nlist", 4)).unwrap_err();
        assert!(e.to_string().contains("valid: m, ef_construction"), "{e}");
        assert!(HnswParams::from_params(&Params::new().with("m", 1)).is_err());
        let s = SearchParams::new().with("nprobe", 3);
        assert!(HnswSearch::from_params(&s).is_err());
        assert!(HnswSearch::from_params(&SearchParams::new().with("ef", 0)).is_err());
        let ok = HnswSearch::from_params(&SearchParams::new().with("ef", "12")).unwrap();
        assert_eq!(ok.ef, Some(12));
    }
}
