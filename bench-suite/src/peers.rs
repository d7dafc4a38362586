//! Peers side by side: runs FAISS, hnswlib and USearch through the Python adapter
//! `bench-suite/peers/omen_peers.py` (in the `.venv-peers` environment made by
//! `scripts/setup-peers.sh`) and reads back what it measured.
//!
//! The adapter builds one index per call, sweeps its search parameters, and reports
//! build time (train and add apart), single-query QPS with latency percentiles,
//! batch QPS, index memory and peak RSS as JSON. The ids it returned for every query
//! come back in a binary file; the harness computes recall from them itself and
//! never takes a peer's word for it. See `bench-suite/peers/README.md`.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use omen_core::Metric;
use serde::{Deserialize, Serialize};

/// The JSON schema tag the adapter writes; a mismatch is an error, not a guess.
pub const SCHEMA: &str = "omen-peers/1";

/// Errors of a peer run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The request cannot be run (bad metric, k = 0, ...).
    #[error("invalid peer request: {0}")]
    InvalidRequest(String),
    /// The virtual environment or the adapter script is missing.
    #[error("peers unavailable: {0} (run scripts/setup-peers.sh)")]
    Unavailable(PathBuf),
    /// Reading or writing a file, or starting the adapter, failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or program concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The adapter exited with an error.
    #[error("peer {system} failed ({status}): {stderr}")]
    Failed {
        /// The system that was run.
        system: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// The system cannot do what was asked (filtered search): the adapter's
    /// `unsupported:` line, exit status 3.
    #[error("{0}")]
    Unsupported(String),
    /// The adapter's report or an ids file is malformed.
    #[error("malformed peer output {path}: {reason}")]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = PeerError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PeerError + '_ {
    move |source| PeerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A peer system the adapter can run.
///
/// Serialised as its adapter name (`faiss-flat`, `hnswlib`, `omen-hnsw`, ...).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerSystem {
    /// FAISS `IndexFlatIP` / `IndexFlatL2`: exact search. No parameters.
    FaissFlat,
    /// FAISS `IndexHNSWFlat`. Build: `M`, `efConstruction`; sweep: `efSearch`.
    FaissHnsw,
    /// FAISS `IVF{nlist},Flat`. Build: `nlist`; sweep: `nprobe`.
    FaissIvfflat,
    /// FAISS `IVF{nlist},PQ{m}x8`, wrapped in `IndexRefineFlat` unless
    /// `refine: false`. Build: `nlist`, `m`, `refine`; sweep: `nprobe`, `k_factor`.
    FaissIvfpq,
    /// FAISS `IVF{nlist},PQ{m}x4fs` (4-bit fast scan) + `IndexRefineFlat`. Same
    /// parameters as [`PeerSystem::FaissIvfpq`].
    FaissIvfpqfs,
    /// hnswlib. Build: `M`, `ef_construction` (`random_seed`); sweep: `ef`.
    Hnswlib,
    /// USearch. Build: `M` (connectivity), `efc` (expansion_add); sweep:
    /// `expansion_search`.
    Usearch,
    /// ScaNN: a partitioning tree, 4-bit anisotropic asymmetric hashing and exact
    /// re-ordering (see the adapter's README for its parameters).
    Scann,
    /// glass: an HNSW graph searched on SQ8 codes with FP32 refinement.
    Glass,
    /// SymphonyQG (`rabitqlib`): RaBitQ codes of the neighbours inside each graph
    /// node block.
    Symqg,
    /// Intel SVS Vamana, float32.
    SvsVamana,
    /// One of omen's registered index kinds through its Python package
    /// (`omen.Index(kind, ...)`), named `omen-<kind>`: build and sweep keys are
    /// the kind's own (checked by the registry). Holds the adapter name.
    Omen(&'static str),
}

impl PeerSystem {
    /// Every third-party system, in report order (omen's own, one per
    /// registered kind, come from [`PeerSystem::omen`]).
    pub const ALL: [PeerSystem; 11] = [
        PeerSystem::FaissFlat,
        PeerSystem::FaissHnsw,
        PeerSystem::FaissIvfflat,
        PeerSystem::FaissIvfpq,
        PeerSystem::FaissIvfpqfs,
        PeerSystem::Hnswlib,
        PeerSystem::Usearch,
        PeerSystem::Scann,
        PeerSystem::Glass,
        PeerSystem::Symqg,
        PeerSystem::SvsVamana,
    ];

    /// Omen's index kind `kind` through its Python package (`omen-<kind>`), if
    /// the registry has that kind.
    pub fn omen(kind: &str) -> Option<PeerSystem> {
        let kind = omen::registry::lookup(kind).ok()?;
        Some(PeerSystem::Omen(intern(format!("omen-{}", kind.name()))))
    }

    /// The system called `name` (an [`ALL`](Self::ALL) name or `omen-<kind>`).
    pub fn from_name(name: &str) -> Option<PeerSystem> {
        PeerSystem::ALL
            .iter()
            .copied()
            .find(|s| s.name() == name)
            .or_else(|| name.strip_prefix("omen-").and_then(PeerSystem::omen))
    }

    /// Whether this is omen itself, driven through its Python package (so that it
    /// is measured on the same path as the peers).
    pub fn is_omen(self) -> bool {
        matches!(self, PeerSystem::Omen(_))
    }

    /// The adapter's name for it (`faiss-flat`, `hnswlib`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PeerSystem::FaissFlat => "faiss-flat",
            PeerSystem::FaissHnsw => "faiss-hnsw",
            PeerSystem::FaissIvfflat => "faiss-ivfflat",
            PeerSystem::FaissIvfpq => "faiss-ivfpq",
            PeerSystem::FaissIvfpqfs => "faiss-ivfpqfs",
            PeerSystem::Hnswlib => "hnswlib",
            PeerSystem::Usearch => "usearch",
            PeerSystem::Scann => "scann",
            PeerSystem::Glass => "glass",
            PeerSystem::Symqg => "symqg",
            PeerSystem::SvsVamana => "svs-vamana",
            PeerSystem::Omen(name) => name,
        }
    }
}

/// `name` as a `&'static str`, stored once per distinct name (one per
/// registered index kind: a handful).
fn intern(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&n) = names.iter().find(|&&n| n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.into_boxed_str());
    names.push(n);
    n
}

impl Serialize for PeerSystem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for PeerSystem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        PeerSystem::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown peer system {name:?}")))
    }
}

impl fmt::Display for PeerSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The similarity a peer searches by. Omen's [`Metric::Cosine`] has no peer
/// counterpart here: angular sets are unit-normalised and run as inner product.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerMetric {
    /// Inner product (`IndexFlatIP`, hnswlib `ip`, USearch `ip`).
    Ip,
    /// Squared Euclidean distance (`IndexFlatL2`, hnswlib `l2`, USearch `l2sq`).
    L2,
}

impl PeerMetric {
    /// The adapter's name, `ip` or `l2`.
    pub fn name(self) -> &'static str {
        match self {
            PeerMetric::Ip => "ip",
            PeerMetric::L2 => "l2",
        }
    }
}

impl TryFrom<Metric> for PeerMetric {
    type Error = PeerError;

    fn try_from(m: Metric) -> Result<PeerMetric> {
        match m {
            Metric::InnerProduct => Ok(PeerMetric::Ip),
            Metric::L2 => Ok(PeerMetric::L2),
            other => Err(PeerError::InvalidRequest(format!(
                "metric {} is not run on peers: normalise the vectors and use inner product",
                other.name()
            ))),
        }
    }
}

/// The repository's default peer environment, `<repo>/.venv-peers`.
pub fn default_venv() -> PathBuf {
    repo_root().join(".venv-peers")
}

/// The adapter script, `<repo>/bench-suite/peers/omen_peers.py`.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/omen_peers.py")
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Whether the peer environment at `venv` exists and imports faiss, hnswlib and
/// usearch (this starts its Python once, about a second).
pub fn peers_available(venv: &Path) -> bool {
    let python = venv_python(venv);
    if !python.is_file() || !default_script().is_file() {
        return false;
    }
    Command::new(&python)
        .args(["-c", "import faiss, hnswlib, usearch"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The systems among `systems` whose Python package the environment at `venv`
/// cannot import, each with the adapter's reason (`omen_peers.py
/// --list-available`). An environment that does not exist at all is an error.
pub fn missing_systems(venv: &Path, systems: &[PeerSystem]) -> Result<Vec<(PeerSystem, String)>> {
    let python = venv_python(venv);
    if !python.is_file() {
        return Err(PeerError::Unavailable(python));
    }
    let script = default_script();
    let out = Command::new(&python)
        .arg(&script)
        .arg("--list-available")
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(&python))?;
    if !out.status.success() {
        return Err(PeerError::Failed {
            system: "--list-available".into(),
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 4000),
        });
    }
    let listed: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| PeerError::Malformed {
            path: script.clone(),
            reason: format!("--list-available printed no JSON object: {e}"),
        })?;
    let mut missing = Vec::new();
    for &s in systems {
        // The adapter lists omen's kinds as one entry (one module decides them).
        let entry = listed
            .get(s.name())
            .or_else(|| s.is_omen().then(|| listed.get("omen-*")).flatten());
        let ok = entry
            .and_then(|e| e.get("available"))
            .and_then(|a| a.as_bool())
            .unwrap_or(false);
        if !ok {
            let why = entry
                .and_then(|e| e.get("error"))
                .and_then(|e| e.as_str())
                .unwrap_or("not listed by the adapter")
                .to_string();
            missing.push((s, why));
        }
    }
    Ok(missing)
}

/// One adapter call: build `system` over `base`, sweep `sweep`, search `queries`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRun {
    /// The peer environment (see [`default_venv`]).
    pub venv: PathBuf,
    /// The adapter script (see [`default_script`]).
    pub script: PathBuf,
    /// Which system.
    pub system: PeerSystem,
    /// Base vectors, `.fbin`.
    pub base: PathBuf,
    /// Query vectors, `.fbin`.
    pub queries: PathBuf,
    /// Inner product (vectors already unit-normalised for angular sets) or L2.
    pub metric: PeerMetric,
    /// Neighbours per query.
    pub k: usize,
    /// Threads for the build (and the batch search unless `batch_threads` is
    /// set; single-query search is always on one thread).
    pub threads: usize,
    /// Threads for the batch search call, when not `threads`.
    pub batch_threads: Option<usize>,
    /// Build parameters, a JSON object (keys per [`PeerSystem`]).
    pub build_params: serde_json::Value,
    /// Search parameter points, JSON objects; `[{}]` for a system without any.
    pub sweep: Vec<serde_json::Value>,
    /// Vectors sampled (seeded) from the base to train IVF systems.
    pub train_size: usize,
    /// Seed of that sample.
    pub train_seed: u64,
    /// How many queries are timed one per call; `None` for all of them.
    pub single_queries: Option<usize>,
    /// Untimed single queries run before timing.
    pub warmup: usize,
    /// Batch passes per point; the fastest counts.
    pub batch_runs: usize,
    /// One-query-at-a-time passes per point over the same queries; the fastest
    /// counts.
    pub single_passes: usize,
    /// Directory for the JSON report and the ids files (created if missing).
    pub work_dir: PathBuf,
    /// A filter over the base: a file of one byte per row, 1 = the row may be
    /// returned (the adapter's `--filter`). A system without filtered search
    /// answers [`PeerError::Unsupported`].
    pub filter: Option<PathBuf>,
    /// A runbook to apply instead of the sweep (the adapter's `--runbook`: a
    /// JSON file the harness writes after checking the runbook); see
    /// [`run_peer_runbook`].
    #[serde(default)]
    pub runbook: Option<PathBuf>,
}

impl PeerRun {
    /// A request with the defaults: the repository's venv and script, one thread,
    /// a one-point sweep with no parameters, IVF trained on 100,000 vectors (as
    /// ANCHORS.md), all queries timed singly after 100 warm-up queries, 3 batch
    /// passes.
    pub fn new(
        system: PeerSystem,
        base: impl Into<PathBuf>,
        queries: impl Into<PathBuf>,
        metric: PeerMetric,
        k: usize,
        work_dir: impl Into<PathBuf>,
    ) -> PeerRun {
        PeerRun {
            venv: default_venv(),
            script: default_script(),
            system,
            base: base.into(),
            queries: queries.into(),
            metric,
            k,
            threads: 1,
            batch_threads: None,
            build_params: serde_json::json!({}),
            sweep: vec![serde_json::json!({})],
            train_size: 100_000,
            train_seed: 0,
            single_queries: None,
            warmup: 100,
            batch_runs: 3,
            single_passes: 1,
            work_dir: work_dir.into(),
            filter: None,
            runbook: None,
        }
    }

    fn validate(&self) -> Result<&'static str> {
        let metric = self.metric.name();
        if self.k == 0 {
            return Err(PeerError::InvalidRequest("k must be positive".into()));
        }
        if self.threads == 0 || self.batch_runs == 0 {
            return Err(PeerError::InvalidRequest(
                "threads and batch_runs must be positive".into(),
            ));
        }
        if !self.build_params.is_object() {
            return Err(PeerError::InvalidRequest(
                "build_params must be a JSON object".into(),
            ));
        }
        if self.sweep.is_empty() || !self.sweep.iter().all(|p| p.is_object()) {
            return Err(PeerError::InvalidRequest(
                "sweep must hold at least one JSON object".into(),
            ));
        }
        Ok(metric)
    }
}

/// Build figures as the adapter measured them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerBuild {
    /// Threads used.
    pub threads: usize,
    /// Vectors in the training sample (0 when the system does not train).
    pub train_vectors: u64,
    /// Seconds training took.
    pub train_seconds: f64,
    /// Vectors added.
    pub add_vectors: u64,
    /// Seconds adding took (the whole graph build for HNSW systems).
    pub add_seconds: f64,
    /// Process CPU seconds (all threads) during the add: well below
    /// `add_seconds * threads` means the machine was busy with something else.
    #[serde(default)]
    pub add_cpu_seconds: Option<f64>,
    /// `add_vectors / add_seconds`.
    pub add_vectors_per_sec: Option<f64>,
}

/// Memory figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerMemory {
    /// Index size in bytes, measured as `index_bytes_method` says.
    pub index_bytes: u64,
    /// How `index_bytes` was measured.
    pub index_bytes_method: String,
    /// `index_bytes / n`.
    pub index_bytes_per_vector: f64,
    /// Peak RSS of the adapter process (data, index and Python together).
    pub peak_rss_bytes: u64,
    /// RSS just before the build (Python, the libraries and the loaded data).
    pub rss_before_build_bytes: u64,
}

/// Latency of single queries, one per call, in microseconds (nearest rank).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerLatency {
    /// Median.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Slowest.
    pub max_us: f64,
}

/// Row-major result ids of all queries; `-1` where a peer returned fewer than k.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMatrix {
    /// Queries.
    pub nq: usize,
    /// Ids per query.
    pub k: usize,
    /// `nq * k` ids.
    pub ids: Vec<i64>,
}

impl IdMatrix {
    /// The ids of query `q`; panics if `q >= nq`, like slice indexing.
    pub fn row(&self, q: usize) -> &[i64] {
        &self.ids[q * self.k..(q + 1) * self.k]
    }
}

/// One sweep point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerPoint {
    /// The search parameters that applied.
    pub params: serde_json::Value,
    /// Queries per second, one query per call on one thread (Python call overhead
    /// included: a few microseconds per query).
    pub qps_single: Option<f64>,
    /// How many queries were timed singly.
    pub single_queries: usize,
    /// Latency of those single queries.
    pub latency: Option<PeerLatency>,
    /// Queries per second, all queries in one call on `batch_threads` threads.
    pub qps_batch: f64,
    /// Threads of the batch search.
    pub batch_threads: usize,
    /// Seconds of each batch pass.
    pub batch_seconds: Vec<f64>,
    /// Process CPU seconds of each batch pass (a noise check, as `add_cpu_seconds`).
    #[serde(default)]
    pub batch_cpu_seconds: Vec<f64>,
    /// Mean overlap of the single and batch results (1.0 unless the library is
    /// non-deterministic between calling conventions).
    pub single_batch_id_agreement: Option<f64>,
    /// Where the ids were written.
    pub ids_file: PathBuf,
    /// The ids, read from `ids_file` (from the batch search).
    #[serde(skip)]
    pub ids: IdMatrix,
}

/// The dataset as the adapter saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerDataset {
    /// Base file.
    pub base: PathBuf,
    /// Query file.
    pub queries: PathBuf,
    /// Base vectors.
    pub n: usize,
    /// Queries.
    pub nq: usize,
    /// Dimension.
    pub dim: usize,
}

/// Everything one adapter call reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerResult {
    /// Schema tag, [`SCHEMA`].
    pub schema: String,
    /// The system.
    pub system: PeerSystem,
    /// The Python distribution (`faiss-cpu`, `hnswlib`, `usearch`).
    pub library: String,
    /// Its version.
    pub version: String,
    /// The exact index built (FAISS factory string, constructor arguments).
    pub index: String,
    /// The metric searched by.
    pub metric: PeerMetric,
    /// Neighbours per query.
    pub k: usize,
    /// Threads for build and batch search.
    pub threads: usize,
    /// The dataset.
    pub dataset: PeerDataset,
    /// Build parameters, defaults filled in.
    pub build_params: serde_json::Value,
    /// Build figures.
    pub build: PeerBuild,
    /// Memory figures.
    pub memory: PeerMemory,
    /// One entry per sweep point, in sweep order.
    pub points: Vec<PeerPoint>,
    /// Python, numpy, CPU count, warm-up and batch passes.
    pub environment: serde_json::Value,
    /// What the adapter printed on stderr (progress, library warnings).
    #[serde(skip)]
    pub log: String,
}

/// Runs the adapter for `req` and returns the path of its JSON report and
/// what it printed on stderr; exit status 3 with an `unsupported:` line is
/// [`PeerError::Unsupported`].
fn invoke(req: &PeerRun) -> Result<(PathBuf, String)> {
    let metric = req.validate()?;
    let python = venv_python(&req.venv);
    if !python.is_file() {
        return Err(PeerError::Unavailable(python));
    }
    if !req.script.is_file() {
        return Err(PeerError::Unavailable(req.script.clone()));
    }
    fs::create_dir_all(&req.work_dir).map_err(io_err(&req.work_dir))?;
    let ids_dir = req.work_dir.join("ids");
    let out = req.work_dir.join(format!("{}.json", req.system));
    // A stale report must never pass for this run's.
    match fs::remove_file(&out) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&out)(e)),
    }
    let mut cmd = Command::new(&python);
    cmd.arg(&req.script)
        .arg("--system")
        .arg(req.system.name())
        .arg("--base")
        .arg(&req.base)
        .arg("--queries")
        .arg(&req.queries)
        .arg("--metric")
        .arg(metric)
        .arg("--k")
        .arg(req.k.to_string())
        .arg("--threads")
        .arg(req.threads.to_string())
        .arg("--build-params")
        .arg(req.build_params.to_string())
        .arg("--sweep")
        .arg(serde_json::Value::Array(req.sweep.clone()).to_string())
        .arg("--train-size")
        .arg(req.train_size.to_string())
        .arg("--train-seed")
        .arg(req.train_seed.to_string())
        .arg("--warmup")
        .arg(req.warmup.to_string())
        .arg("--batch-runs")
        .arg(req.batch_runs.to_string())
        .arg("--single-passes")
        .arg(req.single_passes.to_string())
        .arg("--ids-dir")
        .arg(&ids_dir)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null());
    if let Some(n) = req.single_queries {
        cmd.arg("--single-queries").arg(n.to_string());
    }
    if let Some(n) = req.batch_threads {
        cmd.arg("--batch-threads").arg(n.to_string());
    }
    if let Some(f) = &req.filter {
        cmd.arg("--filter").arg(f);
    }
    if let Some(f) = &req.runbook {
        cmd.arg("--runbook").arg(f);
    }
    let output = cmd.output().map_err(io_err(&python))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() == Some(3) {
        if let Some(line) = log.lines().find(|l| l.starts_with("unsupported:")) {
            return Err(PeerError::Unsupported(
                line.trim_start_matches("unsupported:").trim().to_string(),
            ));
        }
    }
    if !output.status.success() {
        return Err(PeerError::Failed {
            system: req.system.name().to_string(),
            status: output.status.to_string(),
            stderr: tail(&log, 4000),
        });
    }
    Ok((out, log))
}

/// Runs one peer build and sweep; blocks until the adapter exits.
pub fn run_peer(req: &PeerRun) -> Result<PeerResult> {
    if req.runbook.is_some() {
        return Err(PeerError::InvalidRequest(
            "a runbook request goes to run_peer_runbook".into(),
        ));
    }
    let (out, log) = invoke(req)?;
    let mut result = parse_report(&out)?;
    result.log = log;
    check_report(req, &result, &out)?;
    for point in &mut result.points {
        point.ids = read_ids(&point.ids_file)?;
        if point.ids.nq != result.dataset.nq || point.ids.k != req.k {
            return Err(PeerError::Malformed {
                path: point.ids_file.clone(),
                reason: format!(
                    "holds {} x {} ids, expected {} x {}",
                    point.ids.nq, point.ids.k, result.dataset.nq, req.k
                ),
            });
        }
    }
    Ok(result)
}

/// The schema of the adapter's runbook report.
pub const RUNBOOK_SCHEMA: &str = "omen-peers-runbook/1";

/// One runbook step as the adapter timed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStep {
    /// The step's number.
    pub step: usize,
    /// `insert`, `delete`, `replace` or `search`.
    pub op: String,
    /// Rows the step touched (not for a search).
    #[serde(default)]
    pub rows: Option<usize>,
    /// Wall seconds of the step (a search: its timed passes and the writing of
    /// its ids; its QPS is of the fastest pass).
    pub seconds: f64,
    /// A search: queries per second of the fastest batch pass.
    #[serde(default)]
    pub qps: Option<f64>,
    /// A search: the ids file (tags).
    #[serde(default)]
    pub ids_file: Option<PathBuf>,
    /// A search: the ids, read from `ids_file`.
    #[serde(skip)]
    pub ids: Option<IdMatrix>,
}

/// The final live rows built into a new index and searched once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerFresh {
    /// Rows built.
    pub rows: usize,
    /// Seconds of training (0 for a system without).
    pub train_seconds: f64,
    /// Seconds of adding the rows.
    pub build_seconds: f64,
    /// Queries per second of the fastest batch pass.
    pub qps: f64,
    /// The ids file (tags).
    pub ids_file: PathBuf,
    /// The ids.
    #[serde(skip)]
    pub ids: Option<IdMatrix>,
}

/// What the adapter's `--runbook` reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRunbookResult {
    /// [`RUNBOOK_SCHEMA`].
    pub schema: String,
    /// The system.
    pub system: PeerSystem,
    /// Its package.
    pub library: String,
    /// The package's version.
    pub version: String,
    /// The index as constructed.
    pub index: String,
    /// The library calls behind insert, delete and replace.
    pub how: String,
    /// Neighbours per query.
    pub k: usize,
    /// Insert threads.
    pub threads: usize,
    /// Batch search threads.
    pub batch_threads: usize,
    /// Build parameters as applied.
    pub build_params: serde_json::Value,
    /// The search point.
    pub search_params: serde_json::Value,
    /// Training sample size (0: no training).
    pub train_vectors: u64,
    /// Training seconds.
    pub train_seconds: f64,
    /// Every step.
    pub steps: Vec<PeerStep>,
    /// `index_bytes`, `index_bytes_method`, `rss_bytes` (after the last step),
    /// `peak_rss_bytes`.
    pub memory: serde_json::Value,
    /// The fresh build, when asked for.
    #[serde(default)]
    pub fresh: Option<PeerFresh>,
    /// What the adapter printed on stderr.
    #[serde(skip)]
    pub log: String,
}

/// Applies a runbook (`req.runbook`, one search point in `req.sweep`) to one
/// system through the adapter; reads every search step's ids.
pub fn run_peer_runbook(req: &PeerRun) -> Result<PeerRunbookResult> {
    if req.runbook.is_none() || req.sweep.len() != 1 {
        return Err(PeerError::InvalidRequest(
            "a runbook request needs a runbook file and exactly one search point".into(),
        ));
    }
    let (out, log) = invoke(req)?;
    let text = fs::read_to_string(&out).map_err(io_err(&out))?;
    let mut r: PeerRunbookResult =
        serde_json::from_str(&text).map_err(|e| PeerError::Malformed {
            path: out.clone(),
            reason: e.to_string(),
        })?;
    r.log = log;
    if r.schema != RUNBOOK_SCHEMA || r.system != req.system || r.k != req.k {
        return Err(PeerError::Malformed {
            path: out,
            reason: format!(
                "schema {:?} system {} k {}, expected {RUNBOOK_SCHEMA:?} {} {}",
                r.schema, r.system, r.k, req.system, req.k
            ),
        });
    }
    let check = |m: &IdMatrix, path: &Path| {
        if m.k != req.k {
            return Err(PeerError::Malformed {
                path: path.to_path_buf(),
                reason: format!("{} ids per query, expected {}", m.k, req.k),
            });
        }
        Ok(())
    };
    for s in &mut r.steps {
        if let Some(f) = &s.ids_file {
            let m = read_ids(f)?;
            check(&m, f)?;
            s.ids = Some(m);
        }
    }
    if let Some(f) = &mut r.fresh {
        let m = read_ids(&f.ids_file)?;
        check(&m, &f.ids_file)?;
        f.ids = Some(m);
    }
    Ok(r)
}

fn tail(s: &str, max: usize) -> String {
    let start = s.len().saturating_sub(max);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].trim().to_string()
}

fn parse_report(path: &Path) -> Result<PeerResult> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| PeerError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn check_report(req: &PeerRun, r: &PeerResult, path: &Path) -> Result<()> {
    let bad = |reason: String| {
        Err(PeerError::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    };
    if r.schema != SCHEMA {
        return bad(format!("schema {:?}, expected {SCHEMA:?}", r.schema));
    }
    if r.system != req.system || r.k != req.k {
        return bad(format!(
            "reports {} k={}, asked for {} k={}",
            r.system, r.k, req.system, req.k
        ));
    }
    if r.points.len() != req.sweep.len() {
        return bad(format!(
            "{} sweep points, asked for {}",
            r.points.len(),
            req.sweep.len()
        ));
    }
    Ok(())
}

/// Reads an ids file: u32 LE nq, u32 LE k, then `nq * k` i32 LE ids.
pub fn read_ids(path: &Path) -> Result<IdMatrix> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let malformed = |reason: String| PeerError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let word = |i: usize| -> Option<[u8; 4]> { bytes.get(i * 4..i * 4 + 4)?.try_into().ok() };
    let (Some(nq), Some(k)) = (word(0), word(1)) else {
        return Err(malformed(format!(
            "{} bytes, too short for a header",
            bytes.len()
        )));
    };
    let (nq, k) = (
        u32::from_le_bytes(nq) as usize,
        u32::from_le_bytes(k) as usize,
    );
    let expected = nq
        .checked_mul(k)
        .and_then(|c| c.checked_mul(4))
        .and_then(|c| c.checked_add(8));
    if expected != Some(bytes.len()) {
        return Err(malformed(format!(
            "header says {nq} x {k} ids but the file has {} bytes",
            bytes.len()
        )));
    }
    let ids = bytes[8..]
        .chunks_exact(4)
        .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect::<Vec<_>>();
    if let Some(&bad) = ids.iter().find(|&&id| id < -1) {
        return Err(malformed(format!("negative id {bad}")));
    }
    Ok(IdMatrix { nq, k, ids })
}

/// Writes `data` (`n * dim` floats, row-major) as big-ann-benchmarks `.fbin`:
/// u32 LE n, u32 LE dim, then f32 LE rows.
pub fn write_fbin(path: &Path, dim: usize, data: &[f32]) -> Result<()> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(PeerError::InvalidRequest(format!(
            "{} floats do not make rows of dimension {dim}",
            data.len()
        )));
    }
    let n = data.len() / dim;
    let (Ok(n32), Ok(dim32)) = (u32::try_from(n), u32::try_from(dim)) else {
        return Err(PeerError::InvalidRequest(format!(
            "{n} x {dim} does not fit an .fbin header"
        )));
    };
    let mut bytes = Vec::with_capacity(8 + data.len() * 4);
    bytes.extend_from_slice(&n32.to_le_bytes());
    bytes.extend_from_slice(&dim32.to_le_bytes());
    for x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(path, bytes).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit_rows(rng: &mut rand_chacha::ChaCha8Rng, n: usize, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// Exact top-k by inner product, ties broken by id.
    fn brute_force_ip(base: &[f32], queries: &[f32], dim: usize, k: usize) -> Vec<Vec<i64>> {
        queries
            .chunks_exact(dim)
            .map(|q| {
                let mut scored: Vec<(f32, i64)> = base
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(i, b)| (q.iter().zip(b).map(|(x, y)| x * y).sum(), i as i64))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.iter().take(k).map(|&(_, i)| i).collect()
            })
            .collect()
    }

    #[test]
    fn ids_file_round_trip_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.ibin");
        let mut bytes = Vec::new();
        for w in [2u32, 3] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        for id in [5i32, 1, -1, 7, 8, 9] {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        fs::write(&p, &bytes).unwrap();
        let m = read_ids(&p).unwrap();
        assert_eq!((m.nq, m.k), (2, 3));
        assert_eq!(m.row(0), &[5, 1, -1]);
        assert_eq!(m.row(1), &[7, 8, 9]);

        fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(read_ids(&p), Err(PeerError::Malformed { .. })));
        fs::write(&p, &bytes[..6]).unwrap();
        assert!(matches!(read_ids(&p), Err(PeerError::Malformed { .. })));
        let mut neg = bytes.clone();
        neg[8..12].copy_from_slice(&(-2i32).to_le_bytes());
        fs::write(&p, &neg).unwrap();
        assert!(matches!(read_ids(&p), Err(PeerError::Malformed { .. })));
    }

    #[test]
    fn bad_requests_are_refused_before_spawning() {
        assert!(PeerMetric::try_from(Metric::Cosine).is_err());
        assert_eq!(PeerMetric::try_from(Metric::L2).unwrap(), PeerMetric::L2);
        let mut req = PeerRun::new(PeerSystem::FaissFlat, "b", "q", PeerMetric::Ip, 10, "w");
        req.venv = PathBuf::from("/nonexistent-venv");
        req.k = 0;
        assert!(matches!(run_peer(&req), Err(PeerError::InvalidRequest(_))));
        req.k = 10;
        req.sweep.clear();
        assert!(matches!(run_peer(&req), Err(PeerError::InvalidRequest(_))));
        req.sweep = vec![serde_json::json!({})];
        assert!(matches!(run_peer(&req), Err(PeerError::Unavailable(_))));
        assert!(!peers_available(Path::new("/nonexistent-venv")));
        assert!(write_fbin(Path::new("/unused"), 3, &[1.0; 4]).is_err());
    }

    #[test]
    fn system_names_match_serde() {
        let omen = ["flat", "hnsw", "ivfpq"].map(|k| PeerSystem::omen(k).unwrap());
        assert_eq!(omen[1].name(), "omen-hnsw");
        assert!(PeerSystem::omen("annoy").is_none());
        assert_eq!(PeerSystem::from_name("omen-ivfpq"), Some(omen[2]));
        for s in PeerSystem::ALL.into_iter().chain(omen) {
            let back: PeerSystem =
                serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back, s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
    }

    /// End to end through Python: FAISS exact search must agree with a Rust brute
    /// force on every query. Skipped (with a note) where `.venv-peers` is missing.
    #[test]
    fn faiss_flat_matches_rust_brute_force() {
        let venv = default_venv();
        if !peers_available(&venv) {
            eprintln!(
                "NOTE: skipping faiss_flat_matches_rust_brute_force: no peer environment at {} \
                 (run scripts/setup-peers.sh)",
                venv.display()
            );
            return;
        }
        let (n, nq, dim, k) = (2_000, 50, 24, 10);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let base = unit_rows(&mut rng, n, dim);
        let queries = unit_rows(&mut rng, nq, dim);
        let dir = tempfile::tempdir().unwrap();
        let (bp, qp) = (dir.path().join("base.fbin"), dir.path().join("q.fbin"));
        write_fbin(&bp, dim, &base).unwrap();
        write_fbin(&qp, dim, &queries).unwrap();

        let mut req = PeerRun::new(
            PeerSystem::FaissFlat,
            &bp,
            &qp,
            PeerMetric::Ip,
            k,
            dir.path().join("work"),
        );
        req.threads = 2;
        req.warmup = 5;
        req.batch_runs = 1;
        let r = run_peer(&req).unwrap();
        assert_eq!(r.library, "faiss-cpu");
        assert_eq!(r.index, "IndexFlatIP");
        assert_eq!((r.dataset.n, r.dataset.nq, r.dataset.dim), (n, nq, dim));
        assert_eq!(r.build.add_vectors, n as u64);
        assert!(r.memory.index_bytes >= (n * dim * 4) as u64);
        assert_eq!(r.points.len(), 1);
        let p = &r.points[0];
        assert!(p.qps_batch > 0.0 && p.qps_single.unwrap_or(0.0) > 0.0);
        assert_eq!(p.single_queries, nq);
        let lat = p.latency.unwrap();
        assert!(lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);

        let truth = brute_force_ip(&base, &queries, dim, k);
        let mut hits = 0;
        for (q, t) in truth.iter().enumerate() {
            hits += p.ids.row(q).iter().filter(|id| t.contains(id)).count();
        }
        let recall = hits as f64 / (nq * k) as f64;
        assert_eq!(recall, 1.0, "faiss-flat recall {recall}");

        // A failing adapter run surfaces as an error with its message.
        let mut bad = req.clone();
        bad.build_params = serde_json::json!({"M": 16});
        match run_peer(&bad) {
            Err(PeerError::Failed { stderr, .. }) => assert!(stderr.contains("unknown parameter")),
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}
