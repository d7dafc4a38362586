//! `omen bench runbook`: applies a [`Runbook`] to every omen index and storage of
//! a suite (natively, and through the `omen` Python package) and to every peer
//! whose Python API can delete, and measures at each `search` step recall@k
//! against exact ground truth over the tags live at that step (the flat kernels
//! over those rows, cached under the data directory) and batch QPS. Inserts,
//! deletes and replaces are timed per step. After the last step each system's
//! final live rows are built afresh into a new index of the same parameters
//! and searched once more, so that the report can say how far the churned index
//! is from a fresh build of the same rows.
//!
//! The report (`reports/<name>/`) holds recall and QPS per step for each system
//! (tables and two line plots), the mean recall over the search steps (the
//! streaming track's ranking figure), the wall time of each operation kind, the
//! memory after the last step and the fresh-build comparison.

use crate::bench::{adapter_specs, omen_systems, prepare, BenchOptions, RemoveOnDrop};
use crate::config::BenchConfig;
use crate::model::{DatasetInfo, Skipped};
use crate::peers::{self, PeerMetric, PeerRun, PeerSystem};
use crate::report::fmt_opt;
use crate::runbook::{cluster_order, LiveSet, Op, Replay, Runbook};
use crate::runner::{pool, sample_rows, OmenSystem, BATCH_PASSES, TRAIN_SAMPLE_SEED};
use omen_core::{Error, Metric, Neighbor, Result, VectorIndex, VectorStorage};
use omen_datasets::{cached_ground_truth, Vectors};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the report says about the runbook.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunbookInfo {
    /// The file, as given.
    pub file: String,
    /// The entry used (a dataset name).
    pub entry: String,
    /// Checksum of the file.
    pub checksum: String,
    /// Steps.
    pub steps: usize,
    /// Search steps.
    pub searches: usize,
    /// The entry's `max_pts`.
    pub max_pts: Option<usize>,
    /// Distinct tags ever inserted.
    pub distinct_tags: usize,
    /// Most tags live at once.
    pub max_live: usize,
    /// Tags live after the last step.
    pub final_live: usize,
    /// The row order applied before the steps, in words (None: the dataset's).
    pub row_order: Option<String>,
}

/// One step of one system.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepResult {
    /// The step's number.
    pub step: usize,
    /// `insert`, `delete`, `replace`, `search`.
    pub op: String,
    /// Rows the step touched (0 for a search).
    pub rows: usize,
    /// Tags live after the step.
    pub live: usize,
    /// Wall seconds (a search: all its timed passes).
    pub seconds: f64,
    /// A search: recall@k by id against the exact top-k of the live tags.
    pub recall: Option<f64>,
    /// A search: queries per second of the fastest batch pass.
    pub qps: Option<f64>,
    /// A search: ids returned that were not live (deleted or never inserted);
    /// counted as misses.
    pub stale: Option<u64>,
}

/// Wall time of one operation kind, summed over its steps.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OpTotal {
    /// `train`, `insert`, `delete`, `replace`, `search`.
    pub op: String,
    /// Steps of that kind.
    pub steps: usize,
    /// Rows they touched (searches: queries answered).
    pub rows: usize,
    /// Their wall seconds.
    pub seconds: f64,
}

/// The final live rows built into a new index and searched.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FreshBuild {
    /// Rows.
    pub rows: usize,
    /// Seconds of training and adding.
    pub build_seconds: f64,
    /// Recall@k by id against the final live tags' exact top-k.
    pub recall: f64,
    /// Queries per second of the fastest batch pass.
    pub qps: f64,
}

/// One system's run of the runbook.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunbookSystem {
    /// Display name.
    pub name: String,
    /// `omen` or `peer`.
    pub family: String,
    /// `native` (in-process Rust) or `python` (the peers' adapter).
    pub path: String,
    /// The index as constructed.
    pub index: String,
    /// Library version.
    pub version: String,
    /// Build parameters.
    pub build_params: serde_json::Value,
    /// The one search point.
    pub search_params: serde_json::Value,
    /// Insert threads.
    pub threads: usize,
    /// Batch search threads.
    pub batch_threads: usize,
    /// The library calls behind insert, delete and replace.
    pub how: String,
    /// Every step.
    pub steps: Vec<StepResult>,
    /// Wall time per operation kind (`train` apart from `insert`).
    pub ops: Vec<OpTotal>,
    /// Mean recall@k over the search steps.
    pub mean_recall: f64,
    /// Mean QPS over the search steps.
    pub mean_qps: f64,
    /// Recall@k at the last search step.
    pub last_recall: f64,
    /// Ids returned that were not live, over every search step.
    pub stale: u64,
    /// Memory after the last step, in bytes, measured as `memory_method` says.
    pub memory_bytes: Option<u64>,
    /// How `memory_bytes` was measured.
    pub memory_method: String,
    /// Resident set of the process after the last step (the adapter's for a
    /// Python system; the harness's, with everything it holds, for native).
    pub rss_bytes: Option<u64>,
    /// The fresh build of the final live rows.
    pub fresh: Option<FreshBuild>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// A whole runbook report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunbookReport {
    /// Run name (the report directory).
    pub run: String,
    /// The command that reproduces it.
    pub reproduce: String,
    /// Where it ran.
    pub env: crate::env::Environment,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// The runbook.
    pub runbook: RunbookInfo,
    /// Neighbours per query.
    pub k: usize,
    /// Every system.
    pub systems: Vec<RunbookSystem>,
    /// Systems that cannot run a runbook, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Exact top-k of one set of live tags.
struct Truth {
    /// Live tags, increasing.
    tags: Vec<u32>,
    /// Ground truth as tags, `k` per query (`-1` past the live count).
    ids: Vec<i64>,
    /// Depth of `ids`.
    k: usize,
}

impl Truth {
    /// Recall@k by id of `returned` (tags, `k` per query, `-1` = none) and the
    /// number of returned ids that are not live.
    fn score(&self, returned: &[i64], k: usize, n: usize) -> (f64, u64) {
        let mut live = vec![false; n];
        for &t in &self.tags {
            live[t as usize] = true;
        }
        let want = k.min(self.tags.len());
        if want == 0 {
            return (1.0, 0);
        }
        let nq = self.ids.len() / self.k.max(1);
        let (mut hits, mut stale) = (0usize, 0u64);
        for q in 0..nq {
            let truth = &self.ids[q * self.k..q * self.k + want];
            let got = &returned[q * k..(q + 1) * k];
            for (j, &id) in got.iter().enumerate() {
                if id < 0 {
                    continue;
                }
                if !live.get(id as usize).copied().unwrap_or(false) {
                    stale += 1;
                } else if truth.contains(&id) && !got[..j].contains(&id) {
                    hits += 1;
                }
            }
        }
        (hits as f64 / (nq * want) as f64, stale)
    }
}

/// The dataset as the runbook sees it: rows in the runbook's order.
struct RbData {
    info: DatasetInfo,
    metric: Metric,
    dim: usize,
    base: Vec<f32>,
    queries: Vec<f32>,
}

impl RbData {
    fn n(&self) -> usize {
        self.base.len() / self.dim.max(1)
    }
    fn nq(&self) -> usize {
        self.queries.len() / self.dim.max(1)
    }
    fn rows(&self, lo: usize, hi: usize) -> &[f32] {
        &self.base[lo * self.dim..hi * self.dim]
    }
}

/// Exact ground truth of the live set, from the cache under `dir` or computed
/// with the flat kernels and written there.
fn truth_of(data: &RbData, live: &LiveSet, k: usize, dir: &Path) -> Result<Truth> {
    let pairs = live.live();
    let mut sub = Vec::with_capacity(pairs.len() * data.dim);
    for &(_, r) in &pairs {
        sub.extend_from_slice(data.rows(r as usize, r as usize + 1));
    }
    let tags: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let tk = k.min(tags.len());
    if tk == 0 {
        return Ok(Truth {
            tags,
            ids: vec![-1; data.nq() * k.max(1)],
            k: k.max(1),
        });
    }
    let base = Vectors::new(data.dim, sub)?;
    let queries = Vectors::new(data.dim, data.queries.clone())?;
    let (gt, _) = cached_ground_truth(dir, &base, &queries, data.metric, tk)?;
    let mut ids = vec![-1i64; data.nq() * k];
    for q in 0..data.nq() {
        for j in 0..tk {
            let pos = gt.ids()[q * gt.k() + j] as usize;
            ids[q * k + j] = i64::from(tags[pos]);
        }
    }
    Ok(Truth { tags, ids, k })
}

/// Batch search of every query, [`BATCH_PASSES`] times (the fastest counts);
/// returns (tags, QPS).
fn search_all(
    index: &dyn VectorIndex,
    storage: &dyn VectorStorage,
    data: &RbData,
    k: usize,
    params: &omen_core::SearchParams,
    tag_of_slot: &[u32],
    search_pool: &rayon::ThreadPool,
) -> Result<(Vec<i64>, f64)> {
    let mut results: Vec<Vec<Neighbor>> = Vec::new();
    let mut best = f64::INFINITY;
    for _ in 0..BATCH_PASSES {
        let t = Instant::now();
        search_pool.install(|| {
            index.search_batch(storage, &data.queries, k, params, None, &mut results)
        })?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mut ids = vec![-1i64; data.nq() * k];
    for (q, r) in results.iter().enumerate() {
        for (j, nb) in r.iter().take(k).enumerate() {
            ids[q * k + j] = tag_of_slot
                .get(nb.slot as usize)
                .map_or(-1, |&t| i64::from(t));
        }
    }
    Ok((ids, data.nq() as f64 / best.max(1e-12)))
}

/// Sums step wall times per operation kind.
fn totals(steps: &[StepResult], nq: usize, train: Option<(usize, f64)>) -> Vec<OpTotal> {
    let mut out: Vec<OpTotal> = Vec::new();
    if let Some((rows, secs)) = train {
        out.push(OpTotal {
            op: "train".into(),
            steps: 1,
            rows,
            seconds: secs,
        });
    }
    for s in steps {
        let rows = if s.op == "search" { nq } else { s.rows };
        match out.iter_mut().find(|o| o.op == s.op) {
            Some(o) => {
                o.steps += 1;
                o.rows += rows;
                o.seconds += s.seconds;
            }
            None => out.push(OpTotal {
                op: s.op.clone(),
                steps: 1,
                rows,
                seconds: s.seconds,
            }),
        }
    }
    out
}

fn finish(sys: &mut RunbookSystem) {
    let searches: Vec<&StepResult> = sys.steps.iter().filter(|s| s.recall.is_some()).collect();
    let m = searches.len().max(1) as f64;
    sys.mean_recall = searches.iter().filter_map(|s| s.recall).sum::<f64>() / m;
    sys.mean_qps = searches.iter().filter_map(|s| s.qps).sum::<f64>() / m;
    sys.last_recall = searches.last().and_then(|s| s.recall).unwrap_or(f64::NAN);
    sys.stale = searches.iter().filter_map(|s| s.stale).sum();
}

/// Applies the runbook to one omen system in-process.
#[allow(clippy::too_many_arguments)]
fn run_native(
    sys: &OmenSystem,
    data: &RbData,
    rb: &Runbook,
    truths: &[Truth],
    final_truth: &Truth,
    cfg: &BenchConfig,
    threads: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<RunbookSystem> {
    let (n, dim, k) = (data.n(), data.dim, cfg.k);
    let [sp] = sys.sweep.as_slice() else {
        return Err(Error::invalid_param(
            "sweep",
            format!("{}: a runbook takes exactly one search point", sys.name),
        ));
    };
    let make = || -> Result<(Box<dyn VectorIndex>, Box<dyn VectorStorage>)> {
        let index = sys
            .index
            .kind()
            .create(dim, data.metric, sys.index.params())?;
        index.check_search_params(&sp.params)?;
        Ok((index, (sys.make_storage)(dim)?))
    };
    let build_pool = pool(threads)?;
    let batch_threads = cfg.batch_threads.unwrap_or(threads).max(1);
    let search_pool = pool(batch_threads)?;
    let (index, storage) = make()?;
    const NONE: u32 = u32::MAX;
    let mut slot_of_tag = vec![NONE; n];
    let mut tag_of_slot: Vec<u32> = Vec::new();
    let mut live = LiveSet::new(n);
    let mut steps = Vec::with_capacity(rb.steps.len());
    let mut train = None;
    let mut searched = 0;
    let train_size = sys.train_size.unwrap_or(0);
    for s in &rb.steps {
        progress(&format!("{}: step {} ({})", sys.name, s.number, s.op));
        let mut t = Instant::now();
        let mut out = StepResult {
            step: s.number,
            op: s.op.name().into(),
            rows: s.op.rows(),
            ..Default::default()
        };
        let add_rows = |tags: std::ops::Range<usize>,
                        rows: &[f32],
                        slot_of_tag: &mut Vec<u32>,
                        tag_of_slot: &mut Vec<u32>|
         -> Result<()> {
            let slots = storage.append_batch(rows)?;
            build_pool.install(|| index.add(storage.as_ref(), slots.clone()))?;
            for (tag, slot) in tags.zip(slots) {
                slot_of_tag[tag] = slot;
                tag_of_slot.resize(tag_of_slot.len().max(slot as usize + 1), NONE);
                tag_of_slot[slot as usize] = tag as u32;
            }
            Ok(())
        };
        let remove = |tags: std::ops::Range<usize>,
                      slot_of_tag: &mut Vec<u32>,
                      tag_of_slot: &mut Vec<u32>|
         -> Result<()> {
            for tag in tags {
                let slot = slot_of_tag[tag];
                index.remove(slot)?;
                slot_of_tag[tag] = NONE;
                tag_of_slot[slot as usize] = NONE;
            }
            Ok(())
        };
        match s.op {
            Op::Insert { start, end } => {
                if train.is_none() && train_size > 0 && !index.is_trained() {
                    // Trained once, on what the runbook has inserted by then:
                    // a seeded sample of the first insert's rows.
                    let rows = (end - start).min(train_size);
                    let sample = sample_rows(data.rows(start, end), dim, rows, TRAIN_SAMPLE_SEED);
                    let tt = Instant::now();
                    build_pool.install(|| index.train(storage.as_ref(), &sample))?;
                    train = Some((rows, tt.elapsed().as_secs_f64()));
                    t = Instant::now();
                }
                add_rows(
                    start..end,
                    data.rows(start, end),
                    &mut slot_of_tag,
                    &mut tag_of_slot,
                )?;
            }
            Op::Delete { start, end } => remove(start..end, &mut slot_of_tag, &mut tag_of_slot)?,
            Op::Replace {
                tags_start,
                tags_end,
                ids_start,
                ids_end,
            } => {
                remove(tags_start..tags_end, &mut slot_of_tag, &mut tag_of_slot)?;
                add_rows(
                    tags_start..tags_end,
                    data.rows(ids_start, ids_end),
                    &mut slot_of_tag,
                    &mut tag_of_slot,
                )?;
            }
            Op::Search => {
                let (ids, qps) = search_all(
                    index.as_ref(),
                    storage.as_ref(),
                    data,
                    k,
                    &sp.params,
                    &tag_of_slot,
                    &search_pool,
                )?;
                let (recall, stale) = truths[searched].score(&ids, k, n);
                searched += 1;
                out.recall = Some(recall);
                out.qps = Some(qps);
                out.stale = Some(stale);
            }
        }
        out.seconds = t.elapsed().as_secs_f64();
        live.apply(&s.op);
        out.live = live.len();
        steps.push(out);
    }
    let memory = (index.memory_bytes() + storage.memory_bytes()) as u64;
    let rss = crate::env::rss_bytes();
    drop(index);
    drop(storage);

    // A fresh build of the final live rows, in tag order.
    progress(&format!(
        "{}: fresh build of the {} final rows",
        sys.name,
        final_truth.tags.len()
    ));
    let (index, storage) = make()?;
    let mut rows = Vec::with_capacity(final_truth.tags.len() * dim);
    for &t in &final_truth.tags {
        let r = live.row(t as usize).unwrap_or(t as usize);
        rows.extend_from_slice(data.rows(r, r + 1));
    }
    let t = Instant::now();
    if train_size > 0 && !index.is_trained() && !final_truth.tags.is_empty() {
        let sample = sample_rows(
            &rows,
            dim,
            final_truth.tags.len().min(train_size),
            TRAIN_SAMPLE_SEED,
        );
        build_pool.install(|| index.train(storage.as_ref(), &sample))?;
    }
    let slots = storage.append_batch(&rows)?;
    build_pool.install(|| index.add(storage.as_ref(), slots))?;
    let build_seconds = t.elapsed().as_secs_f64();
    let (ids, qps) = search_all(
        index.as_ref(),
        storage.as_ref(),
        data,
        k,
        &sp.params,
        &final_truth.tags,
        &search_pool,
    )?;
    let (recall, _) = final_truth.score(&ids, k, n);

    let mut r = RunbookSystem {
        name: sys.name.clone(),
        family: "omen".into(),
        path: "native".into(),
        index: sys.index.name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        build_params: sys.build_params.clone(),
        search_params: sp.json.clone(),
        threads,
        batch_threads,
        how: format!(
            "in-process: insert appends the rows to the {} storage and adds their slots to the index ({threads} thread(s)); delete: VectorIndex::remove per tag (the storage keeps the row); replace: remove, then append and add; search: VectorIndex::search_batch on {batch_threads} thread(s), fastest of {BATCH_PASSES} passes",
            sys.storage
        ),
        ops: totals(&steps, data.nq(), train),
        steps,
        memory_bytes: Some(memory),
        memory_method: "index memory_bytes() + storage memory_bytes() after the last step (removed rows stay in the append-only storage)".into(),
        rss_bytes: rss,
        fresh: Some(FreshBuild {
            rows: final_truth.tags.len(),
            build_seconds,
            recall,
            qps,
        }),
        ..Default::default()
    };
    finish(&mut r);
    Ok(r)
}

/// The harness's checked runbook as the adapter takes it (`--runbook`).
fn adapter_runbook(rb: &Runbook, replay: &Replay) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = rb
        .steps
        .iter()
        .map(|s| match s.op {
            Op::Insert { start, end } => {
                serde_json::json!({"step": s.number, "op": "insert", "start": start, "end": end})
            }
            Op::Delete { start, end } => {
                serde_json::json!({"step": s.number, "op": "delete", "start": start, "end": end})
            }
            Op::Replace {
                tags_start,
                tags_end,
                ids_start,
                ids_end,
            } => serde_json::json!({"step": s.number, "op": "replace", "tags_start": tags_start,
                "tags_end": tags_end, "ids_start": ids_start, "ids_end": ids_end}),
            Op::Search => serde_json::json!({"step": s.number, "op": "search"}),
        })
        .collect();
    serde_json::json!({"steps": steps, "max_tags": replay.distinct_tags, "fresh": true})
}

fn peer_system(
    r: &peers::PeerRunbookResult,
    rb: &Runbook,
    truths: &[Truth],
    final_truth: &Truth,
    k: usize,
    n: usize,
) -> RunbookSystem {
    let mut live = LiveSet::new(n);
    let mut searched = 0;
    let mut steps = Vec::with_capacity(r.steps.len());
    for (ps, s) in r.steps.iter().zip(&rb.steps) {
        live.apply(&s.op);
        let mut out = StepResult {
            step: s.number,
            op: s.op.name().into(),
            rows: s.op.rows(),
            live: live.len(),
            seconds: ps.seconds,
            qps: ps.qps,
            ..Default::default()
        };
        if let Some(m) = &ps.ids {
            let (recall, stale) = truths[searched].score(&m.ids, k, n);
            searched += 1;
            out.recall = Some(recall);
            out.stale = Some(stale);
        }
        steps.push(out);
    }
    let mem = |key: &str| r.memory.get(key).and_then(serde_json::Value::as_u64);
    let fresh = r.fresh.as_ref().and_then(|f| {
        let m = f.ids.as_ref()?;
        Some(FreshBuild {
            rows: f.rows,
            build_seconds: f.train_seconds + f.build_seconds,
            recall: final_truth.score(&m.ids, k, n).0,
            qps: f.qps,
        })
    });
    let name = if r.system.is_omen() {
        r.system.name().to_string()
    } else {
        let p = r
            .build_params
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        format!("{}({p})", r.system.name())
    };
    let mut sys = RunbookSystem {
        name,
        family: if r.system.is_omen() { "omen" } else { "peer" }.into(),
        path: "python".into(),
        index: r.index.clone(),
        version: format!("{} {}", r.library, r.version),
        build_params: r.build_params.clone(),
        search_params: r.search_params.clone(),
        threads: r.threads,
        batch_threads: r.batch_threads,
        how: format!("{} (Python adapter; search: the library's batch call on {} thread(s), fastest of the adapter's passes)", r.how, r.batch_threads),
        ops: totals(
            &steps,
            truths.first().map_or(0, |t| t.ids.len() / t.k.max(1)),
            (r.train_vectors > 0).then_some((r.train_vectors as usize, r.train_seconds)),
        ),
        steps,
        memory_bytes: mem("index_bytes"),
        memory_method: r
            .memory
            .get("index_bytes_method")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        rss_bytes: mem("rss_bytes"),
        fresh,
        ..Default::default()
    };
    finish(&mut sys);
    sys
}

fn row_order_words(rb: &Runbook) -> Option<String> {
    rb.row_order.map(|o| format!(
        "rows grouped by their nearest of {} k-means++ centroids (10 Lloyd iterations on a seeded sample of up to 100,000 rows, seed {}), each group in dataset order",
        o.clusters, o.seed
    ))
}

/// Runs `rb_path` over `cfg`'s dataset, omen indexes and peers; writes the
/// report to `<reports>/<cfg.name>/` and returns it with the path of its
/// `report.md`.
pub fn run(
    cfg: &BenchConfig,
    rb_path: &Path,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(RunbookReport, PathBuf)> {
    let short = cfg.dataset.trim_end_matches("-angular");
    let rb = crate::runbook::load(rb_path, short)
        .or_else(|_| crate::runbook::load(rb_path, &cfg.dataset))?;
    for entry in &cfg.indexes {
        if entry.points()?.len() != 1 {
            return Err(Error::invalid_param(
                "sweep",
                format!(
                    "{}: a runbook suite takes exactly one search point per index",
                    entry.system_name()
                ),
            ));
        }
    }
    for p in &cfg.peers {
        if p.sweep.len() > 1 {
            return Err(Error::invalid_param(
                "sweep",
                format!(
                    "{}: a runbook suite takes exactly one search point per peer",
                    p.system
                ),
            ));
        }
    }
    let (bench, skip_adapter) = prepare(cfg, opts, progress)?;
    let n = bench.n();
    let replay = rb.check(n)?;
    let mut data = RbData {
        info: bench.info.clone(),
        metric: bench.metric,
        dim: bench.dim,
        base: bench.base,
        queries: bench.queries,
    };
    if let Some(o) = &rb.row_order {
        progress(&format!("row order: k-means with {} centroids", o.clusters));
        let order = cluster_order(&data.base, data.dim, o)?;
        let mut permuted = Vec::with_capacity(data.base.len());
        for &r in &order {
            permuted.extend_from_slice(data.rows(r as usize, r as usize + 1));
        }
        data.base = permuted;
    }
    let k = cfg.k;
    // Exact ground truth of every search step's live tags, and of the final ones.
    let cache = opts.data_dir.join("runbook-gt").join(format!(
        "{}-{}",
        data.info.name,
        &rb.checksum[..rb.checksum.len().min(16)]
    ));
    let mut truths = Vec::with_capacity(replay.searches);
    let mut live = LiveSet::new(n);
    for s in &rb.steps {
        live.apply(&s.op);
        if s.op == Op::Search {
            progress(&format!(
                "ground truth of step {} ({} live tags)",
                s.number,
                live.len()
            ));
            truths.push(truth_of(
                &data,
                &live,
                k,
                &cache.join(format!("step-{}", s.number)),
            )?);
        }
    }
    let final_truth = if rb.steps.last().map(|s| s.op) == Some(Op::Search) {
        let t = truths
            .last()
            .ok_or_else(|| Error::invalid_param("runbook", "no search"))?;
        Truth {
            tags: t.tags.clone(),
            ids: t.ids.clone(),
            k: t.k,
        }
    } else {
        truth_of(&data, &live, k, &cache.join("final"))?
    };

    let mut report = RunbookReport {
        run: cfg.name.clone(),
        reproduce: opts.reproduce.clone(),
        env: crate::env::Environment::capture(),
        dataset: DatasetInfo {
            nq: data.nq(),
            ..data.info.clone()
        },
        runbook: RunbookInfo {
            file: rb_path.display().to_string(),
            entry: rb.entry.clone(),
            checksum: rb.checksum.clone(),
            steps: rb.steps.len(),
            searches: replay.searches,
            max_pts: rb.max_pts,
            distinct_tags: replay.distinct_tags,
            max_live: replay.max_live,
            final_live: replay.final_live,
            row_order: row_order_words(&rb),
        },
        k,
        ..Default::default()
    };
    let scratch =
        opts.reports_dir
            .join(format!(".omen-scratch-{}-{}", cfg.name, std::process::id()));
    let _scratch_guard = RemoveOnDrop(scratch.clone());
    let threads = cfg.threads.first().copied().unwrap_or(1);
    for storage in cfg.storage_kinds()? {
        for sys in omen_systems(cfg, storage, &scratch)? {
            let r = run_native(
                &sys,
                &data,
                &rb,
                &truths,
                &final_truth,
                cfg,
                threads,
                progress,
            )?;
            progress(&format!(
                "{}: mean recall@{k} {:.4}, mean QPS {:.0}",
                r.name, r.mean_recall, r.mean_qps
            ));
            report.systems.push(r);
        }
    }
    let specs = adapter_specs(cfg);
    if !specs.is_empty() && (skip_adapter || !opts.peers) {
        // Named in the report, not only in the progress log.
        let reason = if opts.peers {
            format!(
                "no peer environment at {} (run `bash scripts/setup-peers.sh`)",
                opts.venv.display()
            )
        } else {
            "not run (--no-peers)".to_string()
        };
        for spec in &specs {
            report.skipped.push(Skipped {
                name: spec.system.clone(),
                reason: reason.clone(),
            });
        }
    }
    if opts.peers && !skip_adapter && !specs.is_empty() {
        let work =
            std::env::temp_dir().join(format!("omen-runbook-{}-{}", cfg.name, std::process::id()));
        let _work_guard = RemoveOnDrop(work.clone());
        std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        let base = work.join("base.fbin");
        let queries = work.join("queries.fbin");
        omen_datasets::write_fbin(&base, &Vectors::new(data.dim, data.base.clone())?)?;
        omen_datasets::write_fbin(&queries, &Vectors::new(data.dim, data.queries.clone())?)?;
        let book = work.join("runbook.json");
        std::fs::write(&book, adapter_runbook(&rb, &replay).to_string())
            .map_err(|e| Error::io(&book, e))?;
        let metric = match data.metric {
            Metric::L2 => PeerMetric::L2,
            _ => PeerMetric::Ip,
        };
        for spec in &specs {
            let system = PeerSystem::from_name(&spec.system).ok_or_else(|| {
                Error::invalid_param("peers", format!("unknown peer system {:?}", spec.system))
            })?;
            progress(&format!(
                "{}: runbook through the Python adapter",
                spec.system
            ));
            let mut req = PeerRun::new(system, &base, &queries, metric, k, work.join(&spec.system));
            req.venv = opts.venv.clone();
            req.threads = threads;
            req.batch_threads = cfg.batch_threads;
            let mut build = spec.build.clone();
            if let Some(ts) = build.remove("train_size").and_then(|v| v.as_u64()) {
                req.train_size = ts as usize;
            }
            req.build_params = serde_json::Value::Object(build);
            req.sweep = vec![spec
                .sweep
                .first()
                .cloned()
                .map_or(serde_json::json!({}), serde_json::Value::Object)];
            req.runbook = Some(book.clone());
            match peers::run_peer_runbook(&req) {
                Ok(r) => {
                    let s = peer_system(&r, &rb, &truths, &final_truth, k, n);
                    progress(&format!(
                        "{}: mean recall@{k} {:.4}, mean QPS {:.0}",
                        s.name, s.mean_recall, s.mean_qps
                    ));
                    report.systems.push(s);
                }
                Err(peers::PeerError::Unsupported(reason)) => {
                    progress(&format!("{} skipped: {reason}", spec.system));
                    report.skipped.push(Skipped {
                        name: spec.system.clone(),
                        reason,
                    });
                }
                Err(e) => {
                    return Err(Error::invalid_param(
                        "peers",
                        format!("{}: {e}", spec.system),
                    ))
                }
            }
        }
    }
    let md = write(&report, &opts.reports_dir.join(&cfg.name))?;
    Ok((report, md))
}

fn rate(o: Option<&OpTotal>) -> String {
    o.filter(|o| o.seconds > 0.0).map_or("—".into(), |o| {
        format!("{:.0}", o.rows as f64 / o.seconds)
    })
}

/// The Markdown report.
pub fn markdown(r: &RunbookReport) -> String {
    let mut m = String::new();
    let rb = &r.runbook;
    let _ = writeln!(m, "# Runbook {} on {}\n", rb.file, r.dataset.name);
    let _ = writeln!(m, "Reproduce: `{}`\n", r.reproduce);
    let _ = writeln!(
        m,
        "Dataset {}: {} rows × {} dims, {}, {} queries. Runbook entry `{}` (checksum {}): {} steps, {} searches, max_pts {}, {} distinct tags, at most {} live, {} live at the end.{}\n",
        r.dataset.name,
        r.dataset.n,
        r.dataset.dim,
        r.dataset.metric,
        r.dataset.nq,
        rb.entry,
        &rb.checksum[..rb.checksum.len().min(16)],
        rb.steps,
        rb.searches,
        rb.max_pts.map_or("—".into(), |m| m.to_string()),
        rb.distinct_tags,
        rb.max_live,
        rb.final_live,
        rb.row_order.as_ref().map_or(String::new(), |o| format!(" Row order: {o}."))
    );
    let _ = writeln!(
        m,
        "Machine: {} ({} logical CPUs), omen kernels {}; git {}; started {}.\n",
        r.env.cpu_model, r.env.logical_cpus, r.env.simd_isa, r.env.git_commit, r.env.started_utc
    );
    let _ = writeln!(m, "**What is measured.** At every `search` step each system answers all {} queries in one batch call (k = {}); recall@{} by id is against the exact top-{} of the tags live at that step (the flat kernels over those rows, computed by the harness); an id that is not live counts as a miss and is counted under *stale*. QPS is the fastest of the batch passes. Insert, delete and replace are timed per step, one call each (rows/s below); training is timed apart, on a seeded sample of the first insert's rows (what the system has seen by then). *Mean recall* is the mean over the search steps (the NeurIPS'23 streaming track's ranking figure). *Fresh* is the same index kind and parameters built from scratch on the final live rows and searched once: *mean − fresh* is what the churn costs. `native` runs omen in-process; `python` runs through the peers' adapter (the same Python loop and clock for omen's package and the peers), so compare QPS only within a path.\n", r.dataset.nq, r.k, r.k, r.k);
    let _ = writeln!(m, "## Summary\n");
    let _ = writeln!(m, "| system | path | mean recall@{k} | last-step recall | fresh-build recall | mean − fresh | mean QPS | train s | insert rows/s | delete rows/s | replace rows/s | search s | stale ids | memory after last step | RSS after |", k = r.k);
    let _ = writeln!(
        m,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &r.systems {
        let op = |name: &str| s.ops.iter().find(|o| o.op == name);
        let mib =
            |b: Option<u64>| b.map_or("—".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let _ = writeln!(
            m,
            "| {} | {} | {:.4} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            s.path,
            s.mean_recall,
            fmt_opt(Some(s.last_recall), 4),
            fmt_opt(s.fresh.as_ref().map(|f| f.recall), 4),
            s.fresh.as_ref().map_or("—".into(), |f| format!(
                "{:+.4}",
                s.mean_recall - f.recall
            )),
            s.mean_qps,
            op("train").map_or("—".into(), |o| format!("{:.2}", o.seconds)),
            rate(op("insert")),
            rate(op("delete")),
            rate(op("replace")),
            op("search").map_or("—".into(), |o| format!("{:.2}", o.seconds)),
            s.stale,
            mib(s.memory_bytes),
            mib(s.rss_bytes),
        );
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(m, "\n**Skipped** (with the reason):\n");
        for s in &r.skipped {
            let _ = writeln!(m, "- {}: {}", s.name, s.reason);
        }
    }
    let _ = writeln!(m, "\n## Recall@{} per search step\n", r.k);
    let _ = writeln!(
        m,
        "![recall per step](recall-per-step.svg)\n\n![QPS per step](qps-per-step.svg)\n"
    );
    let _ = write!(m, "| step | live |");
    for s in &r.systems {
        let _ = write!(m, " {} [{}] |", s.name, s.path);
    }
    let _ = write!(m, "\n|---:|---:|");
    for _ in &r.systems {
        let _ = write!(m, "---:|");
    }
    m.push('\n');
    if let Some(first) = r.systems.first() {
        for (i, st) in first.steps.iter().enumerate() {
            if st.recall.is_none() {
                continue;
            }
            let _ = write!(m, "| {} | {} |", st.step, st.live);
            for s in &r.systems {
                let x = s.steps.get(i);
                let _ = write!(
                    m,
                    " {} / {} |",
                    fmt_opt(x.and_then(|x| x.recall), 4),
                    x.and_then(|x| x.qps)
                        .map_or("—".into(), |q| format!("{q:.0} QPS"))
                );
            }
            m.push('\n');
        }
    }
    let _ = writeln!(m, "\n## Wall time per operation\n");
    let _ = writeln!(
        m,
        "| system | path | op | steps | rows | seconds | rows/s |"
    );
    let _ = writeln!(m, "|---|---|---|---:|---:|---:|---:|");
    for s in &r.systems {
        for o in &s.ops {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {:.3} | {} |",
                s.name,
                s.path,
                o.op,
                o.steps,
                o.rows,
                o.seconds,
                rate(Some(o))
            );
        }
    }
    let _ = writeln!(m, "\n## Systems\n");
    for s in &r.systems {
        let _ = writeln!(
            m,
            "- **{}** [{}]: {} ({}); build {}; search {}; {} insert thread(s), {} search thread(s). {} Memory: {}.{}",
            s.name,
            s.path,
            s.index,
            s.version,
            s.build_params,
            s.search_params,
            s.threads,
            s.batch_threads,
            s.how,
            s.memory_method,
            s.fresh.as_ref().map_or(String::new(), |f| format!(
                " Fresh build: {} rows in {:.2} s, {:.0} QPS.",
                f.rows, f.build_seconds, f.qps
            ))
        );
    }
    m
}

/// Writes `results.json`, `report.md` and the two plots into `dir`; returns
/// the path of `report.md`.
pub fn write(r: &RunbookReport, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| Error::invalid_param("report", e.to_string()))?;
    let p = dir.join("results.json");
    std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
    // Native runs solid, runs through the Python adapter dashed: the palette
    // repeats after ten systems.
    let series = |f: &dyn Fn(&StepResult) -> Option<f64>| -> Vec<crate::plot::Series> {
        r.systems
            .iter()
            .map(|s| {
                (
                    format!("{} [{}]", s.name, s.path),
                    s.steps
                        .iter()
                        .filter_map(|st| f(st).map(|y| (st.step as f64, y)))
                        .collect(),
                    s.path == "python",
                )
            })
            .collect()
    };
    let plot_err = |name: &str, e: Box<dyn std::error::Error>| {
        Error::io(dir.join(name), std::io::Error::other(e.to_string()))
    };
    let title = format!("{}: {}", r.dataset.name, r.runbook.file);
    crate::plot::lines(
        &format!("{title}: recall@{} per search step", r.k),
        "runbook step",
        &format!("recall@{} (by id)", r.k),
        &series(&|s| s.recall),
        false,
        &dir.join("recall-per-step.svg"),
    )
    .map_err(|e| plot_err("recall-per-step.svg", e))?;
    crate::plot::lines(
        &format!("{title}: batch QPS per search step"),
        "runbook step",
        "queries per second (log)",
        &series(&|s| s.qps),
        true,
        &dir.join("qps-per-step.svg"),
    )
    .map_err(|e| plot_err("qps-per-step.svg", e))?;
    let p = dir.join("report.md");
    std::fs::write(&p, markdown(r)).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_counts_hits_misses_and_stale_ids() {
        // Live tags 1, 3, 5; two queries, k = 2.
        let t = Truth {
            tags: vec![1, 3, 5],
            ids: vec![3, 1, 5, 3],
            k: 2,
        };
        // q0: both right; q1: one right, one deleted tag (2).
        let (recall, stale) = t.score(&[1, 3, 2, 5], 2, 10);
        assert_eq!(stale, 1);
        assert!((recall - 0.75).abs() < 1e-12);
        // A duplicate counts once; -1 is a miss, not stale.
        let (recall, stale) = t.score(&[3, 3, -1, -1], 2, 10);
        assert_eq!(stale, 0);
        assert!((recall - 0.25).abs() < 1e-12);
        // Fewer live tags than k: the denominator is the live count.
        let t = Truth {
            tags: vec![4],
            ids: vec![4, -1],
            k: 2,
        };
        assert_eq!(t.score(&[4, -1], 2, 10), (1.0, 0));
    }
}
