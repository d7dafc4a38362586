//! Benchmark configurations: a matrix of {index kind × parameters} × {storage kind}
//! × dataset × thread count, read from a TOML or JSON file or chosen by suite name.

use omen_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One index configuration with its search-parameter sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum IndexSpec {
    /// Exact search.
    Flat,
    /// HNSW.
    Hnsw {
        /// Links per node on upper layers (layer 0 has 2M).
        m: usize,
        /// Beam width while building.
        ef_construction: usize,
        /// Beam widths to sweep at search time.
        ef_search: Vec<usize>,
    },
    /// IVF-PQ with exact re-ranking.
    Ivfpq {
        /// Inverted lists.
        nlist: usize,
        /// Sub-quantizers.
        m: usize,
        /// Bits per code: 4 (fast scan) or 8.
        nbits: usize,
        /// Vectors sampled for training.
        train_size: usize,
        /// Lists probed, swept.
        nprobe: Vec<usize>,
        /// Re-rank factors, swept.
        rerank: Vec<usize>,
    },
}

/// One peer configuration (run through the Python adapter).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Adapter system name: faiss-flat, faiss-hnsw, faiss-ivfpq, faiss-ivfpqfs,
    /// faiss-ivfflat, hnswlib, usearch.
    pub system: String,
    /// Build parameters (M, ef_construction, nlist, m, train_size, ...).
    #[serde(default)]
    pub build: serde_json::Map<String, serde_json::Value>,
    /// Sweep: one object of search parameters per operating point.
    #[serde(default)]
    pub sweep: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A whole benchmark configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Run name: the report goes to `reports/<name>/`.
    pub name: String,
    /// Dataset name (`synthetic-default`, `glove-50-angular`, `glove-50-l2`, ...) or a
    /// path to a dataset directory.
    pub dataset: String,
    /// Neighbours per query.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Thread counts; each system is measured once per count (building and batch
    /// search use that many threads; the one-query-at-a-time figure is always one).
    #[serde(default = "default_threads")]
    pub threads: Vec<usize>,
    /// Storage backends (`memory`, `mmap`). An `mmap` system keeps its chunk files
    /// in a fresh temporary directory, removed afterwards.
    #[serde(default = "default_storage")]
    pub storage: Vec<String>,
    /// Index configurations.
    pub indexes: Vec<IndexSpec>,
    /// Peers to run in the same run, when their environment is installed.
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    /// Seconds allowed for each one-query-at-a-time loop.
    #[serde(default = "default_single_secs")]
    pub single_query_seconds: f64,
    /// Use at most this many queries (0 = all).
    #[serde(default)]
    pub max_queries: usize,
    /// Also measure durable ingest for every omen system: the base inserted into a
    /// durable collection (write-ahead log, same index and storage), reported as a
    /// phase of its own, with the collection's on-disk size. Default true.
    #[serde(default = "default_true")]
    pub durable_ingest: bool,
    /// The durability mode of the durable ingest: `group` (group commit of 256
    /// records, syncing as soon as a record waits: the default), `per-write` or `none`.
    #[serde(default)]
    pub durability: Option<String>,
    /// Threads of the batch search call, for every system alike, when not the
    /// build's thread count (a suite may build on both cores and still time
    /// batches on one).
    #[serde(default)]
    pub batch_threads: Option<usize>,
    /// Also measure every omen index (over memory storage) through the `omen`
    /// Python package with the peers' adapter: the same Python loop, queries and
    /// clock as the peers (the `python` path). Default true; needs the package in
    /// the peers' environment (`scripts/setup-peers.sh` installs it).
    #[serde(default = "default_true")]
    pub python: bool,
    /// Also measure `omen db search` as a process (the `cli` path): every omen
    /// index is imported into a durable collection with `omen db create` and
    /// `omen db import`, checkpointed, then searched over the query file once per
    /// operating point on one thread; open time is reported apart. Default false.
    #[serde(default)]
    pub cli: bool,
    /// When the peers' environment does not exist at all, measure omen natively
    /// and note the skip in the progress log instead of refusing the run (the
    /// `quick` suite, which must work on a fresh machine). An environment that
    /// exists but lacks a named system's package is still refused. Default false.
    #[serde(default)]
    pub peers_optional: bool,
}

/// The durability modes a config may name.
pub const DURABILITY_MODES: [&str; 3] = ["group", "per-write", "none"];

fn default_k() -> usize {
    10
}
fn default_threads() -> Vec<usize> {
    vec![1]
}
fn default_storage() -> Vec<String> {
    vec!["memory".into()]
}
fn default_single_secs() -> f64 {
    10.0
}
fn default_true() -> bool {
    true
}

impl BenchConfig {
    /// Reads a `.toml` or `.json` configuration file.
    pub fn from_file(path: &Path) -> Result<BenchConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: BenchConfig = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_str(&text).map_err(|e| {
                Error::corruption(path, e.column() as u64, format!("line {}: {e}", e.line()))
            })?,
            _ => toml::from_str(&text).map_err(|e| {
                let off = e.span().map_or(0, |s| s.start as u64);
                Error::corruption(path, off, e.message().to_string())
            })?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A built-in suite by name: `quick`, `glove-50`, `hnsw-glove-50`,
    /// `flat-glove-50`, `recall-k100`, `glove-50-l2`, `synthetic-1m-128`.
    pub fn named(name: &str) -> Option<BenchConfig> {
        let text = match name {
            "quick" => include_str!("../suites/quick.toml"),
            "glove-50" => include_str!("../suites/glove-50.toml"),
            "flat-glove-50" => include_str!("../suites/flat-glove-50.toml"),
            "recall-k100" => include_str!("../suites/recall-k100.toml"),
            "hnsw-glove-50" => include_str!("../suites/hnsw-glove-50.toml"),
            "glove-50-l2" => include_str!("../suites/glove-50-l2.toml"),
            "synthetic-1m-128" => include_str!("../suites/synthetic-1m-128.toml"),
            _ => return None,
        };
        toml::from_str(text).ok()
    }

    /// Refuses empty sweeps and zero parameters.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid_param("k", "must be at least 1"));
        }
        if self.batch_threads == Some(0) {
            return Err(Error::invalid_param("batch_threads", "must be at least 1"));
        }
        if self.threads.is_empty() || self.threads.contains(&0) {
            return Err(Error::invalid_param(
                "threads",
                "must list thread counts of at least 1",
            ));
        }
        for s in &self.storage {
            if s != "memory" && s != "mmap" {
                return Err(Error::invalid_param(
                    "storage",
                    format!("{s:?} is not a storage backend of this build (memory, mmap)"),
                ));
            }
        }
        if let Some(d) = &self.durability {
            if !DURABILITY_MODES.contains(&d.as_str()) {
                return Err(Error::invalid_param(
                    "durability",
                    format!("{d:?} is not a durability mode (group, per-write, none)"),
                ));
            }
        }
        for ix in &self.indexes {
            match ix {
                IndexSpec::Flat => {}
                IndexSpec::Hnsw {
                    m,
                    ef_construction,
                    ef_search,
                } => {
                    if *m < 2
                        || *ef_construction == 0
                        || ef_search.is_empty()
                        || ef_search.contains(&0)
                    {
                        return Err(Error::invalid_param("hnsw", "needs m >= 2, ef_construction >= 1 and a non-empty ef_search of values >= 1"));
                    }
                }
                IndexSpec::Ivfpq {
                    nlist,
                    m,
                    nbits,
                    nprobe,
                    rerank,
                    ..
                } => {
                    if *nlist == 0
                        || *m == 0
                        || !(*nbits == 4 || *nbits == 8)
                        || nprobe.is_empty()
                        || rerank.is_empty()
                        || nprobe.contains(&0)
                        || rerank.contains(&0)
                    {
                        return Err(Error::invalid_param("ivfpq", "needs nlist, m >= 1, nbits 4 or 8, and non-empty nprobe/rerank sweeps of values >= 1"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_suites_parse_and_validate() {
        for name in [
            "quick",
            "glove-50",
            "flat-glove-50",
            "recall-k100",
            "hnsw-glove-50",
            "glove-50-l2",
            "synthetic-1m-128",
        ] {
            let c = BenchConfig::named(name).unwrap_or_else(|| panic!("suite {name}"));
            c.validate().unwrap();
            assert!(!c.indexes.is_empty());
        }
        assert!(BenchConfig::named("nope").is_none());
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = BenchConfig::named("quick").unwrap();
        c.k = 0;
        assert!(c.validate().is_err());
        let mut c = BenchConfig::named("quick").unwrap();
        c.indexes = vec![IndexSpec::Hnsw {
            m: 16,
            ef_construction: 100,
            ef_search: vec![],
        }];
        assert!(c.validate().is_err());
        let mut c = BenchConfig::named("quick").unwrap();
        c.storage = vec!["disk".into()];
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("memory, mmap"), "{err}");
        let mut c = BenchConfig::named("quick").unwrap();
        c.storage = vec!["memory".into(), "mmap".into()];
        c.validate().unwrap();
        c.durability = Some("sometimes".into());
        assert!(c.validate().is_err());
        for d in DURABILITY_MODES {
            c.durability = Some(d.into());
            c.validate().unwrap();
        }
        let err = toml::from_str::<BenchConfig>("name='x'\ndataset='y'\nindexes=[{kind='btree'}]")
            .unwrap_err();
        assert!(err.to_string().contains("btree"), "{err}");
    }
}
