//! Benchmark configurations: a matrix of {index kind × parameters} × {storage kind}
//! × dataset × thread count, read from a TOML or JSON file or chosen by suite name.
//!
//! An index entry names a kind of the registry ([`omen::registry`]) with its
//! build parameters and a sweep of search parameters, each by the names the kind
//! takes (`omen db kinds` lists them); nothing here knows one kind from another:
//!
//! ```toml
//! [[indexes]]
//! kind = "hnsw"
//! label = "M=16,efc=200"   # shown in system names; default: the build parameters
//! build = { m = 16, ef_construction = 200 }
//! sweep = { ef = [10, 20, 40] }
//!
//! [[indexes]]
//! kind = "ivfpq"
//! build = { nlist = 1024, m = 50, nbits = 4, train_size = 100000 }
//! # The cross product of each key's values, the first key outermost ...
//! sweep = { nprobe = [4, 8, 16], rerank = [10] }
//! # ... or one table per operating point:
//! # sweep = [{ nprobe = 4, rerank = 10 }, { nprobe = 8, rerank = 20 }]
//! ```
//!
//! An entry without a sweep has one operating point, the index's defaults. An
//! unknown kind, or a key its build or search parameters do not take, is refused
//! naming the valid ones. A build parameter `train_size`, when the kind takes
//! one, is also the size of the seeded sample the harness trains an untrained
//! index on before adding the base (its own phase of the report).

use omen::registry;
use omen::StorageKind;
use omen_core::{Error, IndexKind, ParamValue, Params, Result};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;

/// One index configuration: a registered kind, its build parameters and its
/// search-parameter sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The kind's registered name (`omen db kinds` lists them).
    pub kind: String,
    /// A short label for system names (`omen-<kind>(<label>)/<storage>`);
    /// default: the build parameters as given, `key=value` joined by `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Build parameters, by the names the kind takes.
    #[serde(default, with = "param_table")]
    pub build: Params,
    /// The search-parameter sweep.
    #[serde(default)]
    pub sweep: Sweep,
}

/// The operating points of an index entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Sweep {
    /// One table of search parameters per operating point, in order.
    Points(Vec<Params>),
    /// The cross product of each key's values, the first key outermost.
    Grid(Vec<(String, Vec<ParamValue>)>),
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep::Points(Vec::new())
    }
}

/// One operating point of an index entry's sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatingPoint {
    /// Table label: the parameters as given, `key=value` joined by `,` (`ef=64`,
    /// `nprobe=8,rerank=10`); `exact` for the one point of a kind without search
    /// parameters, `defaults` for an empty point of one with them.
    pub label: String,
    /// The parameters under the kind's canonical names.
    pub params: Params,
}

impl OperatingPoint {
    /// The parameters as a JSON object (results.json's `params`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Object(registry::params_to_json(&self.params))
    }
}

fn pairs(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl IndexEntry {
    /// An entry of `kind` with `build` parameters and no sweep (the index's
    /// defaults).
    pub fn new(kind: &str, build: Params) -> IndexEntry {
        IndexEntry {
            kind: kind.to_owned(),
            label: None,
            build,
            sweep: Sweep::default(),
        }
    }

    /// The same entry with `sweep`.
    pub fn with_sweep(mut self, sweep: Sweep) -> IndexEntry {
        self.sweep = sweep;
        self
    }

    /// The same entry with a system-name label.
    pub fn with_label(mut self, label: &str) -> IndexEntry {
        self.label = Some(label.to_owned());
        self
    }

    /// The registered kind, or `InvalidParameter` naming the registered ones.
    pub fn index_kind(&self) -> Result<&'static dyn IndexKind> {
        registry::lookup(&self.kind)
    }

    /// The kind with its build parameters under their canonical names; an
    /// unknown key is refused naming the valid ones (values are checked when the
    /// index is created).
    pub fn spec(&self) -> Result<omen::IndexSpec> {
        registry::spec(&self.kind, &self.build)
    }

    /// The label of system names: [`label`](Self::label), else the build
    /// parameters as given.
    pub fn system_label(&self) -> String {
        self.label.clone().unwrap_or_else(|| pairs(&self.build))
    }

    /// `omen-<kind>(<label>)`, or `omen-<kind>` when the label is empty.
    pub fn system_name(&self) -> String {
        let label = self.system_label();
        if label.is_empty() {
            format!("omen-{}", self.kind)
        } else {
            format!("omen-{}({label})", self.kind)
        }
    }

    /// The operating points, in sweep order, their keys checked against the
    /// kind's search parameters.
    pub fn points(&self) -> Result<Vec<OperatingPoint>> {
        let kind = self.index_kind()?;
        let raw: Vec<Params> = match &self.sweep {
            Sweep::Points(v) => v.clone(),
            Sweep::Grid(keys) => {
                let mut out = vec![Params::new()];
                for (k, values) in keys {
                    if values.is_empty() {
                        return Err(Error::invalid_param(
                            "sweep",
                            format!("{} sweep key {k:?} lists no values", self.kind),
                        ));
                    }
                    out = out
                        .into_iter()
                        .flat_map(|p| values.iter().map(move |v| p.clone().with(k, v.clone())))
                        .collect();
                }
                out
            }
        };
        let raw = if raw.is_empty() {
            vec![Params::new()]
        } else {
            raw
        };
        raw.into_iter()
            .map(|p| {
                let params = kind.check_search_keys(&p)?;
                let label = if !p.is_empty() {
                    pairs(&p)
                } else if kind.search_params().is_empty() {
                    "exact".to_owned()
                } else {
                    "defaults".to_owned()
                };
                Ok(OperatingPoint { label, params })
            })
            .collect()
    }

    /// Refuses an unknown kind, build or search keys the kind does not take, and
    /// an empty value list of a sweep key.
    pub fn validate(&self) -> Result<()> {
        self.spec()?;
        self.points()?;
        Ok(())
    }
}

/// A parameter value as TOML/JSON writes it.
struct Scalar<'a>(&'a ParamValue);

impl Serialize for Scalar<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            ParamValue::Int(i) => {
                if let Ok(x) = i64::try_from(*i) {
                    s.serialize_i64(x)
                } else if let Ok(x) = u64::try_from(*i) {
                    s.serialize_u64(x)
                } else {
                    s.serialize_str(&i.to_string())
                }
            }
            ParamValue::Float(f) => s.serialize_f64(*f),
            ParamValue::Bool(b) => s.serialize_bool(*b),
            ParamValue::Str(t) => s.serialize_str(t),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

/// A number, a flag or text: one parameter value.
struct ScalarDe(ParamValue);

struct ScalarVisitor;

macro_rules! visit_scalars {
    ($wrap:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
            Ok($wrap(ParamValue::from(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            Ok($wrap(ParamValue::from(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            Ok($wrap(ParamValue::from(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
            Ok($wrap(ParamValue::from(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok($wrap(ParamValue::from(v)))
        }
    };
}

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = ParamValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameter value (a number, true/false or text)")
    }
    visit_scalars!(|v| v);
}

impl<'de> Deserialize<'de> for ScalarDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(ScalarDe)
    }
}

/// A sweep key's values: a list of values, or one value.
struct ValuesDe(Vec<ParamValue>);

struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = Vec<ParamValue>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of parameter values (numbers, true/false or text), or one value")
    }
    visit_scalars!(|v| vec![v]);
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(ScalarDe(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for ValuesDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ValuesVisitor).map(ValuesDe)
    }
}

/// A table of parameters, in the order written.
struct ParamsDe(Params);

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of parameters (key = value)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Params, A::Error> {
        let mut p = Params::new();
        while let Some((k, ScalarDe(v))) = map.next_entry::<String, ScalarDe>()? {
            if p.get(&k).is_some() {
                return Err(de::Error::custom(format!("parameter {k:?} given twice")));
            }
            p.set(&k, v);
        }
        Ok(p)
    }
}

impl<'de> Deserialize<'de> for ParamsDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(ParamsVisitor).map(ParamsDe)
    }
}

struct ParamsSer<'a>(&'a Params);

impl Serialize for ParamsSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            m.serialize_entry(k, &Scalar(v))?;
        }
        m.end()
    }
}

/// `#[serde(with)]` for a [`Params`] field: a table of numbers, flags and text,
/// kept in the order written.
mod param_table {
    use super::{ParamsDe, ParamsSer};
    use omen_core::Params;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(p: &Params, s: S) -> Result<S::Ok, S::Error> {
        ParamsSer(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        ParamsDe::deserialize(d).map(|p| p.0)
    }
}

struct SweepVisitor;

impl<'de> Visitor<'de> for SweepVisitor {
    type Value = Sweep;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a list of tables of search parameters (one per operating point), or a table of value lists (their cross product)",
        )
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Sweep, A::Error> {
        let mut out = Vec::new();
        while let Some(ParamsDe(p)) = seq.next_element()? {
            out.push(p);
        }
        Ok(Sweep::Points(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Sweep, A::Error> {
        let mut out: Vec<(String, Vec<ParamValue>)> = Vec::new();
        while let Some((k, ValuesDe(v))) = map.next_entry::<String, ValuesDe>()? {
            if out.iter().any(|(o, _)| *o == k) {
                return Err(de::Error::custom(format!("sweep key {k:?} given twice")));
            }
            out.push((k, v));
        }
        Ok(Sweep::Grid(out))
    }
}

impl<'de> Deserialize<'de> for Sweep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(SweepVisitor)
    }
}

struct ValuesSer<'a>(&'a [ParamValue]);

impl Serialize for ValuesSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            q.serialize_element(&Scalar(v))?;
        }
        q.end()
    }
}

impl Serialize for Sweep {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Sweep::Points(v) => {
                let mut q = s.serialize_seq(Some(v.len()))?;
                for p in v {
                    q.serialize_element(&ParamsSer(p))?;
                }
                q.end()
            }
            Sweep::Grid(keys) => {
                let mut m = s.serialize_map(Some(keys.len()))?;
                for (k, v) in keys {
                    m.serialize_entry(k, &ValuesSer(v))?;
                }
                m.end()
            }
        }
    }
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
    /// Storage backends, by [`StorageKind`] name (`memory`, `mmap`). A storage
    /// that persists its rows keeps its files in a fresh temporary directory,
    /// removed afterwards.
    #[serde(default = "default_storage")]
    pub storage: Vec<String>,
    /// Index configurations.
    pub indexes: Vec<IndexEntry>,
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
    /// Filtered search: run the whole suite once per selectivity, every search
    /// restricted to a seeded subset of the base of that fraction (each row kept
    /// with its rank in a seeded permutation below `selectivity x n`, so the count
    /// is exact), with recall against exact ground truth over that subset. Each
    /// selectivity writes `reports/<name>/sel-<pct>/`; `reports/<name>/report.md`
    /// puts them side by side. Empty (the default): unfiltered.
    #[serde(default)]
    pub filter_selectivities: Vec<f64>,
    /// The seed of the filters' permutation.
    #[serde(default = "default_filter_seed")]
    pub filter_seed: u64,
}

fn default_filter_seed() -> u64 {
    7
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
    vec![StorageKind::default().name().into()]
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

    /// The built-in suites' names.
    pub const SUITES: [&'static str; 9] = [
        "quick",
        "glove-50",
        "glove-50-l2",
        "synthetic-1m-128",
        "hnsw-glove-50",
        "flat-glove-50",
        "recall-k100",
        "filtered-glove-50",
        "filtered-glove-50-l2",
    ];

    /// A built-in suite by name: `quick`, `glove-50`, `hnsw-glove-50`,
    /// `flat-glove-50`, `recall-k100`, `glove-50-l2`, `synthetic-1m-128`,
    /// `filtered-glove-50`, `filtered-glove-50-l2`.
    pub fn named(name: &str) -> Option<BenchConfig> {
        let text = match name {
            "quick" => include_str!("../suites/quick.toml"),
            "glove-50" => include_str!("../suites/glove-50.toml"),
            "flat-glove-50" => include_str!("../suites/flat-glove-50.toml"),
            "recall-k100" => include_str!("../suites/recall-k100.toml"),
            "hnsw-glove-50" => include_str!("../suites/hnsw-glove-50.toml"),
            "glove-50-l2" => include_str!("../suites/glove-50-l2.toml"),
            "synthetic-1m-128" => include_str!("../suites/synthetic-1m-128.toml"),
            "filtered-glove-50" => include_str!("../suites/filtered-glove-50.toml"),
            "filtered-glove-50-l2" => include_str!("../suites/filtered-glove-50-l2.toml"),
            "runbook" => include_str!("../suites/runbook.toml"),
            _ => return None,
        };
        toml::from_str(text).ok()
    }

    /// The storage kinds [`storage`](Self::storage) names, or `InvalidParameter`
    /// naming the valid ones.
    pub fn storage_kinds(&self) -> Result<Vec<StorageKind>> {
        self.storage
            .iter()
            .map(|s| StorageKind::from_name(s))
            .collect()
    }

    /// Refuses zero counts, unknown storage kinds and durability modes, and
    /// index entries whose kind, build or search keys the registry does not
    /// know (parameter values are checked when each index is created).
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
        self.storage_kinds()?;
        if let Some(d) = &self.durability {
            if !DURABILITY_MODES.contains(&d.as_str()) {
                return Err(Error::invalid_param(
                    "durability",
                    format!("{d:?} is not a durability mode (group, per-write, none)"),
                ));
            }
        }
        for ix in &self.indexes {
            ix.validate()?;
        }
        for &s in &self.filter_selectivities {
            if !(s > 0.0 && s <= 1.0) {
                return Err(Error::invalid_param(
                    "filter_selectivities",
                    format!("{s} is outside (0, 1]: a selectivity is the fraction of rows a filter keeps"),
                ));
            }
        }
        if !self.filter_selectivities.is_empty() && (self.cli || self.durable_ingest) {
            return Err(Error::invalid_param(
                "filter_selectivities",
                "a filtered suite measures searches only: set cli = false and durable_ingest = false (`omen db search` takes no filter)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMED: [&str; 9] = BenchConfig::SUITES;

    #[test]
    fn named_suites_parse_and_validate() {
        for name in NAMED {
            let c = BenchConfig::named(name).unwrap_or_else(|| panic!("suite {name}"));
            c.validate().unwrap();
            assert!(!c.indexes.is_empty());
            for ix in &c.indexes {
                assert!(!ix.points().unwrap().is_empty(), "{name}: {}", ix.kind);
            }
        }
        assert!(BenchConfig::named("nope").is_none());
    }

    /// Every suite file in the repository (the A/B slices run by path included)
    /// reads and validates.
    #[test]
    fn every_suite_file_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites");
        let mut dirs = vec![root];
        let mut n = 0;
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "toml") {
                    BenchConfig::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    n += 1;
                }
            }
        }
        assert!(n >= NAMED.len(), "{n} suite files");
    }

    /// The committed suites keep the system names, point labels and JSON
    /// parameters of their reports.
    #[test]
    fn suites_keep_their_report_names() {
        let c = BenchConfig::named("glove-50").unwrap();
        let names: Vec<String> = c.indexes.iter().map(IndexEntry::system_name).collect();
        assert_eq!(
            names,
            [
                "omen-flat",
                "omen-hnsw(M=16,efc=200)",
                "omen-ivfpq(IVF1024,PQ50x4)"
            ]
        );
        let flat = c.indexes[0].points().unwrap();
        assert_eq!(flat.len(), 1);
        assert_eq!(flat[0].label, "exact");
        assert_eq!(flat[0].json(), serde_json::json!({}));
        let hnsw = c.indexes[1].points().unwrap();
        assert_eq!(hnsw[0].label, "ef=10");
        assert_eq!(hnsw[0].json(), serde_json::json!({"ef": 10}));
        let ivf = c.indexes[2].points().unwrap();
        assert_eq!(ivf[1].label, "nprobe=8,rerank=10");
        assert_eq!(
            ivf[1].json(),
            serde_json::json!({"nprobe": 8, "rerank_factor": 10})
        );
        let spec = c.indexes[2].spec().unwrap();
        assert_eq!(spec.name(), "ivfpq");
        assert_eq!(spec.params().usize("train_size").unwrap(), Some(100_000));
    }

    #[test]
    fn a_sweep_is_a_list_of_points_or_the_cross_product_of_value_lists() {
        let c: BenchConfig = toml::from_str(
            r#"
name = "x"
dataset = "y"
[[indexes]]
kind = "ivfpq"
build = { nlist = 16, m = 8 }
sweep = { rerank = [4, 10], nprobe = [1, 2, 3] }
[[indexes]]
kind = "ivfpq"
build = { nlist = 16 }
sweep = [{ nprobe = 2 }, { nprobe = 4, rerank_factor = 20 }]
[[indexes]]
kind = "hnsw"
sweep = { ef = 32 }
[[indexes]]
kind = "hnsw"
"#,
        )
        .unwrap();
        c.validate().unwrap();
        let labels = |i: usize| -> Vec<String> {
            c.indexes[i]
                .points()
                .unwrap()
                .into_iter()
                .map(|p| p.label)
                .collect()
        };
        // The first key outermost, in the order written.
        assert_eq!(
            labels(0),
            [
                "rerank=4,nprobe=1",
                "rerank=4,nprobe=2",
                "rerank=4,nprobe=3",
                "rerank=10,nprobe=1",
                "rerank=10,nprobe=2",
                "rerank=10,nprobe=3"
            ]
        );
        assert_eq!(c.indexes[0].system_name(), "omen-ivfpq(nlist=16,m=8)");
        assert_eq!(labels(1), ["nprobe=2", "nprobe=4,rerank_factor=20"]);
        assert_eq!(labels(2), ["ef=32"]);
        // No sweep: the index's own defaults.
        assert_eq!(labels(3), ["defaults"]);
        assert_eq!(c.indexes[3].system_name(), "omen-hnsw");
        // Canonical names in the parameters, whatever the spelling.
        let p = &c.indexes[0].points().unwrap()[0];
        assert_eq!(p.params.usize("rerank_factor").unwrap(), Some(4));
        // Written back and read again, the same configuration.
        let again: BenchConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let again: BenchConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = BenchConfig::named("quick").unwrap();
        c.k = 0;
        assert!(c.validate().is_err());
        // Unknown kinds and keys are refused naming the valid ones.
        let mut c = BenchConfig::named("quick").unwrap();
        c.indexes = vec![IndexEntry::new("btree", Params::new())];
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("btree") && err.contains("flat, hnsw, ivfpq"),
            "{err}"
        );
        c.indexes = vec![IndexEntry::new("hnsw", Params::new().with("nlist", 8))];
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("nlist") && err.contains("ef_construction"),
            "{err}"
        );
        c.indexes = vec![IndexEntry::new("hnsw", Params::new())
            .with_sweep(Sweep::Points(vec![Params::new().with("nprobe", 4)]))];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("nprobe") && err.contains("ef"), "{err}");
        c.indexes = vec![IndexEntry::new("hnsw", Params::new())
            .with_sweep(Sweep::Grid(vec![("ef".into(), vec![])]))];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("no values"), "{err}");
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
        let c = toml::from_str::<BenchConfig>("name='x'\ndataset='y'\nindexes=[{kind='btree'}]")
            .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("btree"), "{err}");
        // The old per-kind fields are not read silently.
        let err = toml::from_str::<BenchConfig>(
            "name='x'\ndataset='y'\nindexes=[{kind='hnsw', m=16, ef_search=[10]}]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("`m`"), "{err}");
        let err = toml::from_str::<BenchConfig>(
            "name='x'\ndataset='y'\nindexes=[{kind='hnsw', sweep={ef=[[1]]}}]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("parameter value"), "{err}");
    }
}
