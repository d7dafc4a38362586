use indicatif::{ProgressBar, ProgressStyle};
use omen_bench::bench::{run as run_bench, BenchOptions};
use omen_bench::config::BenchConfig;
use omen_bench::recall::RecallKind;
use omen_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `omen bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A suite name (`quick`, `glove-50`) or a path to a `.toml` / `.json` config.
    suite: String,
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
}

pub fn run(a: BenchArgs) -> Result<()> {
    let mut cfg = match BenchConfig::named(&a.suite) {
        Some(c) => c,
        None if Path::new(&a.suite).exists() => BenchConfig::from_file(Path::new(&a.suite))?,
        None => {
            return Err(Error::invalid_param(
                "suite",
                format!(
                    "{:?} is neither a built-in suite (quick, glove-50) nor a config file",
                    a.suite
                ),
            ))
        }
    };
    if let Some(q) = a.max_queries {
        cfg.max_queries = q;
    }
    let opts = BenchOptions {
        data_dir: a.data_dir.unwrap_or_else(omen_datasets::default_data_dir),
        reports_dir: a.reports.clone(),
        venv: a.venv.clone(),
        peers: !a.no_peers,
        reproduce: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let (report, md) = run_bench(&cfg, &opts, &mut |m| {
        // A hidden bar (stderr is not a terminal: CI, a log file) prints nothing,
        // so the phase log goes to stderr directly there.
        if bar.is_hidden() {
            eprintln!("  {m}");
        } else {
            bar.println(format!("  {m}"));
        }
        bar.set_message(m.to_string());
    })?;
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
        "{:<48} {:>13} {:>13} {:>13} {:>10} {:>12}",
        "system", "QPS@0.90", "QPS@0.95", "QPS@0.99", "best R@10", "build vec/s"
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
        println!(
            "{:<48} {:>13} {:>13} {:>13} {:>10.4} {:>12}",
            r.name,
            q(0.90),
            q(0.95),
            q(0.99),
            best,
            build
        );
    }
    println!("(QPS: one query at a time on one thread, interpolated at recall@{k} by id; build: index build only)");
    println!("report: {}", md.display());
    Ok(())
}
