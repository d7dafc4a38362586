//! What a durable collection is opened with, and what its checkpoints,
//! recovery and verification report.

use crate::indexer::IndexingMode;
use omen_fs::{FileSystem, RealFs};
use std::sync::Arc;
use std::time::Duration;

/// The default of [`DurableOptions::mmap_chunk_rows`]: the mmap storage's own
/// default (which the loom build, without mmap storage, cannot name).
const DEFAULT_MMAP_CHUNK_ROWS: usize = 65_536;

#[cfg(not(loom))]
const _: () = assert!(DEFAULT_MMAP_CHUNK_ROWS == omen_storage::DEFAULT_MMAP_CHUNK_ROWS);

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
    /// Rows in the first chunk file of a new collection with mmap storage
    /// (default 65,536, `omen_storage::DEFAULT_MMAP_CHUNK_ROWS`; rounded up to a
    /// power of two, each following chunk doubling). Only `create` reads it: a
    /// reopen takes the geometry from the chunk files. Small values keep the
    /// chunk files of a simulated disk small in crash tests.
    pub mmap_chunk_rows: usize,
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
            mmap_chunk_rows: DEFAULT_MMAP_CHUNK_ROWS,
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

    /// Sets the rows of a new mmap collection's first chunk file (see the field).
    pub fn mmap_chunk_rows(mut self, rows: usize) -> Self {
        self.mmap_chunk_rows = rows;
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
    /// Rows in the first chunk file of a new collection with mmap storage
    /// (default 65,536, `omen_storage::DEFAULT_MMAP_CHUNK_ROWS`; rounded up to a
    /// power of two, each following chunk doubling). Only `create` reads it: a
    /// reopen takes the geometry from the chunk files. Small values keep the
    /// chunk files of a simulated disk small in crash tests.
    pub mmap_chunk_rows: usize,
}

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
