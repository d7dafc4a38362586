use indicatif::{ProgressBar, ProgressStyle};
use omen_bench::bench::{run as run_bench, BenchOptions};
use omen_bench::config::BenchConfig;
use omen_bench::durability::DurabilityOptions;
use omen_bench::recall::RecallKind;
use omen_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `omen bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A suite name (`quick`, `glove-50`, `durability`) or a path to a `.toml` /
    /// `.json` config; or `runbook`, followed by a runbook file.
    suite: String,
    /// `omen bench runbook RUNBOOK.yaml --dataset NAME`: a big-ann-benchmarks
    /// runbook (insert / delete / replace / search steps) applied to every omen
    /// index and storage and to the peers that can delete.
    runbook_file: Option<PathBuf>,
    /// `runbook`: the dataset its rows and queries come from (`glove-50`,
    /// `glove-50-l2`, `synthetic-default`, a directory).
    #[arg(long)]
    dataset: Option<String>,
    /// `runbook`: the systems, a suite config of one search point per index
    /// (default: the built-in `runbook` suite, bench-suite/suites/runbook.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where reports go (`<dir>/<run name>/`).
    #[arg(long, default_value = "reports")]
    reports: PathBuf,
    /// Dataset directory (defaults to `$OMEN_DATA_DIR` or `datasets/data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The peers' virtual environment.
    #[arg(long, default_value = ".venv-peers")]
    venv: PathBuf,
    /// Do not run the peers even if their environment is installed.
    #[arg(long)]
    no_peers: bool,
    /// Use at most this many queries (0 = all).
    #[arg(long)]
    max_queries: Option<usize>,
    /// `durability` suite: vectors per measurement (the headline run is 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// `durability` suite: where temporary files go (defaults to the reports
    /// directory, so that the file system measured is the reports' one).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// `durability` suite: MiB written by the dd yardstick.
    #[arg(long, default_value_t = 1024)]
    dd_mib: usize,
    /// `durability` suite: HNSW ef_construction of the reopen measurement.
    #[arg(long, default_value_t = 40)]
    ef_construction: usize,
    /// Measure nothing: rewrite `report.md`, `results.csv` and the plots of
    /// `<reports>/<run name>/` from its `results.json` (after a change to the
    /// report writer); for `durability`, judge its targets again too.
    #[arg(long)]
    render_only: bool,
}

/// The command line a report names as its reproduction: `omen` and this run's
/// arguments, whatever path the binary was started from (a copy in a scratch
/// directory, `./target/release/omen`).
fn reproduce_line() -> String {
    std::iter::once("omen".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `omen bench durability`: the durability figures, written to
/// `<reports>/durability/`.
fn run_durability(a: &BenchArgs) -> Result<()> {
    let o = DurabilityOptions {
        n: a.n,
        dd_mib: a.dd_mib,
        scratch: a.scratch.clone().unwrap_or_else(|| a.reports.clone()),
        reports_dir: a.reports.clone(),
        hnsw_ef_construction: a.ef_construction,
        reproduce: reproduce_line(),
        ..DurabilityOptions::default()
    };
    let started = std::time::Instant::now();
    let (report, md) = omen_bench::durability::run_durability(&o, &mut |m| {
        eprintln!("  [{:>6.1} s] {m}", started.elapsed().as_secs_f64());
    })?;
    println!("\n{}", omen_bench::durability::summary(&report));
    println!("report: {}", md.display());
    Ok(())
}

/// `omen bench runbook FILE --dataset NAME`.
fn run_runbook(a: &BenchArgs) -> Result<()> {
    let file = a.runbook_file.as_deref().ok_or_else(|| {
        Error::invalid_param(
            "runbook",
            "usage: omen bench runbook RUNBOOK.yaml --dataset NAME",
        )
    })?;
    let dataset = a.dataset.as_deref().ok_or_else(|| {
        Error::invalid_param(
            "dataset",
            "omen bench runbook needs --dataset NAME (glove-50, glove-50-l2, ...)",
        )
    })?;
    let mut cfg = match &a.config {
        Some(p) => BenchConfig::from_file(p)?,
        None => BenchConfig::named("runbook").ok_or_else(|| {
            Error::invalid_param("config", "the built-in runbook suite does not parse")
        })?,
    };
    // Dataset aliases as `omen dataset fetch` names them.
    cfg.dataset = match dataset {
        "glove-50" => "glove-50-angular".to_string(),
        other => other.to_string(),
    };
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("runbook")
        .to_string();
    cfg.name = format!("runbook-{stem}-{dataset}");
    if let Some(q) = a.max_queries {
        cfg.max_queries = q;
    }
    let dir = a.reports.join(&cfg.name);
    if a.render_only {
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: Some(path.clone()),
            source: e,
        })?;
        let report: omen_bench::streaming::RunbookReport =
            serde_json::from_str(&text).map_err(|e| {
                Error::invalid_param("results.json", format!("{}: {e}", path.display()))
            })?;
        let md = omen_bench::streaming::write(&report, &dir)?;
        println!("report: {}", md.display());
        return Ok(());
    }
    let opts = BenchOptions {
        data_dir: a
            .data_dir
            .clone()
            .unwrap_or_else(omen_datasets::default_data_dir),
        reports_dir: a.reports.clone(),
        venv: a.venv.clone(),
        peers: !a.no_peers,
        reproduce: reproduce_line(),
    };
    let bar = spinner();
    let (report, md) = omen_bench::streaming::run(&cfg, file, &opts, &mut progress_on(&bar))?;
    bar.finish_and_clear();
    println!(
        "{:<44} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "system", "path", "mean R@k", "fresh R@k", "mean QPS", "stale ids"
    );
    for s in &report.systems {
        println!(
            "{:<44} {:>6} {:>12.4} {:>12} {:>12.0} {:>10}",
            s.name,
            s.path,
            s.mean_recall,
            s.fresh
                .as_ref()
                .map_or("—".into(), |f| format!("{:.4}", f.recall)),
            s.mean_qps,
            s.stale
        );
    }
    for s in &report.skipped {
        println!("skipped {}: {}", s.name, s.reason);
    }
    println!("report: {}", md.display());
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.suite == "runbook" && !Path::new(&a.suite).exists() {
        return run_runbook(&a);
    }
    if a.runbook_file.is_some() {
        return Err(Error::invalid_param(
            "suite",
            format!("a second argument is a runbook file: `omen bench runbook FILE --dataset NAME` (not `{}`)", a.suite),
        ));
    }
    if a.suite == "durability" && !Path::new(&a.suite).exists() {
        if a.render_only {
            let md = omen_bench::durability::rerender(&a.reports.join("durability"))?;
            println!("report: {}", md.display());
            return Ok(());
        }
        return run_durability(&a);
    }
    let mut cfg = match BenchConfig::named(&a.suite) {
        Some(c) => c,
        None if Path::new(&a.suite).exists() => BenchConfig::from_file(Path::new(&a.suite))?,
        None => {
            return Err(Error::invalid_param(
                "suite",
                format!(
                    "{:?} is neither a built-in suite ({}, durability) nor a config file",
                    a.suite,
                    BenchConfig::SUITES.join(", ")
                ),
            ))
        }
    };
    if let Some(q) = a.max_queries {
        cfg.max_queries = q;
    }
    if a.render_only && !cfg.filter_selectivities.is_empty() {
        // A filtered suite: each selectivity's report, then the overview.
        let dir = a.reports.join(&cfg.name);
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| Error::Io {
                path: Some(path.to_path_buf()),
                source: e,
            })
        };
        let path = dir.join("results.json");
        let overview: omen_bench::filtered::FilteredOverview = serde_json::from_str(&read(&path)?)
            .map_err(|e| {
                Error::invalid_param("results.json", format!("{}: {e}", path.display()))
            })?;
        for level in &overview.levels {
            let path = dir.join(&level.dir).join("results.json");
            let report: omen_bench::model::Report =
                serde_json::from_str(&read(&path)?).map_err(|e| {
                    Error::invalid_param("results.json", format!("{}: {e}", path.display()))
                })?;
            omen_bench::report::write(&report, &dir.join(&level.dir))?;
        }
        let md = omen_bench::filtered::write_overview(&overview, &dir)?;
        println!("report: {}", md.display());
        return Ok(());
    }
    if a.render_only {
        let dir = a.reports.join(&cfg.name);
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: Some(path.clone()),
            source: e,
        })?;
        let report: omen_bench::model::Report = serde_json::from_str(&text).map_err(|e| {
            Error::invalid_param("results.json", format!("{}: {e}", path.display()))
        })?;
        let md = omen_bench::report::write(&report, &dir)?;
        println!("report: {}", md.display());
        return Ok(());
    }
    let opts = BenchOptions {
        data_dir: a.data_dir.unwrap_or_else(omen_datasets::default_data_dir),
        reports_dir: a.reports.clone(),
        venv: a.venv.clone(),
        peers: !a.no_peers,
        reproduce: reproduce_line(),
    };
    let bar = spinner();
    if !cfg.filter_selectivities.is_empty() {
        let (overview, md) = omen_bench::filtered::run(&cfg, &opts, &mut progress_on(&bar))?;
        bar.finish_and_clear();
        for l in &overview.levels {
            for s in &l.systems {
                println!(
                    "selectivity {:>6}: {:<48} {:>6} best R@{} {:.4}, short {}",
                    l.filter.selectivity,
                    s.name,
                    s.path,
                    overview.k,
                    s.summary.best_recall.unwrap_or(f64::NAN),
                    s.short_queries_max.unwrap_or(0)
                );
            }
        }
        println!("\nreport: {}", md.display());
        return Ok(());
    }
    let (report, md) = run_bench(&cfg, &opts, &mut progress_on(&bar))?;
    bar.finish_and_clear();

    let k = report.k;
    println!(
        "\n{}: {} ({} × {}, {} queries, {}), SIMD ISA {}",
        report.run,
        report.dataset.name,
        report.dataset.n,
        report.dataset.dim,
        report.dataset.nq,
        report.dataset.metric,
        report.env.simd_isa
    );
    println!(
        "{:<48} {:>13} {:>13} {:>13} {:>10} {:>12} {:>14} {:>11}",
        "system",
        "QPS@0.90",
        "QPS@0.95",
        "QPS@0.99",
        "best R@10",
        "build vec/s",
        "durable vec/s",
        "on-disk MiB"
    );
    for r in &report.runs {
        let q = |t| {
            r.qps_at(RecallKind::ById, k, t)
                .map_or("—".to_string(), |v| format!("{v:.0}"))
        };
        let best = r
            .points
            .iter()
            .filter_map(|p| p.recall.at(RecallKind::ById, k))
            .fold(f64::NAN, f64::max);
        let build = r
            .build
            .index_build
            .as_ref()
            .map_or("—".to_string(), |p| format!("{:.0}", p.vectors_per_sec));
        let durable = r
            .build
            .durable_ingest
            .as_ref()
            .map_or("—".to_string(), |p| format!("{:.0}", p.vectors_per_sec));
        let disk = r.memory.on_disk_bytes.map_or("—".to_string(), |b| {
            format!("{:.1}", b as f64 / 1048576.0)
        });
        println!(
            "{:<48} {:>13} {:>13} {:>13} {:>10.4} {:>12} {:>14} {:>11}",
            r.name,
            q(0.90),
            q(0.95),
            q(0.99),
            best,
            build,
            durable,
            disk
        );
    }
    println!("(QPS: one query at a time on one thread, interpolated at recall@{k} by id; build: index build only; durable: durable ingest, WAL + storage + index build, acknowledged, in the durability mode of report.md; on-disk: the durable collection after a checkpoint)");
    println!("report: {}", md.display());
    Ok(())
}

/// The spinner a run's phase log is shown under.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The phase log of a run: above the spinner on a terminal; straight to stderr
/// when the bar is hidden (stderr is not a terminal: CI, a log file), where a
/// hidden bar would print nothing.
fn progress_on(bar: &ProgressBar) -> impl FnMut(&str) + '_ {
    move |m: &str| {
        if bar.is_hidden() {
            eprintln!("  {m}");
        } else {
            bar.println(format!("  {m}"));
        }
        bar.set_message(m.to_string());
    }
}
