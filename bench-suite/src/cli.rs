//! The `cli` path: `omen db search` measured as a user runs it.
//!
//! Every omen index of a suite is imported into a durable collection with `omen db
//! create` + `omen db import` (then `omen db checkpoint`, so that opening it loads
//! the index instead of replaying the log), and searched over the query file with
//! `omen db search --json --threads 1 --timing` once per operating point, in
//! rounds like the single-query loop (each point's fastest round counts). The
//! process reports its query-file load, collection open and search time apart
//! (`--timing`); the harness also times the whole process, and computes recall
//! from the ids the command printed.

use crate::config::{BenchConfig, IndexEntry};
pub use crate::model::{CliPoint, CliRun};
use crate::recall::{summarize, RecallInputs, RecallSummary};
use crate::runner::{BenchData, RECALL_KS, SINGLE_PASSES};
use omen_core::{Error, Params, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The `omen` binary: `$OMEN_EXE`, else this process when it is `omen` (the
/// harness runs inside `omen bench`). On Linux a binary rebuilt while the run is
/// under way shows as `omen (deleted)`; `/proc/self/exe` still reads this
/// process's own image then.
fn omen_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OMEN_EXE") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let name = exe.file_name().and_then(|s| s.to_str()).unwrap_or("");
    if exe.file_stem().and_then(|s| s.to_str()) == Some("omen") {
        return Ok(exe);
    }
    if name == "omen (deleted)" {
        let own = PathBuf::from("/proc/self/exe");
        if own.exists() {
            return Ok(own);
        }
    }
    Err(Error::invalid_param(
        "cli",
        format!(
            "the cli path runs the omen binary, and this process is {} (run it through `omen bench`, or set OMEN_EXE)",
            exe.display()
        ),
    ))
}

/// Copies the `omen` binary that the cli path will run into `work` (before any
/// measurement), so that the CLI measured is the build that measured the native
/// path even when `target/release/omen` is rebuilt while a long run is under
/// way, and a missing binary fails the run at its start instead of its end.
pub fn pin_exe(work: &Path) -> Result<PathBuf> {
    let exe = omen_exe()?;
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let pinned = work.join("omen");
    std::fs::copy(&exe, &pinned).map_err(|e| Error::io(&exe, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pinned, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(&pinned, e))?;
    }
    Ok(pinned)
}

fn run_cmd(exe: &Path, args: &[String]) -> Result<(Vec<u8>, String, f64)> {
    let t = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(exe, e))?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::invalid_param(
            "cli",
            format!(
                "`omen {}` failed ({}): {}",
                args.join(" "),
                out.status,
                stderr.trim()
            ),
        ));
    }
    Ok((out.stdout, stderr, secs))
}

/// An operating point: its label, its parameters as JSON, and its `omen db search` flags.
type CliSweepPoint = (String, serde_json::Value, Vec<String>);

/// `--param key=value` flags, one per parameter.
fn param_flags(params: &Params) -> Vec<String> {
    params
        .iter()
        .flat_map(|(k, v)| ["--param".to_string(), format!("{k}={v}")])
        .collect()
}

/// The index kind, `omen db create`'s flags and the sweep of one index entry:
/// `--index <kind>` and a `--param key=value` per build parameter; each
/// operating point's search parameters as `--param key=value` flags of `omen
/// db search`.
fn create_args(
    ix: &IndexEntry,
    metric: &str,
    dim: usize,
) -> Result<(String, Vec<String>, Vec<CliSweepPoint>)> {
    let spec = ix.spec()?;
    let mut a = vec![
        "--dim".to_string(),
        dim.to_string(),
        "--metric".into(),
        metric.into(),
        "--index".into(),
        spec.name().into(),
    ];
    a.extend(param_flags(spec.params()));
    let pts = ix
        .points()?
        .into_iter()
        .map(|p| (p.label.clone(), p.json(), param_flags(&p.params)))
        .collect();
    Ok((spec.name().to_string(), a, pts))
}

/// Parses `omen db search --json` output: one line per query, ids are row numbers.
fn parse_ids(stdout: &[u8], nq: usize, k: usize) -> Result<Vec<i64>> {
    let mut ids = vec![-1i64; nq * k];
    let text = std::str::from_utf8(stdout)
        .map_err(|e| Error::invalid_param("cli", format!("output is not UTF-8: {e}")))?;
    let mut seen = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::invalid_param("cli", format!("bad output line {line:?}: {e}")))?;
        let q = v["query"]
            .as_u64()
            .ok_or_else(|| Error::invalid_param("cli", format!("no query number in {line:?}")))?
            as usize;
        if q >= nq {
            return Err(Error::invalid_param(
                "cli",
                format!("query {q} out of range"),
            ));
        }
        let list = v["ids"].as_array().cloned().unwrap_or_default();
        for (j, id) in list.iter().take(k).enumerate() {
            ids[q * k + j] = id.as_str().and_then(|s| s.parse().ok()).unwrap_or(-1);
        }
        seen += 1;
    }
    if seen != nq {
        return Err(Error::invalid_param(
            "cli",
            format!("{seen} result lines for {nq} queries"),
        ));
    }
    Ok(ids)
}

/// Measures every omen index of `cfg` through the `omen` binary; `work` is a
/// scratch directory (removed by the caller).
pub fn run_cli(
    cfg: &BenchConfig,
    data: &BenchData,
    exe: &Path,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<CliRun>> {
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let base = work.join("base.fbin");
    let queries = work.join("queries.fbin");
    omen_datasets::write_fbin(
        &base,
        &omen_datasets::Vectors::new(data.dim, data.base.clone())?,
    )?;
    omen_datasets::write_fbin(
        &queries,
        &omen_datasets::Vectors::new(data.dim, data.queries.clone())?,
    )?;
    let p = |x: &Path| x.display().to_string();
    let mut runs = Vec::new();
    for (i, ix) in cfg.indexes.iter().enumerate() {
        let (kind, args, points) = create_args(ix, data.metric.name(), data.dim)?;
        let dir = work.join(format!("db-{i}-{kind}"));
        progress(&format!("cli: omen db create/import/checkpoint ({kind})"));
        let mut create = vec!["db".to_string(), "create".into(), p(&dir)];
        create.extend(args.iter().cloned());
        run_cmd(exe, &create)?;
        let import = vec![
            "db".to_string(),
            "import".into(),
            p(&dir),
            p(&base),
            "--batch".into(),
            "10000".into(),
            "--durability".into(),
            "none".into(),
            // The import's time includes the index build (the indexer runs
            // behind the writes; this waits for it before the final
            // checkpoint), and the searches below meet a fully indexed
            // collection.
            "--wait-indexed".into(),
        ];
        let (_, _, import_seconds) = run_cmd(exe, &import)?;
        let (_, _, checkpoint_seconds) =
            run_cmd(exe, &["db".into(), "checkpoint".into(), p(&dir)])?;
        let mut best: Vec<Option<(CliPoint, Vec<i64>)>> = vec![None; points.len()];
        for round in 0..SINGLE_PASSES {
            for (j, (label, params, extra)) in points.iter().enumerate() {
                progress(&format!(
                    "cli: omen db search {kind} {label} (round {})",
                    round + 1
                ));
                let mut a = vec![
                    "db".to_string(),
                    "search".into(),
                    p(&dir),
                    "--queries".into(),
                    p(&queries),
                    "-k".into(),
                    cfg.k.to_string(),
                    "--json".into(),
                    "--threads".into(),
                    "1".into(),
                    "--timing".into(),
                ];
                a.extend(extra.iter().cloned());
                let (stdout, stderr, process_seconds) = run_cmd(exe, &a)?;
                let timing: serde_json::Value = stderr
                    .lines()
                    .rev()
                    .find_map(|l| serde_json::from_str(l).ok())
                    .ok_or_else(|| {
                        Error::invalid_param("cli", format!("no --timing line in {stderr:?}"))
                    })?;
                let f = |k: &str| timing[k].as_f64().unwrap_or(f64::NAN);
                let pt = CliPoint {
                    params: params.clone(),
                    label: label.clone(),
                    queries: timing["queries"].as_u64().unwrap_or(0) as usize,
                    threads: timing["threads"].as_u64().unwrap_or(0) as usize,
                    load_seconds: f("load_seconds"),
                    open_seconds: f("open_seconds"),
                    search_seconds: f("search_seconds"),
                    process_seconds,
                    qps: f("qps"),
                    recall: RecallSummary::default(),
                };
                let faster = best[j]
                    .as_ref()
                    .is_none_or(|(b, _)| pt.search_seconds < b.search_seconds);
                if faster {
                    let ids = parse_ids(&stdout, data.nq(), cfg.k)?;
                    best[j] = Some((pt, ids));
                }
            }
        }
        let mut out_points = Vec::new();
        for (mut pt, ids) in best.into_iter().flatten() {
            pt.recall = summarize(
                &RecallInputs {
                    metric: data.metric,
                    base: &data.base,
                    queries: &data.queries,
                    dim: data.dim,
                    truth_ids: &data.truth_ids,
                    truth_distances: &data.truth_distances,
                    truth_k: data.truth_k,
                    run_ids: &ids,
                    run_k: cfg.k,
                },
                &RECALL_KS,
            );
            out_points.push(pt);
        }
        let _ = std::fs::remove_dir_all(&dir);
        runs.push(CliRun {
            name: format!("omen db search ({kind})"),
            index: kind,
            create_args: args,
            import_seconds,
            checkpoint_seconds,
            points: out_points,
        });
    }
    Ok(runs)
}
