//! The quantized-graph index as a registered kind: its parameters by name, and
//! how the engine creates and loads it.

use crate::QgIndex;
use omen_core::{
    Error, IndexKind, IndexSpec, Metric, ParamSpec, Params, Result, SearchParams, VectorIndex,
};
use std::path::Path;

/// The kind of [`QgIndex`], registered as `qg`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QgKind;

/// The one [`QgKind`] value the registry lists.
pub static QG: QgKind = QgKind;

const BUILD: &[ParamSpec] = &[
    ParamSpec::new(
        "m",
        "HNSW links per node on the upper layers, 2M (at most 32 walked) on layer 0 [16]",
    ),
    ParamSpec::new("ef_construction", "HNSW beam width while inserting [300]"),
    ParamSpec::new("ef_search", "beam width of a query that names none [64]"),
    ParamSpec::new("seed", "seed of the level generator and of PQ training"),
    ParamSpec::new(
        "keep_pruned",
        "fill layer-0 lists with pruned candidates: the block scans 32 lanes whatever the degree [true]",
    ),
    ParamSpec::new(
        "fill_layer0",
        "a new node chooses 2M layer-0 neighbours, not M: with keep_pruned every block's 32 lanes are full (a fixed out-degree) [true]",
    ),
    ParamSpec::new(
        "pq_m",
        "PQ sub-quantizers of the neighbour codes (4 bits each; divides dim, <= 256) [the largest divisor of dim <= 64]",
    ),
    ParamSpec::new(
        "train_at",
        "present slots at which the codes are trained; before that a query walks the graph exactly [10000]",
    ),
    ParamSpec::new(
        "train_sample",
        "vectors the PQ codebooks are trained on [65536]",
    ),
];

const SEARCH: &[ParamSpec] = &[
    ParamSpec::new(
        "ef",
        "beam width of the walk on codes (at least k) [the index's ef_search]",
    ),
    ParamSpec::new(
        "rerank",
        "score exactly only the final beam's `rerank` best estimates, once the walk ends (at least k; above ef it widens the beam) [every expanded node, as the walk goes]",
    ),
];

/// Construction parameters of a [`QgIndex`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QgParams {
    /// HNSW `M` of the graph (layer 0 keeps `2M`; a block holds the first 32).
    pub m: usize,
    /// HNSW beam width while inserting. 300 by default (hnswlib's usual 200 is
    /// for lists of 16 chosen at insertion; here every node chooses 32): on
    /// GloVe-50 L2 (`qg_search`, 2,000 queries, one thread) it raised recall@10 at
    /// ef 320 from 0.989 to 0.991 and the QPS at recall 0.99 by about a quarter,
    /// for a build about 1.2x as long.
    pub ef_construction: usize,
    /// Beam width of a query that names no `ef`.
    pub ef_search: usize,
    /// Seed of the graph's level generator and of the PQ training.
    pub seed: u64,
    /// HNSW `keepPrunedConnections`: lists filled to capacity with pruned
    /// candidates. On by default here: the block scans all 32 lanes anyway.
    pub keep_pruned: bool,
    /// HNSW `fill_layer0`: a new node chooses `2M` layer-0 neighbours, so that
    /// (with `keep_pruned`) every list, and every block, holds 32 at `M = 16`: a
    /// fixed out-degree, where plain HNSW lists fill about 24 of the 32 lanes a
    /// block scans anyway. On by default: on GloVe-50 (`qg_search`, one thread)
    /// it gave 5 / 13 / 22 % more QPS at recall@10 0.90 / 0.95 / 0.99 (angular,
    /// three runs each) and +17 / +19 / −3 % (L2, one run), for a graph build
    /// about 1.5x as long.
    pub fill_layer0: bool,
    /// PQ sub-quantizers; `None` for [`default_pq_m`] of the dimension.
    pub pq_m: Option<usize>,
    /// Present slots at which the codes are trained (automatically, on the next
    /// add). At least 16 (a 4-bit codebook has 16 centroids).
    pub train_at: usize,
    /// Vectors the codebooks are trained on (at most; the first present ones).
    pub train_sample: usize,
}

impl Default for QgParams {
    fn default() -> Self {
        QgParams {
            m: 16,
            ef_construction: 300,
            ef_search: 64,
            seed: 0x5eed_0f4e_5f00,
            keep_pruned: true,
            fill_layer0: true,
            pq_m: None,
            train_at: 10_000,
            train_sample: 65_536,
        }
    }
}

/// The default number of sub-quantizers for `dim`: the largest divisor of `dim`
/// at most 128 (one component per sub-quantizer, 4 bits per dimension, up to 128
/// dimensions: what makes the walk's estimates sharp on GloVe-50 and on 1M x 128
/// alike; two for 256, …).
pub fn default_pq_m(dim: usize) -> usize {
    (1..=dim.min(128)).rev().find(|m| dim % m == 0).unwrap_or(1)
}

impl QgParams {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `M`.
    pub fn with_m(mut self, m: usize) -> Self {
        self.m = m;
        self
    }

    /// Sets `ef_construction`.
    pub fn with_ef_construction(mut self, ef: usize) -> Self {
        self.ef_construction = ef;
        self
    }

    /// Sets `ef_search`.
    pub fn with_ef_search(mut self, ef: usize) -> Self {
        self.ef_search = ef;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `pq_m`.
    pub fn with_pq_m(mut self, m: usize) -> Self {
        self.pq_m = Some(m);
        self
    }

    /// Sets `train_at`.
    pub fn with_train_at(mut self, n: usize) -> Self {
        self.train_at = n;
        self
    }

    /// Sets `keep_pruned`.
    pub fn with_keep_pruned(mut self, keep: bool) -> Self {
        self.keep_pruned = keep;
        self
    }

    /// Sets `fill_layer0`.
    pub fn with_fill_layer0(mut self, fill: bool) -> Self {
        self.fill_layer0 = fill;
        self
    }

    /// The sub-quantizers for `dim`.
    pub fn pq_m_for(&self, dim: usize) -> usize {
        self.pq_m.unwrap_or_else(|| default_pq_m(dim))
    }

    /// Checks the values for a `dim`-wide index; `InvalidParameter` naming the
    /// first one out of range.
    pub fn validate(&self, dim: usize) -> Result<()> {
        self.hnsw().validate()?;
        if self.ef_search == 0 {
            return Err(Error::invalid_param("ef_search", "must be at least 1"));
        }
        let m = self.pq_m_for(dim);
        omen_core::pq::ProductQuantizer::check_shape(dim, m, 4).map_err(|e| {
            Error::invalid_param(
                "pq_m",
                format!("{m} sub-quantizers for {dim} dimensions: {e}"),
            )
        })?;
        if self.train_at < 16 {
            return Err(Error::invalid_param(
                "train_at",
                format!(
                    "must be at least 16 (the centroids of a 4-bit codebook), got {}",
                    self.train_at
                ),
            ));
        }
        if self.train_sample < 16 {
            return Err(Error::invalid_param(
                "train_sample",
                format!("must be at least 16, got {}", self.train_sample),
            ));
        }
        Ok(())
    }

    /// The parameters of the HNSW graph underneath.
    pub(crate) fn hnsw(&self) -> omen_hnsw::HnswParams {
        omen_hnsw::HnswParams::new()
            .with_m(self.m)
            .with_ef_construction(self.ef_construction)
            .with_ef_search(self.ef_search)
            .with_seed(self.seed)
            .with_keep_pruned(self.keep_pruned)
            .with_fill_layer0(self.fill_layer0)
    }

    /// The parameters `params` names, the rest at their defaults; `InvalidParameter`
    /// for an unknown key (the message lists the valid ones) or a value out of range
    /// (checked against `dim` by [`QgIndex::new`]).
    pub fn from_params(params: &Params) -> Result<QgParams> {
        params.check_keys("qg build", BUILD)?;
        let d = QgParams::default();
        Ok(QgParams {
            m: params.usize("m")?.unwrap_or(d.m),
            ef_construction: params
                .usize("ef_construction")?
                .unwrap_or(d.ef_construction),
            ef_search: params.usize("ef_search")?.unwrap_or(d.ef_search),
            seed: params.u64("seed")?.unwrap_or(d.seed),
            keep_pruned: params.bool("keep_pruned")?.unwrap_or(d.keep_pruned),
            fill_layer0: params.bool("fill_layer0")?.unwrap_or(d.fill_layer0),
            pq_m: params.usize("pq_m")?,
            train_at: params.usize("train_at")?.unwrap_or(d.train_at),
            train_sample: params.usize("train_sample")?.unwrap_or(d.train_sample),
        })
    }

    /// Every parameter by name, `pq_m` resolved for `dim`.
    pub fn to_params(&self, dim: usize) -> Params {
        self.keys(Some(self.pq_m_for(dim)))
    }

    /// Every key, `pq_m` only when given.
    fn keys(&self, pq_m: Option<usize>) -> Params {
        let mut params = Params::new()
            .with("m", self.m)
            .with("ef_construction", self.ef_construction)
            .with("ef_search", self.ef_search)
            .with("seed", self.seed)
            .with("keep_pruned", self.keep_pruned)
            .with("fill_layer0", self.fill_layer0);
        if let Some(m) = pq_m {
            params = params.with("pq_m", m);
        }
        params
            .with("train_at", self.train_at)
            .with("train_sample", self.train_sample)
    }
}

impl From<QgParams> for IndexSpec {
    fn from(p: QgParams) -> IndexSpec {
        IndexSpec::new(&QG, p.keys(p.pq_m))
    }
}

impl From<&'static QgKind> for IndexSpec {
    /// The kind with its default parameters.
    fn from(kind: &'static QgKind) -> IndexSpec {
        IndexSpec::new(kind, Params::new())
    }
}

/// The knobs of one search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QgSearch {
    /// Beam width; `None` for the index's `ef_search`.
    pub ef: Option<usize>,
    /// Only the final beam's this many best estimates are scored exactly, once
    /// the walk ends; `None` scores every expanded node as the walk goes.
    pub rerank: Option<usize>,
}

impl QgSearch {
    /// The knobs of `params`; `InvalidParameter` for a key this index does not
    /// take or a zero. Allocates nothing on success.
    pub fn from_params(params: &SearchParams) -> Result<QgSearch> {
        let knobs = params.knobs();
        if knobs.is_empty() {
            return Ok(QgSearch::default());
        }
        knobs.check_keys("qg search", SEARCH)?;
        let ef = knobs.usize("ef")?;
        if ef == Some(0) {
            return Err(Error::invalid_param("ef", "must be at least 1"));
        }
        let rerank = knobs.usize("rerank")?;
        if rerank == Some(0) {
            return Err(Error::invalid_param("rerank", "must be at least 1"));
        }
        Ok(QgSearch { ef, rerank })
    }

    /// The beam width and the re-rank for a query of `k` under an index whose
    /// default beam is `ef_search`: `ef >= k`; `None` scores every node the walk
    /// expands exactly (the default), `Some(r)` (`k <= r`, and a beam of at least
    /// `r`) only the final beam's `r` best estimates.
    pub fn resolve(&self, k: usize, ef_search: usize) -> (usize, Option<usize>) {
        let ef = self.ef.unwrap_or(ef_search).max(k);
        match self.rerank {
            None => (ef, None),
            Some(r) => {
                let r = r.max(k);
                (ef.max(r), Some(r))
            }
        }
    }
}

impl IndexKind for QgKind {
    fn name(&self) -> &'static str {
        "qg"
    }

    fn description(&self) -> &'static str {
        "quantized graph: HNSW walked on the neighbours' 4-bit PQ codes, exact re-rank; tuned by ef"
    }

    fn build_params(&self) -> &'static [ParamSpec] {
        BUILD
    }

    fn search_params(&self) -> &'static [ParamSpec] {
        SEARCH
    }

    fn create(&self, dim: usize, metric: Metric, params: &Params) -> Result<Box<dyn VectorIndex>> {
        Ok(Box::new(QgIndex::new(
            dim,
            metric,
            QgParams::from_params(params)?,
        )?))
    }

    fn file_extension(&self) -> Option<&'static str> {
        Some("qg")
    }

    fn load(&self, bytes: &[u8], file: &Path) -> Result<Box<dyn VectorIndex>> {
        Ok(Box::new(QgIndex::from_bytes(bytes, file)?))
    }
}
