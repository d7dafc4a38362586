//! Runs a whole [`BenchConfig`]: loads the dataset with its ground truth, measures
//! every omen system over every storage and thread count, runs the peers on the same
//! base and queries (same files, same thread counts, same run), computes every
//! system's recall the same way from the ids it returned, and writes the report.

use crate::config::{BenchConfig, PeerSpec};
use crate::latency::Latency;
use crate::model::{
    BuildFigures, DatasetInfo, MemoryFigures, Phase, Report, RunResult, SearchPoint, Skipped,
};
use crate::peers::{self, PeerMetric, PeerRun, PeerSystem};
use crate::recall::{summarize, RecallInputs};
use crate::runner::{
    run_omen, BenchData, Budget, DurableIngest, OmenSystem, SweepPoint, RECALL_KS, SINGLE_PASSES,
    SINGLE_QUERIES,
};
use omen::registry;
use omen::StorageKind;
use omen_core::{Error, Metric, Result, SearchParams, VectorStorage};
use omen_datasets::Dataset;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a run reads and writes, and whether peers run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Dataset directory (fetched data and cached ground truth).
    pub data_dir: PathBuf,
    /// Reports are written to `<reports_dir>/<run name>/`.
    pub reports_dir: PathBuf,
    /// The peers' virtual environment.
    pub venv: PathBuf,
    /// Run the peers when their environment is installed.
    pub peers: bool,
    /// The command that reproduces this run, for the report.
    pub reproduce: String,
}

/// Ground truth is computed this deep, so recall@100 can be reported.
pub const TRUTH_K: usize = 100;

/// Converts a loaded dataset (with ground truth) into the harness's form,
/// keeping at most `max_queries` queries (0 = all).
pub fn bench_data(ds: &Dataset, max_queries: usize) -> Result<BenchData> {
    let gt = ds.ground_truth.as_ref().ok_or_else(|| {
        Error::invalid_param("dataset", format!("{} has no ground truth", ds.name))
    })?;
    let dim = ds.base.dim();
    let nq_all = ds.queries.rows();
    let nq = if max_queries == 0 {
        nq_all
    } else {
        nq_all.min(max_queries)
    };
    let tk = gt.k();
    Ok(BenchData {
        info: DatasetInfo {
            name: ds.name.clone(),
            n: ds.base.rows(),
            nq,
            dim,
            metric: ds.metric.name().to_string(),
            checksum: ds.checksum(),
        },
        metric: ds.metric,
        dim,
        base: ds.base.data().to_vec(),
        queries: ds.queries.data()[..nq * dim].to_vec(),
        truth_ids: gt.ids()[..nq * tk].iter().map(|&i| i64::from(i)).collect(),
        truth_distances: gt.distances()[..nq * tk].to_vec(),
        truth_k: tk,
        filter: None,
    })
}

/// An [`omen_storage::MmapStorage`] in a directory of its own, removed when the
/// storage is dropped (on Linux the mapping outlives the unlinked files).
struct TempMmap {
    storage: omen_storage::MmapStorage,
    dir: PathBuf,
}

impl Drop for TempMmap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl VectorStorage for TempMmap {
    fn name(&self) -> &'static str {
        self.storage.name()
    }
    fn dim(&self) -> usize {
        self.storage.dim()
    }
    fn len(&self) -> usize {
        self.storage.len()
    }
    fn append(&self, vector: &[f32]) -> Result<omen_core::SlotId> {
        self.storage.append(vector)
    }
    fn append_batch(&self, rows: &[f32]) -> Result<std::ops::Range<omen_core::SlotId>> {
        self.storage.append_batch(rows)
    }
    fn get(&self, slot: omen_core::SlotId) -> Option<&[f32]> {
        self.storage.get(slot)
    }
    fn block(&self, start: omen_core::SlotId) -> Option<&[f32]> {
        self.storage.block(start)
    }
    fn memory_bytes(&self) -> usize {
        self.storage.memory_bytes()
    }
    fn flush(&self) -> Result<()> {
        self.storage.flush()
    }
}

fn storage_maker(kind: StorageKind, scratch: &Path) -> Result<crate::runner::StorageMaker> {
    match kind {
        StorageKind::Memory => Ok(Box::new(|dim| {
            Ok(Box::new(omen_storage::MemoryStorage::new(dim)?) as Box<dyn VectorStorage>)
        })),
        StorageKind::Mmap => {
            let scratch = scratch.to_path_buf();
            Ok(Box::new(move |dim| {
                let dir = crate::durability::fresh_dir(&scratch, kind.name())?;
                match omen_storage::MmapStorage::create(&dir, dim) {
                    Ok(storage) => {
                        Ok(Box::new(TempMmap { storage, dir }) as Box<dyn VectorStorage>)
                    }
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        Err(e)
                    }
                }
            }))
        }
        other => Err(Error::invalid_param(
            "storage",
            format!("the harness cannot measure storage {other} outside a collection"),
        )),
    }
}

/// The durability mode a config names (`group` when it names none).
pub fn durability_of(cfg: &BenchConfig) -> Result<omen::Durability> {
    match cfg.durability.as_deref() {
        None | Some("group") => Ok(omen::Durability::default()),
        Some("per-write") => Ok(omen::Durability::PerWrite),
        Some("none") => Ok(omen::Durability::None),
        Some(other) => Err(Error::invalid_param(
            "durability",
            format!("{other:?} is not a durability mode (group, per-write, none)"),
        )),
    }
}

/// The omen systems a config asks for, over one storage kind: every index entry
/// created through the registry with its build parameters. Temporary files (mmap
/// chunk files, durable collections) go to fresh directories under `scratch`.
pub fn omen_systems(
    cfg: &BenchConfig,
    storage: StorageKind,
    scratch: &Path,
) -> Result<Vec<OmenSystem>> {
    let mut out = Vec::new();
    for entry in &cfg.indexes {
        let spec = entry.spec()?;
        let sweep = entry
            .points()?
            .into_iter()
            .map(|p| SweepPoint {
                json: p.json(),
                label: p.label,
                params: SearchParams::from_knobs(p.params),
            })
            .collect();
        let durable = if cfg.durable_ingest {
            Some(DurableIngest {
                index: spec.clone(),
                storage,
                durability: durability_of(cfg)?,
                scratch: scratch.to_path_buf(),
            })
        } else {
            None
        };
        out.push(OmenSystem {
            name: format!("{}/{storage}", entry.system_name()),
            build_params: serde_json::Value::Object(registry::params_to_json(spec.params())),
            train_size: spec.params().usize("train_size")?,
            index: spec,
            storage,
            make_storage: storage_maker(storage, scratch)?,
            sweep,
            durable,
        });
    }
    Ok(out)
}

/// Refuses, before anything is measured, an index entry whose parameter values
/// its kind refuses for this dataset (its dimension and metric), or whose
/// sweep names a knob value its index refuses.
fn check_indexes(cfg: &BenchConfig, data: &BenchData) -> Result<()> {
    for entry in &cfg.indexes {
        let spec = entry.spec()?;
        let index = spec.kind().create(data.dim, data.metric, spec.params())?;
        for p in entry.points()? {
            index
                .check_search_params(&SearchParams::from_knobs(p.params))
                .map_err(|e| {
                    Error::invalid_param(
                        "sweep",
                        format!("{} at {}: {e}", entry.system_name(), p.label),
                    )
                })?;
        }
    }
    Ok(())
}

fn peer_result_to_run(r: &peers::PeerResult, data: &BenchData, k: usize) -> RunResult {
    let b = &r.build;
    let name = match r.system {
        PeerSystem::FaissFlat => "faiss-flat".to_string(),
        _ => format!("{}({})", r.system.name(), short_params(&r.build_params)),
    };
    let points = r
        .points
        .iter()
        .map(|p| {
            let recall = summarize(
                &RecallInputs {
                    metric: data.metric,
                    base: &data.base,
                    queries: &data.queries,
                    dim: data.dim,
                    truth_ids: &data.truth_ids,
                    truth_distances: &data.truth_distances,
                    truth_k: data.truth_k,
                    run_ids: &p.ids.ids,
                    run_k: p.ids.k,
                },
                &RECALL_KS,
            );
            let latency = p.latency.map_or_else(Latency::default, |l| Latency {
                p50_us: l.p50_us,
                p95_us: l.p95_us,
                p99_us: l.p99_us,
                p999_us: l.p999_us,
                mean_us: l.mean_us,
            });
            SearchPoint {
                params: p.params.clone(),
                label: short_params(&p.params),
                qps_single: p.qps_single.unwrap_or(f64::NAN),
                qps_batch: Some(p.qps_batch),
                batch_threads: p.batch_threads,
                latency,
                recall,
                distance_computations_per_query: None,
                short_queries: data.filter.as_ref().map(|f| {
                    f.short_queries(
                        k,
                        p.ids
                            .ids
                            .chunks(p.ids.k.max(1))
                            .map(|row| row.iter().filter(|&&id| id >= 0).count().min(k)),
                    )
                }),
            }
        })
        .collect();
    RunResult {
        name,
        family: if r.system.is_omen() { "omen" } else { "peer" }.into(),
        path: "python".into(),
        index: r.index.clone(),
        storage: None,
        version: Some(format!("{} {}", r.library, r.version)),
        build_params: r.build_params.clone(),
        build_threads: b.threads,
        build: BuildFigures {
            storage_append: None,
            durable_ingest: None,
            index_train: (b.train_vectors > 0).then(|| {
                Phase::new(format!("index train ({})", r.index), b.train_vectors, b.train_seconds, b.threads)
            }),
            index_build: Some(Phase::new(format!("index build: add to {}", r.index), b.add_vectors, b.add_seconds, b.threads)),
        },
        memory: MemoryFigures {
            index_bytes: Some(r.memory.index_bytes),
            index_bytes_per_vector: Some(r.memory.index_bytes_per_vector),
            storage_bytes: None,
            peak_rss_bytes: Some(r.memory.peak_rss_bytes),
            on_disk_bytes: None,
        },
        points,
        notes: vec![format!(
            "{} via the Python adapter; index bytes measured by {}; the one-query-at-a-time QPS includes Python call overhead",
            r.index, r.memory.index_bytes_method
        )],
    }
}

fn short_params(v: &serde_json::Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "exact".into(),
    }
}

fn peer_system(name: &str) -> Result<PeerSystem> {
    PeerSystem::from_name(name)
        .ok_or_else(|| Error::invalid_param("peers", format!("unknown peer system {name:?}")))
}

fn write_fbin(path: &Path, rows: &[f32], dim: usize) -> Result<()> {
    let v = omen_datasets::Vectors::new(dim, rows.to_vec())?;
    omen_datasets::write_fbin(path, &v)
}

/// The adapter system that drives omen's `kind` through its Python package
/// (`omen-<kind>`), if the adapter has one.
fn omen_python_system(kind: &str) -> Option<PeerSystem> {
    PeerSystem::omen(kind)
}

/// Omen's indexes of `cfg` as adapter runs through the `omen` Python package
/// (in-memory storage): the same build and search parameters as the native
/// runs, under the kinds' canonical names. An entry whose kind the adapter does
/// not drive is left out, and named in the second list.
fn omen_python_specs(cfg: &BenchConfig) -> (Vec<PeerSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    for entry in &cfg.indexes {
        let Some(system) = omen_python_system(&entry.kind) else {
            skipped.push(entry.system_name());
            continue;
        };
        // `validate` has checked the keys; an entry it refused never gets here.
        let (Ok(spec), Ok(points)) = (entry.spec(), entry.points()) else {
            continue;
        };
        specs.push(PeerSpec {
            system: system.name().into(),
            build: registry::params_to_json(spec.params()),
            // One point of the index's defaults: the adapter's own default sweep.
            sweep: if points.iter().all(|p| p.params.is_empty()) {
                Vec::new()
            } else {
                points
                    .iter()
                    .map(|p| registry::params_to_json(&p.params))
                    .collect()
            },
        });
    }
    (specs, skipped)
}

/// What runs through the Python adapter: the suite's peers, then omen's indexes
/// through its package when `cfg.python`.
pub(crate) fn adapter_specs(cfg: &BenchConfig) -> Vec<PeerSpec> {
    let mut specs = cfg.peers.clone();
    if cfg.python {
        specs.extend(omen_python_specs(cfg).0);
    }
    specs
}

/// Refuses a run whose adapter systems cannot all run: no environment, or a
/// system whose package it lacks. One line, naming the install command.
fn check_adapter_systems(cfg: &BenchConfig, opts: &BenchOptions) -> Result<()> {
    let specs = adapter_specs(cfg);
    if specs.is_empty() {
        return Ok(());
    }
    let systems = specs
        .iter()
        .map(|s| peer_system(&s.system))
        .collect::<Result<Vec<_>>>()?;
    let install = "bash scripts/setup-peers.sh";
    let missing = peers::missing_systems(&opts.venv, &systems).map_err(|e| {
        Error::invalid_param(
            "peers",
            format!(
                "suite {} runs systems through the Python adapter but {e}: run `{install}` (or pass --no-peers)",
                cfg.name
            ),
        )
    })?;
    if let Some((sys, why)) = missing.first() {
        let all: Vec<&str> = missing.iter().map(|(s, _)| s.name()).collect();
        return Err(Error::invalid_param(
            "peers",
            format!(
                "suite {} names {} but {} cannot import it ({why}){}: run `{install}` (or pass --no-peers)",
                cfg.name,
                sys.name(),
                opts.venv.display(),
                if all.len() > 1 {
                    format!("; also missing: {}", all[1..].join(", "))
                } else {
                    String::new()
                }
            ),
        ));
    }
    Ok(())
}

/// Runs `specs` through the Python adapter for one thread count.
#[allow(clippy::too_many_arguments)]
/// Runs every adapter system of `specs` (peers and omen's Python path) on
/// `data`, filtered by `filter` (one byte per base row) when given. A system
/// that cannot run the filter is returned as skipped, with its reason.
pub(crate) fn run_peers(
    cfg: &BenchConfig,
    specs: &[PeerSpec],
    opts: &BenchOptions,
    data: &BenchData,
    threads: usize,
    work: &Path,
    filter: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<RunResult>, Vec<Skipped>)> {
    let base = work.join("base.fbin");
    let queries = work.join("queries.fbin");
    if !base.exists() || !queries.exists() {
        std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
        write_fbin(&base, &data.base, data.dim)?;
        write_fbin(&queries, &data.queries, data.dim)?;
    }
    let metric = match data.metric {
        Metric::L2 => PeerMetric::L2,
        // Angular sets are stored unit-normalised, so inner product ranks as cosine.
        _ => PeerMetric::Ip,
    };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for spec in specs {
        let PeerSpec {
            system,
            build,
            sweep,
        } = spec;
        progress(&format!("peer {system} ({threads} thread(s))"));
        let mut req = PeerRun::new(
            peer_system(system)?,
            &base,
            &queries,
            metric,
            cfg.k,
            work.join(system),
        );
        req.venv = opts.venv.clone();
        req.threads = threads;
        req.batch_threads = cfg.batch_threads;
        let mut build = build.clone();
        if let Some(ts) = build.remove("train_size").and_then(|v| v.as_u64()) {
            req.train_size = ts as usize;
        }
        req.build_params = serde_json::Value::Object(build);
        if !sweep.is_empty() {
            req.sweep = sweep
                .iter()
                .cloned()
                .map(serde_json::Value::Object)
                .collect();
        }
        // The one-query-at-a-time loop: the first SINGLE_QUERIES queries (all of
        // them in the batch call, whose ids give the recall), SINGLE_PASSES rounds
        // over the sweep, each point's fastest pass counting; omen systems get the
        // same.
        req.single_queries = Some(data.nq().min(SINGLE_QUERIES));
        req.single_passes = SINGLE_PASSES;
        req.filter = filter.map(Path::to_path_buf);
        match peers::run_peer(&req) {
            Ok(r) => out.push(peer_result_to_run(&r, data, cfg.k)),
            Err(peers::PeerError::Unsupported(reason)) => {
                progress(&format!("peer {system} skipped: {reason}"));
                skipped.push(Skipped {
                    name: system.clone(),
                    reason,
                });
            }
            Err(e) => {
                return Err(Error::invalid_param("peers", format!("{system}: {e}")));
            }
        }
    }
    Ok((out, skipped))
}

/// Removes a scratch directory when dropped.
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The measuring budget of `cfg`'s runs built with `threads` threads.
pub(crate) fn budget(cfg: &BenchConfig, threads: usize) -> Budget {
    Budget {
        k: cfg.k,
        threads,
        batch_threads: cfg.batch_threads,
        single_time: Duration::from_secs_f64(cfg.single_query_seconds),
        min_single_queries: 200,
        single_queries: SINGLE_QUERIES,
        single_passes: SINGLE_PASSES,
    }
}

/// What every run does first: validates `cfg`, checks the adapter's systems,
/// loads the dataset with its ground truth and checks the indexes against it.
/// Returns the data and whether the adapter is skipped (no environment, where the
/// suite allows it).
pub(crate) fn prepare(
    cfg: &BenchConfig,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(BenchData, bool)> {
    cfg.validate()?;
    let skip_adapter = cfg.peers_optional && !opts.venv.join("bin").join("python").is_file();
    if skip_adapter {
        progress(&format!(
            "peers and omen's Python path skipped: no environment at {} (run `bash scripts/setup-peers.sh`)",
            opts.venv.display()
        ));
    } else if opts.peers {
        check_adapter_systems(cfg, opts)?;
    }
    progress(&format!(
        "loading {} (ground truth top-{TRUTH_K})",
        cfg.dataset
    ));
    let ds = omen_datasets::load_named(&cfg.dataset, &opts.data_dir, TRUTH_K.max(cfg.k))?;
    let data = bench_data(&ds, cfg.max_queries)?;
    drop(ds);
    check_indexes(cfg, &data)?;
    if cfg.python && opts.peers && !skip_adapter {
        for name in omen_python_specs(cfg).1 {
            progress(&format!(
                "{name}: no adapter system drives this kind through the Python package; its python path is skipped"
            ));
        }
    }
    Ok((data, skip_adapter))
}

/// Runs `cfg` and writes its report; returns the report and the path of `report.md`.
pub fn run(
    cfg: &BenchConfig,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(Report, PathBuf)> {
    let (data, skip_adapter) = prepare(cfg, opts, progress)?;
    let mut report = Report {
        run: cfg.name.clone(),
        reproduce: opts.reproduce.clone(),
        env: crate::env::Environment::capture(),
        dataset: data.info.clone(),
        k: cfg.k,
        runs: Vec::new(),
        cli: Vec::new(),
        summary: Vec::new(),
        skipped: Vec::new(),
        filter: None,
    };
    // Scratch space on the reports' file system (mmap chunk files, durable
    // collections), removed at the end.
    let scratch =
        opts.reports_dir
            .join(format!(".omen-scratch-{}-{}", cfg.name, std::process::id()));
    let work = std::env::temp_dir().join(format!("omen-bench-{}-{}", cfg.name, std::process::id()));
    // Removed however the run ends (a failed peer included).
    let _work_guard = RemoveOnDrop(work.clone());
    let exe = if cfg.cli {
        Some(crate::cli::pin_exe(&work.join("bin"))?)
    } else {
        None
    };
    let measured = (|| -> Result<()> {
        for &threads in &cfg.threads {
            for storage in cfg.storage_kinds()? {
                for sys in omen_systems(cfg, storage, &scratch)? {
                    let mut r = run_omen(&sys, &data, &budget(cfg, threads), progress)?;
                    if cfg.threads.len() > 1 {
                        r.name = format!("{} [{threads}t]", r.name);
                    }
                    report.runs.push(r);
                }
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    measured?;
    let specs = adapter_specs(cfg);
    if opts.peers && !skip_adapter && !specs.is_empty() {
        for &threads in &cfg.threads {
            let (mut rs, skipped) =
                run_peers(cfg, &specs, opts, &data, threads, &work, None, progress)?;
            report.skipped.extend(skipped);
            if cfg.threads.len() > 1 {
                rs.iter_mut()
                    .for_each(|r| r.name = format!("{} [{threads}t]", r.name));
            }
            report.runs.extend(rs);
        }
    } else if !specs.is_empty() && !skip_adapter {
        progress("peers and omen's Python path skipped (--no-peers)");
    }
    if let Some(exe) = &exe {
        let cli = crate::cli::run_cli(cfg, &data, exe, &work.join("cli"), progress);
        let _ = std::fs::remove_dir_all(&work);
        report.cli = cli?;
    }
    let _ = std::fs::remove_dir_all(&work);
    let dir = opts.reports_dir.join(&cfg.name);
    let md = crate::report::write(&report, &dir)?;
    Ok((report, md))
}
