//! `omen db`: a durable collection kept in a directory.
//!
//! The directory is an [`omen::Collection`] directory — a write-ahead log and
//! checkpoints (`MANIFEST`, `wal-*.log`, segment, id and index files; see
//! `docs/FORMAT.md`) — plus `omen.json`, the settings this command keeps for
//! itself: the parameters the collection was created with and the search
//! defaults. The durable files are the truth for the data; `omen.json` only
//! supplies defaults (a directory without it still opens).
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
    Collection, CollectionConfig, Durability, DurableOptions, IndexKind, IndexingMode, Metric,
};
use omen::{SearchParams, StorageKind};
use omen_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const CONFIG: &str = "omen.json";
const FORMAT: &str = "omen-db/2";
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
        /// flat | hnsw | ivfpq.
        #[arg(long, default_value = "flat")]
        index: String,
        /// memory (rows saved to segment files at each checkpoint) | mmap (rows in
        /// memory-mapped chunk files under DIR/vectors).
        #[arg(long, default_value = "memory")]
        storage: String,
        // The index parameters are options, their defaults applied in `run`, so that
        // a flag the chosen index does not take is refused rather than ignored.
        /// HNSW: links per node (layer 0 has 2M) [default: 16].
        #[arg(long)]
        m: Option<usize>,
        /// HNSW: beam width while building [default: 200].
        #[arg(long)]
        ef_construction: Option<usize>,
        /// HNSW: default beam width of `omen db search` (kept in omen.json).
        #[arg(long)]
        ef_search: Option<usize>,
        /// IVF-PQ: inverted lists [default: 256].
        #[arg(long)]
        nlist: Option<usize>,
        /// IVF-PQ: sub-quantizers (must divide the dimension).
        #[arg(long)]
        pq_m: Option<usize>,
        /// IVF-PQ: bits per code, 4 or 8 [default: 4].
        #[arg(long)]
        nbits: Option<u32>,
        /// IVF-PQ: vectors held before it trains itself.
        #[arg(long)]
        train_size: Option<usize>,
        /// IVF-PQ: default lists probed by `omen db search` (kept in omen.json).
        #[arg(long)]
        nprobe: Option<usize>,
    },
    /// Import the rows of FILE (fvecs, fbin, npy, ...) in batches, each durable
    /// when acknowledged. Ids and finiteness are checked for the whole file
    /// before anything is written; a later failure leaves the batches before it
    /// in place (rerun with --skip-existing to resume).
    Import {
        /// The collection directory.
        dir: PathBuf,
        /// Vectors file.
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
        /// Query vectors file.
        #[arg(long)]
        queries: PathBuf,
        /// Neighbours per query.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// HNSW beam width (default: omen.json's, else the index's).
        #[arg(long)]
        ef: Option<usize>,
        /// IVF lists probed (default: omen.json's, else the index's).
        #[arg(long)]
        nprobe: Option<usize>,
        /// IVF-PQ candidates re-scored exactly per result (default: the index's).
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

/// `omen.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct DbConfig {
    format: String,
    dim: usize,
    metric: String,
    index: String,
    storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hnsw: Option<HnswSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ivfpq: Option<IvfPqSettings>,
    #[serde(default)]
    search: SearchDefaults,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct HnswSettings {
    m: usize,
    ef_construction: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct IvfPqSettings {
    nlist: usize,
    m: usize,
    nbits: u32,
    train_size: usize,
}

/// Defaults of `omen db search`.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
struct SearchDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ef: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nprobe: Option<usize>,
}

impl DbConfig {
    fn collection_config(&self) -> Result<CollectionConfig> {
        let metric: Metric = self.metric.parse()?;
        let index = match (self.index.as_str(), &self.hnsw, &self.ivfpq) {
            ("flat", _, _) => IndexKind::Flat,
            ("hnsw", Some(h), _) => {
                let mut p = omen_hnsw::HnswParams::new()
                    .with_m(h.m)
                    .with_ef_construction(h.ef_construction);
                if let Some(ef) = self.search.ef {
                    p = p.with_ef_search(ef);
                }
                IndexKind::Hnsw(p)
            }
            ("ivfpq", _, Some(s)) => {
                let mut p = omen_ivfpq::IvfPqParams::new(s.nlist, s.m)
                    .with_nbits(s.nbits)
                    .with_train_size(s.train_size);
                if let Some(n) = self.search.nprobe {
                    p = p.with_nprobe(n);
                }
                IndexKind::IvfPq(p)
            }
            (other, _, _) => {
                return Err(Error::invalid_param(
                    "index",
                    format!("{other:?}: expected flat, hnsw or ivfpq"),
                ))
            }
        };
        Ok(CollectionConfig::new(self.dim, metric)
            .index(index)
            .storage(storage_kind(&self.storage)?))
    }
}

fn storage_kind(s: &str) -> Result<StorageKind> {
    match s {
        "memory" => Ok(StorageKind::Memory),
        "mmap" => Ok(StorageKind::Mmap),
        other => Err(Error::invalid_param(
            "storage",
            format!("{other:?}: expected memory or mmap"),
        )),
    }
}

/// Reads `omen.json`, or `None` if the directory has none.
fn read_config(dir: &Path) -> Result<Option<DbConfig>> {
    let path = dir.join(CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let cfg: DbConfig = serde_json::from_str(&text).map_err(|e| {
        let offset = text
            .lines()
            .take(e.line().saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        Error::corruption(&path, offset as u64, e.to_string())
    })?;
    if cfg.format != FORMAT {
        return Err(Error::corruption(
            &path,
            0,
            format!("format {:?}, expected {FORMAT:?}", cfg.format),
        ));
    }
    Ok(Some(cfg))
}

/// Writes `omen.json` atomically (temporary file, sync, rename).
fn write_config(dir: &Path, cfg: &DbConfig) -> Result<()> {
    let path = dir.join(CONFIG);
    let tmp = dir.join("omen.json.tmp");
    let json = serde_json::to_string_pretty(cfg)
        .map_err(|e| Error::invalid_param("config", e.to_string()))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(json.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Checks that `omen.json` describes the collection that was opened.
fn check_config(dir: &Path, cfg: &DbConfig, col: &Collection) -> Result<()> {
    let path = dir.join(CONFIG);
    let metric: Metric = cfg
        .metric
        .parse()
        .map_err(|_| Error::corruption(&path, 0, format!("unknown metric {:?}", cfg.metric)))?;
    let ours = (cfg.dim, metric, cfg.index.as_str(), cfg.storage.as_str());
    let theirs = (
        col.dim(),
        col.metric(),
        col.index_name(),
        col.storage_name(),
    );
    if ours != theirs {
        return Err(Error::corruption(
            &path,
            0,
            format!(
                "says dim {} {} {} index {} storage; the collection is dim {} {} {} index {} storage",
                ours.0, ours.1, ours.2, ours.3, theirs.0, theirs.1, theirs.2, theirs.3
            ),
        ));
    }
    Ok(())
}

/// The `omen db create` flags (without `--`) that `index` takes.
fn create_params(index: &str) -> Result<&'static [&'static str]> {
    match index {
        "flat" => Ok(&[]),
        "hnsw" => Ok(&["m", "ef-construction", "ef-search"]),
        "ivfpq" => Ok(&["nlist", "pq-m", "nbits", "train-size", "nprobe"]),
        other => Err(Error::invalid_param(
            "index",
            format!("{other:?}: expected flat, hnsw or ivfpq"),
        )),
    }
}

/// The `omen db search` flags (without `--`) that a collection whose index is
/// named `index` takes; `None` for an index this command does not know.
fn search_params(index: &str) -> Option<&'static [&'static str]> {
    match index {
        "flat" => Some(&[]),
        "hnsw" => Some(&["ef"]),
        "ivfpq" => Some(&["nprobe", "rerank"]),
        _ => None,
    }
}

/// Refuses the flags of `given` (name, whether it was given) that are not in
/// `takes`: one error naming the first, every refused flag, and what `who` takes.
/// A flag the index does not take would otherwise be silently ignored.
fn refuse_foreign_params(
    what: &str,
    who: &str,
    takes: &[&'static str],
    given: &[(&'static str, bool)],
) -> Result<()> {
    let flags = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("--{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let foreign: Vec<&'static str> = given
        .iter()
        .filter(|(name, given)| *given && !takes.contains(name))
        .map(|(name, _)| *name)
        .collect();
    let Some(&first) = foreign.first() else {
        return Ok(());
    };
    let takes = if takes.is_empty() {
        "no index parameters".to_string()
    } else {
        flags(takes)
    };
    Err(Error::invalid_param(
        first,
        format!(
            "{what} does not take {}; {who} takes {takes}",
            flags(&foreign)
        ),
    ))
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
            m,
            ef_construction,
            ef_search,
            nlist,
            pq_m,
            nbits,
            train_size,
            nprobe,
        } => {
            refuse_foreign_params(
                &format!("the {index} index"),
                &index,
                create_params(&index)?,
                &[
                    ("m", m.is_some()),
                    ("ef-construction", ef_construction.is_some()),
                    ("ef-search", ef_search.is_some()),
                    ("nlist", nlist.is_some()),
                    ("pq-m", pq_m.is_some()),
                    ("nbits", nbits.is_some()),
                    ("train-size", train_size.is_some()),
                    ("nprobe", nprobe.is_some()),
                ],
            )?;
            if dir.join("MANIFEST").exists() || dir.join(CONFIG).exists() {
                return Err(Error::invalid_param(
                    "dir",
                    format!("{} already holds a collection", dir.display()),
                ));
            }
            let (m, ef_construction) = (m.unwrap_or(16), ef_construction.unwrap_or(200));
            let (nlist, nbits) = (nlist.unwrap_or(256), nbits.unwrap_or(4));
            let cfg = DbConfig {
                format: FORMAT.into(),
                dim,
                metric: metric.parse::<Metric>()?.name().into(),
                hnsw: (index == "hnsw").then_some(HnswSettings { m, ef_construction }),
                ivfpq: (index == "ivfpq").then(|| {
                    // Default sub-quantizers: the largest divisor of dim giving ≥ 2 dims each.
                    let pm = pq_m.unwrap_or_else(|| {
                        (1..=dim)
                            .rev()
                            .find(|d| dim % d == 0 && dim / d >= 2)
                            .unwrap_or(1)
                    });
                    IvfPqSettings {
                        nlist,
                        m: pm,
                        nbits,
                        train_size: train_size.unwrap_or((39 * nlist).max(1024)),
                    }
                }),
                search: SearchDefaults {
                    ef: ef_search,
                    nprobe,
                },
                index,
                storage,
            };
            let config = cfg.collection_config()?;
            // An empty in-memory twin checks every setting before anything is
            // written.
            config.clone().storage(StorageKind::Memory).build()?;
            let col = Collection::create(&dir, &config, DurableOptions::default())?;
            write_config(&dir, &cfg)?;
            col.close()?;
            println!(
                "created {} (dim {dim}, {}, {} index, {} storage)",
                dir.display(),
                cfg.metric,
                cfg.index,
                cfg.storage
            );
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
                #[derive(Serialize)]
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
            ef,
            nprobe,
            rerank,
            json,
            threads,
            batch,
            timing,
        } => {
            let t_load = Instant::now();
            let defaults = read_config(&dir)?.map(|c| c.search).unwrap_or_default();
            let q = omen_datasets::load_vectors(&queries)?;
            let load_seconds = t_load.elapsed().as_secs_f64();
            let mut params = SearchParams::new();
            if let Some(ef) = ef.or(defaults.ef) {
                params = params.with_ef(ef);
            }
            if let Some(n) = nprobe.or(defaults.nprobe) {
                params = params.with_nprobe(n);
            }
            if let Some(r) = rerank {
                params = params.with_rerank_factor(r);
            }
            if batch == 0 {
                return Err(Error::invalid_param("batch", "must be at least 1"));
            }
            let pool = search_pool(threads)?;
            let t_open = Instant::now();
            let col = open(&dir, read_only(true))?;
            let open_seconds = t_open.elapsed().as_secs_f64();
            if let Some(takes) = search_params(col.index_name()) {
                refuse_foreign_params(
                    &format!("the {} index of {}", col.index_name(), dir.display()),
                    &format!("{} search", col.index_name()),
                    takes,
                    &[
                        ("ef", ef.is_some()),
                        ("nprobe", nprobe.is_some()),
                        ("rerank", rerank.is_some()),
                    ],
                )?;
            }
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
                if let Some(cfg) = read_config(&dir)? {
                    check_config(&dir, &cfg, &col)?;
                }
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
