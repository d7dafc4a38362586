//! Writes a run's report directory: `results.json` (every raw figure),
//! `results.csv` (one row per operating point), `report.md` (tables, environment,
//! reproduction) and SVG plots.

pub use crate::model::point_near_recall;
use crate::model::{QpsKind, Report, RunResult, RECALL_TARGETS};
use crate::recall::RecallKind;
use crate::runner::{SINGLE_PASSES, SINGLE_QUERIES};
use omen::StorageKind;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `v` with `prec` decimals, or an em dash for none or a non-finite value.
pub(crate) fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "—".to_string(),
    }
}

fn fmt_int(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// ann-benchmarks' ranking: per calling path, the systems ordered by one-thread
/// QPS at recall@k 0.95 (then 0.90, then best recall, for those that never reach
/// it), with the rank at each target, build time and total size.
fn ranking_tables(m: &mut String, report: &Report) {
    let summarized;
    let summary = if report.summary.len() == report.runs.len() {
        &report.summary
    } else {
        let mut r = report.clone();
        r.summarize();
        summarized = r.summary;
        &summarized
    };
    let k = report.k;
    let keys: Vec<String> = RECALL_TARGETS
        .iter()
        .map(|&t| crate::model::recall_key(t))
        .collect();
    let mut paths: Vec<&str> = summary.iter().map(|s| s.path.as_str()).collect();
    paths.dedup();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let mut rows: Vec<&crate::model::SystemSummary> =
            summary.iter().filter(|s| s.path == path).collect();
        if rows.len() < 2 {
            continue;
        }
        let q = |s: &crate::model::SystemSummary, key: &str| {
            s.qps_at_recall.get(key).copied().flatten()
        };
        rows.sort_by(|a, b| {
            let by = |key: &str| {
                q(b, key)
                    .unwrap_or(-1.0)
                    .total_cmp(&q(a, key).unwrap_or(-1.0))
            };
            by(&keys[1]).then_with(|| by(&keys[0])).then_with(|| {
                b.best_recall
                    .unwrap_or(0.0)
                    .total_cmp(&a.best_recall.unwrap_or(0.0))
            })
        });
        let _ = writeln!(
            m,
            "\n## Ranking, `{path}` path: QPS at recall@{k} (by id), one thread\n"
        );
        let _ = writeln!(m, "Ranked by QPS at 0.95 (rank at each target in brackets; — = never reached). Build = index train + index build, seconds; size = index + storage bytes, the full vectors included whichever side holds them.\n");
        let _ = writeln!(
            m,
            "| # | system | QPS @0.90 | QPS @0.95 | QPS @0.99 | best recall@{k} | build s | size MiB |"
        );
        let _ = writeln!(m, "|---:|---|---:|---:|---:|---:|---:|---:|");
        for s in rows {
            let cell =
                |key: &String| match (q(s, key), s.rank_at_recall.get(key).copied().flatten()) {
                    (Some(v), Some(r)) => format!("{} ({r})", fmt_int(v)),
                    _ => "—".into(),
                };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.rank_at_recall
                    .get(&keys[1])
                    .copied()
                    .flatten()
                    .map_or("—".into(), |r| r.to_string()),
                s.name,
                cell(&keys[0]),
                cell(&keys[1]),
                cell(&keys[2]),
                fmt_opt(s.best_recall, 4),
                fmt_opt(s.build_seconds, 1),
                fmt_opt(s.total_bytes.map(|b| b as f64 / (1u64 << 20) as f64), 1),
            );
        }
    }
}

/// The durability mode named in a durable-ingest phase's label
/// ("durable ingest (group-commit(256, 2ms)): ..." gives "group-commit(256, 2ms)").
fn durable_mode(what: &str) -> &str {
    what.strip_prefix("durable ingest (")
        .and_then(|r| r.split_once("):"))
        .map_or("?", |(mode, _)| mode)
}

/// `(system, threads, rate, 1-thread rate)` for every run built with more than
/// one thread whose system (the name without its `[Nt]` suffix) was also built
/// with one thread in this run.
fn build_scaling(report: &Report) -> Vec<(String, usize, f64, f64)> {
    let base_name = |r: &RunResult| {
        let n = r.name.as_str();
        n.strip_suffix(&format!(" [{}t]", r.build_threads))
            .unwrap_or(n)
            .to_string()
    };
    let rate = |r: &RunResult| r.build.index_build.as_ref().map(|p| p.vectors_per_sec);
    let mut out = Vec::new();
    for r in report.runs.iter().filter(|r| r.build_threads > 1) {
        let name = base_name(r);
        let one = report
            .runs
            .iter()
            .find(|o| o.build_threads == 1 && base_name(o) == name);
        if let (Some(rate), Some(base)) = (rate(r), one.and_then(rate)) {
            if base > 0.0 {
                out.push((name, r.build_threads, rate, base));
            }
        }
    }
    out
}

/// The ratio tables: omen over each peer at equal recall, single-query and
/// batch, pairing only runs driven the same way (path) and built with the same
/// thread count.
fn ratio_tables(m: &mut String, report: &Report) {
    let k = report.k;
    for (qps, title) in [
        (QpsKind::Single, "one query per call, one thread"),
        (QpsKind::Batch, "each system's own batch call"),
    ] {
        let mut rows = Vec::new();
        for o in report.runs.iter().filter(|r| r.family == "omen") {
            for p in report.runs.iter().filter(|p| {
                p.family == "peer" && p.path == o.path && p.build_threads == o.build_threads
            }) {
                let cells: Vec<String> = RECALL_TARGETS
                    .iter()
                    .map(|&t| {
                        match (
                            o.qps_at_of(RecallKind::ById, k, t, qps),
                            p.qps_at_of(RecallKind::ById, k, t, qps),
                        ) {
                            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                            _ => "—".into(),
                        }
                    })
                    .collect();
                let threads = o.points.first().map_or(0, |pt| pt.batch_threads);
                rows.push(format!(
                    "| {} | {} | {} | {} | {} | {} |",
                    o.path,
                    o.name,
                    p.name,
                    if qps == QpsKind::Batch {
                        format!("{} / {}", cells[0], threads)
                    } else {
                        cells[0].clone()
                    },
                    cells[1],
                    cells[2]
                ));
            }
        }
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            m,
            "\n## Ratios (omen / peer), QPS at equal recall@{k}: {title}\n"
        );
        if qps == QpsKind::Batch {
            let _ = writeln!(m, "The @0.90 column also gives the batch threads.\n");
        }
        let _ = writeln!(m, "| path | omen system | peer | @0.90 | @0.95 | @0.99 |");
        let _ = writeln!(m, "|---|---|---|---:|---:|---:|");
        for r in rows {
            let _ = writeln!(m, "{r}");
        }
    }
    let _ = writeln!(m, "\n## QPS at recall@{k} (by id), batch call\n");
    let _ = writeln!(
        m,
        "| system | path | batch threads | QPS @0.90 | QPS @0.95 | QPS @0.99 |"
    );
    let _ = writeln!(m, "|---|---|---:|---:|---:|---:|");
    for r in &report.runs {
        let q: Vec<String> = RECALL_TARGETS
            .iter()
            .map(|&t| {
                r.qps_at_of(RecallKind::ById, k, t, QpsKind::Batch)
                    .map_or("—".into(), fmt_int)
            })
            .collect();
        let threads = r.points.first().map_or(0, |p| p.batch_threads);
        let _ = writeln!(
            m,
            "| {} | {} | {threads} | {} | {} | {} |",
            r.name, r.path, q[0], q[1], q[2]
        );
    }
}

/// `omen db search` beside the native batch figure of the same index at the same
/// parameters.
fn cli_table(m: &mut String, report: &Report) {
    if report.cli.is_empty() {
        return;
    }
    let k = report.k;
    let _ = writeln!(m, "\n## The CLI: `omen db search`\n");
    let _ = writeln!(m, "Each index imported with `omen db import --wait-indexed` (durability none, every core, the index built behind the writes before the import's final checkpoint; then `omen db checkpoint`), then `omen db search --json --threads 1 --timing` over every query per operating point, in rounds (the fastest round counts). **search QPS** = queries / (batch calls + formatting and writing every result line), the collection's open excluded and reported apart; **process s** is the whole command as the harness timed it. **native batch** is the same index's in-process batch QPS at the same parameters and threads, from this run (its own build).\n");
    let _ = writeln!(m, "| system | params | recall@{k} | search QPS | open s | query load s | process s | native batch QPS | CLI / native |");
    let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for c in &report.cli {
        // The CLI's collections keep their rows in the default storage.
        let storage = StorageKind::default().name();
        let native = report.runs.iter().find(|r| {
            r.path == "native" && r.index == c.index && r.storage.as_deref() == Some(storage)
        });
        for p in &c.points {
            let nb = native
                .and_then(|r| {
                    r.points
                        .iter()
                        .find(|q| q.params == p.params && q.batch_threads == p.threads)
                })
                .and_then(|q| q.qps_batch);
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {} | {} |",
                c.name,
                p.label,
                fmt_opt(p.recall.at(RecallKind::ById, k), 4),
                fmt_int(p.qps),
                p.open_seconds,
                p.load_seconds,
                p.process_seconds,
                nb.map_or("—".into(), fmt_int),
                nb.map_or("—".into(), |n| format!("{:.0} %", 100.0 * p.qps / n)),
            );
        }
        notes.push(format!(
            "- {}: `omen db create DIR {}`; `omen db import --wait-indexed` (durable ingest, index build behind it, final checkpoint) {:.1} s, `omen db checkpoint` {:.1} s.",
            c.name,
            c.create_args.join(" "),
            c.import_seconds,
            c.checkpoint_seconds
        ));
    }
    let _ = writeln!(m);
    for n in notes {
        let _ = writeln!(m, "{n}");
    }
}

/// The Markdown report.
pub fn markdown(report: &Report) -> String {
    let k = report.k;
    let mut m = String::new();
    let d = &report.dataset;
    let _ = writeln!(m, "# Omen benchmark: {}\n", report.run);
    let _ = writeln!(
        m,
        "Dataset **{}**: {} base vectors, {} queries, dimension {}, metric `{}` (checksum `{}`); k = {k}.\n",
        d.name, fmt_int(d.n as f64), fmt_int(d.nq as f64), d.dim, d.metric, d.checksum
    );
    let _ = writeln!(m, "Reproduce with:\n\n```sh\n{}\n```\n", report.reproduce);
    let _ = writeln!(m, "## What each figure measures\n");
    let _ = writeln!(m, "- **path**: how a system was driven. `python`: one Python call per query from the adapter's loop, and the system's own batch call, both timed by the adapter's clock — every peer, and omen through its `omen` Python package (`omen.Index`), so the Python call overhead is charged to all alike. `native`: omen timed in-process in Rust (no Python); its figures are listed, never divided by a `python` figure. `cli`: `omen db search` as a process (its own section). **Ratios pair only runs of the same path.**");
    let _ = writeln!(m, "- **QPS (1 thread)**: one query at a time on one thread, the ann-benchmarks convention, over the first {} queries, in {} rounds of one pass over every operating point, each point's fastest pass counting (the same for every system; adapter runs first run 100 untimed queries).", SINGLE_QUERIES, SINGLE_PASSES);
    let _ = writeln!(
        m,
        "- **batch QPS**: all queries in one call with the stated threads, the fastest of 3 passes."
    );
    let _ = writeln!(m, "- **recall by id**: fraction of the true top-k ids returned. **recall by distance**: fraction of returned results whose distance (recomputed by the harness from the base vectors, never taken from the system) is within 1e-3 of the true k-th distance, so ties count (ann-benchmarks' rule).");
    let _ = writeln!(m, "- **QPS at recall r**: interpolated on each system's Pareto frontier of (recall@{k} by id, 1-thread QPS), geometrically in QPS between the two bracketing points; — means the system never reached r.");
    let _ = writeln!(m, "- Build phases are separate figures: **storage append** (vectors copied into the storage backend, no index), **index train** (k-means/codebooks), **index build** (adding every vector to the index), and **durable ingest** (the whole base inserted with `insert_batch` in batches of 1,000 into a new durable collection with the same index and storage: write-ahead log + storage + index build, each write acknowledged under the durability mode named in its column; it therefore includes an index build of its own). They are never summed into one number.");
    let _ = writeln!(
        m,
        "- **on-disk**: the durable collection's directory after a final checkpoint; {}.",
        crate::durability::DISK_SIZE_RULE
    );
    let _ = writeln!(m, "- **index bytes/vector**: for omen systems, the index's own structures only (graph links, codes, lists); the full vectors live in the storage backend and are not included. For peers, what the library's index holds as a whole, which for FAISS Flat/HNSW, `IndexRefineFlat` and hnswlib/USearch includes the full vectors (4 × dim bytes each). Compare like with like: add 4 × dim to omen's figure, or subtract it from the peer's.\n");

    let _ = writeln!(m, "## QPS at recall@{k} (by id), one thread\n");
    let _ = writeln!(
        m,
        "| system | path | QPS @0.90 | QPS @0.95 | QPS @0.99 | best recall@{k} |"
    );
    let _ = writeln!(m, "|---|---|---:|---:|---:|---:|");
    for r in &report.runs {
        let best = r
            .points
            .iter()
            .filter_map(|p| p.recall.at(RecallKind::ById, k))
            .fold(f64::NAN, f64::max);
        let q: Vec<String> = RECALL_TARGETS
            .iter()
            .map(|&t| r.qps_at(RecallKind::ById, k, t).map_or("—".into(), fmt_int))
            .collect();
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            r.path,
            q[0],
            q[1],
            q[2],
            fmt_opt(Some(best), 4)
        );
    }

    ranking_tables(&mut m, report);
    ratio_tables(&mut m, report);
    cli_table(&mut m, report);

    let _ = writeln!(m, "\n## Build\n");
    let _ = writeln!(m, "| system | threads | storage append vec/s | index train s | index build vec/s | index build s | durable ingest: WAL + storage + index build (mode) vec/s | durable ingest s | on-disk MiB | index bytes/vector | peak RSS MiB |");
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &report.runs {
        let b = &r.build;
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.build_threads,
            b.storage_append
                .as_ref()
                .map_or("—".into(), |p| fmt_int(p.vectors_per_sec)),
            b.index_train
                .as_ref()
                .map_or("—".into(), |p| format!("{:.2}", p.seconds)),
            b.index_build
                .as_ref()
                .map_or("—".into(), |p| fmt_int(p.vectors_per_sec)),
            b.index_build
                .as_ref()
                .map_or("—".into(), |p| format!("{:.2}", p.seconds)),
            b.durable_ingest.as_ref().map_or("—".into(), |p| format!(
                "{} ({})",
                fmt_int(p.vectors_per_sec),
                durable_mode(&p.what)
            )),
            b.durable_ingest
                .as_ref()
                .map_or("—".into(), |p| format!("{:.2}", p.seconds)),
            fmt_opt(r.memory.on_disk_bytes.map(|b| b as f64 / 1048576.0), 1),
            fmt_opt(r.memory.index_bytes_per_vector, 1),
            fmt_opt(r.memory.peak_rss_bytes.map(|b| b as f64 / 1048576.0), 0),
        );
    }

    let scaling = build_scaling(report);
    if !scaling.is_empty() {
        let _ = writeln!(m, "\n## Build scaling\n");
        let _ = writeln!(
            m,
            "Index build rate with N threads over the same system's rate with 1 thread, both from this run.\n"
        );
        let _ = writeln!(
            m,
            "| system | threads | index build vec/s | 1 thread vec/s | speed-up |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|");
        for (name, threads, rate, base) in scaling {
            let _ = writeln!(
                m,
                "| {name} | {threads} | {} | {} | {:.2}x |",
                fmt_int(rate),
                fmt_int(base),
                rate / base
            );
        }
    }

    let _ = writeln!(m, "\n## Every operating point\n");
    let _ = writeln!(
        m,
        "Recall at 1, 10 and 100, by id and by distance (— where the run's k = {k} is smaller).\n"
    );
    let _ = writeln!(m, "| system | params | recall@1 id | recall@1 dist | recall@10 id | recall@10 dist | recall@100 id | recall@100 dist | QPS 1 thread | batch QPS (threads) | p50 µs | p99 µs | p99.9 µs | dist. comps/query |");
    let _ = writeln!(
        m,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &report.runs {
        for p in &r.points {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
                r.name,
                p.label,
                fmt_opt(p.recall.at(RecallKind::ById, 1), 4),
                fmt_opt(p.recall.at(RecallKind::ByDistance, 1), 4),
                fmt_opt(p.recall.at(RecallKind::ById, 10), 4),
                fmt_opt(p.recall.at(RecallKind::ByDistance, 10), 4),
                fmt_opt(p.recall.at(RecallKind::ById, 100), 4),
                fmt_opt(p.recall.at(RecallKind::ByDistance, 100), 4),
                fmt_int(p.qps_single),
                p.qps_batch.map_or("—".into(), |q| format!(
                    "{} ({})",
                    fmt_int(q),
                    p.batch_threads
                )),
                p.latency.p50_us,
                p.latency.p99_us,
                p.latency.p999_us,
                fmt_opt(p.distance_computations_per_query, 0),
            );
        }
    }
    for r in &report.runs {
        for n in &r.notes {
            let _ = writeln!(m, "\n- {}: {}", r.name, n);
        }
    }

    let e = &report.env;
    let _ = writeln!(m, "\n## Environment\n");
    m.push_str(&e.markdown_lines());
    let _ = writeln!(m, "- started: {}", e.started_utc);
    let _ = writeln!(m, "- command line: `{}`", e.command_line);
    let _ = writeln!(m, "\n## Plots\n");
    for (f, t) in PLOTS {
        let _ = writeln!(m, "![{t}]({f})\n");
    }
    m
}

const PLOTS: [(&str, &str); 4] = [
    ("recall_qps.svg", "recall vs QPS"),
    ("build.svg", "build throughput by phase"),
    ("latency.svg", "latency percentiles"),
    ("memory.svg", "index memory per vector"),
];

/// One CSV row per (system, operating point).
pub fn csv(report: &Report) -> String {
    let mut s = String::from("system,family,index,storage,params,recall1_id,recall10_id,recall10_dist,recall100_id,recall100_dist,qps_single,qps_batch,batch_threads,p50_us,p95_us,p99_us,p999_us,dist_comps_per_query,storage_append_vps,index_train_s,index_build_vps,index_bytes_per_vector,durable_ingest_vps,on_disk_bytes\n");
    let q = |x: &str| format!("\"{}\"", x.replace('"', "\"\""));
    let o = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    for r in &report.runs {
        for p in &r.points {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                q(&r.name),
                r.family,
                r.index,
                r.storage.clone().unwrap_or_default(),
                q(&p.label),
                o(p.recall.at(RecallKind::ById, 1)),
                o(p.recall.at(RecallKind::ById, 10)),
                o(p.recall.at(RecallKind::ByDistance, 10)),
                o(p.recall.at(RecallKind::ById, 100)),
                o(p.recall.at(RecallKind::ByDistance, 100)),
                p.qps_single,
                o(p.qps_batch),
                p.batch_threads,
                p.latency.p50_us,
                p.latency.p95_us,
                p.latency.p99_us,
                p.latency.p999_us,
                o(p.distance_computations_per_query),
                o(r.build.storage_append.as_ref().map(|b| b.vectors_per_sec)),
                o(r.build.index_train.as_ref().map(|b| b.seconds)),
                o(r.build.index_build.as_ref().map(|b| b.vectors_per_sec)),
                o(r.memory.index_bytes_per_vector),
                o(r.build.durable_ingest.as_ref().map(|b| b.vectors_per_sec)),
                o(r.memory.on_disk_bytes.map(|b| b as f64)),
            );
        }
    }
    s
}

/// Writes `results.json`, `results.csv`, `report.md` and the plots into `dir`.
/// Returns the path of `report.md`.
pub fn write(report: &Report, dir: &Path) -> omen_core::Result<PathBuf> {
    let mut summarized = report.clone();
    summarized.summarize();
    let report = &summarized;
    let io = |p: &Path, e: std::io::Error| omen_core::Error::io(p, e);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| omen_core::Error::invalid_param("report", e.to_string()))?;
    let p = dir.join("results.json");
    std::fs::write(&p, json).map_err(|e| io(&p, e))?;
    let p = dir.join("results.csv");
    std::fs::write(&p, csv(report)).map_err(|e| io(&p, e))?;
    let plot_err = |name: &str, e: Box<dyn std::error::Error>| {
        omen_core::Error::io(dir.join(name), std::io::Error::other(e.to_string()))
    };
    crate::plot::recall_qps(report, report.k, &dir.join(PLOTS[0].0))
        .map_err(|e| plot_err(PLOTS[0].0, e))?;
    crate::plot::build_throughput(report, &dir.join(PLOTS[1].0))
        .map_err(|e| plot_err(PLOTS[1].0, e))?;
    crate::plot::latency(report, report.k, &dir.join(PLOTS[2].0))
        .map_err(|e| plot_err(PLOTS[2].0, e))?;
    crate::plot::memory_per_vector(report, &dir.join(PLOTS[3].0))
        .map_err(|e| plot_err(PLOTS[3].0, e))?;
    let p = dir.join("report.md");
    std::fs::write(&p, markdown(report)).map_err(|e| io(&p, e))?;
    Ok(p)
}
