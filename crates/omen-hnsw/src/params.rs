use omen_core::{Error, Result};

/// Construction and search parameters of an [`HnswIndex`](crate::HnswIndex).
///
/// The defaults are hnswlib's usual settings: `M = 16` (so `M0 = 32` on layer 0),
/// `ef_construction = 200`, and a query beam of `ef_search = 64` unless the request
/// names one.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HnswParams {
    /// Links per node on the upper layers (`M`); layer 0 keeps `2M` (`M0`). The
    /// level multiplier is `mL = 1 / ln M`. Range `2..=2048`.
    pub m: usize,
    /// Beam width while inserting. At least 1.
    pub ef_construction: usize,
    /// Beam width of a query that does not set [`SearchParams::ef`](omen_core::SearchParams). At least 1.
    pub ef_search: usize,
    /// Seed of the level generator: with one inserting thread, the same seed and
    /// the same insert order build the same graph.
    pub seed: u64,
    /// Whether the neighbour heuristic fills a list up to its capacity with the
    /// candidates it pruned (the paper's `keepPrunedConnections`). hnswlib does not
    /// (`false`, the default). Repairs after deletes always refill.
    pub keep_pruned: bool,
    /// Whether a new node chooses up to `M0` layer-0 neighbours rather than `M`.
    /// hnswlib chooses `M` on every layer (the default, `false`), and its layer-0
    /// lists reach `M0` only through back links: about 24 of 32 on GloVe-50. With
    /// `keep_pruned` too, every layer-0 list holds exactly `M0` once the graph
    /// has more than `M0` nodes (a fixed out-degree).
    pub fill_layer0: bool,
    /// Fraction of removed-but-unrepaired nodes (of all nodes in the graph) above
    /// which the next [`add`](omen_core::VectorIndex::add) first repairs the links
    /// into removed nodes. Default 0.1; range `(0, 1]`.
    pub repair_threshold: f64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            seed: 0x5eed_0f4e_5f00,
            keep_pruned: false,
            fill_layer0: false,
            repair_threshold: 0.1,
        }
    }
}

impl HnswParams {
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

    /// Sets the default query beam.
    pub fn with_ef_search(mut self, ef: usize) -> Self {
        self.ef_search = ef;
        self
    }

    /// Sets the level generator's seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `keepPrunedConnections`.
    pub fn with_keep_pruned(mut self, keep: bool) -> Self {
        self.keep_pruned = keep;
        self
    }

    /// Sets whether a new node chooses up to `M0` layer-0 neighbours.
    pub fn with_fill_layer0(mut self, fill: bool) -> Self {
        self.fill_layer0 = fill;
        self
    }

    /// Sets the repair threshold.
    pub fn with_repair_threshold(mut self, t: f64) -> Self {
        self.repair_threshold = t;
        self
    }

    /// `M0`, the capacity of a layer-0 list.
    pub fn m0(&self) -> usize {
        2 * self.m
    }

    /// Refuses values out of range.
    pub fn validate(&self) -> Result<()> {
        if !(2..=2048).contains(&self.m) {
            return Err(Error::invalid_param(
                "m",
                format!("must be in 2..=2048, got {}", self.m),
            ));
        }
        if self.ef_construction == 0 || self.ef_construction > u32::MAX as usize {
            return Err(Error::invalid_param(
                "ef_construction",
                "must be in 1..=2^32-1",
            ));
        }
        if self.ef_search == 0 || self.ef_search > u32::MAX as usize {
            return Err(Error::invalid_param("ef_search", "must be in 1..=2^32-1"));
        }
        if !(self.repair_threshold > 0.0 && self.repair_threshold <= 1.0) {
            return Err(Error::invalid_param(
                "repair_threshold",
                format!("must be in (0, 1], got {}", self.repair_threshold),
            ));
        }
        Ok(())
    }
}
