//! Measures omen systems: storage-only append, index training and index build as
//! separate phases, then a search-parameter sweep (one query at a time on one thread,
//! and one batch call on N threads), with recall computed by the harness; then,
//! when asked, durable ingest (the base inserted into a durable collection with the
//! same index and storage) as a phase of its own, with the on-disk size.

use crate::env::{peak_rss_bytes, rss_bytes};
use crate::latency::Latency;
use crate::model::{BuildFigures, DatasetInfo, MemoryFigures, Phase, RunResult, SearchPoint};
use crate::recall::{summarize, RecallInputs};
use omen_core::{
    Error, Metric, Neighbor, Result, SearchParams, SearchRequest, SearchScratch, VectorStorage,
};
use std::time::{Duration, Instant};

/// Recall is reported at these k (those above the run's k are dropped).
pub const RECALL_KS: [usize; 3] = [1, 10, 100];

/// Queries timed one at a time per operating point (the first ones of the set),
/// for omen systems and peers alike.
pub const SINGLE_QUERIES: usize = 2000;

/// Passes of the one-query-at-a-time loop per operating point, run in rounds
/// over the whole sweep; each point's fastest counts (ann-benchmarks keeps the
/// best of several runs). On a shared machine one pass, or several back to back,
/// can land in a slow spell that has nothing to do with the system.
pub const SINGLE_PASSES: usize = 3;

/// Seed of the sample an index is trained on (the same for every run).
pub const TRAIN_SAMPLE_SEED: u64 = 0x5eed;

/// A dataset loaded for benchmarking, with its ground truth.
#[derive(Clone)]
pub struct BenchData {
    /// Name, sizes, metric and checksum.
    pub info: DatasetInfo,
    /// The metric to search with.
    pub metric: Metric,
    /// Vector width.
    pub dim: usize,
    /// Base vectors, row-major.
    pub base: Vec<f32>,
    /// Queries, row-major.
    pub queries: Vec<f32>,
    /// Exact nearest ids, `truth_k` per query.
    pub truth_ids: Vec<i64>,
    /// Exact nearest distances, `truth_k` per query.
    pub truth_distances: Vec<f32>,
    /// Ground-truth depth.
    pub truth_k: usize,
    /// Filtered suites: the rows every search may return (the ground truth above
    /// is then over these rows only).
    pub filter: Option<RowFilter>,
}

/// The rows a filtered search may return, by row number (= omen slot = peer
/// label).
#[derive(Clone, Debug)]
pub struct RowFilter {
    /// The fraction asked for.
    pub selectivity: f64,
    /// `allowed[row]`.
    pub allowed: Vec<bool>,
    /// How many are allowed.
    pub count: usize,
}

impl RowFilter {
    /// Keeps exactly `max(1, round(selectivity x n))` of `n` rows: those whose
    /// rank in a seeded permutation (SplitMix64 Fisher-Yates) is below the count.
    pub fn seeded(n: usize, selectivity: f64, seed: u64) -> RowFilter {
        let count = ((selectivity * n as f64).round() as usize).clamp(1, n.max(1));
        let mut perm: Vec<usize> = (0..n).collect();
        let mut s = seed;
        for i in 0..n.saturating_sub(1) {
            let j = i + (omen_core::splitmix64(&mut s) % (n - i) as u64) as usize;
            perm.swap(i, j);
        }
        let mut allowed = vec![false; n];
        for &row in &perm[..count.min(n)] {
            allowed[row] = true;
        }
        RowFilter {
            selectivity,
            allowed,
            count: count.min(n),
        }
    }

    /// Queries of `results` (per query, the ids returned; -1 or absent = none)
    /// answered with fewer than min(k, allowed) results.
    pub fn short_queries<'a>(&self, k: usize, returned: impl Iterator<Item = usize> + 'a) -> u64 {
        let owed = k.min(self.count);
        returned.filter(|&got| got < owed).count() as u64
    }
}

impl BenchData {
    /// Number of base vectors.
    pub fn n(&self) -> usize {
        self.base.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Number of queries.
    pub fn nq(&self) -> usize {
        self.queries.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// Makes an empty storage of a dimension.
pub type StorageMaker = Box<dyn Fn(usize) -> Result<Box<dyn VectorStorage>> + Send + Sync>;

/// One operating point of a sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// Table label ("ef=64").
    pub label: String,
    /// The parameters as JSON, for results.json.
    pub json: serde_json::Value,
    /// The parameters given to the index.
    pub params: SearchParams,
}

/// How to measure durable ingest for a system: the collection to create (same
/// index kind and parameters, same storage kind; the dataset's dimension and
/// metric) and its durability mode.
#[derive(Clone, Debug)]
pub struct DurableIngest {
    /// The index kind and parameters.
    pub index: omen::IndexSpec,
    /// The storage kind.
    pub storage: omen::StorageKind,
    /// When writes are acknowledged.
    pub durability: omen::Durability,
    /// Where the collection directory is made (a fresh directory inside it,
    /// removed afterwards).
    pub scratch: std::path::PathBuf,
}

/// Passes of the batch search call per operating point; the fastest counts (the
/// peers' adapter does the same).
pub const BATCH_PASSES: usize = 3;

/// Rows per `insert_batch` call in durable ingest.
pub const DURABLE_BATCH: usize = 1_000;

/// An omen system to measure: an index kind with build parameters over a storage.
pub struct OmenSystem {
    /// Display name.
    pub name: String,
    /// The index kind and its build parameters (created with the dataset's
    /// dimension and metric).
    pub index: omen::IndexSpec,
    /// The storage kind.
    pub storage: omen::StorageKind,
    /// Build parameters, for the report.
    pub build_params: serde_json::Value,
    /// Makes the storage.
    pub make_storage: StorageMaker,
    /// Rows of the seeded sample an untrained index is trained on before the
    /// base is added (its own phase); `None` leaves training to the index.
    pub train_size: Option<usize>,
    /// The search-parameter sweep.
    pub sweep: Vec<SweepPoint>,
    /// Durable ingest to measure after the sweep, if any.
    pub durable: Option<DurableIngest>,
}

/// Limits that keep a run's duration bounded.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Neighbours per query.
    pub k: usize,
    /// Threads for building and for the batch search call.
    pub threads: usize,
    /// Threads for the batch search call, when not `threads`.
    pub batch_threads: Option<usize>,
    /// Time allowed for the one-query-at-a-time loop of one operating point; it times
    /// at least `min_single_queries` queries (or all) and stops when this is spent.
    pub single_time: Duration,
    /// See `single_time`.
    pub min_single_queries: usize,
    /// Queries timed one at a time: the first ones of the set.
    pub single_queries: usize,
    /// Rounds of passes over them, each round visiting every operating point;
    /// each point's fastest pass counts. A pass stops early once it has used its
    /// share (`single_time / single_passes`) of the point's budget.
    pub single_passes: usize,
}

/// A rayon pool of `threads` threads (at least one).
pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::invalid_param("threads", e.to_string()))
}

/// Measures one omen system on `data`. `progress` is called with a short message
/// before each phase.
pub fn run_omen(
    sys: &OmenSystem,
    data: &BenchData,
    budget: &Budget,
    progress: &mut dyn FnMut(&str),
) -> Result<RunResult> {
    let n = data.n();
    let nq = data.nq();
    let dim = data.dim;
    let k = budget.k;
    let threads = budget.threads.max(1);
    let build_pool = pool(threads)?;
    let mut notes = Vec::new();

    // The index first: parameter values and the sweep's knobs are checked
    // before anything is measured.
    let index = sys
        .index
        .kind()
        .create(dim, data.metric, sys.index.params())?;
    for sp in &sys.sweep {
        index.check_search_params(&sp.params)?;
    }

    progress(&format!("{}: storage append", sys.name));
    let rss_before = rss_bytes();
    let storage = (sys.make_storage)(dim)?;
    let t = Instant::now();
    storage.append_batch(&data.base)?;
    let append = Phase::new(
        format!("storage-only append: {n} vectors copied into the {} storage in one batch, no index, no durability", sys.storage),
        n as u64,
        t.elapsed().as_secs_f64(),
        1,
    );

    let train = match sys.train_size {
        Some(size) if size > 0 && !index.is_trained() => {
            progress(&format!("{}: index train", sys.name));
            let rows = n.min(size);
            // A seeded sample of the base, the same for every run.
            let sample = sample_rows(&data.base, dim, rows, TRAIN_SAMPLE_SEED);
            let t = Instant::now();
            build_pool.install(|| index.train(storage.as_ref(), &sample))?;
            Some(Phase::new(
                format!(
                    "index train: the {} index trained on {rows} vectors sampled from the base (seeded)",
                    sys.index.name()
                ),
                rows as u64,
                t.elapsed().as_secs_f64(),
                threads,
            ))
        }
        _ => None,
    };

    progress(&format!("{}: index build", sys.name));
    let t = Instant::now();
    build_pool.install(|| index.add(storage.as_ref(), 0..n as u32))?;
    let build = Phase::new(
        format!("index build: {n} vectors added to the {} index with {threads} thread(s), after training", sys.index.name()),
        n as u64,
        t.elapsed().as_secs_f64(),
        threads,
    );
    let index_bytes = index.memory_bytes() as u64;
    let memory = MemoryFigures {
        index_bytes: Some(index_bytes),
        index_bytes_per_vector: Some(index_bytes as f64 / n.max(1) as f64),
        storage_bytes: Some(storage.memory_bytes() as u64),
        peak_rss_bytes: peak_rss_bytes(),
        on_disk_bytes: None,
    };
    if let (Some(a), Some(b)) = (rss_before, rss_bytes()) {
        notes.push(format!(
            "RSS grew by {:.1} MiB while building",
            (b as f64 - a as f64) / 1048576.0
        ));
    }

    // Rows were appended in order, so slot = row.
    let allow = data
        .filter
        .as_ref()
        .map(|f| omen_core::SlotBitmap::from_mask(&f.allowed));
    let mut points = Vec::new();
    let mut scratch = SearchScratch::new();
    let mut out: Vec<Neighbor> = Vec::with_capacity(k);
    let batch_threads = budget.batch_threads.unwrap_or(threads).max(1);
    let search_pool = pool(batch_threads)?;
    // One query at a time, this thread (rayon is not involved in a single
    // search), over the first `single_queries` queries. The passes run in rounds
    // over the whole sweep: a point's passes are spread over the run rather than
    // back to back, so that one slow spell of a shared machine does not decide a
    // point; its fastest pass counts. Each pass may use its share of the budget.
    let single_n = budget.single_queries.clamp(1, nq.max(1));
    let passes = budget.single_passes.max(1);
    let pass_time = budget.single_time.div_f64(passes as f64);
    let mut best: Vec<Vec<f64>> = vec![Vec::new(); sys.sweep.len()];
    for round in 0..passes {
        for (sp, lat) in sys.sweep.iter().zip(best.iter_mut()) {
            progress(&format!(
                "{}: search {} (single-query pass {} of {passes})",
                sys.name,
                sp.label,
                round + 1
            ));
            let t_pass = Instant::now();
            let mut pass = Vec::with_capacity(single_n);
            for q in data.queries.chunks_exact(dim).take(single_n) {
                let t = Instant::now();
                let mut req = SearchRequest::new(q, k, &sp.params);
                if let Some(f) = &allow {
                    req = req.with_filter(f);
                }
                index.search(storage.as_ref(), &req, &mut scratch, &mut out)?;
                pass.push(t.elapsed().as_secs_f64());
                if pass.len() >= budget.min_single_queries && t_pass.elapsed() > pass_time {
                    break;
                }
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / (v.len().max(1) as f64);
            if lat.is_empty() || (pass.len() >= lat.len() && mean(&pass) < mean(lat)) {
                *lat = pass;
            }
        }
    }
    for (sp, lat) in sys.sweep.iter().zip(best) {
        progress(&format!("{}: search {} (batch)", sys.name, sp.label));
        let single_secs: f64 = lat.iter().sum();
        let qps_single = lat.len() as f64 / single_secs.max(1e-12);
        let timed = lat.len();

        // All queries in one batch call on the pool, BATCH_PASSES times (the
        // fastest counts, as the adapter does for every peer); the answers give
        // the recall.
        let mut results: Vec<Vec<Neighbor>> = Vec::new();
        let mut batch_secs = f64::INFINITY;
        let mut stats = Default::default();
        for _ in 0..BATCH_PASSES {
            let t = Instant::now();
            stats = search_pool.install(|| {
                index.search_batch(
                    storage.as_ref(),
                    &data.queries,
                    k,
                    &sp.params,
                    allow.as_ref().map(|f| f as &dyn omen_core::SlotFilter),
                    &mut results,
                )
            })?;
            batch_secs = batch_secs.min(t.elapsed().as_secs_f64());
        }
        let mut ids = vec![-1i64; nq * k];
        for (qi, r) in results.iter().enumerate() {
            for (j, nb) in r.iter().take(k).enumerate() {
                ids[qi * k + j] = i64::from(nb.slot);
            }
        }
        let recall = summarize(
            &RecallInputs {
                metric: data.metric,
                base: &data.base,
                queries: &data.queries,
                dim,
                truth_ids: &data.truth_ids,
                truth_distances: &data.truth_distances,
                truth_k: data.truth_k,
                run_ids: &ids,
                run_k: k,
            },
            &RECALL_KS,
        );
        if timed < nq {
            notes.push(format!(
                "{}: the one-query-at-a-time loop timed the first {timed} of {nq} queries (the first {single_n}, fewer where the time budget ran out); recall uses all queries",
                sp.label
            ));
        }
        points.push(SearchPoint {
            params: sp.json.clone(),
            label: sp.label.clone(),
            qps_single,
            qps_batch: Some(nq as f64 / batch_secs.max(1e-12)),
            batch_threads,
            latency: Latency::from_seconds(&lat),
            recall,
            distance_computations_per_query: Some(
                stats.distance_computations as f64 / nq.max(1) as f64,
            ),
            short_queries: data
                .filter
                .as_ref()
                .map(|f| f.short_queries(k, results.iter().map(|r| r.len().min(k)))),
        });
    }

    drop(index);
    drop(storage);
    let mut durable_ingest = None;
    let mut on_disk_bytes = None;
    if let Some(spec) = &sys.durable {
        progress(&format!(
            "{}: durable ingest ({})",
            sys.name,
            spec.durability.label()
        ));
        let d = build_pool.install(|| durable_ingest_run(spec, data, threads))?;
        notes.push(format!(
            "durable ingest: collection directory in {} (file system {}); on-disk size {} after a final checkpoint ({:.2} s, untimed), {}",
            spec.scratch.display(),
            crate::durability::fs_type(&spec.scratch),
            crate::durability::fmt_bytes(d.on_disk.total),
            d.checkpoint_seconds,
            crate::durability::DISK_SIZE_RULE
        ));
        durable_ingest = Some(d.phase);
        on_disk_bytes = Some(d.on_disk.total);
    }

    Ok(RunResult {
        name: sys.name.clone(),
        family: "omen".into(),
        path: "native".into(),
        index: sys.index.name().to_string(),
        storage: Some(sys.storage.name().to_string()),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        build_params: sys.build_params.clone(),
        build_threads: threads,
        build: BuildFigures {
            storage_append: Some(append),
            durable_ingest,
            index_train: train,
            index_build: Some(build),
        },
        memory: MemoryFigures {
            on_disk_bytes,
            ..memory
        },
        points,
        notes,
    })
}

/// `n` rows of `base` chosen by a seeded partial Fisher–Yates shuffle (SplitMix64).
pub fn sample_rows(base: &[f32], dim: usize, n: usize, seed: u64) -> Vec<f32> {
    let rows = base.len().checked_div(dim).unwrap_or(0);
    let n = n.min(rows);
    let mut idx: Vec<usize> = (0..rows).collect();
    let mut s = seed;
    let mut next = || omen_core::splitmix64(&mut s);
    for i in 0..n {
        let j = i + (next() % (rows - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut out = Vec::with_capacity(n * dim);
    for &i in &idx[..n] {
        out.extend_from_slice(&base[i * dim..(i + 1) * dim]);
    }
    out
}

/// What one durable ingest measured.
pub struct DurableIngestResult {
    /// The timed phase.
    pub phase: Phase,
    /// The collection directory's size after a final checkpoint.
    pub on_disk: crate::durability::DiskUsage,
    /// Seconds of that final checkpoint (not part of the phase).
    pub checkpoint_seconds: f64,
}

/// Creates a durable collection in a fresh directory under `spec.scratch`, inserts
/// the whole base with `insert_batch` in batches of [`DURABLE_BATCH`] with string
/// ids (`"0"`, `"1"`, ...), and stops the clock once the last batch is
/// acknowledged and `sync()` returned (what `close()` does for the log; it matters
/// only under `Durability::None`). Then, untimed, checkpoints, measures the
/// directory and closes. Index building runs on the current rayon pool.
pub fn durable_ingest_run(
    spec: &DurableIngest,
    data: &BenchData,
    threads: usize,
) -> Result<DurableIngestResult> {
    let n = data.n();
    let dim = data.dim;
    let dir = crate::durability::fresh_dir(&spec.scratch, "ingest")?;
    let config = omen::CollectionConfig::new(dim, data.metric)
        .index(spec.index.clone())
        .storage(spec.storage);
    let result = (|| {
        // Every write indexed before it is acknowledged, and checkpoints by log
        // size only: the figure keeps the meaning it always had (ingest including
        // the index build). `omen bench durability` section e measures ingest
        // with the indexer behind.
        let opts = omen::DurableOptions::default()
            .durability(spec.durability)
            .indexing(omen::IndexingMode::Inline)
            .checkpoint_indexed_rows(u64::MAX);
        let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let t = Instant::now();
        let c = omen::Collection::create(&dir, &config, opts)?;
        for (b, rows) in data.base.chunks(DURABLE_BATCH * dim).enumerate() {
            let first = b * DURABLE_BATCH;
            c.insert_batch(&ids[first..first + rows.len() / dim], rows)?;
        }
        c.sync()?;
        let seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        c.checkpoint()?;
        let checkpoint_seconds = t.elapsed().as_secs_f64();
        let on_disk = crate::durability::disk_usage(&dir)?;
        c.close()?;
        let phase = Phase::new(
            format!(
                "durable ingest ({}): WAL + storage + index build, acknowledged: {n} vectors inserted with insert_batch in batches of {DURABLE_BATCH} into a new durable {}/{} collection (log, storage append and the index build, {threads} thread(s)), clock stopped when the last write was acknowledged and sync() returned; automatic checkpoints at the default 64 MiB of log; includes the index build",
                spec.durability.label(),
                config.index.name(),
                config.storage.name(),
            ),
            n as u64,
            seconds,
            threads,
        );
        Ok(DurableIngestResult {
            phase,
            on_disk,
            checkpoint_seconds,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
