//! Durability for a [`Collection`](crate::Collection): a write-ahead log and checkpoints in a
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
mod options;
pub(crate) mod wal;

pub(crate) use commit::LogFile;
pub use options::{CheckpointInfo, Durability, DurableOptions, RecoveryInfo, VerifyReport};

use crate::registry::StorageKind;
use commit::{CommitQueue, GroupPolicy};
use files::{Manifest, Segment};
use omen_core::sync::{lock, Mutex, RwLock};
use omen_core::{Error, IndexKind, Result};
use omen_core::{SlotId, VectorStorage};
use omen_fs::{FileSystem, LockGuard, WritableFile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
    pub(crate) dir: PathBuf,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) mode: Durability,
    pub(crate) checkpoint_bytes: u64,
    pub(crate) checkpoint_indexed: u64,
    pub(crate) read_only: bool,
    pub(crate) queue: Arc<CommitQueue<Sink>>,
    pub(crate) flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last committed checkpoint, replaced whole when a new one commits.
    pub(crate) manifest: RwLock<Arc<Manifest>>,
    /// One checkpoint at a time.
    pub(crate) checkpointing: Mutex<()>,
    /// The next log generation to create.
    pub(crate) next_gen: AtomicU64,
    /// Set by an I/O failure, or a write that was logged but failed to apply.
    pub(crate) poisoned: AtomicBool,
    /// What poisoned it (the first failure).
    pub(crate) poison_cause: Mutex<Option<String>>,
    pub(crate) recovery: RecoveryInfo,
    /// The index's kind and the storage's, as the manifest names them.
    pub(crate) index_kind: &'static dyn IndexKind,
    pub(crate) storage_kind: StorageKind,
    pub(crate) _lock: Box<dyn LockGuard>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

pub(crate) fn wal_name(gen: u64) -> String {
    format!("wal-{gen:08}.log")
}

pub(crate) fn parse_wal_name(name: &str) -> Option<u64> {
    let g = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if g.len() != 8 || !g.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    g.parse().ok()
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Writes a whole file and syncs its data (the directory is synced by the
/// caller).
pub(crate) fn write_file(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs.create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_data().map_err(io_err(path))
}

/// Creates log generation `gen` with its header, synced, and syncs the directory.
pub(crate) fn create_wal(fs: &dyn FileSystem, dir: &Path, dim: usize, gen: u64) -> Result<Sink> {
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
pub(crate) struct ReadOnlyLog;

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

/// Locks the collection directory `dir`: exclusively for a writer, shared for a
/// read-only open (readers do not exclude each other; a writer excludes them
/// and they exclude a writer). `Locked` when the other kind holds it.
pub(crate) fn lock_dir(
    fs: &dyn FileSystem,
    dir: &Path,
    read_only: bool,
) -> Result<Box<dyn LockGuard>> {
    let path = dir.join("LOCK");
    let held = if read_only {
        fs.lock_shared(&path)
    } else {
        fs.lock(&path)
    };
    held.map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            Error::io(&path, e)
        }
    })
}

pub(crate) fn read_only_error(dir: &Path) -> Error {
    Error::invalid_param("collection", format!("{} is open read-only", dir.display()))
}

/// CRC-32C of a segment's rows in `storage`.
pub(crate) fn segment_crc(storage: &dyn VectorStorage, seg: &Segment) -> u32 {
    let blocks = row_blocks(storage, seg.first_row, seg.first_row + seg.rows);
    files::rows_crc(&mut blocks.into_iter())
}

/// Rows `first..end` of `storage` as its contiguous blocks, stopping early at a
/// row the storage does not hold.
pub(crate) fn row_blocks(storage: &dyn VectorStorage, first: u64, end: u64) -> Vec<&[f32]> {
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

impl Durable {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
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

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) || self.queue.is_poisoned()
    }

    /// Refuses writes from now on, remembering the first cause.
    pub(crate) fn poison(&self, cause: &Error) {
        let mut c = lock(&self.poison_cause);
        if c.is_none() {
            *c = Some(cause.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    /// The `Poisoned` error naming what poisoned the collection.
    pub(crate) fn poisoned_error(&self) -> Error {
        // The log's own record of a failed write or sync is the more precise.
        let cause = self
            .queue
            .failure()
            .or_else(|| lock(&self.poison_cause).clone())
            .unwrap_or_else(|| "an earlier failure".into());
        Error::Poisoned { cause }
    }

    pub(crate) fn close(&self) -> Result<()> {
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
