//! Durability for a [`Collection`]: a write-ahead log and checkpoints in a
//! collection directory, all I/O through an [`omen_fs::FileSystem`].
//!
//! # Directory
//! | file | what |
//! |---|---|
//! | `LOCK` | held (exclusive lock) by the one process that has the collection open |
//! | `MANIFEST` | the last checkpoint: which files hold it, its log position |
//! | `wal-GGGGGGGG.log` | log generation `G`: records written since a checkpoint |
//! | `vectors-GGGGGGGG.seg` | rows a checkpoint saved (memory storage) |
//! | `vectors/chunk-NN.omv` | the mmap storage's rows |
//! | `ids-GGGGGGGG.ids` | the live ids and their slots at checkpoint `G` |
//! | `index-GGGGGGGG.hnsw`, `.ivfpq` | the index's state at checkpoint `G` |
//!
//! # Protocol (the argument is in `docs/FORMAT.md`)
//! * A write is validated, logged (appended to the log's buffer with the next
//!   sequence number), applied in memory, and acknowledged once the log is synced
//!   up to its record (per-write mode syncs before applying; group commit after,
//!   without holding the writer lock; `None` never waits).
//! * A checkpoint creates and syncs log generation `G + 1`, then, holding the
//!   writer lock, syncs the old log and switches writers to the new one, and takes
//!   the state as of that cut (rows, id map, the index's bytes). It writes the new
//!   segment, id and index files (each synced), writes `MANIFEST.tmp`, syncs it
//!   and the directory (so that every file it names is there), renames it over
//!   `MANIFEST` and syncs the directory again. Only then are older log
//!   generations and files removed.
//! * Opening reads `MANIFEST`, loads what it names (checking every checksum),
//!   replays the log generations from its `wal_gen` on, truncates a torn tail of
//!   the newest, and removes files no manifest names.

pub(crate) mod commit;
pub(crate) mod files;
pub(crate) mod wal;

use crate::collection::{new_index, Collection};
use crate::config::CollectionConfig;
use crate::idmap::IdMap;
use crate::indexer::IndexingMode;
use crate::registry::{self, StorageKind};
use commit::{CommitQueue, GroupPolicy, LogFile};
use files::{Manifest, Segment};
use omen_core::sync::{lock, read, write, Mutex, RwLock};
use omen_core::{Error, IndexKind, Metric, Result, SlotId, VectorIndex, VectorStorage};
use omen_fs::{FileSystem, LockGuard, RealFs, WritableFile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wal::Op;

/// When a write is acknowledged. Every benchmark names the mode it ran with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Each write's log record is written and synced (`fdatasync`) before the
    /// write is applied and returns. Writers are serialised through the sync.
    PerWrite,
    /// Writes are logged to a buffer and applied; a flusher thread writes and
    /// syncs the buffer once `max_records` records (or 256 KiB) wait or the oldest
    /// has waited `max_delay`; each write returns only after the sync covering it. An
    /// acknowledged write is as durable as under `PerWrite`; a search may see a
    /// write a little before it is acknowledged (and a crash in between loses it,
    /// though it was never acknowledged).
    GroupCommit {
        /// Sync once this many records wait.
        max_records: usize,
        /// Sync once the oldest waiting record is this old.
        max_delay: Duration,
    },
    /// Records are buffered and written in large blocks without syncing; writes
    /// return at once. **A crash loses every write since the last checkpoint or
    /// [`Collection::sync`]** — a bulk-load mode.
    None,
}

impl Default for Durability {
    /// Group commit that syncs as soon as a record waits and no sync is running:
    /// writes that arrive during a sync form the next group, so concurrency makes
    /// the groups, and a lone writer never waits for company (a 2 ms delay cost
    /// single inserts from two threads 8x in `omen bench durability`).
    fn default() -> Self {
        Durability::GroupCommit {
            max_records: 256,
            max_delay: Duration::ZERO,
        }
    }
}

impl Durability {
    /// A short label for reports: `per-write`, `group-commit(256, 0ns)`, `none`.
    pub fn label(&self) -> String {
        match self {
            Durability::PerWrite => "per-write".into(),
            Durability::GroupCommit {
                max_records,
                max_delay,
            } => format!("group-commit({max_records}, {max_delay:?})"),
            Durability::None => "none".into(),
        }
    }
}

/// How a durable collection is opened.
#[derive(Clone, Debug)]
pub struct DurableOptions {
    /// When writes are acknowledged.
    pub durability: Durability,
    /// A checkpoint runs automatically once this many bytes were logged since the
    /// last one (default 64 MiB); `u64::MAX` turns automatic checkpoints off.
    pub checkpoint_log_bytes: u64,
    /// The file system all log and checkpoint I/O goes through (the real one by
    /// default; tests use `omen_fs::SimFs`).
    pub fs: Arc<dyn FileSystem>,
    /// How writes reach the index (default: [`IndexingMode::background`]: a
    /// background thread, at most 65,536 rows unindexed). Opening never indexes
    /// in the background modes: rows the last checkpoint left unindexed and the
    /// log's rows are searched exactly until the indexer has added them.
    pub indexing: IndexingMode,
    /// A checkpoint also runs automatically once the indexer has added this many
    /// rows since the last one (default 262,144), so that a reopened collection
    /// loads that work instead of redoing it; `u64::MAX` turns this off.
    pub checkpoint_indexed_rows: u64,
    /// Open without writing anything to the directory: no torn-tail truncation,
    /// no removal of stale files, no log, no checkpoints; every write is refused.
    /// For commands that only read (`omen db stats`, `get`, `search`, `verify`).
    pub read_only: bool,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            durability: Durability::default(),
            checkpoint_log_bytes: 64 << 20,
            fs: Arc::new(RealFs),
            indexing: IndexingMode::background(),
            checkpoint_indexed_rows: 1 << 18,
            read_only: false,
        }
    }
}

impl DurableOptions {
    /// Sets the durability mode.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Sets the automatic checkpoint threshold.
    pub fn checkpoint_log_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_log_bytes = bytes;
        self
    }

    /// Sets the file system.
    pub fn fs(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }

    /// Sets how writes reach the index.
    pub fn indexing(mut self, mode: IndexingMode) -> Self {
        self.indexing = mode;
        self
    }

    /// Sets the indexed-rows checkpoint threshold.
    pub fn checkpoint_indexed_rows(mut self, rows: u64) -> Self {
        self.checkpoint_indexed_rows = rows;
        self
    }

    /// Opens read-only (see the field).
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }
}

/// What a checkpoint wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// The checkpoint's generation.
    pub gen: u64,
    /// Storage rows it covers.
    pub rows: u64,
    /// Live ids.
    pub live: u64,
    /// The last log record it includes.
    pub last_seq: u64,
    /// Rows below this are indexed (if live); the rest were saved unindexed.
    pub indexed: u64,
    /// Bytes written (new vectors, ids, index, manifest).
    pub bytes_written: u64,
}

/// What [`Collection::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryInfo {
    /// The checkpoint generation loaded.
    pub checkpoint_gen: u64,
    /// Log records replayed on top of it.
    pub replayed_records: u64,
    /// Bytes of torn log tail truncated.
    pub truncated_bytes: u64,
    /// Files no manifest named, removed.
    pub removed_files: usize,
    /// Rows left for the indexer at open (the checkpoint's unindexed rows and the
    /// log's): searched exactly until indexed.
    pub unindexed_rows: u64,
    /// Whether the collection was opened read-only.
    pub read_only: bool,
}

type Sink = LogFile;

/// `close` checkpoints once this many rows were indexed since the last checkpoint.
pub(crate) const CLOSE_CHECKPOINT_ROWS: u64 = 1024;
/// `close` checkpoints once this much log was written since the last checkpoint.
pub(crate) const CLOSE_CHECKPOINT_LOG_BYTES: u64 = 1 << 20;

/// Under group commit, a sync starts at once when this many bytes of log wait: a
/// large batch is its own group and need not wait `max_delay` for company.
const GROUP_MAX_BYTES: usize = 256 << 10;

/// The durable side of a collection.
pub(crate) struct Durable {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    mode: Durability,
    checkpoint_bytes: u64,
    checkpoint_indexed: u64,
    read_only: bool,
    queue: Arc<CommitQueue<Sink>>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last committed checkpoint, replaced whole when a new one commits.
    manifest: RwLock<Arc<Manifest>>,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// The next log generation to create.
    next_gen: AtomicU64,
    /// Set by an I/O failure, or a write that was logged but failed to apply.
    poisoned: AtomicBool,
    /// What poisoned it (the first failure).
    poison_cause: Mutex<Option<String>>,
    recovery: RecoveryInfo,
    /// The index's kind and the storage's, as the manifest names them.
    index_kind: &'static dyn IndexKind,
    storage_kind: StorageKind,
    _lock: Box<dyn LockGuard>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn wal_name(gen: u64) -> String {
    format!("wal-{gen:08}.log")
}

fn parse_wal_name(name: &str) -> Option<u64> {
    let g = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if g.len() != 8 || !g.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    g.parse().ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Writes a whole file and syncs its data (the directory is synced by the
/// caller).
fn write_file(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs.create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_data().map_err(io_err(path))
}

/// Creates log generation `gen` with its header, synced, and syncs the directory.
fn create_wal(fs: &dyn FileSystem, dir: &Path, dim: usize, gen: u64) -> Result<Sink> {
    let path = dir.join(wal_name(gen));
    let mut f = fs.create(&path).map_err(io_err(&path))?;
    f.write_all(&wal::file_header(dim, gen))
        .map_err(io_err(&path))?;
    f.sync_data().map_err(io_err(&path))?;
    fs.sync_dir(dir).map_err(io_err(dir))?;
    Ok(LogFile { path, file: f })
}

/// The log of a read-only collection: nothing is ever written to it (every
/// write is refused before it reaches the log; a flush with nothing buffered
/// does not touch the file).
struct ReadOnlyLog;

impl WritableFile for ReadOnlyLog {
    fn write_all(&mut self, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("the collection is open read-only"))
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn len(&self) -> u64 {
        0
    }
}

fn lock_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Box<dyn LockGuard>> {
    let path = dir.join("LOCK");
    fs.lock(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            Error::io(&path, e)
        }
    })
}

impl Collection {
    /// Creates a durable collection in `dir` (created if missing; refused with
    /// `InvalidParameter` if it already holds a collection) and opens it. The
    /// directory is locked for this process until the collection is dropped.
    ///
    /// ```
    /// use omen::{Collection, CollectionConfig, DurableOptions, Metric};
    /// let dir = std::env::temp_dir().join(format!("omen-doc-create-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// {
    ///     let c = Collection::create(&dir, &CollectionConfig::new(2, Metric::L2), DurableOptions::default())?;
    ///     c.insert("a", &[1.0, 2.0])?;
    /// } // dropped: the directory is unlocked
    /// let c = Collection::open(&dir, DurableOptions::default())?;
    /// assert_eq!(c.get("a"), Some(vec![1.0, 2.0]));
    /// # drop(c); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), omen::Error>(())
    /// ```
    pub fn create(
        dir: &Path,
        config: &CollectionConfig,
        options: DurableOptions,
    ) -> Result<Collection> {
        if options.read_only {
            return Err(Error::invalid_param(
                "read_only",
                "a collection cannot be created read-only",
            ));
        }
        let mode = options.indexing;
        let fs = Arc::clone(&options.fs);
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        let guard = lock_dir(&*fs, dir)?;
        // Not `exists`: it answers `false` on an I/O error, and this collection
        // would then replace the one there.
        let names = fs.list(dir).map_err(io_err(dir))?;
        if names.iter().any(|n| n == "MANIFEST") {
            return Err(Error::invalid_param(
                "dir",
                format!("{} already holds a collection", dir.display()),
            ));
        }
        let dim = config.dim;
        // Refuse a kind that a reopen could not find by name.
        let kind = registry::lookup(config.index.name())?;
        let storage: Box<dyn VectorStorage> = match config.storage {
            StorageKind::Memory => Box::new(omen_storage::MemoryStorage::new(dim)?),
            StorageKind::Mmap => {
                let real = fs.real_path(&dir.join("vectors")).ok_or_else(|| {
                    Error::invalid_param("storage", "mmap storage needs the real file system")
                })?;
                if real.exists() {
                    // Left by an earlier create that did not finish.
                    std::fs::remove_dir_all(&real).map_err(io_err(&real))?;
                }
                mmap_create(&real, dim)?
            }
        };
        let index = new_index(config)?;
        let mut c = Collection::with_backends(dim, config.metric, storage, index)?;
        let sink = create_wal(&*fs, dir, dim, 1)?;
        let manifest = Manifest {
            gen: 0,
            dim,
            metric: files::metric_name(config.metric).into(),
            index: kind.name().into(),
            index_params: Some(registry::params_to_json(
                &kind.check_build_keys(config.index.params())?,
            )),
            index_file: None,
            storage: config.storage.name().into(),
            rows: 0,
            segments: Vec::new(),
            ids_file: String::new(),
            live: 0,
            last_seq: 0,
            wal_gen: 1,
            indexed: Some(0),
        };
        c.durable = Some(Durable::new(
            dir,
            options,
            sink,
            manifest,
            wal::WAL_HEADER as u64,
            1,
            2,
            guard,
            RecoveryInfo::default(),
            (kind, config.storage),
        ));
        // Checkpoint 1: the empty state, so that a manifest always exists.
        if let Some(d) = &c.durable {
            let cut = c.cut(0, 1);
            c.commit_checkpoint(d, 1, cut)?;
        }
        c.set_mode(mode);
        Ok(c)
    }

    /// Opens the durable collection in `dir`: loads its last checkpoint (without
    /// rebuilding the index) and replays the log. Errors: `Locked` if another
    /// process (or another open collection) holds it, `Corruption` naming the file
    /// and byte offset of damage, `Io`.
    pub fn open(dir: &Path, options: DurableOptions) -> Result<Collection> {
        let fs = Arc::clone(&options.fs);
        let guard = lock_dir(&*fs, dir)?;
        let mpath = dir.join("MANIFEST");
        let bytes = fs.read(&mpath).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::invalid_param(
                    "dir",
                    format!("{} is not an omen collection (no MANIFEST)", dir.display()),
                )
            } else {
                Error::io(&mpath, e)
            }
        })?;
        let m = files::parse_manifest(&bytes, &mpath)?;
        let metric = files::metric_from_name(&m.metric).unwrap_or(Metric::L2);
        let dim = m.dim;
        let read_only = options.read_only;
        let mode = options.indexing;
        // Every checkpointed row below this is indexed, if live (manifests
        // before version 2 indexed every row).
        let indexed = m.indexed.unwrap_or(m.rows);
        // Vectors.
        let kind =
            registry::lookup(&m.index).map_err(|e| Error::corruption(&mpath, 24, e.to_string()))?;
        let storage_kind = StorageKind::from_name(&m.storage)
            .map_err(|e| Error::corruption(&mpath, 24, e.to_string()))?;
        let storage: Box<dyn VectorStorage> = match storage_kind {
            StorageKind::Mmap => {
                let real = fs.real_path(&dir.join("vectors")).ok_or_else(|| {
                    Error::invalid_param("storage", "mmap storage needs the real file system")
                })?;
                let s = mmap_open(&real, dim, m.rows as usize)?;
                for seg in &m.segments {
                    let crc = segment_crc(&*s, seg);
                    if crc != seg.crc {
                        return Err(Error::corruption(
                            &real,
                            0,
                            format!(
                                "rows {}..{} fail their checksum (stored {:08x}, computed {crc:08x})",
                                seg.first_row,
                                seg.first_row + seg.rows,
                                seg.crc
                            ),
                        ));
                    }
                }
                s
            }
            StorageKind::Memory => {
                let s = omen_storage::MemoryStorage::new(dim)?;
                for seg in &m.segments {
                    let Some(name) = &seg.file else { continue };
                    let path = dir.join(name);
                    let bytes = fs.read(&path).map_err(io_err(&path))?;
                    let rows = files::parse_segment(&bytes, &path, dim, seg)?;
                    s.append_batch(&rows)?;
                }
                Box::new(s)
            }
        };
        // Ids.
        let mut idmap = IdMap::with_capacity(m.live as usize, m.rows as usize);
        if !m.ids_file.is_empty() {
            let path = dir.join(&m.ids_file);
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let entries = files::parse_ids(&bytes, &path, m.rows)?;
            if entries.len() as u64 != m.live {
                return Err(Error::corruption(
                    &path,
                    16,
                    format!("{} ids, the manifest says {}", entries.len(), m.live),
                ));
            }
            for (id, slot) in entries {
                let id: Arc<str> = Arc::from(id.as_str());
                if idmap.is_recorded(slot) {
                    return Err(Error::corruption(
                        &path,
                        32,
                        format!("slot {slot} appears twice"),
                    ));
                }
                idmap.record(slot, Arc::clone(&id));
                if idmap.make_current(&id, slot).is_some() {
                    return Err(Error::corruption(
                        &path,
                        32,
                        format!("id {id:?} appears twice"),
                    ));
                }
            }
        }
        idmap.set_indexed(indexed as SlotId);
        // Index: as the checkpoint saved it (no index work).
        let index: Box<dyn VectorIndex> =
            load_index(&*fs, dir, &m, kind, metric, &*storage, &idmap, indexed)?;
        let mut c = Collection::assemble(dim, metric, Arc::from(storage), Arc::from(index), idmap);
        // Replay goes to the storage and the id map only: the indexer adds the
        // rows later (or `set_mode` below, inline).
        c.mode = IndexingMode::Manual;

        // The log.
        let mut gens: Vec<u64> = fs
            .list(dir)
            .map_err(io_err(dir))?
            .iter()
            .filter_map(|n| parse_wal_name(n))
            .collect();
        gens.sort_unstable();
        let replay: Vec<u64> = gens.iter().copied().filter(|&g| g >= m.wal_gen).collect();
        let mut info = RecoveryInfo {
            checkpoint_gen: m.gen,
            ..RecoveryInfo::default()
        };
        let mut next_seq = m.last_seq + 1;
        let mut tail_len = 0u64;
        // Whether each log has a record after its header. A checkpoint creates
        // log `G + 1` before it syncs log `G` whole and moves writers to it, so a
        // crash in between leaves `G + 1` empty and `G` with a possibly torn tail:
        // the tail rule applies to every log that only empty logs follow.
        let mut has_records = vec![true; replay.len()];
        for (i, &g) in replay.iter().enumerate().skip(1) {
            let path = dir.join(wal_name(g));
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            has_records[i] = bytes.len() > wal::WAL_HEADER;
        }
        for (i, &g) in replay.iter().enumerate() {
            let last = !has_records[i + 1..].iter().any(|&r| r);
            let path = dir.join(wal_name(g));
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let scan = wal::scan(&bytes, &path, dim, g, next_seq, last)?;
            for r in &scan.records {
                c.replay(r, &path)?;
                info.replayed_records += 1;
            }
            next_seq += scan.records.len() as u64;
            if scan.torn && read_only {
                // Nothing is written: the torn bytes are ignored, not cut.
                info.truncated_bytes = (bytes.len() as u64).saturating_sub(scan.valid_len);
                tail_len = scan.valid_len;
            } else if scan.torn {
                // `valid_len` exceeds the length when only a record's padding
                // was cut (the file is then extended to it).
                info.truncated_bytes = (bytes.len() as u64).saturating_sub(scan.valid_len);
                if scan.valid_len < wal::WAL_HEADER as u64 {
                    // The header never became durable: write it again.
                    let mut f = fs.create(&path).map_err(io_err(&path))?;
                    f.write_all(&wal::file_header(dim, g))
                        .map_err(io_err(&path))?;
                    f.sync_data().map_err(io_err(&path))?;
                    tail_len = wal::WAL_HEADER as u64;
                } else {
                    fs.set_len(&path, scan.valid_len).map_err(io_err(&path))?;
                    fs.sync_file(&path).map_err(io_err(&path))?;
                    tail_len = scan.valid_len;
                }
            } else {
                tail_len = scan.valid_len;
            }
        }
        info.unindexed_rows = read(&c.ids).tail_rows() as u64;
        info.read_only = read_only;
        if read_only {
            let sink = LogFile {
                path: dir.join(wal_name(replay.last().copied().unwrap_or(m.wal_gen))),
                file: Box::new(ReadOnlyLog),
            };
            let next_gen = gens.last().copied().unwrap_or(m.wal_gen) + 1;
            c.durable = Some(Durable::new(
                dir,
                options,
                sink,
                m,
                tail_len,
                next_seq,
                next_gen,
                guard,
                info,
                (kind, storage_kind),
            ));
            c.start_indexing(mode)?;
            return Ok(c);
        }
        let (sink, active_gen) = match replay.last() {
            Some(&g) => {
                let path = dir.join(wal_name(g));
                let file = fs.open_append(&path).map_err(io_err(&path))?;
                (LogFile { path, file }, g)
            }
            None => {
                tail_len = wal::WAL_HEADER as u64;
                (create_wal(&*fs, dir, dim, m.wal_gen)?, m.wal_gen)
            }
        };
        let max_gen = gens.last().copied().unwrap_or(0).max(active_gen);
        // Files no manifest names: older logs, unfinished checkpoints.
        let keep = |name: &str| -> bool {
            name == "MANIFEST"
                || name == "LOCK"
                || name == "vectors"
                || parse_wal_name(name).is_some_and(|g| g >= m.wal_gen)
                || m.ids_file == name
                || m.index_file.as_deref() == Some(name)
                || m.segments.iter().any(|s| s.file.as_deref() == Some(name))
        };
        let removable = |name: &str| -> bool {
            name.ends_with(".tmp")
                || parse_wal_name(name).is_some()
                || name.starts_with("vectors-")
                || name.starts_with("ids-")
                || name.starts_with("index-")
        };
        for name in fs.list(dir).map_err(io_err(dir))? {
            if !keep(&name) && removable(&name) {
                let path = dir.join(&name);
                fs.remove_file(&path).map_err(io_err(&path))?;
                info.removed_files += 1;
            }
        }
        if info.removed_files > 0 {
            fs.sync_dir(dir).map_err(io_err(dir))?;
        }
        c.durable = Some(Durable::new(
            dir,
            options,
            sink,
            m,
            tail_len,
            next_seq,
            max_gen + 1,
            guard,
            info,
            (kind, storage_kind),
        ));
        c.start_indexing(mode)?;
        Ok(c)
    }

    /// After replay: sets the indexing mode; inline, the tail is indexed before
    /// `open` returns (the old way), otherwise the indexer takes it from here.
    fn start_indexing(&mut self, mode: IndexingMode) -> Result<()> {
        self.set_mode(mode);
        if mode == IndexingMode::Inline {
            self.wait_indexed()?;
        }
        Ok(())
    }

    /// Applies one replayed record. A record that does not fit the state (an
    /// insert of a live id, a delete of an unknown one) is corruption.
    fn replay(&self, r: &wal::Record, file: &Path) -> Result<()> {
        let bad = |what: String| Error::corruption(file, 0, format!("record {}: {what}", r.seq));
        match r.op {
            Op::Insert | Op::Upsert => {
                if r.rows.len() != r.ids.len() * self.dim {
                    return Err(bad("vector length".into()));
                }
                if r.op == Op::Insert {
                    let ids = read(&self.ids);
                    let mut seen = std::collections::HashSet::new();
                    for id in &r.ids {
                        if ids.contains(id) || !seen.insert(id.as_str()) {
                            return Err(bad(format!("inserts id {id:?}, which is already live")));
                        }
                    }
                }
                let names: Vec<Arc<str>> = r.ids.iter().map(|s| Arc::from(s.as_str())).collect();
                self.apply_rows(&names, &r.rows)
            }
            Op::Delete => {
                for id in &r.ids {
                    self.apply_delete(id)
                        .map_err(|_| bad(format!("deletes id {id:?}, which is not live")))?;
                }
                Ok(())
            }
        }
    }

    /// Refuses writes on a poisoned collection.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some(d) = &self.durable {
            if d.read_only {
                return Err(read_only_error(&d.dir));
            }
            if d.is_poisoned() {
                return Err(d.poisoned_error());
            }
        }
        self.check_indexer()
    }

    /// Logs a validated write; returns the ticket to wait on.
    pub(crate) fn log<S: AsRef<str>>(
        &self,
        op: Op,
        ids: &[S],
        rows: &[f32],
    ) -> Result<Option<u64>> {
        let Some(d) = &self.durable else {
            return Ok(None);
        };
        let seq = d
            .queue
            .append(|buf, seq, synced| wal::encode(buf, seq, synced, op, ids, rows))?;
        match d.mode {
            Durability::PerWrite => {
                d.queue.flush(true).inspect_err(|e| d.poison(e))?;
                Ok(None)
            }
            Durability::GroupCommit { .. } => Ok(Some(seq)),
            Durability::None => {
                if d.queue.buffered_bytes() >= 1 << 20 {
                    d.queue.flush(false).inspect_err(|e| d.poison(e))?;
                }
                Ok(None)
            }
        }
    }

    /// After applying a logged write: a failure now leaves the log ahead of memory,
    /// so the collection refuses further writes until it is reopened (recovery
    /// then decides from the log).
    pub(crate) fn after_apply(
        &self,
        applied: Result<()>,
        ticket: Option<u64>,
    ) -> Result<Option<u64>> {
        if let Err(e) = applied {
            if let Some(d) = &self.durable {
                d.poison(&e);
            }
            return Err(e);
        }
        Ok(ticket)
    }

    /// Waits for the write's acknowledgement, then runs an automatic checkpoint
    /// if the log has grown past the threshold.
    pub(crate) fn commit(&self, ticket: Option<u64>) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        if let Some(seq) = ticket {
            d.queue.wait_durable(seq)?;
        }
        if d.queue.since_checkpoint() >= d.checkpoint_bytes
            || self.indexed_since_checkpoint(d) >= d.checkpoint_indexed
        {
            if let Ok(_guard) = d.checkpointing.try_lock() {
                drop(_guard);
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    /// Rows the indexer added since the last checkpoint: index work a reopen
    /// would redo.
    fn indexed_since_checkpoint(&self, d: &Durable) -> u64 {
        let m = read(&d.manifest);
        if m.index_file.is_none() && d.index_kind.file_extension().is_none() {
            // An index that saves nothing (flat) is rebuilt from the live slots
            // on reopen whatever a checkpoint holds, so its "index work" is never
            // worth a checkpoint.
            return 0;
        }
        let saved = m.indexed.unwrap_or(0);
        drop(m);
        u64::from(read(&self.ids).indexed()).saturating_sub(saved)
    }

    /// Whether the last checkpoint misses enough to be worth a checkpoint on
    /// close: at least [`CLOSE_CHECKPOINT_ROWS`] rows indexed since it (index work
    /// a reopen would redo) or [`CLOSE_CHECKPOINT_LOG_BYTES`] of log. Less stays in
    /// the log: replaying it costs no index work, and a few rows index at once.
    fn worth_saving_on_close(&self, d: &Durable) -> bool {
        d.queue.since_checkpoint() >= CLOSE_CHECKPOINT_LOG_BYTES
            || self.indexed_since_checkpoint(d) >= CLOSE_CHECKPOINT_ROWS
    }

    /// Writes a checkpoint now: the vectors added since the last one, the id map
    /// and the index's state, atomically; then truncates the log (older
    /// generations are removed). Writers are held off only while the state is cut
    /// (the old log is synced and the index's bytes copied); searches never wait.
    /// Errors: `InvalidParameter` for an in-memory collection, `Poisoned`, `Io`
    /// (which poisons the collection: reopen it).
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        let d = self.durable()?;
        if d.read_only {
            return Err(read_only_error(&d.dir));
        }
        let _one = lock(&d.checkpointing);
        if d.is_poisoned() {
            return Err(d.poisoned_error());
        }
        let gen = d.next_gen.fetch_add(1, Ordering::Relaxed);
        let sink = create_wal(&*d.fs, &d.dir, self.dim, gen).inspect_err(|e| d.poison(e))?;
        let cut = {
            let _w = lock(&self.writer);
            d.queue
                .rotate(sink, wal::WAL_HEADER as u64)
                .inspect_err(|e| d.poison(e))?;
            self.cut(d.queue.next_seq() - 1, gen)
        };
        self.commit_checkpoint(d, gen, cut)
            .inspect_err(|e| d.poison(e))
    }

    /// Forces every logged write to disk (useful under [`Durability::None`]).
    pub fn sync(&self) -> Result<()> {
        let d = self.durable()?;
        d.queue.flush(true).inspect_err(|e| d.poison(e))?;
        self.storage.flush().inspect_err(|e| d.poison(e))
    }

    /// What opening found (checkpoint loaded, records replayed, bytes truncated),
    /// or `None` for an in-memory collection.
    pub fn recovery_info(&self) -> Option<&RecoveryInfo> {
        self.durable.as_ref().map(|d| &d.recovery)
    }

    /// The directory of a durable collection.
    pub fn dir(&self) -> Option<&Path> {
        self.durable.as_ref().map(|d| d.dir.as_path())
    }

    /// The durability mode, or `None` for an in-memory collection.
    pub fn durability(&self) -> Option<Durability> {
        self.durable.as_ref().map(|d| d.mode)
    }

    /// Stops the indexer, writes a checkpoint if the last one misses enough to be
    /// worth one (1,024 rows indexed since it, or 1 MiB of log), flushes and
    /// syncs the log and stops the flusher; errors are reported here rather than
    /// lost in `Drop` (which only syncs the log). Rows not yet indexed stay in the
    /// checkpoint as unindexed rows: the next open searches them exactly and
    /// indexes them.
    pub fn close(mut self) -> Result<()> {
        self.stop_indexer();
        let saved = match &self.durable {
            Some(d) if !d.read_only && !d.is_poisoned() && self.worth_saving_on_close(d) => {
                self.checkpoint().map(|_| ())
            }
            _ => Ok(()),
        };
        let closed = match self.durable.take() {
            Some(d) => d.close(),
            None => Ok(()),
        };
        saved.and(closed)
    }

    fn durable(&self) -> Result<&Durable> {
        self.durable.as_ref().ok_or_else(|| {
            Error::invalid_param(
                "collection",
                "in-memory collections have no log or checkpoints",
            )
        })
    }

    /// The state to checkpoint. Called with the writer lock held; waits for the
    /// indexer's step in flight, so that the index holds exactly the current
    /// slots below the watermark it records.
    fn cut(&self, last_seq: u64, wal_gen: u64) -> Cut {
        let _g = lock(&self.indexing.index_lock);
        self.indexing.drain_retired(&*self.index);
        let (live, indexed) = {
            let ids = read(&self.ids);
            (ids.live(), ids.indexed())
        };
        Cut {
            rows: self.storage.len() as u64,
            live,
            index: self.index.persist(),
            indexed: u64::from(indexed),
            last_seq,
            wal_gen,
        }
    }

    /// Writes checkpoint `gen` of `cut` and commits it (the manifest rename).
    fn commit_checkpoint(&self, d: &Durable, gen: u64, cut: Cut) -> Result<CheckpointInfo> {
        let fs = &*d.fs;
        let dir = &d.dir;
        let prev = Arc::clone(&read(&d.manifest));
        let mut segments = prev.segments.clone();
        let mut written = 0u64;
        if cut.rows > prev.rows {
            let (first, end) = (prev.rows, cut.rows);
            let blocks = row_blocks(&*self.storage, first, end);
            let got: usize = blocks.iter().map(|b| b.len() / self.dim).sum();
            if got as u64 != end - first {
                return Err(Error::CapacityExceeded {
                    what: format!("storage lost row {}", first + got as u64),
                });
            }
            if d.storage_kind.persists_rows() {
                self.storage.flush()?;
                let crc = files::rows_crc(&mut blocks.iter().copied());
                segments.push(Segment {
                    file: None,
                    first_row: first,
                    rows: end - first,
                    crc,
                });
            } else {
                let (bytes, crc) = files::encode_segment(self.dim, first, &blocks);
                let name = format!("vectors-{gen:08}.seg");
                write_file(fs, &dir.join(&name), &bytes)?;
                written += bytes.len() as u64;
                segments.push(Segment {
                    file: Some(name),
                    first_row: first,
                    rows: end - first,
                    crc,
                });
            }
        }
        let ids_file = format!("ids-{gen:08}.ids");
        let ids = files::encode_ids(&cut.live);
        write_file(fs, &dir.join(&ids_file), &ids)?;
        written += ids.len() as u64;
        let index_file = match &cut.index {
            Some(bytes) => {
                let ext = d.index_kind.file_extension().unwrap_or("index");
                let name = format!("index-{gen:08}.{ext}");
                write_file(fs, &dir.join(&name), bytes)?;
                written += bytes.len() as u64;
                Some(name)
            }
            None => None,
        };
        let manifest = Manifest {
            gen,
            dim: self.dim,
            metric: prev.metric.clone(),
            index: prev.index.clone(),
            index_params: prev.index_params.clone(),
            index_file,
            storage: prev.storage.clone(),
            rows: cut.rows,
            segments,
            ids_file,
            live: cut.live.len() as u64,
            last_seq: cut.last_seq,
            wal_gen: cut.wal_gen,
            indexed: Some(cut.indexed.min(cut.rows)),
        };
        let bytes = files::encode_manifest(&manifest);
        let tmp = dir.join("MANIFEST.tmp");
        write_file(fs, &tmp, &bytes)?;
        // The entries of the files the manifest names must be durable before the
        // rename that commits it can be: a directory need not persist its
        // operations in order.
        fs.sync_dir(dir).map_err(io_err(dir))?;
        let path = dir.join("MANIFEST");
        fs.rename(&tmp, &path).map_err(io_err(&path))?;
        fs.sync_dir(dir).map_err(io_err(dir))?;
        written += bytes.len() as u64;
        let info = CheckpointInfo {
            gen,
            rows: manifest.rows,
            live: manifest.live,
            last_seq: manifest.last_seq,
            indexed: manifest.indexed.unwrap_or(manifest.rows),
            bytes_written: written,
        };
        *write(&d.manifest) = Arc::new(manifest);
        // Committed. What the old checkpoint and the replaced logs used is garbage
        // now; a failure to remove it is harmless (the next open removes it).
        let mut removed = false;
        if let Ok(names) = fs.list(dir) {
            for name in names {
                let old_log = parse_wal_name(&name).is_some_and(|g| g < cut.wal_gen);
                let old_file =
                    name == prev.ids_file || prev.index_file.as_deref() == Some(name.as_str());
                if (old_log || old_file) && fs.remove_file(&dir.join(&name)).is_ok() {
                    removed = true;
                }
            }
        }
        if removed {
            let _ = fs.sync_dir(dir);
        }
        Ok(info)
    }
}

fn read_only_error(dir: &Path) -> Error {
    Error::invalid_param("collection", format!("{} is open read-only", dir.display()))
}

/// The state a checkpoint saves, taken with the writer lock held.
struct Cut {
    rows: u64,
    live: Vec<(Arc<str>, SlotId)>,
    index: Option<Vec<u8>>,
    /// The indexed watermark: the index holds exactly the live slots below it.
    indexed: u64,
    last_seq: u64,
    wal_gen: u64,
}

#[cfg(not(loom))]
fn mmap_create(dir: &Path, dim: usize) -> Result<Box<dyn VectorStorage>> {
    Ok(Box::new(omen_storage::MmapStorage::create(dir, dim)?))
}

#[cfg(not(loom))]
fn mmap_open(dir: &Path, dim: usize, rows: usize) -> Result<Box<dyn VectorStorage>> {
    Ok(Box::new(omen_storage::MmapStorage::open(dir, dim, rows)?))
}

/// The loom build has no mmap storage (loom does not model file I/O).
#[cfg(loom)]
fn mmap_create(_: &Path, _: usize) -> Result<Box<dyn VectorStorage>> {
    Err(Error::invalid_param(
        "storage",
        "no mmap storage under loom",
    ))
}

#[cfg(loom)]
fn mmap_open(dir: &Path, dim: usize, _: usize) -> Result<Box<dyn VectorStorage>> {
    mmap_create(dir, dim)
}

/// CRC-32C of a segment's rows in `storage`.
fn segment_crc(storage: &dyn VectorStorage, seg: &Segment) -> u32 {
    let blocks = row_blocks(storage, seg.first_row, seg.first_row + seg.rows);
    files::rows_crc(&mut blocks.into_iter())
}

/// Rows `first..end` of `storage` as its contiguous blocks, stopping early at a
/// row the storage does not hold.
fn row_blocks(storage: &dyn VectorStorage, first: u64, end: u64) -> Vec<&[f32]> {
    let dim = storage.dim();
    let mut blocks = Vec::new();
    let mut r = first;
    while r < end {
        let Some(b) = storage.block(r as SlotId) else {
            break;
        };
        let take = ((b.len() / dim) as u64).min(end - r);
        if take == 0 {
            break;
        }
        blocks.push(&b[..take as usize * dim]);
        r += take;
    }
    blocks
}

/// Loads (or, for the flat index, rebuilds) the index the manifest names and
/// checks that it holds exactly the live slots.
#[allow(clippy::too_many_arguments)]
fn load_index(
    fs: &dyn FileSystem,
    dir: &Path,
    m: &Manifest,
    kind: &'static dyn IndexKind,
    metric: Metric,
    storage: &dyn VectorStorage,
    ids: &IdMap,
    indexed: u64,
) -> Result<Box<dyn VectorIndex>> {
    let index_metric = kind.index_metric(metric);
    // The index holds the live slots below the watermark; the rest are the
    // indexer's.
    let live: Vec<SlotId> = ids
        .live()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|&s| u64::from(s) < indexed)
        .collect();
    let mpath = dir.join("MANIFEST");
    let (index, path): (Box<dyn VectorIndex>, PathBuf) =
        match (&m.index_file, kind.file_extension()) {
            (Some(name), Some(_)) => {
                let path = dir.join(name);
                let bytes = fs.read(&path).map_err(io_err(&path))?;
                (kind.load(&bytes, &path)?, path)
            }
            (None, None) => {
                // It saves nothing: recreate it with its parameters and add the live
                // slots.
                let params = match &m.index_params {
                    Some(p) => registry::params_from_json(p)
                        .map_err(|e| Error::corruption(&mpath, 24, e))?,
                    None => omen_core::Params::new(),
                };
                let index = kind
                    .create(m.dim, index_metric, &params)
                    .map_err(|e| Error::corruption(&mpath, 24, format!("index parameters: {e}")))?;
                omen_core::add_slots(&*index, storage, &live)?;
                (index, mpath)
            }
            (None, Some(_)) => {
                return Err(Error::corruption(
                    &mpath,
                    24,
                    format!("a {} index without an index file", kind.name()),
                ));
            }
            (Some(name), None) => {
                return Err(Error::corruption(
                    &mpath,
                    24,
                    format!(
                        "index file {name:?} for a {} index, which saves none",
                        kind.name()
                    ),
                ));
            }
        };
    if index.dim() != m.dim || index.metric() != index_metric {
        return Err(Error::corruption(
            &path,
            0,
            format!(
                "index of dimension {} metric {}, the collection is {} {index_metric}",
                index.dim(),
                index.metric(),
                m.dim
            ),
        ));
    }
    if index.len() != live.len() || live.iter().any(|&s| !index.contains(s)) {
        return Err(Error::corruption(
            &path,
            0,
            format!(
                "the index holds {} slots, the id map {} live ids below the indexed mark {indexed}, and they differ",
                index.len(),
                live.len()
            ),
        ));
    }
    Ok(index)
}

impl Durable {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dir: &Path,
        options: DurableOptions,
        sink: Sink,
        manifest: Manifest,
        file_len: u64,
        next_seq: u64,
        next_gen: u64,
        guard: Box<dyn LockGuard>,
        recovery: RecoveryInfo,
        (index_kind, storage_kind): (&'static dyn IndexKind, StorageKind),
    ) -> Durable {
        let queue = Arc::new(CommitQueue::new(sink, file_len, next_seq));
        let flusher = match options.durability {
            _ if options.read_only => None,
            Durability::GroupCommit {
                max_records,
                max_delay,
            } => {
                let q = Arc::clone(&queue);
                let policy = GroupPolicy {
                    max_records: max_records.max(1) as u64,
                    max_bytes: GROUP_MAX_BYTES,
                    max_delay: Some(max_delay),
                };
                std::thread::Builder::new()
                    .name("omen-wal-flusher".into())
                    .spawn(move || q.run_flusher(policy))
                    .ok()
            }
            _ => None,
        };
        // Without a flusher thread (spawn failed), group commit degrades to
        // per-write syncs.
        let mode = match (options.durability, &flusher) {
            (Durability::GroupCommit { .. }, None) if !options.read_only => Durability::PerWrite,
            (m, _) => m,
        };
        Durable {
            dir: dir.to_path_buf(),
            fs: options.fs,
            mode,
            checkpoint_bytes: options.checkpoint_log_bytes,
            checkpoint_indexed: options.checkpoint_indexed_rows,
            read_only: options.read_only,
            queue,
            flusher: Mutex::new(flusher),
            manifest: RwLock::new(Arc::new(manifest)),
            checkpointing: Mutex::new(()),
            next_gen: AtomicU64::new(next_gen),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            recovery,
            index_kind,
            storage_kind,
            _lock: guard,
        }
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) || self.queue.is_poisoned()
    }

    /// Refuses writes from now on, remembering the first cause.
    fn poison(&self, cause: &Error) {
        let mut c = lock(&self.poison_cause);
        if c.is_none() {
            *c = Some(cause.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    /// The `Poisoned` error naming what poisoned the collection.
    fn poisoned_error(&self) -> Error {
        // The log's own record of a failed write or sync is the more precise.
        let cause = self
            .queue
            .failure()
            .or_else(|| lock(&self.poison_cause).clone())
            .unwrap_or_else(|| "an earlier failure".into());
        Error::Poisoned { cause }
    }

    fn close(&self) -> Result<()> {
        self.queue.shutdown();
        if let Some(h) = lock(&self.flusher).take() {
            let _ = h.join();
        }
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        if self.read_only {
            return Ok(());
        }
        self.queue.flush(true)
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests;

/// What [`Collection::verify`] checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Live ids checked against the storage and the index.
    pub live: usize,
    /// Storage rows.
    pub rows: usize,
    /// Files whose checksums were checked (manifest, segments, ids, index, logs).
    pub files: usize,
    /// Log records that parsed (not yet in a checkpoint).
    pub log_records: u64,
    /// Rows not yet indexed (searched exactly).
    pub unindexed_rows: usize,
}

impl Collection {
    /// Checks every checksum of the collection's files (durable collections) and
    /// the agreement of the id map, the storage and the index: every live id's
    /// slot holds a finite vector, and the index holds exactly the live slots.
    /// Writers wait while it runs. Errors: `Corruption` naming what disagrees.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _w = lock(&self.writer);
        let mut report = VerifyReport {
            rows: self.storage.len(),
            ..VerifyReport::default()
        };
        let here = self
            .dir()
            .map_or_else(|| PathBuf::from("<memory>"), Path::to_path_buf);
        {
            // No indexer step in flight, retired slots out: the index holds exactly
            // the live slots below the watermark.
            let _g = lock(&self.indexing.index_lock);
            self.indexing.drain_retired(&*self.index);
            let ids = read(&self.ids);
            let w = ids.indexed();
            let live = ids.live();
            report.live = live.len();
            report.unindexed_rows = ids.tail_rows();
            let mut below = 0usize;
            for (id, slot) in &live {
                let Some(v) = self.storage.get(*slot) else {
                    return Err(Error::corruption(
                        &here,
                        0,
                        format!(
                            "id {id:?} names slot {slot}, beyond the {} stored rows",
                            report.rows
                        ),
                    ));
                };
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::corruption(
                        &here,
                        0,
                        format!("id {id:?}: non-finite vector"),
                    ));
                }
                if *slot >= w {
                    if self.index.contains(*slot) {
                        return Err(Error::corruption(
                            &here,
                            0,
                            format!("id {id:?} (slot {slot}) is in the index above the indexed mark {w}"),
                        ));
                    }
                    continue;
                }
                below += 1;
                if !self.index.contains(*slot) {
                    return Err(Error::corruption(
                        &here,
                        0,
                        format!("id {id:?} (slot {slot}) is missing from the index"),
                    ));
                }
            }
            if self.index.len() != below {
                return Err(Error::corruption(
                    &here,
                    0,
                    format!(
                        "the index holds {} slots for {below} live ids below the indexed mark {w}",
                        self.index.len(),
                    ),
                ));
            }
        }
        let Some(d) = &self.durable else {
            return Ok(report);
        };
        // The files, as on disk now (buffered log records are flushed first).
        d.queue.flush(false).inspect_err(|e| d.poison(e))?;
        let fs = &*d.fs;
        let dir = &d.dir;
        let mpath = dir.join("MANIFEST");
        let m = files::parse_manifest(&fs.read(&mpath).map_err(io_err(&mpath))?, &mpath)?;
        report.files += 1;
        for seg in &m.segments {
            match &seg.file {
                Some(name) => {
                    let path = dir.join(name);
                    files::parse_segment(
                        &fs.read(&path).map_err(io_err(&path))?,
                        &path,
                        m.dim,
                        seg,
                    )?;
                }
                None => {
                    let crc = segment_crc(&*self.storage, seg);
                    if crc != seg.crc {
                        return Err(Error::corruption(
                            dir.join("vectors"),
                            0,
                            format!(
                                "rows {}..{} fail their checksum",
                                seg.first_row,
                                seg.first_row + seg.rows
                            ),
                        ));
                    }
                }
            }
            report.files += 1;
        }
        let ipath = dir.join(&m.ids_file);
        let entries = files::parse_ids(&fs.read(&ipath).map_err(io_err(&ipath))?, &ipath, m.rows)?;
        // The index file holds the live slots below the checkpoint's watermark.
        let indexed = m.indexed.unwrap_or(m.rows);
        let below = entries
            .iter()
            .filter(|(_, s)| u64::from(*s) < indexed)
            .count() as u64;
        report.files += 1;
        if let Some(name) = &m.index_file {
            let path = dir.join(name);
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let kind = registry::lookup(&m.index)
                .map_err(|e| Error::corruption(&mpath, 24, e.to_string()))?;
            let n = kind.load(&bytes, &path)?.len();
            if n as u64 != below {
                return Err(Error::corruption(
                    &path,
                    0,
                    format!(
                        "index file holds {n} slots, the checkpoint {below} live ids below its indexed mark {indexed}"
                    ),
                ));
            }
            report.files += 1;
        }
        let mut gens: Vec<u64> = fs
            .list(dir)
            .map_err(io_err(dir))?
            .iter()
            .filter_map(|n| parse_wal_name(n))
            .filter(|&g| g >= m.wal_gen)
            .collect();
        gens.sort_unstable();
        let mut next = m.last_seq + 1;
        for (i, &g) in gens.iter().enumerate() {
            let path = dir.join(wal_name(g));
            let bytes = fs.read(&path).map_err(io_err(&path))?;
            let scan = wal::scan(&bytes, &path, m.dim, g, next, i + 1 == gens.len())?;
            next += scan.records.len() as u64;
            report.log_records += scan.records.len() as u64;
            report.files += 1;
        }
        Ok(report)
    }
}
