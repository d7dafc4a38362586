//! `omen db`: a durable collection kept in a directory.
//!
//! The directory is an [`omen::Collection`] directory — a write-ahead log and
//! checkpoints (`MANIFEST`, `wal-*.log`, segment, id and index files; see
//! `docs/FORMAT.md`). The collection keeps its own settings (its index kind and
//! build parameters, the search defaults among them); an `omen.json` left by an
//! older version of this command is ignored. Index kinds and their parameters
//! come from [`omen::registry`]: this command knows no kind by name.
//!
//! Every command opens the collection (`Collection::open` loads the last
//! checkpoint and replays the log), acts, and closes it, reporting any error of
//! the final flush. Nothing is rewritten on exit: a write command's writes are
//! durable when they return, under the `--durability` mode it ran with
//! (`per-write`, `group` — the default — or `none`, where only the final close,
//! or a `sync` before each `--ack` line, makes them durable). One process at a
//! time holds a directory: a second one gets a "locked" error.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use omen::{
    registry, Collection, CollectionConfig, Durability, DurableOptions, IndexingMode, Metric,
    Params,
};
use omen::{SearchParams, StorageKind};
use omen_core::{Error, Result};
use std::collections::HashSet;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// `omen db verify`'s exit status when it finds corruption (1 for other errors).
const EXIT_CORRUPTION: u8 = 3;

/// `omen db ...`
#[derive(Subcommand)]
pub enum DbCommand {
    /// Create an empty durable collection directory.
    Create {
        /// The directory (created; must not already hold a collection).
        dir: PathBuf,
        /// Vector width.
        #[arg(long)]
        dim: usize,
        /// l2 | ip | cosine.
        #[arg(long)]
        metric: String,
        /// The index kind: flat | hnsw | ivfpq (any registered kind; `omen db
        /// kinds` lists them with their parameters).
        #[arg(long, default_value = registry::default_kind().name())]
        index: String,
        /// memory (rows saved to segment files at each checkpoint) | mmap (rows in
        /// memory-mapped chunk files under DIR/vectors).
        #[arg(long, default_value = StorageKind::default().name())]
        storage: String,
        /// A build parameter of the index, KEY=VALUE (repeatable): any key the
        /// kind takes. A key it does not take is refused, naming the valid ones.
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        // Shorthands for common keys, passed to the kind by name like --param.
        /// Shorthand for --param m=M (HNSW links per node; IVF-PQ sub-quantizers).
        #[arg(long)]
        m: Option<usize>,
        /// Shorthand for --param ef_construction=N (HNSW).
        #[arg(long)]
        ef_construction: Option<usize>,
        /// Shorthand for --param ef_search=N (HNSW: the default beam of `omen db
        /// search`, kept by the collection).
        #[arg(long)]
        ef_search: Option<usize>,
        /// Shorthand for --param nlist=N (IVF-PQ).
        #[arg(long)]
        nlist: Option<usize>,
        /// Shorthand for --param pq_m=N (IVF-PQ sub-quantizers, dividing the dimension).
        #[arg(long)]
        pq_m: Option<usize>,
        /// Shorthand for --param nbits=N (IVF-PQ: 4 or 8).
        #[arg(long)]
        nbits: Option<u32>,
        /// Shorthand for --param train_size=N (IVF-PQ).
        #[arg(long)]
        train_size: Option<usize>,
        /// Shorthand for --param nprobe=N (IVF-PQ: the default lists probed by
        /// `omen db search`, kept by the collection).
        #[arg(long)]
        nprobe: Option<usize>,
    },
    /// List the registered index kinds with their build and search parameters.
    Kinds,
    /// Import the rows of FILE (fvecs, fbin, npy, an ann-benchmarks .hdf5's
    /// `train`, or FILE.hdf5:NAME for another dataset of it) in batches, each durable
    /// when acknowledged. Ids and finiteness are checked for the whole file
    /// before anything is written; a later failure leaves the batches before it
    /// in place (rerun with --skip-existing to resume).
    Import {
        /// The collection directory.
        dir: PathBuf,
        /// Vectors file (.fvecs, .bvecs, .fbin, .u8bin, .npy, .hdf5 or FILE.hdf5:NAME).
        file: PathBuf,
        /// One id per line; by default each row's number in FILE.
        #[arg(long)]
        ids: Option<PathBuf>,
        /// Rows per `insert_batch` call (one log record each).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// After each batch is durably acknowledged, print `acked <row>` (the
        /// 0-based row number of its last row) and flush stdout. Under
        /// `--durability none` each batch is synced first.
        #[arg(long)]
        ack: bool,
        /// Skip rows whose id is already live (their vectors are not compared), so
        /// that an interrupted import can be rerun to completion.
        #[arg(long)]
        skip_existing: bool,
        /// Wait until the background indexer has indexed every imported row
        /// before the final checkpoint (without it the import ends once every row
        /// is durable; rows not yet indexed are saved as such, searched exactly,
        /// and indexed by the next command that opens the collection to write or
        /// search).
        #[arg(long)]
        wait_indexed: bool,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Insert one vector.
    Insert {
        /// The collection directory.
        dir: PathBuf,
        /// Its id.
        #[arg(long)]
        id: String,
        /// Comma-separated components.
        #[arg(long, allow_hyphen_values = true)]
        vector: String,
        /// Replace the vector if the id exists.
        #[arg(long)]
        upsert: bool,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Delete one id.
    Delete {
        /// The collection directory.
        dir: PathBuf,
        /// The id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Print one id's stored vector.
    Get {
        /// The collection directory.
        dir: PathBuf,
        /// The id.
        #[arg(long)]
        id: String,
        /// As JSON: `{"id": ..., "vector": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Search for the k nearest ids of every row of a query file.
    Search {
        /// The collection directory.
        dir: PathBuf,
        /// Query vectors file (as for `import`; FILE.hdf5:test for an
        /// ann-benchmarks file's queries).
        #[arg(long)]
        queries: PathBuf,
        /// Neighbours per query.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// A search parameter of the index, KEY=VALUE (repeatable); a key the
        /// collection's index does not take is refused.
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Shorthand for --param ef=N (HNSW beam width; default: the collection's).
        #[arg(long)]
        ef: Option<usize>,
        /// Shorthand for --param nprobe=N (IVF lists probed; default: the collection's).
        #[arg(long)]
        nprobe: Option<usize>,
        /// Shorthand for --param rerank_factor=N (IVF-PQ candidates re-scored
        /// exactly per result; default: the collection's).
        #[arg(long)]
        rerank: Option<usize>,
        /// One JSON line per query.
        #[arg(long)]
        json: bool,
        /// Search threads (default: every core). Queries are answered in batches
        /// of `--batch` through the collection's batch call.
        #[arg(long)]
        threads: Option<usize>,
        /// Queries per batch call (results are written after each batch).
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// Print one JSON line of timings to stderr at the end: query-file load,
        /// collection open, and search (batch calls plus writing the results),
        /// apart.
        #[arg(long)]
        timing: bool,
    },
    /// Sizes, settings, durability facts (checkpoint generation, log records
    /// replayed at open, log bytes) and the SIMD ISA.
    Stats {
        /// The collection directory.
        dir: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint now (and drop the log it covers); prints what it wrote.
    Checkpoint {
        /// The collection directory.
        dir: PathBuf,
        /// Index every row left unindexed first, so that the checkpoint saves
        /// the index work (without it the checkpoint saves what is indexed now).
        #[arg(long)]
        wait_indexed: bool,
    },
    /// Open the collection (replaying its log) and check every checksum and that
    /// ids, storage and index agree. Prints `ok: ...` and exits 0, or prints
    /// `corruption: ...` and exits 3 (other errors exit 1).
    Verify {
        /// The collection directory.
        dir: PathBuf,
    },
}

/// Options of the commands that write.
#[derive(Args, Clone, Debug)]
pub struct WriteOpts {
    /// When a write is acknowledged: per-write (each write synced before it
    /// returns), group (writes synced together, each returns once a sync covers
    /// it; as durable as per-write), none (nothing synced until the command
    /// closes the collection: a crash loses the writes since the last
    /// checkpoint or sync).
    #[arg(long, default_value = "group")]
    durability: String,
    /// Checkpoint automatically once this many bytes were logged since the last
    /// checkpoint (default 64 MiB).
    #[arg(long)]
    checkpoint_log_bytes: Option<u64>,
    /// Rows that may wait unindexed (searched exactly) before writers wait for
    /// the background indexer (default 65,536).
    #[arg(long)]
    max_unindexed: Option<usize>,
}

impl WriteOpts {
    fn options(&self) -> Result<DurableOptions> {
        let d = match self.durability.as_str() {
            "per-write" => Durability::PerWrite,
            "group" => Durability::default(),
            "none" => Durability::None,
            other => {
                return Err(Error::invalid_param(
                    "durability",
                    format!("{other:?}: expected per-write, group or none"),
                ))
            }
        };
        let mut o = DurableOptions::default().durability(d);
        if let Some(b) = self.checkpoint_log_bytes {
            if b == 0 {
                return Err(Error::invalid_param(
                    "checkpoint-log-bytes",
                    "must be at least 1",
                ));
            }
            o = o.checkpoint_log_bytes(b);
        }
        if let Some(t) = self.max_unindexed {
            if t == 0 {
                return Err(Error::invalid_param("max-unindexed", "must be at least 1"));
            }
            o = o.indexing(IndexingMode::Background { max_tail: t });
        }
        Ok(o)
    }
}

/// Options of the commands that only read: nothing in the directory is written
/// (no log truncation, no removal of stale files, no checkpoint). `index`:
/// whether rows left unindexed are indexed in the background meanwhile (in
/// memory only; for `search`, whose later queries it speeds up).
fn read_only(index: bool) -> DurableOptions {
    let mode = if index {
        IndexingMode::background()
    } else {
        IndexingMode::Manual
    };
    DurableOptions::default().read_only(true).indexing(mode)
}

/// `pairs` (`KEY=VALUE` flags) and the shorthand flags that were given, as
/// parameters: the kind checks them, nothing here knows which kind takes which.
fn collect_params(pairs: &[String], shorthands: &[(&str, Option<u64>)]) -> Result<Params> {
    let mut p = Params::new();
    for pair in pairs {
        p.set_pair(pair)?;
    }
    for (key, v) in shorthands {
        if let Some(v) = v {
            if p.get(key).is_some() {
                return Err(Error::invalid_param(
                    "param",
                    format!("{key} given both as a flag and as --param"),
                ));
            }
            p.set(key, *v);
        }
    }
    Ok(p)
}

/// Opens the collection in `dir`.
fn open(dir: &Path, options: DurableOptions) -> Result<Collection> {
    if !dir.is_dir() {
        return Err(Error::invalid_param(
            "dir",
            format!("{} is not a collection directory", dir.display()),
        ));
    }
    if !dir.join("MANIFEST").exists() && dir.join("snapshot.omen").exists() {
        return Err(Error::invalid_param(
            "dir",
            format!(
                "{} holds a collection in the old snapshot format (snapshot.omen), which this \
                 version no longer reads; create a new collection and import the vectors again",
                dir.display()
            ),
        ));
    }
    Collection::open(dir, options)
}

fn parse_vector(s: &str) -> Result<Vec<f32>> {
    s.split(',')
        .enumerate()
        .map(|(i, x)| {
            x.trim()
                .parse::<f32>()
                .map_err(|e| Error::invalid_param("vector", format!("component {i} ({x:?}): {e}")))
        })
        .collect()
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::io("<stdout>", e)
}

/// Bytes of every file under `dir` (recursively), and of the log files.
fn disk_usage(dir: &Path) -> Result<(u64, u64, usize)> {
    let (mut total, mut log, mut logs) = (0u64, 0u64, 0usize);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            total += meta.len();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if d == dir && name.starts_with("wal-") && name.ends_with(".log") {
                log += meta.len();
                logs += 1;
            }
        }
    }
    Ok((total, log, logs))
}

/// Runs an `omen db` command; `Ok` carries the exit status (`verify` reports
/// corruption itself, with its own status).
pub fn run(c: DbCommand) -> Result<ExitCode> {
    match c {
        DbCommand::Create {
            dir,
            dim,
            metric,
            index,
            storage,
            params,
            m,
            ef_construction,
            ef_search,
            nlist,
            pq_m,
            nbits,
            train_size,
            nprobe,
        } => {
            let params = collect_params(
                &params,
                &[
                    ("m", m.map(|v| v as u64)),
                    ("ef_construction", ef_construction.map(|v| v as u64)),
                    ("ef_search", ef_search.map(|v| v as u64)),
                    ("nlist", nlist.map(|v| v as u64)),
                    ("pq_m", pq_m.map(|v| v as u64)),
                    ("nbits", nbits.map(u64::from)),
                    ("train_size", train_size.map(|v| v as u64)),
                    ("nprobe", nprobe.map(|v| v as u64)),
                ],
            )?;
            let spec = registry::spec(&index, &params)?;
            let metric: Metric = metric.parse()?;
            let storage = StorageKind::from_name(&storage)?;
            if dir.join("MANIFEST").exists() {
                return Err(Error::invalid_param(
                    "dir",
                    format!("{} already holds a collection", dir.display()),
                ));
            }
            let config = CollectionConfig::new(dim, metric)
                .index(spec)
                .storage(storage);
            // An empty in-memory twin checks every setting before anything is
            // written.
            config.clone().storage(StorageKind::Memory).build()?;
            let col = Collection::create(&dir, &config, DurableOptions::default())?;
            col.close()?;
            println!(
                "created {} (dim {dim}, {metric}, {index} index, {storage} storage)",
                dir.display(),
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Kinds => {
            for kind in registry::kinds() {
                println!("{}: {}", kind.name(), kind.description());
                for (what, specs) in [
                    ("build", kind.build_params()),
                    ("search", kind.search_params()),
                ] {
                    if specs.is_empty() {
                        println!("  {what} parameters: none");
                        continue;
                    }
                    println!("  {what} parameters:");
                    for p in specs {
                        let aka = if p.aliases.is_empty() {
                            String::new()
                        } else {
                            format!(" (also {})", p.aliases.join(", "))
                        };
                        println!("    {}{aka}: {}", p.name, p.help);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Import {
            dir,
            file,
            ids,
            batch,
            ack,
            skip_existing,
            wait_indexed,
            write,
        } => {
            let options = write.options()?;
            let sync_each = options.durability == Durability::None;
            let label = options.durability.label();
            if batch == 0 {
                return Err(Error::invalid_param("batch", "must be at least 1"));
            }
            let v = omen_datasets::load_vectors(&file)?;
            let names: Vec<String> = match ids {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                    let names: Vec<String> = text.lines().map(str::to_string).collect();
                    if names.len() != v.rows() {
                        return Err(Error::invalid_param(
                            "ids",
                            format!(
                                "{} has {} lines for {} rows in {}",
                                p.display(),
                                names.len(),
                                v.rows(),
                                file.display()
                            ),
                        ));
                    }
                    names
                }
                None => (0..v.rows()).map(|i| i.to_string()).collect(),
            };
            // Input errors in any row reject the file before anything is written.
            {
                let mut seen = HashSet::with_capacity(names.len());
                for id in &names {
                    omen::check_id(id)?;
                    if !seen.insert(id.as_str()) {
                        return Err(Error::DuplicateId { id: id.clone() });
                    }
                }
            }
            if let Some(i) = v.data().iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    row: i / v.dim().max(1),
                    component: i % v.dim().max(1),
                    value: v.data()[i],
                });
            }
            let col = open(&dir, options)?;
            if v.dim() != col.dim() {
                return Err(Error::DimensionMismatch {
                    expected: col.dim(),
                    got: v.dim(),
                });
            }
            if !skip_existing {
                if let Some(id) = names.iter().find(|id| col.contains(id)) {
                    return Err(Error::DuplicateId { id: id.clone() });
                }
            }
            let dim = v.dim();
            let mut out = std::io::stdout().lock();
            let (mut inserted, mut skipped) = (0usize, 0usize);
            let mut batch_ids: Vec<&str> = Vec::with_capacity(batch);
            let mut batch_rows: Vec<f32> = Vec::with_capacity(batch * dim);
            let bar = import_bar(v.rows());
            let t = Instant::now();
            for start in (0..v.rows()).step_by(batch) {
                let end = (start + batch).min(v.rows());
                let rows = &v.data()[start * dim..end * dim];
                if skip_existing {
                    batch_ids.clear();
                    batch_rows.clear();
                    for (id, row) in names[start..end].iter().zip(rows.chunks_exact(dim)) {
                        if col.contains(id) {
                            skipped += 1;
                        } else {
                            batch_ids.push(id);
                            batch_rows.extend_from_slice(row);
                        }
                    }
                    col.insert_batch(&batch_ids, &batch_rows)?;
                    inserted += batch_ids.len();
                } else {
                    col.insert_batch(&names[start..end], rows)?;
                    inserted += end - start;
                }
                if ack {
                    if sync_each {
                        col.sync()?;
                    }
                    // The bar steps aside while the line is written (stdout and
                    // stderr may be the same terminal).
                    bar.suspend(|| {
                        writeln!(out, "acked {}", end - 1)?;
                        out.flush()
                    })
                    .map_err(stdout_err)?;
                }
                bar.set_position(end as u64);
            }
            // Every row is durable here: the ingest figure stops.
            let secs = t.elapsed().as_secs_f64();
            let waited = if wait_indexed {
                bar.set_message("indexing");
                col.wait_indexed()?;
                Some(t.elapsed().as_secs_f64())
            } else {
                None
            };
            bar.set_message("checkpoint");
            let live = col.len();
            let info = col.checkpoint()?;
            let index_note = match (waited, info.rows.saturating_sub(info.indexed)) {
                (Some(s), _) => format!("; indexed behind it by {s:.2} s"),
                (None, 0) => String::new(),
                (None, n) => {
                    format!("; {n} rows saved unindexed (searched exactly until indexed)")
                }
            };
            col.close()?;
            bar.finish_and_clear();
            let skipped_note = if skip_existing {
                format!(" ({skipped} already present, skipped)")
            } else {
                String::new()
            };
            writeln!(
                out,
                "imported {inserted} vectors{skipped_note} in {secs:.2} s ({:.0} vectors/s, durable ingest, {label}, batches of {batch}); {live} live{index_note}",
                inserted as f64 / secs.max(1e-9),
            )
            .map_err(stdout_err)?;
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Insert {
            dir,
            id,
            vector,
            upsert,
            write,
        } => {
            let options = write.options()?;
            let v = parse_vector(&vector)?;
            let col = open(&dir, options)?;
            if upsert {
                col.upsert(&id, &v)?;
            } else {
                col.insert(&id, &v)?;
            }
            col.close()?;
            println!("inserted {id}");
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Delete { dir, id, write } => {
            let options = write.options()?;
            let col = open(&dir, options)?;
            col.delete(&id)?;
            col.close()?;
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Get { dir, id, json } => {
            let col = open(&dir, read_only(false))?;
            let v = col.get(&id);
            col.close()?;
            let v = v.ok_or(Error::UnknownId { id: id.clone() })?;
            if json {
                // Serialized as f32s: each component is written as the shortest
                // text that reads back as the same f32 (not widened to f64).
                #[derive(serde::Serialize)]
                struct Got<'a> {
                    id: &'a str,
                    vector: &'a [f32],
                }
                let line = serde_json::to_string(&Got {
                    id: &id,
                    vector: &v,
                })
                .map_err(|e| stdout_err(std::io::Error::other(e)))?;
                println!("{line}");
            } else {
                println!(
                    "{}",
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Search {
            dir,
            queries,
            k,
            params,
            ef,
            nprobe,
            rerank,
            json,
            threads,
            batch,
            timing,
        } => {
            let t_load = Instant::now();
            let knobs = collect_params(
                &params,
                &[
                    ("ef", ef.map(|v| v as u64)),
                    ("nprobe", nprobe.map(|v| v as u64)),
                    ("rerank_factor", rerank.map(|v| v as u64)),
                ],
            )?;
            let params = SearchParams::from_knobs(knobs);
            let q = omen_datasets::load_vectors(&queries)?;
            let load_seconds = t_load.elapsed().as_secs_f64();
            if batch == 0 {
                return Err(Error::invalid_param("batch", "must be at least 1"));
            }
            let pool = search_pool(threads)?;
            let t_open = Instant::now();
            let col = open(&dir, read_only(true))?;
            let open_seconds = t_open.elapsed().as_secs_f64();
            // Refused before any query is answered, naming the keys it takes.
            col.check_search_params(&params)?;
            if q.dim() != col.dim() {
                return Err(Error::DimensionMismatch {
                    expected: col.dim(),
                    got: q.dim(),
                });
            }
            let t_search = Instant::now();
            let dim = q.dim();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let mut line = Vec::with_capacity(1024);
            let mut answered = 0usize;
            'batches: for (b, chunk) in q.data().chunks(batch * dim).enumerate() {
                let hits = pool.install(|| col.search_batch_with(chunk, k, &params))?;
                for (j, hits) in hits.iter().enumerate() {
                    line.clear();
                    write_hits(&mut line, b * batch + j, hits, json)?;
                    match out.write_all(&line) {
                        Ok(()) => answered += 1,
                        // The reader went away (`| head`): stop quietly, as Unix tools do.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break 'batches,
                        Err(e) => return Err(stdout_err(e)),
                    }
                }
            }
            match out.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(stdout_err(e)),
            }
            drop(out);
            let search_seconds = t_search.elapsed().as_secs_f64();
            col.close()?;
            if timing {
                let t = serde_json::json!({
                    "queries": answered,
                    "k": k,
                    "threads": pool.current_num_threads(),
                    "batch": batch,
                    "load_seconds": load_seconds,
                    "open_seconds": open_seconds,
                    "search_seconds": search_seconds,
                    "qps": if search_seconds > 0.0 { answered as f64 / search_seconds } else { 0.0 },
                    "simd_isa": omen::isa().name(),
                });
                eprintln!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Stats { dir, json } => {
            let col = open(&dir, read_only(false))?;
            let s = col.stats();
            let rec = col.recovery_info().cloned().unwrap_or_default();
            let out = serde_json::json!({
                "dir": dir.display().to_string(),
                "dim": col.dim(),
                "metric": col.metric().name(),
                "index": col.index_name(),
                "index_params": registry::params_to_json(&col.index_params()),
                "storage": col.storage_name(),
                "len": s.len,
                "storage_slots": s.storage_slots,
                "tombstones": s.tombstones,
                "index_memory_bytes": s.index_memory_bytes,
                "storage_memory_bytes": s.storage_memory_bytes,
                "checkpoint_gen": rec.checkpoint_gen,
                "replayed_records": rec.replayed_records,
                "torn_log_bytes": rec.truncated_bytes,
                "unindexed_rows": s.unindexed_rows,
                "simd_isa": col.isa().name(),
            });
            col.close()?;
            // Sizes as on disk (this command writes nothing).
            let (disk, log, logs) = disk_usage(&dir)?;
            let mut out = out;
            if let Some(m) = out.as_object_mut() {
                m.insert("log_files".into(), logs.into());
                m.insert("log_bytes".into(), log.into());
                m.insert("disk_bytes".into(), disk.into());
            }
            if json {
                println!("{out}");
            } else if let Some(m) = out.as_object() {
                for (k, v) in m {
                    println!("{k}: {v}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Checkpoint { dir, wait_indexed } => {
            let col = open(&dir, DurableOptions::default())?;
            if wait_indexed {
                col.wait_indexed()?;
            }
            let info = col.checkpoint()?;
            col.close()?;
            println!(
                "checkpoint {}: {} rows, {} live ids, through log record {}, {} bytes written, {} rows unindexed",
                info.gen, info.rows, info.live, info.last_seq, info.bytes_written, info.rows - info.indexed.min(info.rows)
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Verify { dir } => {
            let checked = (|| {
                let col = open(&dir, read_only(false))?;
                let report = col.verify()?;
                col.close()?;
                Ok(report)
            })();
            match checked {
                Ok(r) => {
                    println!(
                        "ok: {} live ids, {} rows, {} files checked, {} log records, {} rows unindexed",
                        r.live, r.rows, r.files, r.log_records, r.unindexed_rows
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ Error::Corruption { .. }) => {
                    eprintln!("corruption: {e}");
                    Ok(ExitCode::from(EXIT_CORRUPTION))
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// `omen db import`'s progress bar over `rows` rows, on stderr; hidden (drawing
/// nothing) unless stderr is a terminal, so that piped or logged output is the
/// same with or without it.
fn import_bar(rows: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    // Cleared when dropped, too: an error line then starts on a clean line.
    let bar = ProgressBar::with_draw_target(Some(rows as u64), ProgressDrawTarget::stderr())
        .with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:25} {human_pos}/{human_len} rows, eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.tick();
    bar
}

/// The thread pool `omen db search` answers on: `threads` threads, or one per core.
fn search_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    if threads == Some(0) {
        return Err(Error::invalid_param("threads", "must be at least 1"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::invalid_param("threads", e.to_string()))
}

/// Writes `s` as a JSON string. Most ids need no escaping and are copied as they
/// are; the rest go through serde_json.
fn write_json_str(line: &mut Vec<u8>, s: &str) -> Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        line.push(b'"');
        line.extend_from_slice(s.as_bytes());
        line.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(&mut *line, s).map_err(|e| stdout_err(std::io::Error::other(e)))
}

/// Formats one query's results as a line of `omen db search`'s output.
fn write_hits(line: &mut Vec<u8>, query: usize, hits: &[omen::Hit], json: bool) -> Result<()> {
    let fmt_err = |e: std::io::Error| stdout_err(e);
    if json {
        write!(line, "{{\"query\":{query},\"ids\":[").map_err(fmt_err)?;
        for (i, (id, _)) in hits.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            write_json_str(line, id)?;
        }
        line.extend_from_slice(b"],\"distances\":[");
        for (i, (_, d)) in hits.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            serde_json::to_writer(&mut *line, d)
                .map_err(|e| stdout_err(std::io::Error::other(e)))?;
        }
        line.extend_from_slice(b"]}\n");
    } else {
        write!(line, "query {query}: ").map_err(fmt_err)?;
        for (i, (id, d)) in hits.iter().enumerate() {
            if i > 0 {
                line.extend_from_slice(b", ");
            }
            write!(line, "{id} ({d:.4})").map_err(fmt_err)?;
        }
        line.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_json_str;

    /// The fast path writes what serde_json writes, for ids that need escaping
    /// and ids that do not.
    #[test]
    fn json_ids_match_serde_json() {
        for id in [
            "plain-id_42",
            "",
            "quote\"inside",
            "back\\slash",
            "tab\there",
            "nul\u{1}ctl",
            "del\u{7f}",
            "ünïcødé ✓",
            "line\nbreak",
        ] {
            let mut got = Vec::new();
            write_json_str(&mut got, id).unwrap();
            let want = serde_json::to_vec(id).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap(),
                "{id:?}"
            );
        }
    }
}
