//! `omen`: run benchmarks, manage datasets, and work with collection databases.
//! `omen bench` needs the `bench` feature (on by default); without it the binary
//! builds without the benchmark harness and its plotting.
//!
//! Errors print one line on stderr and exit with status 1 (2 for bad usage; 3 when
//! `omen db verify` finds corruption); a panic is a bug.

#[cfg(feature = "bench")]
mod bench_cmd;
mod dataset_cmd;
mod db_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Omen: a vector storage engine and research testbed.
#[derive(Parser)]
#[command(name = "omen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark suite (`quick`, `glove-50`) or a TOML/JSON config file, and
    /// write `reports/<name>/`.
    #[cfg(feature = "bench")]
    Bench(bench_cmd::BenchArgs),
    /// Generate, fetch, convert and describe datasets; compute ground truth.
    #[command(subcommand)]
    Dataset(dataset_cmd::DatasetCommand),
    /// Work with a durable collection kept in a directory (write-ahead log and
    /// checkpoints).
    #[command(subcommand)]
    Db(db_cmd::DbCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "bench")]
        Command::Bench(a) => bench_cmd::run(a).map(|()| ExitCode::SUCCESS),
        Command::Dataset(c) => dataset_cmd::run(c).map(|()| ExitCode::SUCCESS),
        Command::Db(c) => db_cmd::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("omen: error: {e}");
            ExitCode::FAILURE
        }
    }
}
