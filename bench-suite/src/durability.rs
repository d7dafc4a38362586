//! The durability benchmark (`omen bench durability`): in one run, on one file
//! system, on synthetic 128-d vectors,
//!
//! * the yardstick: the file system's sequential write bandwidth (`dd ...
//!   conv=fdatasync`, and the same loop in Rust);
//! * storage-only append into `MemoryStorage` and `MmapStorage` (no index, no log);
//! * durable ingest through the write-ahead log (flat index, memory storage) under
//!   each durability mode, with the log's write rate and its ratio to `dd`;
//!   single-vector inserts under group commit and per-write; one checkpoint;
//! * reopening a checkpointed HNSW collection (memory and mmap storage): the time
//!   of `Collection::open`, and evidence that nothing was replayed or rebuilt.
//!
//! Every figure names what it measures and its durability mode; the phases are
//! never summed. [`run_durability`] writes `report.md` and `results.json` to
//! `<reports>/durability/`.

use crate::env::Environment;
pub use crate::measure::{group_commit, TargetCheck};
use crate::measure::{ingest, median, BATCH, PIPELINE};
use omen::{Collection, CollectionConfig, Durability, DurableOptions, StorageKind};
use omen_core::{Error, Metric, Result, VectorStorage};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How on-disk sizes are counted, for labels.
pub const DISK_SIZE_RULE: &str = "on-disk size = every file under the collection directory, apparent size, except mmap chunk files (`vectors/chunk-NN.omv`, sparse), counted by allocated blocks (st_blocks × 512)";

/// Bytes a directory takes on disk; see [`DISK_SIZE_RULE`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DiskUsage {
    /// The total by [`DISK_SIZE_RULE`].
    pub total: u64,
    /// Files counted.
    pub files: u64,
    /// Allocated bytes of mmap chunk files (included in `total`).
    pub chunk_allocated: u64,
    /// Apparent size of mmap chunk files (not in `total`).
    pub chunk_apparent: u64,
    /// Bytes of write-ahead log files (included in `total`).
    pub wal_bytes: u64,
}

/// Walks `dir` and adds up its files by [`DISK_SIZE_RULE`].
pub fn disk_usage(dir: &Path) -> Result<DiskUsage> {
    use std::os::unix::fs::MetadataExt;
    let mut u = DiskUsage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            u.files += 1;
            if name.starts_with("chunk-") && name.ends_with(".omv") {
                let alloc = meta.blocks() * 512;
                u.chunk_allocated += alloc;
                u.chunk_apparent += meta.len();
                u.total += alloc;
            } else {
                if name.starts_with("wal-") && name.ends_with(".log") {
                    u.wal_bytes += meta.len();
                }
                u.total += meta.len();
            }
        }
    }
    Ok(u)
}

static FRESH: AtomicU64 = AtomicU64::new(0);

/// Creates and returns a new empty directory `<parent>/<tag>-<pid>-<n>`.
pub fn fresh_dir(parent: &Path, tag: &str) -> Result<PathBuf> {
    loop {
        let n = FRESH.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{tag}-{}-{n}", std::process::id()));
        if dir.exists() {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        return Ok(dir);
    }
}

/// The file system type of `path`: `stat -f -c %T`, else the longest matching
/// mount point in `/proc/mounts`, else `unknown`.
pub fn fs_type(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output();
    let stat = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mount = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            abs.starts_with(mnt)
                .then(|| (mnt.len(), format!("{ty} on {dev} at {mnt}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s);
    match (stat, mount) {
        (Some(s), Some(m)) => format!("{s} (/proc/mounts: {m})"),
        (Some(s), None) => s,
        (None, Some(m)) => m,
        (None, None) => "unknown".into(),
    }
}

/// `1234567` as `1.18 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1073741824.0 {
        format!("{:.2} GiB", b / 1073741824.0)
    } else if b >= 1048576.0 {
        format!("{:.1} MiB", b / 1048576.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn fmt_int(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct DurabilityOptions {
    /// Vectors in every ingest, append and reopen measurement (the headline run
    /// uses 1,000,000).
    pub n: usize,
    /// Vector width.
    pub dim: usize,
    /// MiB written by the bandwidth yardstick.
    pub dd_mib: usize,
    /// Where temporary files go (a fresh directory inside it, removed at the end);
    /// should be on the file system being measured.
    pub scratch: PathBuf,
    /// The report goes to `<reports_dir>/durability/`.
    pub reports_dir: PathBuf,
    /// HNSW links per node for the reopen measurement.
    pub hnsw_m: usize,
    /// HNSW build beam width for the reopen measurement.
    pub hnsw_ef_construction: usize,
    /// Seconds of single-vector inserts under group commit.
    pub group_insert_seconds: f64,
    /// Seconds of single-vector inserts under per-write.
    pub per_write_insert_seconds: f64,
    /// Threads inserting single vectors.
    pub insert_threads: usize,
    /// Times each collection is reopened.
    pub reopen_trials: usize,
    /// Trials of the headline ingest (group commit, one writer), each between
    /// two dd runs.
    pub ingest_trials: usize,
    /// The command that reproduces the run.
    pub reproduce: String,
    /// Section e (indexing behind writes): run it.
    pub indexing: bool,
    /// Section e: queries per search point.
    pub indexing_queries: usize,
    /// Section e: search beam width.
    pub indexing_ef: usize,
    /// Section e: vectors in the open-with-a-log-tail measurement.
    pub tail_open_rows: usize,
}

impl Default for DurabilityOptions {
    fn default() -> Self {
        DurabilityOptions {
            n: 1_000_000,
            dim: 128,
            dd_mib: 1024,
            scratch: PathBuf::from("reports"),
            reports_dir: PathBuf::from("reports"),
            hnsw_m: 16,
            hnsw_ef_construction: 40,
            group_insert_seconds: 5.0,
            per_write_insert_seconds: 2.0,
            insert_threads: 2,
            reopen_trials: 3,
            ingest_trials: 3,
            reproduce: "cargo run --release -p omen-cli -- bench durability".into(),
            indexing: true,
            // 2,000: the standard error of a recall over 200 queries was about
            // 0.01, the size of the rule it was checked against.
            indexing_queries: 2000,
            indexing_ef: 100,
            tail_open_rows: 200_000,
        }
    }
}

/// A sequential write bandwidth measurement.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Bandwidth {
    /// What was measured.
    pub what: String,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds, including the final sync.
    pub seconds: f64,
    /// `bytes / seconds / 10^6`.
    pub mb_per_s: f64,
    /// The line `dd` printed, when `dd` ran.
    pub raw: Option<String>,
}

/// Storage-only append.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AppendFigure {
    /// What was measured.
    pub what: String,
    /// `memory` or `mmap`.
    pub storage: String,
    /// Vectors appended.
    pub vectors: u64,
    /// Seconds of the appends (not the flush).
    pub seconds: f64,
    /// Vectors per second.
    pub vectors_per_sec: f64,
    /// `vectors × dim × 4 / seconds / 10^9`.
    pub gb_per_s: f64,
    /// Seconds of the final `flush()` (mmap: msync of every chunk), separately.
    pub flush_seconds: Option<f64>,
}

/// Durable ingest of the whole set with `insert_batch`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IngestFigure {
    /// What was measured.
    pub what: String,
    /// The durability mode (its label).
    pub durability: String,
    /// Threads calling `insert_batch`.
    pub writers: usize,
    /// Vectors inserted.
    pub vectors: u64,
    /// Seconds until the last write was acknowledged and `sync()` returned.
    pub seconds: f64,
    /// Vectors per second.
    pub vectors_per_sec: f64,
    /// Bytes of write-ahead log written (log files' sizes, headers included).
    pub wal_bytes: u64,
    /// `wal_bytes / seconds / 10^6`.
    pub wal_mb_per_s: f64,
    /// `wal_mb_per_s` over the yardstick's MB/s (the best dd of the run).
    pub ratio_to_yardstick: f64,
    /// `wal_mb_per_s` over the mean MB/s of the dd runs made just before and just
    /// after this ingest (the headline ingest only).
    pub ratio_to_adjacent_dd: Option<f64>,
    /// That mean, MB/s.
    pub adjacent_dd_mb_per_s: Option<f64>,
}

/// Single-vector inserts for a fixed time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InsertFigure {
    /// What was measured.
    pub what: String,
    /// The durability mode (its label).
    pub durability: String,
    /// Threads calling `insert`.
    pub threads: usize,
    /// Inserts acknowledged.
    pub inserts: u64,
    /// Seconds.
    pub seconds: f64,
    /// Inserts per second (all threads).
    pub inserts_per_sec: f64,
    /// Mean seconds per insert as one thread saw it.
    pub mean_latency_us: f64,
}

/// One checkpoint, timed alone.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckpointFigure {
    /// What was measured.
    pub what: String,
    /// Seconds of `checkpoint()`.
    pub seconds: f64,
    /// Bytes it wrote (its own count).
    pub bytes_written: u64,
    /// Storage rows it covers.
    pub rows: u64,
}

/// Reopening a checkpointed HNSW collection.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReopenFigure {
    /// What was measured.
    pub what: String,
    /// `memory` or `mmap`.
    pub storage: String,
    /// The durability mode the collection was built and reopened with.
    pub durability: String,
    /// HNSW parameters.
    pub index_params: serde_json::Value,
    /// Vectors in the collection.
    pub vectors: u64,
    /// Seconds of the durable ingest that built it (log + storage + HNSW build).
    pub build_seconds: f64,
    /// Threads the HNSW build ran on.
    pub build_threads: usize,
    /// Seconds of the checkpoint that saved it.
    pub checkpoint_seconds: f64,
    /// The directory's size after the checkpoint.
    pub on_disk: DiskUsage,
    /// Seconds of each `Collection::open` with the files in the page cache.
    pub open_warm_seconds: Vec<f64>,
    /// Best of `open_warm_seconds`.
    pub open_warm_best: f64,
    /// Median of `open_warm_seconds`.
    pub open_warm_median: f64,
    /// Seconds of each `Collection::open` after the collection's files were
    /// evicted from the page cache (`posix_fadvise(DONTNEED)`), when that worked.
    pub open_cold_seconds: Vec<f64>,
    /// Best of `open_cold_seconds`.
    pub open_cold_best: Option<f64>,
    /// Median of `open_cold_seconds`.
    pub open_cold_median: Option<f64>,
    /// Log records replayed by each open.
    pub replayed_records: Vec<u64>,
    /// The index's build distance computations after each open (0: no rebuild).
    pub build_distance_computations_after_open: Vec<u64>,
    /// Live ids after each open.
    pub len_after_open: Vec<u64>,
    /// Whether any open replayed or rebuilt anything.
    pub rebuilt: bool,
}

/// The whole durability report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DurabilityReport {
    /// `durability`.
    pub run: String,
    /// The command that reproduces it.
    pub reproduce: String,
    /// Environment.
    pub env: Environment,
    /// The scratch directory (all files written there).
    pub scratch: String,
    /// Its file system.
    pub fs_type: String,
    /// Vectors.
    pub n: usize,
    /// Width.
    pub dim: usize,
    /// How the vectors were made.
    pub data: String,
    /// The yardstick, in the order measured.
    pub yardstick: Vec<Bandwidth>,
    /// The MB/s ratios are taken against (the best `dd` figure).
    pub yardstick_mb_per_s: f64,
    /// Storage-only append.
    pub append: Vec<AppendFigure>,
    /// Durable ingest with `insert_batch`.
    pub ingest: Vec<IngestFigure>,
    /// Single-vector inserts.
    pub single_inserts: Vec<InsertFigure>,
    /// One checkpoint after the group-commit ingest.
    pub checkpoint: Option<CheckpointFigure>,
    /// Reopening.
    pub reopen: Vec<ReopenFigure>,
    /// Section e: ingest with the indexer behind, and its catch-up.
    #[serde(default)]
    pub indexing: Option<crate::indexing::IndexingFigure>,
    /// Section e: opening with a log tail of unindexed vectors.
    #[serde(default)]
    pub tail_open: Option<crate::indexing::TailOpenFigure>,
    /// The issue's targets.
    pub targets: Vec<TargetCheck>,
    /// Notes.
    pub notes: Vec<String>,
}

/// Parses GNU dd's summary line "N bytes (...) copied, S s, R MB/s" into
/// (bytes, seconds).
pub fn parse_dd(stderr: &str) -> Option<(u64, f64, String)> {
    let line = stderr.lines().rev().find(|l| l.contains("copied"))?;
    let bytes: u64 = line.split_whitespace().next()?.parse().ok()?;
    let after = line.split("copied,").nth(1)?;
    let secs: f64 = after.split_whitespace().next()?.parse().ok()?;
    Some((bytes, secs, line.trim().to_string()))
}

fn dd_bandwidth(dir: &Path, mib: usize) -> Result<Option<Bandwidth>> {
    let path = dir.join("dd.bin");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"])
        .output();
    let _ = std::fs::remove_file(&path);
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => return Ok(None),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some((bytes, seconds, line)) = parse_dd(&stderr) else {
        return Ok(None);
    };
    Ok(Some(Bandwidth {
        what: format!("dd if=/dev/zero of=<scratch>/dd.bin bs=1M count={mib} conv=fdatasync: sequential write of {mib} MiB through the page cache, then one fdatasync, timed by dd"),
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds.max(1e-12) / 1e6,
        raw: Some(line),
    }))
}

fn rust_bandwidth(dir: &Path, mib: usize) -> Result<Bandwidth> {
    let path = dir.join("rust-dd.bin");
    let buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..mib {
            f.write_all(&buf)?;
        }
        f.sync_data()
    })();
    let seconds = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    r.map_err(|e| Error::io(&path, e))?;
    let bytes = (mib as u64) << 20;
    Ok(Bandwidth {
        what: format!(
            "the same in Rust: {mib} × 1 MiB write_all of zeros to a new file, then one sync_data"
        ),
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds.max(1e-12) / 1e6,
        raw: None,
    })
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Evicts a directory's files from the page cache (`posix_fadvise(DONTNEED)`
/// after `fdatasync`); false if any call failed.
fn evict(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let mut ok = true;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            return false;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(f) = std::fs::File::open(&p) else {
                ok = false;
                continue;
            };
            let _ = f.sync_data();
            // SAFETY: `f` is an open file descriptor for the duration of the call;
            // posix_fadvise only advises the kernel and touches no memory of ours.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            ok &= rc == 0;
        }
    }
    ok
}

/// The first three fields of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// `n` ids: `v0`, `v1`, ...
fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("v{i}")).collect()
}

/// Single-vector inserts from `threads` threads for `secs`; returns (inserts,
/// seconds).
fn single_inserts(
    c: &Collection,
    rows: &[f32],
    dim: usize,
    threads: usize,
    secs: f64,
) -> Result<(u64, f64)> {
    let n = rows.len() / dim;
    let deadline = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let total = std::thread::scope(|s| -> Result<u64> {
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                s.spawn(move || -> Result<u64> {
                    let mut i = 0usize;
                    while t.elapsed() < deadline {
                        let r = (th + i * threads) % n.max(1);
                        c.insert(&format!("t{th}-{i}"), &rows[r * dim..(r + 1) * dim])?;
                        i += 1;
                    }
                    Ok(i as u64)
                })
            })
            .collect();
        let mut total = 0;
        for h in hs {
            total += h
                .join()
                .map_err(|_| Error::invalid_param("writer", "an insert thread panicked"))??;
        }
        Ok(total)
    })?;
    Ok((total, t.elapsed().as_secs_f64()))
}

/// Sections b–d index every write before it returns (the figures keep the
/// meaning they always had: ingest includes the index build); section e
/// measures indexing behind writes.
fn opts(d: Durability) -> DurableOptions {
    DurableOptions::default()
        .durability(d)
        .checkpoint_log_bytes(u64::MAX)
        .checkpoint_indexed_rows(u64::MAX)
        .indexing(omen::IndexingMode::Inline)
}

/// Runs the whole benchmark in a fresh directory under `o.scratch` (removed at
/// the end), writes `<reports_dir>/durability/{report.md,results.json}` and returns
/// the report and the path of `report.md`.
pub fn run_durability(
    o: &DurabilityOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(DurabilityReport, PathBuf)> {
    if o.n == 0 || o.dim == 0 || o.dd_mib == 0 || o.reopen_trials == 0 || o.ingest_trials == 0 {
        return Err(Error::invalid_param(
            "durability",
            "n, dim, dd size, reopen and ingest trials must be at least 1",
        ));
    }
    std::fs::create_dir_all(&o.scratch).map_err(|e| Error::io(&o.scratch, e))?;
    let work = fresh_dir(&o.scratch, ".omen-durability")?;
    let r = measure(o, &work, progress);
    let _ = std::fs::remove_dir_all(&work);
    let report = r?;
    let dir = o.reports_dir.join("durability");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::invalid_param("report", e.to_string()))?;
    let p = dir.join("results.json");
    std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
    let p = dir.join("report.md");
    std::fs::write(&p, markdown(&report)).map_err(|e| Error::io(&p, e))?;
    Ok((report, p))
}

/// Rewrites `<dir>/report.md` and `<dir>/results.json` from the figures in
/// `<dir>/results.json`, with the targets judged again (after a change to how
/// they are judged or shown); measures nothing. Returns the path of `report.md`.
pub fn rerender(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("results.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let mut report: DurabilityReport = serde_json::from_str(&text)
        .map_err(|e| Error::invalid_param("results.json", format!("{}: {e}", p.display())))?;
    targets(&mut report);
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::invalid_param("report", e.to_string()))?;
    std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(&report)).map_err(|e| Error::io(&md, e))?;
    Ok(md)
}

fn measure(
    o: &DurabilityOptions,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<DurabilityReport> {
    let (n, dim) = (o.n, o.dim);
    let threads = rayon::current_num_threads();
    let mut rep = DurabilityReport {
        run: "durability".into(),
        reproduce: o.reproduce.clone(),
        env: Environment::capture(),
        scratch: work.display().to_string(),
        fs_type: fs_type(work),
        n,
        dim,
        data: format!("{n} × {dim} f32 vectors from omen-datasets' generator: a mixture of 100 Gaussian clusters (spread 0.25), seed 42, metric L2"),
        ..DurabilityReport::default()
    };

    rep.notes
        .push(format!("load average at the start: {}", loadavg()));
    // a. The yardstick.
    progress(&format!(
        "yardstick: dd, {} MiB with conv=fdatasync",
        o.dd_mib
    ));
    let dd = dd_bandwidth(work, o.dd_mib)?;
    match &dd {
        Some(b) => rep.yardstick.push(b.clone()),
        None => rep
            .notes
            .push("dd did not run (missing or failed): the yardstick is the Rust loop".into()),
    }
    progress("yardstick: the same in Rust");
    let rust = rust_bandwidth(work, o.dd_mib)?;
    rep.yardstick.push(rust.clone());

    progress(&format!("generating {n} × {dim} vectors"));
    let dist = omen_datasets::Distribution::GaussianMixture {
        clusters: 100,
        spread: 0.25,
    };
    let data = omen_datasets::generate(n, dim, &dist, 42, false)?;
    let rows: &[f32] = data.data();
    let all_ids = ids(n);
    let gb = |secs: f64| (n * dim * 4) as f64 / secs.max(1e-12) / 1e9;

    // b. Storage-only append.
    progress("storage-only append: memory");
    {
        let s = omen_storage::MemoryStorage::new(dim)?;
        let t = Instant::now();
        for b in rows.chunks(BATCH * dim) {
            s.append_batch(b)?;
        }
        let secs = t.elapsed().as_secs_f64();
        rep.append.push(AppendFigure {
            what: format!("storage-only append: {n} vectors into MemoryStorage with append_batch in batches of {BATCH}; no index, no log, no durability"),
            storage: StorageKind::Memory.name().into(),
            vectors: n as u64,
            seconds: secs,
            vectors_per_sec: n as f64 / secs.max(1e-12),
            gb_per_s: gb(secs),
            flush_seconds: None,
        });
    }
    progress("storage-only append: mmap");
    {
        let dir = work.join("append-mmap");
        let s = omen_storage::MmapStorage::create(&dir, dim)?;
        let t = Instant::now();
        for b in rows.chunks(BATCH * dim) {
            s.append_batch(b)?;
        }
        let secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        s.flush()?;
        let flush = t.elapsed().as_secs_f64();
        rep.append.push(AppendFigure {
            what: format!("storage-only append: {n} vectors into MmapStorage (new chunk files in the scratch directory) with append_batch in batches of {BATCH}; no index, no log, not flushed (the final flush() is timed separately)"),
            storage: StorageKind::Mmap.name().into(),
            vectors: n as u64,
            seconds: secs,
            vectors_per_sec: n as f64 / secs.max(1e-12),
            gb_per_s: gb(secs),
            flush_seconds: Some(flush),
        });
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // The yardstick the ratios use: the best dd figure (measured again below).
    let yard = |rep: &DurabilityReport| -> f64 {
        let dd = rep
            .yardstick
            .iter()
            .filter(|b| b.raw.is_some())
            .map(|b| b.mb_per_s)
            .fold(f64::NAN, f64::max);
        if dd.is_nan() {
            rep.yardstick
                .iter()
                .map(|b| b.mb_per_s)
                .fold(f64::NAN, f64::max)
        } else {
            dd
        }
    };

    // c. Durable ingest, flat index, memory storage.
    let flat = CollectionConfig::new(dim, Metric::L2)
        .index(&omen::FLAT)
        .storage(StorageKind::Memory);
    let modes: [(Durability, usize); 5] = [
        (group_commit(), 1),
        (group_commit(), 2),
        (
            Durability::GroupCommit {
                max_records: 256,
                max_delay: Duration::from_millis(2),
            },
            1,
        ),
        (Durability::PerWrite, 1),
        (Durability::None, 1),
    ];
    for (i, &(mode, writers)) in modes.iter().enumerate() {
        // The headline (group commit, one pipelined writer) runs several trials,
        // each between two dd runs: the disk's bandwidth swings from one dd to
        // the next, so each trial is compared with the dd runs on either side.
        let headline = i == 0;
        let trials = if headline { o.ingest_trials.max(1) } else { 1 };
        let mut before: Option<f64> = None;
        if headline {
            progress("yardstick: dd just before the first group-commit ingest");
            if let Some(mut b) = dd_bandwidth(work, o.dd_mib)? {
                b.what = format!("{} (before group-commit ingest trial 1)", b.what);
                before = Some(b.mb_per_s);
                rep.yardstick.push(b);
            }
        }
        for trial in 0..trials {
            let dir = work.join(format!("ingest-{i}-{trial}"));
            let c = Collection::create(&dir, &flat, opts(mode))?;
            let label = if trials > 1 {
                format!(" trial {} of {trials}", trial + 1)
            } else {
                String::new()
            };
            progress(&format!(
                "durable ingest: {} with {writers} writer(s){label}",
                mode.label()
            ));
            let secs = ingest(&c, rows, &all_ids, dim, writers)?;
            let wal = disk_usage(&dir)?.wal_bytes;
            let mut after: Option<f64> = None;
            if headline {
                progress("yardstick: dd just after the group-commit ingest");
                if let Some(mut b) = dd_bandwidth(work, o.dd_mib)? {
                    b.what = format!(
                        "{} (after group-commit ingest trial {} of {trials})",
                        b.what,
                        trial + 1
                    );
                    after = Some(b.mb_per_s);
                    rep.yardstick.push(b);
                }
            }
            if headline && trial + 1 == trials {
                progress("checkpoint after the group-commit ingest");
                let t = Instant::now();
                let info = c.checkpoint()?;
                let s = t.elapsed().as_secs_f64();
                rep.checkpoint = Some(CheckpointFigure {
                    what: format!("one checkpoint() of the {n}-vector flat/memory collection just ingested: writes the vectors' segment file, the id file and the manifest (each synced), then drops the log"),
                    seconds: s,
                    bytes_written: info.bytes_written,
                    rows: info.rows,
                });
            }
            c.close()?;
            let _ = std::fs::remove_dir_all(&dir);
            let mbps = wal as f64 / secs.max(1e-12) / 1e6;
            let adjacent = match (before, after) {
                (Some(b), Some(a)) => Some((b + a) / 2.0),
                (x, y) => x.or(y),
            };
            rep.ingest.push(IngestFigure {
                what: format!("durable ingest ({}){label}: WAL + storage + index build (flat), acknowledged: {n} vectors in batches of {BATCH} from {writers} thread(s) (one thread: insert_batch_deferred with up to {PIPELINE} batches submitted ahead of the oldest acknowledgement; several: blocking insert_batch) into a new flat/memory collection, string ids, automatic checkpoints off; clock from the first insert_batch until the last was acknowledged and sync() returned", mode.label()),
                durability: mode.label(),
                writers,
                vectors: n as u64,
                seconds: secs,
                vectors_per_sec: n as f64 / secs.max(1e-12),
                wal_bytes: wal,
                wal_mb_per_s: mbps,
                ratio_to_yardstick: 0.0,
                ratio_to_adjacent_dd: adjacent.map(|a| mbps / a.max(1e-12)),
                adjacent_dd_mb_per_s: adjacent,
            });
            before = after;
        }
    }

    // Single-vector inserts.
    for (mode, secs) in [
        (group_commit(), o.group_insert_seconds),
        (Durability::PerWrite, o.per_write_insert_seconds),
    ] {
        progress(&format!(
            "single-vector insert: {} with {} thread(s) for {secs} s",
            mode.label(),
            o.insert_threads
        ));
        let dir = work.join(format!("single-{}", rep.single_inserts.len()));
        let c = Collection::create(&dir, &flat, opts(mode))?;
        let (count, s) = single_inserts(&c, rows, dim, o.insert_threads, secs)?;
        c.close()?;
        let _ = std::fs::remove_dir_all(&dir);
        rep.single_inserts.push(InsertFigure {
            what: format!("single-vector insert ({}): insert() of one vector at a time from {} thread(s) for {secs} s into a new flat/memory collection; each call returns once acknowledged", mode.label(), o.insert_threads),
            durability: mode.label(),
            threads: o.insert_threads,
            inserts: count,
            seconds: s,
            inserts_per_sec: count as f64 / s.max(1e-12),
            mean_latency_us: s * o.insert_threads as f64 / (count.max(1) as f64) * 1e6,
        });
    }

    // d. Reopen a checkpointed HNSW collection.
    let hp = omen::HnswParams::new()
        .with_m(o.hnsw_m)
        .with_ef_construction(o.hnsw_ef_construction);
    for storage in [StorageKind::Memory, StorageKind::Mmap] {
        let sname = storage.name();
        let cfg = CollectionConfig::new(dim, Metric::L2)
            .index(hp.clone())
            .storage(storage);
        let dir = work.join(format!("reopen-{sname}"));
        let mode = group_commit();
        progress(&format!(
            "reopen ({sname}): building {n} vectors with HNSW M={} efc={} on {threads} thread(s)",
            o.hnsw_m, o.hnsw_ef_construction
        ));
        let c = Collection::create(&dir, &cfg, opts(mode))?;
        let build = ingest(&c, rows, &all_ids, dim, 1)?;
        progress(&format!("reopen ({sname}): checkpoint"));
        let t = Instant::now();
        c.checkpoint()?;
        let ckpt = t.elapsed().as_secs_f64();
        c.close()?;
        let on_disk = disk_usage(&dir)?;
        let mut f = ReopenFigure {
            what: format!("reopen: Collection::open of a checkpointed {n}-vector HNSW/{sname} collection with an empty log (nothing to replay), until it returned; the index is loaded from its checkpoint file, not rebuilt"),
            storage: sname.into(),
            durability: mode.label(),
            index_params: serde_json::json!({"M": o.hnsw_m, "ef_construction": o.hnsw_ef_construction}),
            vectors: n as u64,
            build_seconds: build,
            build_threads: threads,
            checkpoint_seconds: ckpt,
            on_disk,
            ..ReopenFigure::default()
        };
        let open_once = |f: &mut ReopenFigure| -> Result<f64> {
            let t = Instant::now();
            let c = Collection::open(&dir, opts(mode))?;
            let s = t.elapsed().as_secs_f64();
            let replayed = c.recovery_info().map_or(u64::MAX, |r| r.replayed_records);
            let dc = c.stats().index.build_distance_computations;
            f.replayed_records.push(replayed);
            f.build_distance_computations_after_open.push(dc);
            f.len_after_open.push(c.len() as u64);
            f.rebuilt |= replayed != 0 || dc != 0;
            if c.len() != n {
                return Err(Error::corruption(
                    &dir,
                    0,
                    format!("reopened with {} ids, expected {n}", c.len()),
                ));
            }
            c.close()?;
            Ok(s)
        };
        for t in 0..o.reopen_trials {
            progress(&format!("reopen ({sname}): warm open {}", t + 1));
            let s = open_once(&mut f)?;
            f.open_warm_seconds.push(s);
        }
        let mut cold_ok = true;
        for t in 0..o.reopen_trials {
            progress(&format!("reopen ({sname}): cold open {}", t + 1));
            if !evict(&dir) {
                cold_ok = false;
                break;
            }
            let s = open_once(&mut f)?;
            f.open_cold_seconds.push(s);
        }
        if !cold_ok {
            rep.notes.push(format!(
                "reopen ({sname}): posix_fadvise(DONTNEED) failed, no cold-open figure"
            ));
        }
        f.open_warm_best = best(&f.open_warm_seconds);
        f.open_warm_median = median(&f.open_warm_seconds);
        if !f.open_cold_seconds.is_empty() {
            f.open_cold_best = Some(best(&f.open_cold_seconds));
            f.open_cold_median = Some(median(&f.open_cold_seconds));
        }
        let _ = std::fs::remove_dir_all(&dir);
        rep.reopen.push(f);
    }

    // e. Indexing behind writes.
    if o.indexing {
        let q = o.indexing_queries.max(1);
        progress(&format!("indexing: {q} queries and their exact top-10"));
        let spec = omen_datasets::SyntheticSpec {
            name: "durability-queries".into(),
            rows: 1,
            queries: q,
            dim,
            distribution: dist.clone(),
            seed: 42,
            normalize: false,
            metric: Metric::L2,
        };
        let queries = spec.generate()?.queries;
        let gt = omen_datasets::compute_ground_truth(&data, &queries, Metric::L2, 10.min(n))?;
        let inp = crate::indexing::IndexingInputs {
            rows,
            ids: &all_ids,
            dim,
            queries: &queries,
            gt: &gt,
            m: o.hnsw_m,
            ef_construction: o.hnsw_ef_construction,
            ef: o.indexing_ef,
            tail_rows: o.tail_open_rows,
            trials: o.reopen_trials,
        };
        rep.tail_open = Some(crate::indexing::measure_tail_open(&inp, work, progress)?);
        rep.indexing = Some(crate::indexing::measure_catch_up(&inp, work, progress)?);
    }

    // The yardstick again, at the end, on the same file system.
    progress("yardstick again: dd");
    if let Some(mut b) = dd_bandwidth(work, o.dd_mib)? {
        b.what = format!("{} (repeated at the end of the run)", b.what);
        rep.yardstick.push(b);
    }
    rep.notes.push(format!(
        "load average at the end: {} (this machine has {} logical CPUs; other processes' load shows in every figure)",
        loadavg(),
        rep.env.logical_cpus
    ));
    rep.yardstick_mb_per_s = yard(&rep);
    let y = rep.yardstick_mb_per_s;
    for f in &mut rep.ingest {
        f.ratio_to_yardstick = f.wal_mb_per_s / y.max(1e-12);
    }
    targets(&mut rep);
    Ok(rep)
}

fn targets(rep: &mut DurabilityReport) {
    let headline = rep.n == 1_000_000 && rep.dim == 128;
    let at = if headline {
        String::new()
    } else {
        format!(
            " (this run: {} × {}, not the headline 1,000,000 × 128)",
            rep.n, rep.dim
        )
    };
    let mut t = Vec::new();
    for a in &rep.append {
        t.push(TargetCheck {
            target: format!(
                "storage-only append into {} storage (no index, no durability): at least 2,000,000 vectors/s{at}",
                a.storage
            ),
            measured: format!("{} vectors/s", fmt_int(a.vectors_per_sec)),
            met: a.vectors_per_sec >= 2_000_000.0,
        });
    }
    // The headline trials: group commit, one writer, each between two dd runs.
    // The deciding figure is the median trial against the median dd of the run:
    // this disk's dd swings several-fold from one run to the next (host-side
    // caching), and a single fast or slow dd must not decide the verdict, as it
    // does for the trial next to it. Every other view is reported too.
    let trials: Vec<&IngestFigure> = rep
        .ingest
        .iter()
        .filter(|f| f.writers == 1 && f.ratio_to_adjacent_dd.is_some())
        .collect();
    let dd: Vec<f64> = rep
        .yardstick
        .iter()
        .filter(|b| b.raw.is_some())
        .map(|b| b.mb_per_s)
        .collect();
    let dd_median = median(&dd);
    if let (Some(g), false) = (trials.first(), dd_median.is_nan()) {
        let log = median(&trials.iter().map(|f| f.wal_mb_per_s).collect::<Vec<_>>());
        let vps = median(&trials.iter().map(|f| f.vectors_per_sec).collect::<Vec<_>>());
        let ratio = log / dd_median.max(1e-12);
        let each: Vec<String> = trials
            .iter()
            .map(|f| {
                format!(
                    "{:.0} MB/s vs {:.0} MB/s = {:.0}%",
                    f.wal_mb_per_s,
                    f.adjacent_dd_mb_per_s.unwrap_or(f64::NAN),
                    f.ratio_to_adjacent_dd.unwrap_or(f64::NAN) * 100.0
                )
            })
            .collect();
        let (lo, hi) = dd
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        t.push(TargetCheck {
            target: format!("durable ingest with group commit ({}, 1 writer, flat/memory): log write rate at least 70% of this machine's sequential write bandwidth, dd conv=fdatasync in the same run: the median of the {} ingest trials against the median of the run's {} dd runs{at}", g.durability, trials.len(), dd.len()),
            measured: format!(
                "{:.0} MB/s of log ({} vectors/s) = {:.0}% of the median dd {:.0} MB/s (dd ranged {:.0}–{:.0} MB/s); each trial against the mean of the dd runs just before and after it: {}; median trial against the best dd of the run ({:.0} MB/s): {:.0}%",
                log,
                fmt_int(vps),
                ratio * 100.0,
                dd_median,
                lo,
                hi,
                each.join("; "),
                rep.yardstick_mb_per_s,
                log / rep.yardstick_mb_per_s.max(1e-12) * 100.0
            ),
            met: ratio >= 0.70,
        });
    }
    for r in &rep.reopen {
        t.push(TargetCheck {
            target: format!("reopen of {} × {} vectors with a checkpointed HNSW index ({} storage): under 2 s, no rebuild{at}", fmt_int(r.vectors as f64), rep.dim, r.storage),
            measured: format!(
                "warm: median {:.3} s (best {:.3} s); cold page cache: median {} s; replayed {:?}, build distance computations after open {:?}",
                r.open_warm_median,
                r.open_warm_best,
                r.open_cold_median.map_or("—".into(), |v| format!("{v:.3}")),
                r.replayed_records,
                r.build_distance_computations_after_open
            ),
            met: r.open_warm_median < 2.0 && !r.rebuilt,
        });
    }
    crate::indexing::targets(rep.tail_open.as_ref(), rep.indexing.as_ref(), &mut t, &at);
    rep.targets = t;
}

/// The Markdown report.
pub fn markdown(r: &DurabilityReport) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Omen durability benchmark\n");
    let _ = writeln!(
        m,
        "{}. Everything below was measured in one run, in one scratch directory `{}` on file system **{}**.\n",
        r.data, r.scratch, r.fs_type
    );
    let _ = writeln!(m, "Reproduce with:\n\n```sh\n{}\n```\n", r.reproduce);
    let _ = writeln!(m, "Each figure names what it measures and, where a log is involved, its durability mode: `group-commit(256, 0ns)`, the default (a write returns once an fdatasync covering its log record completed; the flusher syncs as soon as a record waits and no sync is running, so writes arriving during a sync form the next group), `per-write` (each write's record is synced before it is applied), `none` (log written in large blocks without syncing; only `sync()`/`checkpoint()` make writes durable). Phases are never summed into one number. MB = 10^6 bytes, GB = 10^9 bytes.\n");

    let _ = writeln!(m, "## Targets\n");
    let _ = writeln!(m, "| target | measured | met |");
    let _ = writeln!(m, "|---|---|:---:|");
    for t in &r.targets {
        let _ = writeln!(
            m,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }

    let _ = writeln!(m, "\n## a. Yardstick: sequential write bandwidth\n");
    let _ = writeln!(m, "| what | bytes | seconds | MB/s |");
    let _ = writeln!(m, "|---|---:|---:|---:|");
    for b in &r.yardstick {
        let _ = writeln!(
            m,
            "| {}{} | {} | {:.3} | {:.0} |",
            b.what,
            b.raw
                .as_ref()
                .map_or(String::new(), |l| format!(" (dd: `{l}`)")),
            fmt_int(b.bytes as f64),
            b.seconds,
            b.mb_per_s
        );
    }
    let _ = writeln!(
        m,
        "\nThis virtual disk's write bandwidth varies a lot from one `dd` to the next (host-side caching and other load), so `dd` ran several times in the run. The ratio column below is taken against **{:.0} MB/s**, the best `dd` figure of the run (the harder yardstick). The headline group-commit ingest runs as several trials, dd before the first and after each, and each trial is also compared with the mean of the two `dd` runs on either side of it ({}); the target compares the median trial with the median of every `dd` of the run, so that one outlying `dd` (or trial) does not decide it.\n",
        r.yardstick_mb_per_s,
        {
            let v: Vec<String> = r
                .ingest
                .iter()
                .filter_map(|f| f.adjacent_dd_mb_per_s.zip(f.ratio_to_adjacent_dd))
                .map(|(a, q)| format!("{a:.0} MB/s: ratio {:.0}%", q * 100.0))
                .collect();
            if v.is_empty() {
                "not measured".to_string()
            } else {
                v.join("; ")
            }
        }
    );

    let _ = writeln!(
        m,
        "## b. Storage-only append (no index, no log, no durability)\n"
    );
    let _ = writeln!(
        m,
        "| what | vectors | seconds | vectors/s | GB/s | final flush() s |"
    );
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
    for a in &r.append {
        let _ = writeln!(
            m,
            "| {} | {} | {:.3} | {} | {:.2} | {} |",
            a.what,
            fmt_int(a.vectors as f64),
            a.seconds,
            fmt_int(a.vectors_per_sec),
            a.gb_per_s,
            a.flush_seconds.map_or("—".into(), |s| format!("{s:.3}"))
        );
    }

    let _ = writeln!(
        m,
        "\n## c. Durable ingest (WAL + storage + flat index, acknowledged)\n"
    );
    let _ = writeln!(m, "| durability mode | writers | what | vectors | seconds | vectors/s | log bytes | log MB/s | log MB/s ÷ dd MB/s |");
    let _ = writeln!(m, "|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for f in &r.ingest {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {:.3} | {} | {} | {:.0} | {:.0}% |",
            f.durability,
            f.writers,
            f.what,
            fmt_int(f.vectors as f64),
            f.seconds,
            fmt_int(f.vectors_per_sec),
            fmt_int(f.wal_bytes as f64),
            f.wal_mb_per_s,
            f.ratio_to_yardstick * 100.0
        );
    }
    let _ = writeln!(m, "\n- `group-commit(256, 2ms)` is not the default: it waits up to 2 ms for company before a sync (unless 256 records or 256 KiB wait), to show what such a delay costs.");
    let _ = writeln!(m, "\nSingle-vector inserts (the per-record cost):\n");
    let _ = writeln!(m, "| durability mode | threads | what | inserts | seconds | inserts/s | mean latency µs (per thread) |");
    let _ = writeln!(m, "|---|---:|---|---:|---:|---:|---:|");
    for f in &r.single_inserts {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {:.2} | {} | {:.0} |",
            f.durability,
            f.threads,
            f.what,
            fmt_int(f.inserts as f64),
            f.seconds,
            fmt_int(f.inserts_per_sec),
            f.mean_latency_us
        );
    }
    if let Some(c) = &r.checkpoint {
        let _ = writeln!(
            m,
            "\nCheckpoint, timed alone: {} — **{:.3} s**, {} written, {} rows.\n",
            c.what,
            c.seconds,
            fmt_bytes(c.bytes_written),
            fmt_int(c.rows as f64)
        );
    }

    let _ = writeln!(m, "## d. Reopen with a checkpointed HNSW index\n");
    let _ = writeln!(m, "| storage | what | vectors | HNSW params | durable ingest + HNSW build s (threads) | checkpoint s | on-disk | open warm median s | open warm best s | open cold median s | open cold best s | replayed records | build dist. comps after open | rebuilt |");
    let _ = writeln!(
        m,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for f in &r.reopen {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {:.1} ({}) | {:.2} | {} | {:.3} | {:.3} | {} | {} | {:?} | {:?} | {} |",
            f.storage,
            f.what,
            fmt_int(f.vectors as f64),
            f.index_params,
            f.build_seconds,
            f.build_threads,
            f.checkpoint_seconds,
            fmt_bytes(f.on_disk.total),
            f.open_warm_median,
            f.open_warm_best,
            f.open_cold_median.map_or("—".into(), |v| format!("{v:.3}")),
            f.open_cold_best.map_or("—".into(), |v| format!("{v:.3}")),
            f.replayed_records,
            f.build_distance_computations_after_open,
            if f.rebuilt { "**yes**" } else { "no" }
        );
    }
    let _ = writeln!(m, "\n- The build column is the durable ingest that made the collection ({}, batches of {BATCH}, one writer; the HNSW batch insert inside `insert_batch` runs on the rayon pool), reported as index build, separate from the open time.", r.reopen.first().map_or(String::new(), |f| f.durability.clone()));
    let _ = writeln!(m, "- **warm**: the collection's files were just written and sit in the OS page cache. **cold**: before each open every file of the collection was `fdatasync`ed and evicted with `posix_fadvise(POSIX_FADV_DONTNEED)`, so open reads them from the device (mmap storage: its rows are read by the checksum check of open).");
    let _ = writeln!(m, "- {DISK_SIZE_RULE}.");
    for f in &r.reopen {
        let _ = writeln!(
            m,
            "- {}: {} files, {} in total; mmap chunk files {} allocated of {} apparent; open times warm {:?} s, cold {:?} s.",
            f.storage,
            f.on_disk.files,
            fmt_bytes(f.on_disk.total),
            fmt_bytes(f.on_disk.chunk_allocated),
            fmt_bytes(f.on_disk.chunk_apparent),
            f.open_warm_seconds.iter().map(|s| (s * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            f.open_cold_seconds.iter().map(|s| (s * 1000.0).round() / 1000.0).collect::<Vec<_>>()
        );
    }
    crate::indexing::markdown(&mut m, r.tail_open.as_ref(), r.indexing.as_ref());
    for n in &r.notes {
        let _ = writeln!(m, "- {n}");
    }

    let e = &r.env;
    let _ = writeln!(m, "\n## Environment\n");
    m.push_str(&e.markdown_lines());
    let _ = writeln!(
        m,
        "- scratch directory: `{}`, file system {}",
        r.scratch, r.fs_type
    );
    let _ = writeln!(m, "- started: {}", e.started_utc);
    let _ = writeln!(m, "- command line: `{}`", e.command_line);
    m
}

/// A plain-text summary for the terminal.
pub fn summary(r: &DurabilityReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "durability: {} × {}, scratch on {}",
        fmt_int(r.n as f64),
        r.dim,
        r.fs_type
    );
    let _ = writeln!(s, "{:<58} {:>14} {:>12}", "figure (mode)", "value", "unit");
    for b in &r.yardstick {
        let name = if b.raw.is_some() {
            "yardstick: dd conv=fdatasync"
        } else {
            "yardstick: Rust write + sync_data"
        };
        let _ = writeln!(s, "{name:<58} {:>14.0} {:>12}", b.mb_per_s, "MB/s");
    }
    for a in &r.append {
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            format!("storage-only append: {} (no durability)", a.storage),
            fmt_int(a.vectors_per_sec),
            "vectors/s"
        );
        if let Some(f) = a.flush_seconds {
            let _ = writeln!(
                s,
                "{:<58} {:>14.3} {:>12}",
                format!("  {} final flush()", a.storage),
                f,
                "s"
            );
        }
    }
    for f in &r.ingest {
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            format!("durable ingest ({}, {} writer(s))", f.durability, f.writers),
            fmt_int(f.vectors_per_sec),
            "vectors/s"
        );
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            "  log write rate, ratio to dd",
            format!(
                "{:.0} ({:.0}%)",
                f.wal_mb_per_s,
                f.ratio_to_yardstick * 100.0
            ),
            "MB/s"
        );
    }
    for f in &r.single_inserts {
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            format!("single insert ({}, {} threads)", f.durability, f.threads),
            fmt_int(f.inserts_per_sec),
            "inserts/s"
        );
    }
    if let Some(c) = &r.checkpoint {
        let _ = writeln!(
            s,
            "{:<58} {:>14.3} {:>12}",
            "checkpoint() after the ingest", c.seconds, "s"
        );
    }
    for f in &r.reopen {
        let _ = writeln!(
            s,
            "{:<58} {:>14.1} {:>12}",
            format!(
                "HNSW build via durable ingest ({}, {})",
                f.storage, f.durability
            ),
            f.build_seconds,
            "s"
        );
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            format!("reopen ({}): warm median / best", f.storage),
            format!("{:.3} / {:.3}", f.open_warm_median, f.open_warm_best),
            "s"
        );
        if let (Some(a), Some(b)) = (f.open_cold_median, f.open_cold_best) {
            let _ = writeln!(
                s,
                "{:<58} {:>14} {:>12}",
                format!("reopen ({}): cold median / best", f.storage),
                format!("{a:.3} / {b:.3}"),
                "s"
            );
        }
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            format!("  replayed / rebuilt ({})", f.storage),
            format!(
                "{:?} / {}",
                f.replayed_records.iter().sum::<u64>(),
                f.rebuilt
            ),
            ""
        );
        let _ = writeln!(
            s,
            "{:<58} {:>14} {:>12}",
            format!("  on-disk ({})", f.storage),
            fmt_bytes(f.on_disk.total),
            ""
        );
    }
    crate::indexing::summary(&mut s, r.tail_open.as_ref(), r.indexing.as_ref());
    for t in &r.targets {
        let _ = writeln!(
            s,
            "[{}] {} — {}",
            if t.met { "met" } else { "NOT met" },
            t.target,
            t.measured
        );
    }
    s
}

#[cfg(test)]
mod tests {
    fn dd(mb: f64) -> Bandwidth {
        Bandwidth {
            what: "dd".into(),
            bytes: 1 << 30,
            seconds: 1.0,
            mb_per_s: mb,
            raw: Some("dd line".into()),
        }
    }

    fn trial(mb: f64, adjacent: f64) -> IngestFigure {
        IngestFigure {
            durability: "group-commit(256, 0ns)".into(),
            writers: 1,
            wal_mb_per_s: mb,
            vectors_per_sec: mb * 2000.0,
            ratio_to_adjacent_dd: Some(mb / adjacent),
            adjacent_dd_mb_per_s: Some(adjacent),
            ..IngestFigure::default()
        }
    }

    #[test]
    fn ingest_target_is_median_trial_against_median_dd() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let mut rep = DurabilityReport {
            n: 1_000_000,
            dim: 128,
            // One outlying fast dd: the median (700) decides, not the best (2000).
            yardstick: vec![dd(500.0), dd(2000.0), dd(700.0), dd(800.0)],
            yardstick_mb_per_s: 2000.0,
            ingest: vec![
                trial(600.0, 1250.0),
                trial(400.0, 1350.0),
                trial(800.0, 750.0),
            ],
            ..DurabilityReport::default()
        };
        let ingest_target = |rep: &mut DurabilityReport| {
            targets(rep);
            rep.targets
                .iter()
                .find(|t| t.target.contains("durable ingest"))
                .cloned()
                .unwrap()
        };
        let t = ingest_target(&mut rep);
        // 600 / 750 = 80 %.
        assert!(t.met, "{t:?}");
        assert!(
            t.measured.contains("= 80% of the median dd 750 MB/s"),
            "{}",
            t.measured
        );
        // A disk twice as fast makes the same ingest miss it.
        rep.yardstick = vec![dd(1500.0), dd(1500.0), dd(1400.0)];
        let t = ingest_target(&mut rep);
        assert!(!t.met, "{t:?}");
    }

    use super::*;

    #[test]
    fn dd_line_parses() {
        let err = "1024+0 records in\n1024+0 records out\n1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.91 s, 369 MB/s\n";
        let (b, s, l) = parse_dd(err).unwrap();
        assert_eq!(b, 1073741824);
        assert!((s - 2.91).abs() < 1e-9);
        assert!(l.ends_with("MB/s"));
        assert!(parse_dd("dd: error").is_none());
    }

    #[test]
    fn disk_usage_counts_sparse_chunks_by_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("vectors")).unwrap();
        let f = std::fs::File::create(d.join("vectors/chunk-00.omv")).unwrap();
        f.set_len(64 << 20).unwrap();
        std::fs::write(d.join("wal-00000001.log"), vec![1u8; 1000]).unwrap();
        let u = disk_usage(d).unwrap();
        assert_eq!(u.files, 2);
        assert_eq!(u.chunk_apparent, 64 << 20);
        assert!(u.chunk_allocated < 1 << 20, "{u:?}");
        assert_eq!(u.wal_bytes, 1000);
        assert_eq!(u.total, 1000 + u.chunk_allocated);
    }

    #[test]
    fn tiny_run_measures_every_figure() {
        let tmp = tempfile::tempdir().unwrap();
        let o = DurabilityOptions {
            n: 3000,
            dim: 16,
            dd_mib: 4,
            scratch: tmp.path().join("scratch"),
            reports_dir: tmp.path().join("reports"),
            hnsw_m: 8,
            hnsw_ef_construction: 16,
            group_insert_seconds: 0.2,
            per_write_insert_seconds: 0.1,
            insert_threads: 2,
            reopen_trials: 2,
            ingest_trials: 2,
            reproduce: "test".into(),
            indexing: true,
            indexing_queries: 10,
            indexing_ef: 64,
            tail_open_rows: 500,
        };
        let (r, md) = run_durability(&o, &mut |_| {}).unwrap();
        assert!(r.indexing.is_some() && r.tail_open.is_some());
        assert!(md.exists());
        assert!(tmp.path().join("reports/durability/results.json").exists());
        assert_eq!(r.append.len(), 2);
        // Two trials of the headline ingest, then one of each other mode.
        assert_eq!(r.ingest.len(), 6);
        assert!(r.ingest[0].ratio_to_adjacent_dd.is_some());
        assert!(r.ingest[1].ratio_to_adjacent_dd.is_some());
        assert!(
            r.ingest[1].what.contains("trial 2 of 2"),
            "{}",
            r.ingest[1].what
        );
        assert!(r.ingest[2].ratio_to_adjacent_dd.is_none());
        assert!(r.yardstick.len() >= 5, "{:?}", r.yardstick);
        for f in &r.ingest {
            assert_eq!(f.vectors, 3000);
            // Every vector is logged: at least its floats.
            assert!(f.wal_bytes >= 3000 * 16 * 4, "{f:?}");
            assert!(f.ratio_to_yardstick > 0.0);
        }
        assert_eq!(r.single_inserts.len(), 2);
        assert!(r.single_inserts.iter().all(|f| f.inserts > 0));
        assert_eq!(r.reopen.len(), 2);
        for f in &r.reopen {
            assert!(!f.rebuilt, "{f:?}");
            assert!(f.len_after_open.len() >= o.reopen_trials);
            assert!(f.len_after_open.iter().all(|&l| l == 3000), "{f:?}");
            assert!(f.replayed_records.iter().all(|&r| r == 0));
            assert!(f
                .build_distance_computations_after_open
                .iter()
                .all(|&d| d == 0));
            assert!(f.on_disk.total > 0);
        }
        assert_eq!(r.targets.len(), 8);
        let text = markdown(&r);
        assert!(text.contains("group-commit(256, 0ns)"));
        assert!(text.contains("per-write"));
        // The scratch directory is cleaned up.
        let left: Vec<_> = std::fs::read_dir(&o.scratch).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
