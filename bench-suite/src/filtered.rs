//! Filtered search with a defined selectivity (issue 15): the suite runs once per
//! selectivity, every search of every system restricted to the same seeded subset
//! of the base ([`RowFilter::seeded`]), recall against exact ground truth over that
//! subset (the flat kernels over the allowed rows, computed here), and whether each
//! system returned k results whenever k rows pass ([`SearchPoint::short_queries`]).
//! Each selectivity is a full report under `<reports>/<name>/sel-<pct>/`; the
//! overview `<reports>/<name>/report.md` and `results.json` put them side by side,
//! with the path omen's HNSW took (a flat scan of the matching rows, or the graph
//! walk) read off its distance counts.
//!
//! [`SearchPoint::short_queries`]: crate::model::SearchPoint::short_queries

use crate::bench::{
    adapter_specs, budget, omen_systems, prepare, run_peers, BenchOptions, RemoveOnDrop, TRUTH_K,
};
use crate::config::BenchConfig;
use crate::model::{FilterInfo, Report, RunResult, SystemSummary, RECALL_TARGETS};
use crate::recall::RecallKind;
use crate::runner::{run_omen, BenchData, RowFilter};
use omen_core::{Error, Result};
use omen_datasets::{compute_ground_truth, Vectors};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One selectivity's line of the overview, per system.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FilteredSystem {
    /// The system (as in the selectivity's report).
    pub name: String,
    /// `native` or `python`.
    pub path: String,
    /// QPS at recall 0.90 / 0.95 / 0.99 and the rank there (the selectivity
    /// report's summary line).
    pub summary: SystemSummary,
    /// Queries short of min(k, allowed) results, at the operating point of best
    /// recall (the most any point had, in brackets in the table).
    pub short_queries_at_best: Option<u64>,
    /// The most short queries at any operating point.
    pub short_queries_max: Option<u64>,
    /// For omen's native runs: which path the operating points took, read off
    /// the mean distance computations per query (a scan of the matching rows
    /// computes exactly one per allowed row).
    pub omen_path: Option<String>,
}

/// One selectivity of the overview.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FilteredLevel {
    /// The filter.
    pub filter: FilterInfo,
    /// Its report directory, relative to the overview.
    pub dir: String,
    /// Every system measured.
    pub systems: Vec<FilteredSystem>,
    /// Systems skipped at this selectivity, with the reason.
    pub skipped: Vec<crate::model::Skipped>,
}

/// The overview of a filtered suite (`results.json` beside the per-selectivity
/// directories).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FilteredOverview {
    /// Run name.
    pub run: String,
    /// The command that reproduces it.
    pub reproduce: String,
    /// Neighbours per query.
    pub k: usize,
    /// The dataset (unfiltered).
    pub dataset: crate::model::DatasetInfo,
    /// One entry per selectivity, in the config's order.
    pub levels: Vec<FilteredLevel>,
}

/// The directory name of a selectivity: `sel-50`, `sel-1`, `sel-0.1` (percent).
pub fn level_dir(selectivity: f64) -> String {
    let pct = selectivity * 100.0;
    let text = format!("{pct:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("sel-{text}")
}

/// Exact top-`min(TRUTH_K, allowed)` neighbours of every query among the rows
/// `f` allows, as row numbers of the whole base.
fn filtered_truth(data: &BenchData, f: &RowFilter) -> Result<(Vec<i64>, Vec<f32>, usize)> {
    let dim = data.dim;
    let rows: Vec<usize> = (0..data.n()).filter(|&r| f.allowed[r]).collect();
    let mut sub = Vec::with_capacity(rows.len() * dim);
    for &r in &rows {
        sub.extend_from_slice(&data.base[r * dim..(r + 1) * dim]);
    }
    let tk = TRUTH_K.min(rows.len());
    let base = Vectors::new(dim, sub)?;
    let queries = Vectors::new(dim, data.queries.clone())?;
    let gt = compute_ground_truth(&base, &queries, data.metric, tk)?;
    let ids = gt.ids().iter().map(|&i| rows[i as usize] as i64).collect();
    Ok((ids, gt.distances().to_vec(), tk))
}

/// For a native omen run: which path its operating points took, read off the
/// mean distance computations per query: a scan of the matching rows computes
/// exactly one per allowed row ("exact scan"); a scan of every row (the filter
/// checked per row, as the flat index does when the filter is not selective)
/// one per row of the base ("full scan"); anything else is the index's own walk
/// (HNSW's graph, IVF-PQ's lists, with the flat fallback for short queries).
fn omen_path(run: &RunResult, allowed: u64, n: u64) -> Option<String> {
    if run.path != "native" {
        return None;
    }
    let (mut exact, mut full, mut walk) = (Vec::new(), Vec::new(), Vec::new());
    for p in &run.points {
        let Some(dc) = p.distance_computations_per_query else {
            continue;
        };
        if (dc - allowed as f64).abs() < 0.5 {
            exact.push(p.label.clone());
        } else if (dc - n as f64).abs() < 0.5 {
            full.push(p.label.clone());
        } else {
            walk.push((p.label.clone(), dc));
        }
    }
    let range = |v: &[(String, f64)]| {
        let lo = v.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        let hi = v.iter().map(|x| x.1).fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0} distances/query")
    };
    let mut parts = Vec::new();
    let all = |v: &[String]| v.len() == run.points.len();
    if !exact.is_empty() {
        parts.push(if all(&exact) {
            format!("exact scan of the {allowed} matching rows at every point")
        } else {
            format!("exact scan of the matching rows at {}", exact.join(", "))
        });
    }
    if !full.is_empty() {
        parts.push(if all(&full) {
            format!("full scan of all {n} rows, the filter checked per row, at every point")
        } else {
            format!("full scan of all {n} rows at {}", full.join(", "))
        });
    }
    if !walk.is_empty() {
        parts.push(if walk.len() == run.points.len() {
            format!("index walk at every point ({})", range(&walk))
        } else {
            format!(
                "index walk at {} ({})",
                walk.iter()
                    .map(|x| x.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                range(&walk)
            )
        });
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

/// Runs a filtered suite (`cfg.filter_selectivities` non-empty) and writes its
/// reports; returns the overview and the path of its `report.md`.
pub fn run(
    cfg: &BenchConfig,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(FilteredOverview, PathBuf)> {
    if cfg.filter_selectivities.is_empty() {
        return Err(Error::invalid_param(
            "filter_selectivities",
            "empty: this suite is not filtered (run it with `omen bench` as usual)",
        ));
    }
    let (data, skip_adapter) = prepare(cfg, opts, progress)?;
    let root = opts.reports_dir.join(&cfg.name);
    let work = std::env::temp_dir().join(format!("omen-bench-{}-{}", cfg.name, std::process::id()));
    let _work_guard = RemoveOnDrop(work.clone());
    let scratch =
        opts.reports_dir
            .join(format!(".omen-scratch-{}-{}", cfg.name, std::process::id()));
    let _scratch_guard = RemoveOnDrop(scratch.clone());
    let mut overview = FilteredOverview {
        run: cfg.name.clone(),
        reproduce: opts.reproduce.clone(),
        k: cfg.k,
        dataset: data.info.clone(),
        levels: Vec::new(),
    };
    let n = data.n();
    for &sel in &cfg.filter_selectivities {
        let f = RowFilter::seeded(n, sel, cfg.filter_seed);
        progress(&format!(
            "selectivity {sel}: exact ground truth over the {} allowed rows",
            f.count
        ));
        let (truth_ids, truth_distances, truth_k) = filtered_truth(&data, &f)?;
        let info = FilterInfo {
            selectivity: sel,
            allowed: f.count as u64,
            n: n as u64,
            rule: format!(
                "row r passes when its rank in a seeded permutation of the {n} rows (SplitMix64 Fisher-Yates, seed {}) is below {}",
                cfg.filter_seed, f.count
            ),
        };
        let mask: Vec<u8> = f.allowed.iter().map(|&a| u8::from(a)).collect();
        let fdata = BenchData {
            truth_ids,
            truth_distances,
            truth_k,
            filter: Some(f),
            ..data.clone()
        };
        let dir = level_dir(sel);
        let mut report = Report {
            run: format!("{}/{dir}", cfg.name),
            reproduce: opts.reproduce.clone(),
            env: crate::env::Environment::capture(),
            dataset: fdata.info.clone(),
            k: cfg.k,
            filter: Some(info.clone()),
            ..Default::default()
        };
        for &threads in &cfg.threads {
            for storage in cfg.storage_kinds()? {
                for sys in omen_systems(cfg, storage, &scratch)? {
                    let mut r = run_omen(&sys, &fdata, &budget(cfg, threads), progress)?;
                    if cfg.threads.len() > 1 {
                        r.name = format!("{} [{threads}t]", r.name);
                    }
                    report.runs.push(r);
                }
            }
        }
        let specs = adapter_specs(cfg);
        if opts.peers && !skip_adapter && !specs.is_empty() {
            std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
            let mask_path = work.join("filter.u8");
            std::fs::write(&mask_path, &mask).map_err(|e| Error::io(&mask_path, e))?;
            for &threads in &cfg.threads {
                let (mut rs, skipped) = run_peers(
                    cfg,
                    &specs,
                    opts,
                    &fdata,
                    threads,
                    &work,
                    Some(&mask_path),
                    progress,
                )?;
                if cfg.threads.len() > 1 {
                    rs.iter_mut()
                        .for_each(|r| r.name = format!("{} [{threads}t]", r.name));
                }
                report.runs.extend(rs);
                report.skipped.extend(skipped);
            }
        }
        report.summarize();
        crate::report::write(&report, &root.join(&dir))?;
        overview.levels.push(level(&report, &info, dir));
    }
    let md = write_overview(&overview, &root)?;
    Ok((overview, md))
}

fn level(report: &Report, info: &FilterInfo, dir: String) -> FilteredLevel {
    let k = report.k;
    let systems = report
        .runs
        .iter()
        .zip(&report.summary)
        .map(|(r, s)| {
            let best = r.points.iter().max_by(|a, b| {
                let rec =
                    |p: &crate::model::SearchPoint| p.recall.at(RecallKind::ById, k).unwrap_or(0.0);
                rec(a).total_cmp(&rec(b))
            });
            FilteredSystem {
                name: r.name.clone(),
                path: r.path.clone(),
                summary: s.clone(),
                short_queries_at_best: best.and_then(|p| p.short_queries),
                short_queries_max: r.points.iter().filter_map(|p| p.short_queries).max(),
                omen_path: omen_path(r, info.allowed, info.n),
            }
        })
        .collect();
    FilteredLevel {
        filter: info.clone(),
        dir,
        systems,
        skipped: report.skipped.clone(),
    }
}

fn fmt_qps(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("—".into(), |x| format!("{x:.0}"))
}

/// Writes the overview's `results.json` and `report.md` into `dir`.
pub fn write_overview(o: &FilteredOverview, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(o)
        .map_err(|e| Error::invalid_param("report", e.to_string()))?;
    let p = dir.join("results.json");
    std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
    let k = o.k;
    let mut m = String::new();
    let _ = writeln!(m, "# Omen benchmark: {} (filtered search)\n", o.run);
    let _ = writeln!(
        m,
        "Dataset **{}**: {} base vectors, {} queries, dimension {}, metric `{}`; k = {k}.\n\nReproduce with:\n\n```sh\n{}\n```\n",
        o.dataset.name, o.dataset.n, o.dataset.nq, o.dataset.dim, o.dataset.metric, o.reproduce
    );
    let _ = writeln!(m, "Every search of every system is restricted to the same subset of the base: at selectivity s, exactly round(s × n) rows chosen by a seeded permutation. Recall@{k} is against exact ground truth over those rows (the flat kernels over the allowed rows, computed by the harness). **short** = queries answered with fewer than min({k}, allowed) results, at the point of best recall (the most at any point in brackets): it must be 0. Each selectivity has its full report (plots, ranking, every point) in its directory.\n");
    let _ = writeln!(
        m,
        "The suite hands omen its filter as a bitmap (`omen_core::SlotBitmap`), so a scan of the matching rows visits only them and the selectivity is counted, not sampled (a predicate filter is sampled at 256 nodes). Omen's HNSW scans the matching rows flat when fewer than {:.0} % are expected to match, or fewer than {} × ef (a walk would visit about ef / fraction nodes to collect ef matches); otherwise it walks the graph, routing through every node, and falls back to the flat scan when the walk finds fewer than k. **omen path** is read off the distance computations per query (a flat scan computes one per allowed row). Omen's IVF-PQ applies the filter inside the list scan, and re-ranks the matching rows exactly when fewer than {:.0} % are expected to match or the probed lists are expected to hold fewer than {} × the re-rank pool of them (or when its lists gave fewer than k).\n",
        omen_hnsw::FILTER_FLAT_FRACTION * 100.0,
        omen_hnsw::FILTER_FLAT_EF_FACTOR,
        omen_ivfpq::FILTER_FLAT_FRACTION * 100.0,
        omen_ivfpq::FILTER_FLAT_POOL_FACTOR
    );
    for l in &o.levels {
        let _ = writeln!(
            m,
            "## Selectivity {} % ({} of {} rows): [{}/report.md]({}/report.md)\n",
            l.filter.selectivity * 100.0,
            l.filter.allowed,
            l.filter.n,
            l.dir,
            l.dir
        );
        let _ = writeln!(
            m,
            "| system | path | QPS @0.90 | QPS @0.95 | QPS @0.99 | best recall@{k} | short | omen path |"
        );
        let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|---|");
        for s in &l.systems {
            let q: Vec<String> = RECALL_TARGETS
                .iter()
                .map(|&t| {
                    fmt_qps(
                        s.summary
                            .qps_at_recall
                            .get(&crate::model::recall_key(t))
                            .copied()
                            .flatten(),
                    )
                })
                .collect();
            let short = match (s.short_queries_at_best, s.short_queries_max) {
                (Some(a), Some(b)) => format!("{a} ({b})"),
                _ => "—".into(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                s.path,
                q[0],
                q[1],
                q[2],
                s.summary
                    .best_recall
                    .map_or("—".into(), |r| format!("{r:.4}")),
                short,
                s.omen_path.as_deref().unwrap_or("")
            );
        }
        for sk in &l.skipped {
            let _ = writeln!(m, "\n- skipped **{}**: {}", sk.name, sk.reason);
        }
        let _ = writeln!(m);
    }
    let p = dir.join("report.md");
    std::fs::write(&p, m).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_dirs_name_the_percentage() {
        assert_eq!(level_dir(0.5), "sel-50");
        assert_eq!(level_dir(0.01), "sel-1");
        assert_eq!(level_dir(0.001), "sel-0.1");
        assert_eq!(level_dir(1.0), "sel-100");
    }

    #[test]
    fn seeded_filters_keep_an_exact_count_reproducibly() {
        let a = RowFilter::seeded(10_000, 0.01, 7);
        assert_eq!(a.count, 100);
        assert_eq!(a.allowed.iter().filter(|&&x| x).count(), 100);
        let b = RowFilter::seeded(10_000, 0.01, 7);
        assert_eq!(a.allowed, b.allowed);
        let c = RowFilter::seeded(10_000, 0.01, 8);
        assert_ne!(a.allowed, c.allowed);
        // Never empty, never more than n.
        assert_eq!(RowFilter::seeded(100, 0.0001, 1).count, 1);
        assert_eq!(RowFilter::seeded(100, 1.0, 1).count, 100);
        // Short queries: fewer than min(k, allowed) results.
        let tiny = RowFilter::seeded(100, 0.05, 1);
        assert_eq!(tiny.short_queries(10, [5usize, 4, 10].into_iter()), 1);
    }

    #[test]
    fn filtered_truth_is_exact_over_the_allowed_rows() {
        let dim = 4;
        let n = 500;
        let base: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 37) % 101) as f32 / 7.0)
            .collect();
        let queries: Vec<f32> = base[..3 * dim].iter().map(|x| x + 0.25).collect();
        let f = RowFilter::seeded(n, 0.1, 3);
        let data = BenchData {
            info: Default::default(),
            metric: omen_core::Metric::L2,
            dim,
            base: base.clone(),
            queries: queries.clone(),
            truth_ids: vec![],
            truth_distances: vec![],
            truth_k: 0,
            filter: None,
        };
        let (ids, dist, tk) = filtered_truth(&data, &f).unwrap();
        assert_eq!(tk, 50);
        for q in 0..3 {
            let qv = &queries[q * dim..(q + 1) * dim];
            let mut brute: Vec<(f32, usize)> = (0..n)
                .filter(|&r| f.allowed[r])
                .map(|r| {
                    let d = base[r * dim..(r + 1) * dim]
                        .iter()
                        .zip(qv)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>();
                    (d, r)
                })
                .collect();
            brute.sort_by(|a, b| a.0.total_cmp(&b.0));
            for j in 0..tk {
                assert!(f.allowed[ids[q * tk + j] as usize]);
                assert!((dist[q * tk + j] - brute[j].0).abs() <= 1e-4 * brute[j].0.max(1.0));
            }
        }
    }
}
