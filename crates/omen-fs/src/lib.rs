//! The file-system seam of Omen's durable storage.
//!
//! Every byte the write-ahead log and the checkpoints write goes through
//! [`FileSystem`], so that the same code runs over the real file system
//! ([`RealFs`]) and over a simulated disk ([`SimFs`]) that records, for every file
//! and directory entry, what was written and what was synced, can crash at the
//! N-th operation and produce crash images, and can fail the N-th operation with
//! EIO or ENOSPC. The mmap storage's chunk files go through it too:
//! [`FileSystem::map_file`] hands out a [`MappedFile`] (a real shared mapping on
//! [`RealFs`], a heap buffer kept in step with the simulated file on [`SimFs`]),
//! so the crash images cover memory-mapped collections as well.
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

/// A file mapped into memory for reading in place, written with `pwrite`.
///
/// The bytes at [`as_ptr`](Self::as_ptr) show the file's first
/// [`len`](Self::len) bytes; they change only through
/// [`write_at`](Self::write_at) (given the contract of
/// [`FileSystem::map_file`]). Dropping it unmaps the file without syncing.
pub trait MappedFile: Send + Sync {
    /// The first byte of the mapping: page-aligned, valid for reads of
    /// [`len`](Self::len) bytes, at the same address until the map is dropped.
    ///
    /// Turning it into a reference is the caller's `unsafe` step: the bytes a
    /// reference covers must not be written by [`write_at`](Self::write_at)
    /// while it lives.
    fn as_ptr(&self) -> *const u8;

    /// Bytes mapped.
    fn len(&self) -> usize;

    /// Whether nothing is mapped (never, for a map `map_file` returned).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes all of `bytes` at byte `offset` of the file (`pwrite`, not through
    /// the mapping, so that a full disk is an error, not a fault). Once it
    /// returns `Ok`, reads through [`as_ptr`](Self::as_ptr) see the bytes; they
    /// are durable after [`sync_range`](Self::sync_range). `InvalidInput` if the
    /// range is not inside the mapping.
    fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()>;

    /// Makes at least bytes `offset..offset + len` of the file durable
    /// (`msync`). `InvalidInput` if the range is not inside the mapping.
    fn sync_range(&self, offset: usize, len: usize) -> io::Result<()>;
}

/// `InvalidInput` unless `offset..offset + len` lies inside `0..mapped`.
pub(crate) fn check_map_range(offset: usize, len: usize, mapped: usize) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= mapped => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bytes {offset}..+{len} are outside the {mapped}-byte mapping"),
        )),
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

    /// The first `n` bytes of `path` (all of it if it is shorter) and the file's
    /// length, without reading the rest.
    fn read_head(&self, path: &Path, n: usize) -> io::Result<(Vec<u8>, u64)>;

    /// Maps the first `len` bytes of the existing file `path`, shared and
    /// writable through [`MappedFile::write_at`]. `InvalidInput` if `len` is 0
    /// or the file is shorter than `len` (a real mapping would fault on the
    /// missing bytes).
    ///
    /// # Safety
    /// While the returned map lives, nothing but its own `write_at` changes or
    /// truncates those bytes of the file: no other call of this file system on
    /// the path (`create`, `set_len`, writes through another handle) and no other
    /// process. A real mapping turns a truncation into `SIGBUS` and a foreign
    /// write into a data race with the readers of the mapping.
    unsafe fn map_file(&self, path: &Path, len: usize) -> io::Result<Box<dyn MappedFile>>;

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
    /// holder has it, exclusive or shared.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;

    /// Takes a shared lock on `path` (created if missing): any number of shared
    /// holders at once, none while an exclusive one holds it (`WouldBlock`).
    /// Read-only opens take this one, so readers never exclude each other.
    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;

    /// The real path of `path` if the files are real, or `None` for a simulated
    /// disk. (Memory-mapping goes through [`map_file`](Self::map_file).)
    fn real_path(&self, path: &Path) -> Option<PathBuf>;
}

/// The parent directory of `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
