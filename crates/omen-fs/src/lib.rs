//! The file-system seam of Omen's durable storage.
//!
//! Every byte the write-ahead log and the checkpoints write goes through
//! [`FileSystem`], so that the same code runs over the real file system
//! ([`RealFs`]) and over a simulated disk ([`SimFs`]) that records, for every file
//! and directory entry, what was written and what was synced, can crash at the
//! N-th operation and produce crash images, and can fail the N-th operation with
//! EIO or ENOSPC.
//!
//! Paths are plain [`Path`]s; a [`SimFs`] keeps one flat namespace of full paths
//! and treats the parent of a path as its directory.

use std::io;
use std::path::{Path, PathBuf};

mod real;
mod sim;

pub use real::RealFs;
pub use sim::{
    is_simulated_crash, CrashMode, FaultKind, FaultPersistence, SimFs, MAX_SIM_FILE_LEN,
};

/// A file open for writing at its end (the log) or freshly created (checkpoint
/// files). Dropping it closes it without syncing.
pub trait WritableFile: Send {
    /// Appends all of `buf` at the current end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// Makes every byte written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;

    /// The file's length as this handle sees it (bytes written so far included).
    fn len(&self) -> u64;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An exclusive lock on a lock file, held until dropped.
pub trait LockGuard: Send + Sync {}

/// The operations durable storage needs. All of them are single file-system
/// operations for the simulated disk's operation count: each call of each method
/// (including every `write_all` and `sync_data` on a [`WritableFile`] it handed
/// out) counts as one operation.
pub trait FileSystem: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its parents if missing (not an error if it exists).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Creates `path` empty (truncating it if it exists) and opens it for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;

    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;

    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;

    /// Names (not paths) of the entries of `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Shortens (or zero-extends) `path` to `len` bytes; the change is durable only
    /// after a `sync_data` on a handle of the file or [`sync_file`](Self::sync_file).
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()>;

    /// Makes the data of `path` durable (`fsync` of the file).
    fn sync_file(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to` atomically. Durable only after
    /// [`sync_dir`](Self::sync_dir) of the directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable only after [`sync_dir`](Self::sync_dir).
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive lock on `path` (created if missing); `WouldBlock` if another
    /// holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;

    /// The real path of `path` if the files are real (for memory-mapping), or `None`
    /// for a simulated disk.
    fn real_path(&self, path: &Path) -> Option<PathBuf>;
}

/// The parent directory of `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
