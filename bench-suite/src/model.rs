//! The figures a benchmark run produces, serialised verbatim into `results.json`.

use crate::env::Environment;
use crate::frontier::{qps_at_recall, Point};
use crate::latency::Latency;
use crate::recall::{RecallKind, RecallSummary};
use serde::{Deserialize, Serialize};

/// The recall targets at which QPS is interpolated and compared.
pub const RECALL_TARGETS: [f64; 3] = [0.90, 0.95, 0.99];

/// One timed phase of building. Phases are never summed into one unlabelled figure.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// What was measured, in words (e.g. "storage-only append: vectors copied into
    /// the memory arena, no index").
    pub what: String,
    /// Vectors processed.
    pub vectors: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `vectors / seconds`.
    pub vectors_per_sec: f64,
    /// Threads used.
    pub threads: usize,
}

impl Phase {
    /// A phase from a count and a duration.
    pub fn new(what: impl Into<String>, vectors: u64, seconds: f64, threads: usize) -> Phase {
        Phase {
            what: what.into(),
            vectors,
            seconds,
            vectors_per_sec: if seconds > 0.0 {
                vectors as f64 / seconds
            } else {
                f64::INFINITY
            },
            threads,
        }
    }
}

/// Build figures, each phase separate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BuildFigures {
    /// Copying vectors into the storage backend only (no index, no durability).
    pub storage_append: Option<Phase>,
    /// Durable ingest through the write-ahead log (absent until durability exists).
    pub durable_ingest: Option<Phase>,
    /// Index training (k-means, codebooks), when the index has one.
    pub index_train: Option<Phase>,
    /// Adding every vector to the index (after training).
    pub index_build: Option<Phase>,
}

/// Memory and disk figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryFigures {
    /// Bytes held by the index's own structures (graph, codes, lists), excluding the
    /// full vectors held by storage.
    pub index_bytes: Option<u64>,
    /// `index_bytes / n`.
    pub index_bytes_per_vector: Option<f64>,
    /// Bytes held by the storage for full vectors.
    pub storage_bytes: Option<u64>,
    /// Peak resident set size of the measuring process after the build.
    pub peak_rss_bytes: Option<u64>,
    /// Bytes on disk, when the system persisted anything.
    pub on_disk_bytes: Option<u64>,
}

/// One operating point of a parameter sweep.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SearchPoint {
    /// The search parameters (e.g. `{"ef": 64}`), as given to the system.
    pub params: serde_json::Value,
    /// A short label for tables ("ef=64").
    pub label: String,
    /// Queries per second, one query at a time on one thread (ann-benchmarks).
    pub qps_single: f64,
    /// Queries per second for all queries in one batch call.
    pub qps_batch: Option<f64>,
    /// Threads used by the batch call.
    pub batch_threads: usize,
    /// Per-query latency of the one-at-a-time loop.
    pub latency: Latency,
    /// Recall by id and by distance, computed by the harness.
    pub recall: RecallSummary,
    /// Mean distance computations per query, when the system counts them.
    pub distance_computations_per_query: Option<f64>,
    /// Filtered runs: queries answered with fewer than k results although at
    /// least k rows pass the filter (min(k, passing rows) is owed). `None` for
    /// unfiltered runs.
    #[serde(default)]
    pub short_queries: Option<u64>,
}

/// Everything measured for one system configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Display name, e.g. "omen-hnsw(M=16,efc=200)/memory" or "hnswlib(M=16,efc=200)".
    pub name: String,
    /// `omen` or `peer`.
    pub family: String,
    /// How the system was driven, which decides what it may be compared with:
    /// `python` (one Python call per query and the system's own batch call, both
    /// timed by the adapter's clock: every peer, and omen through its Python
    /// package), `native` (omen timed in-process in Rust) or `cli` (`omen db
    /// search` as a process). Ratios pair only runs of the same path.
    #[serde(default = "default_path")]
    pub path: String,
    /// The index kind: a registered name for omen systems, the library's own
    /// description for peers.
    pub index: String,
    /// The storage backend, for omen systems.
    pub storage: Option<String>,
    /// Library version, for peers.
    pub version: Option<String>,
    /// Build parameters.
    pub build_params: serde_json::Value,
    /// Threads used for building.
    pub build_threads: usize,
    /// Build phases.
    pub build: BuildFigures,
    /// Memory.
    pub memory: MemoryFigures,
    /// Sweep.
    pub points: Vec<SearchPoint>,
    /// Notes (e.g. "peer's single-query loop includes Python call overhead").
    pub notes: Vec<String>,
}

fn default_path() -> String {
    "native".into()
}

/// Which QPS figure a frontier is drawn from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QpsKind {
    /// One query per call, one thread.
    Single,
    /// All queries in one batch call (on the run's batch threads).
    Batch,
}

impl RunResult {
    /// (recall@k by `kind`, QPS of `qps`) for every point that has that figure.
    pub fn curve_of(&self, kind: RecallKind, k: usize, qps: QpsKind) -> Vec<Point> {
        self.points
            .iter()
            .filter_map(|p| {
                let q = match qps {
                    QpsKind::Single => p.qps_single,
                    QpsKind::Batch => p.qps_batch?,
                };
                if !q.is_finite() || q <= 0.0 {
                    return None;
                }
                Some(Point {
                    recall: p.recall.at(kind, k)?,
                    qps: q,
                })
            })
            .collect()
    }

    /// QPS of `qps` interpolated at `target` recall@k on this run's frontier.
    pub fn qps_at_of(&self, kind: RecallKind, k: usize, target: f64, qps: QpsKind) -> Option<f64> {
        qps_at_recall(&self.curve_of(kind, k, qps), target)
    }

    /// (recall@k by `kind`, single-thread QPS) for every point.
    pub fn curve(&self, kind: RecallKind, k: usize) -> Vec<Point> {
        self.points
            .iter()
            .filter_map(|p| {
                Some(Point {
                    recall: p.recall.at(kind, k)?,
                    qps: p.qps_single,
                })
            })
            .collect()
    }

    /// Single-thread QPS interpolated at `target` recall@k on this run's frontier.
    pub fn qps_at(&self, kind: RecallKind, k: usize, target: f64) -> Option<f64> {
        qps_at_recall(&self.curve(kind, k), target)
    }
}

/// The operating point with the lowest recall@k (by id) at or above `target`, or the
/// highest-recall point when none reaches it.
pub fn point_near_recall(run: &RunResult, k: usize, target: f64) -> Option<&SearchPoint> {
    let rec = |p: &SearchPoint| p.recall.at(RecallKind::ById, k).unwrap_or(0.0);
    run.points
        .iter()
        .filter(|p| rec(p) >= target)
        .min_by(|a, b| {
            rec(a)
                .total_cmp(&rec(b))
                .then(b.qps_single.total_cmp(&a.qps_single))
        })
        .or_else(|| run.points.iter().max_by(|a, b| rec(a).total_cmp(&rec(b))))
}

/// The dataset a run used.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    /// Name (e.g. "glove-50-angular").
    pub name: String,
    /// Base vectors.
    pub n: usize,
    /// Queries.
    pub nq: usize,
    /// Dimension.
    pub dim: usize,
    /// Metric name (`l2`, `ip`, `cosine`).
    pub metric: String,
    /// Checksum of the base and query bytes.
    pub checksum: String,
}

/// A whole report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Run name (the directory under `reports/`).
    pub run: String,
    /// The command that reproduces it.
    pub reproduce: String,
    /// Environment.
    pub env: Environment,
    /// Dataset.
    pub dataset: DatasetInfo,
    /// Neighbours requested per query.
    pub k: usize,
    /// Every system measured.
    pub runs: Vec<RunResult>,
    /// `omen db search` measured as a process (the `cli` path), when the suite asks.
    #[serde(default)]
    pub cli: Vec<CliRun>,
    /// One line per system, ann-benchmarks style: build time, index size, QPS at
    /// the recall targets and the rank there. Derived from `runs` when the report
    /// is written ([`Report::summarize`]); kept in `results.json` for readers that
    /// want the table without the curves.
    #[serde(default)]
    pub summary: Vec<SystemSummary>,
    /// Systems the suite named but could not run, with the reason (a peer
    /// without filtered search in a filtered suite).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Filtered suites: the filter every search of this report ran with.
    #[serde(default)]
    pub filter: Option<FilterInfo>,
}

/// A system not run, and why.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    /// The system.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The filter of a filtered report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FilterInfo {
    /// The fraction of the base asked for.
    pub selectivity: f64,
    /// Rows passing (exactly round(selectivity x n), at least 1).
    pub allowed: u64,
    /// The base's rows.
    pub n: u64,
    /// How the rows were chosen.
    pub rule: String,
}

/// A system's line of [`Report::summary`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SystemSummary {
    /// The run's name.
    pub name: String,
    /// How it was driven (`native`, `python`); ranks compare only one path.
    pub path: String,
    /// Seconds from vectors to a searchable index: training plus adding every
    /// vector (storage append and durable ingest are separate figures).
    pub build_seconds: Option<f64>,
    /// Bytes of the index's structures, as the run reports them (see the report's
    /// "index bytes/vector" note: omen's exclude the vectors, peers' include them).
    pub index_bytes: Option<u64>,
    /// Index plus storage bytes: everything held to answer queries, the full
    /// vectors included whichever side holds them (comparable across systems).
    pub total_bytes: Option<u64>,
    /// The best recall@k (by id) of any operating point.
    pub best_recall: Option<f64>,
    /// One-thread QPS interpolated at each of [`RECALL_TARGETS`] (key "0.90", ...);
    /// `None` where the system never reached it.
    pub qps_at_recall: std::collections::BTreeMap<String, Option<f64>>,
    /// Rank by that QPS among the runs of the same path (1 = fastest); `None`
    /// where the system never reached the recall.
    pub rank_at_recall: std::collections::BTreeMap<String, Option<usize>>,
}

/// The key of a recall target in [`SystemSummary`]'s maps ("0.90").
pub fn recall_key(target: f64) -> String {
    format!("{target:.2}")
}

impl Report {
    /// Computes [`Report::summary`] from the runs.
    pub fn summarize(&mut self) {
        let k = self.k;
        let mut summary: Vec<SystemSummary> = self
            .runs
            .iter()
            .map(|r| {
                let secs = |p: &Option<Phase>| p.as_ref().map(|p| p.seconds);
                let build_seconds = match (secs(&r.build.index_train), secs(&r.build.index_build)) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
                };
                let m = &r.memory;
                let total_bytes = match (m.index_bytes, m.storage_bytes) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
                };
                let best_recall = r
                    .points
                    .iter()
                    .filter_map(|p| p.recall.at(RecallKind::ById, k))
                    .reduce(f64::max);
                SystemSummary {
                    name: r.name.clone(),
                    path: r.path.clone(),
                    build_seconds,
                    index_bytes: m.index_bytes,
                    total_bytes,
                    best_recall,
                    qps_at_recall: RECALL_TARGETS
                        .iter()
                        .map(|&t| (recall_key(t), r.qps_at(RecallKind::ById, k, t)))
                        .collect(),
                    rank_at_recall: Default::default(),
                }
            })
            .collect();
        for &t in &RECALL_TARGETS {
            let key = recall_key(t);
            let qps: Vec<(String, Option<f64>)> = summary
                .iter()
                .map(|s| (s.path.clone(), s.qps_at_recall.get(&key).copied().flatten()))
                .collect();
            for (i, s) in summary.iter_mut().enumerate() {
                let rank = qps[i].1.map(|mine| {
                    1 + qps
                        .iter()
                        .filter(|(path, q)| *path == s.path && q.is_some_and(|q| q > mine))
                        .count()
                });
                s.rank_at_recall.insert(key.clone(), rank);
            }
        }
        self.summary = summary;
    }
}

/// One operating point of `omen db search`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CliPoint {
    /// The search parameters, as the native sweep names them.
    pub params: serde_json::Value,
    /// A short label ("ef=64").
    pub label: String,
    /// Queries answered.
    pub queries: usize,
    /// Search threads (`--threads`).
    pub threads: usize,
    /// Seconds to read the query file (the fastest round's).
    pub load_seconds: f64,
    /// Seconds to open the collection (the fastest round's).
    pub open_seconds: f64,
    /// Seconds from the open to the last result line written (batch calls plus
    /// formatting and writing), the fastest round.
    pub search_seconds: f64,
    /// The whole process, start to exit, as the harness timed it (same round).
    pub process_seconds: f64,
    /// `queries / search_seconds`: the CLI's search QPS, open excluded.
    pub qps: f64,
    /// Recall of the printed ids.
    pub recall: RecallSummary,
}

/// One omen index measured through the CLI (`omen db search`, the `cli` path).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CliRun {
    /// Display name.
    pub name: String,
    /// The index kind's registered name.
    pub index: String,
    /// `omen db create`'s arguments past the directory.
    pub create_args: Vec<String>,
    /// `omen db import` wall seconds (durable ingest under `--durability none`,
    /// including the index build, on every core), then the checkpoint's.
    pub import_seconds: f64,
    /// `omen db checkpoint` wall seconds.
    pub checkpoint_seconds: f64,
    /// The operating points.
    pub points: Vec<CliPoint>,
}
