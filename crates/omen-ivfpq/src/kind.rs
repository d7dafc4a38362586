//! IVF-PQ as a registered kind: its parameters by name, and how the engine
//! creates and loads it.

use crate::{IvfPqIndex, IvfPqParams};
use omen_core::{
    Error, IndexKind, IndexSpec, Metric, ParamSpec, Params, Result, SearchParams, VectorIndex,
};
use std::path::Path;

/// The kind of [`IvfPqIndex`], registered as `ivfpq`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IvfPqKind;

/// The one [`IvfPqKind`] value the registry lists.
pub static IVFPQ: IvfPqKind = IvfPqKind;

/// Lists when the parameters name none.
pub const DEFAULT_NLIST: usize = 256;

const BUILD: &[ParamSpec] = &[
    ParamSpec::new("nlist", "inverted lists (coarse centroids) [256]"),
    ParamSpec::new(
        "m",
        "PQ sub-quantizers, dividing the dimension [the most giving >= 2 dims each]",
    )
    .aliases(&["pq_m"]),
    ParamSpec::new("nbits", "bits per code: 4 (fast scan) or 8 [4]"),
    ParamSpec::new(
        "train_size",
        "vectors held before it trains itself, 0 = only when asked [max(39 nlist, 1024)]",
    ),
    ParamSpec::new(
        "nprobe",
        "lists probed by a query that names none [min(16, nlist)]",
    ),
    ParamSpec::new(
        "rerank_factor",
        "candidates re-scored exactly per result by default [10]",
    )
    .aliases(&["rerank"]),
    ParamSpec::new("seed", "seed of every random choice in training [0]"),
    ParamSpec::new("kmeans_iters", "Lloyd iterations per quantizer [20]"),
];

const SEARCH: &[ParamSpec] = &[
    ParamSpec::new("nprobe", "lists probed (1..=nlist) [the index's nprobe]"),
    ParamSpec::new(
        "rerank_factor",
        "candidates kept per result and re-scored exactly [the index's]",
    )
    .aliases(&["rerank"]),
];

/// The default number of sub-quantizers for `dim`: the largest divisor of `dim`
/// that leaves at least 2 dimensions to each.
pub fn default_pq_m(dim: usize) -> usize {
    (1..=dim)
        .rev()
        .find(|d| dim % d == 0 && dim / d >= 2)
        .unwrap_or(1)
}

impl IvfPqParams {
    /// The parameters `params` names for vectors of width `dim`, the rest at
    /// their defaults; `InvalidParameter` for an unknown key or a value out of
    /// range.
    pub fn from_params(params: &Params, dim: usize) -> Result<IvfPqParams> {
        let params = params.canonical("ivfpq build", BUILD)?;
        let nlist = params.usize("nlist")?.unwrap_or(DEFAULT_NLIST);
        let m = params.usize("m")?.unwrap_or_else(|| default_pq_m(dim));
        let mut p = IvfPqParams::new(nlist, m);
        if let Some(v) = params.u32("nbits")? {
            p = p.with_nbits(v);
        }
        if let Some(v) = params.usize("train_size")? {
            p = p.with_train_size(v);
        }
        if let Some(v) = params.usize("nprobe")? {
            p = p.with_nprobe(v);
        }
        if let Some(v) = params.usize("rerank_factor")? {
            p = p.with_rerank_factor(v);
        }
        if let Some(v) = params.u64("seed")? {
            p = p.with_seed(v);
        }
        if let Some(v) = params.usize("kmeans_iters")? {
            p = p.with_kmeans_iters(v);
        }
        p.validate(dim)?;
        Ok(p)
    }

    /// Every parameter by name (what [`from_params`](Self::from_params) reads back).
    pub fn to_params(&self) -> Params {
        Params::new()
            .with("nlist", self.nlist)
            .with("m", self.m)
            .with("nbits", self.nbits)
            .with("train_size", self.train_size)
            .with("nprobe", self.nprobe)
            .with("rerank_factor", self.rerank_factor)
            .with("seed", self.seed)
            .with("kmeans_iters", self.kmeans_iters)
    }
}

impl From<IvfPqParams> for IndexSpec {
    fn from(p: IvfPqParams) -> IndexSpec {
        IndexSpec::new(&IVFPQ, p.to_params())
    }
}

impl From<&'static IvfPqKind> for IndexSpec {
    /// The kind with its default parameters.
    fn from(kind: &'static IvfPqKind) -> IndexSpec {
        IndexSpec::new(kind, Params::new())
    }
}

/// The knobs of one IVF-PQ search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IvfPqSearch {
    /// Lists probed; `None` for the index's `nprobe`.
    pub nprobe: Option<usize>,
    /// Candidates kept per result and re-scored exactly; `None` for the index's.
    pub rerank_factor: Option<usize>,
}

impl IvfPqSearch {
    /// The knobs of `params`; `InvalidParameter` for a key IVF-PQ does not take
    /// or a zero. Allocates nothing on success.
    pub fn from_params(params: &SearchParams) -> Result<IvfPqSearch> {
        let knobs = params.knobs();
        if knobs.is_empty() {
            return Ok(IvfPqSearch::default());
        }
        knobs.check_keys("ivfpq search", SEARCH)?;
        let nprobe = knobs.usize("nprobe")?;
        let rerank_factor = match knobs.usize("rerank_factor")? {
            Some(v) => Some(v),
            None => knobs.usize("rerank")?,
        };
        if nprobe == Some(0) {
            return Err(Error::invalid_param("nprobe", "must be at least 1"));
        }
        if rerank_factor == Some(0) {
            return Err(Error::invalid_param("rerank_factor", "must be at least 1"));
        }
        Ok(IvfPqSearch {
            nprobe,
            rerank_factor,
        })
    }
}

impl IndexKind for IvfPqKind {
    fn name(&self) -> &'static str {
        "ivfpq"
    }

    fn description(&self) -> &'static str {
        "IVF with product-quantized codes (4-bit fast scan or 8-bit) and exact re-ranking"
    }

    fn build_params(&self) -> &'static [ParamSpec] {
        BUILD
    }

    fn search_params(&self) -> &'static [ParamSpec] {
        SEARCH
    }

    fn create(&self, dim: usize, metric: Metric, params: &Params) -> Result<Box<dyn VectorIndex>> {
        Ok(Box::new(IvfPqIndex::new(
            dim,
            metric,
            IvfPqParams::from_params(params, dim)?,
        )?))
    }

    fn file_extension(&self) -> Option<&'static str> {
        Some("ivfpq")
    }

    fn load(&self, bytes: &[u8], file: &Path) -> Result<Box<dyn VectorIndex>> {
        Ok(Box::new(IvfPqIndex::from_bytes(bytes, file)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_defaults_and_aliases() {
        let p = IvfPqParams::new(16, 4).with_nprobe(3).with_seed(9);
        assert_eq!(IvfPqParams::from_params(&p.to_params(), 8).unwrap(), p);
        let d = IvfPqParams::from_params(&Params::new().with("nlist", 8), 50).unwrap();
        assert_eq!((d.nlist, d.m, d.nbits), (8, 25, 4));
        let a =
            IvfPqParams::from_params(&Params::new().with("pq-m", 5).with("rerank", 3), 50).unwrap();
        assert_eq!((a.m, a.rerank_factor), (5, 3));
        let e = IvfPqParams::from_params(&Params::new().with("ef", 3), 8).unwrap_err();
        assert!(e.to_string().contains("valid: nlist, m, nbits"), "{e}");
        let s = IvfPqSearch::from_params(&SearchParams::new().with("rerank", 2)).unwrap();
        assert_eq!(s.rerank_factor, Some(2));
        assert!(IvfPqSearch::from_params(&SearchParams::new().with("ef", 2)).is_err());
        assert!(IvfPqSearch::from_params(&SearchParams::new().with("nprobe", 0)).is_err());
    }
}
