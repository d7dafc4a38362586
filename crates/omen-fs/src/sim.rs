//! [`SimFs`]: a simulated disk for crash and fault-injection tests.
//!
//! See [`SimFs`] for the model.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{check_map_range, parent_dir, FileSystem, LockGuard, MappedFile, WritableFile};
use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// The largest file the simulated disk holds (it keeps files in memory); a write
/// or `set_len` beyond it fails with [`io::ErrorKind::FileTooLarge`].
pub const MAX_SIM_FILE_LEN: u64 = 1 << 32;

/// What a power cut keeps of the operations not yet synced, for
/// [`SimFs::crash_image`]. Synced data and synced directory entries always
/// survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing unsynced survives.
    DropUnsynced,
    /// Each unsynced operation (data and directory) survives with probability
    /// 1/2, drawn in operation order from a ChaCha8 generator seeded with `seed`;
    /// the surviving ones are applied in order (a write beyond the end of the file
    /// zero-fills the gap; a rename whose source is missing is skipped).
    KeepRandom {
        /// Seed of the generator: the same seed keeps the same operations.
        seed: u64,
    },
    /// Every unsynced operation survives, except that the last unsynced write (of
    /// all files) keeps only its prefix up to the last file offset inside it that
    /// is a multiple of `sector` (nothing of it if there is none); a `sector` of 0
    /// counts as 1.
    TornLastWrite {
        /// The sector size, in bytes.
        sector: usize,
    },
    /// Every unsynced operation survives but the renames.
    LoseRenames,
}

impl CrashMode {
    /// The modes worth trying at every crash point: `[DropUnsynced,
    /// KeepRandom { seed }, TornLastWrite { sector: 512 }, TornLastWrite { sector:
    /// 4096 }, LoseRenames]`.
    pub fn all(seed: u64) -> Vec<CrashMode> {
        vec![
            CrashMode::DropUnsynced,
            CrashMode::KeepRandom { seed },
            CrashMode::TornLastWrite { sector: 512 },
            CrashMode::TornLastWrite { sector: 4096 },
            CrashMode::LoseRenames,
        ]
    }
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO` (raw OS error 5).
    Eio,
    /// `ENOSPC` (raw OS error 28).
    Enospc,
}

impl FaultKind {
    /// The error this fault returns.
    pub fn error(self) -> io::Error {
        match self {
            FaultKind::Eio => io::Error::from_raw_os_error(5),
            FaultKind::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// How long an injected fault lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPersistence {
    /// Only the named operation fails.
    Once,
    /// The named operation and every later one fail.
    Forever,
}

/// Whether `e` is the error of a simulated crash ([`SimFs::crash_at`]).
pub fn is_simulated_crash(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string() == CRASH_MESSAGE
}

const CRASH_MESSAGE: &str = "simulated crash";

fn crash_error() -> io::Error {
    io::Error::other(CRASH_MESSAGE)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// Checks that a file of `len` bytes fits the simulated disk; returns it as usize.
fn check_len(len: u64) -> io::Result<usize> {
    match usize::try_from(len) {
        Ok(n) if len <= MAX_SIM_FILE_LEN => Ok(n),
        _ => Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{len} bytes is beyond the simulated disk's file size limit"),
        )),
    }
}

/// An unsynced data operation on an inode.
#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// Applies `op` to `content` (lengths were checked when the op was issued).
fn apply_data(content: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => write_at(content, *offset, bytes),
        DataOp::SetLen(n) => {
            if let Ok(n) = usize::try_from(*n) {
                content.resize(n, 0);
            }
        }
    }
}

fn write_at(content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    let Some(end) = offset.checked_add(bytes.len()) else {
        return;
    };
    if content.len() < end {
        content.resize(end, 0);
    }
    if let Some(dst) = content.get_mut(offset..end) {
        dst.copy_from_slice(bytes);
    }
}

/// An unsynced directory operation.
#[derive(Clone, Debug)]
enum DirOp {
    Create { path: PathBuf, inode: usize },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
}

impl DirOp {
    /// Whether `sync_dir(dir)` makes this operation durable.
    fn in_dir(&self, dir: &Path) -> bool {
        match self {
            DirOp::Create { path, .. } | DirOp::Remove { path } => parent_dir(path) == dir,
            DirOp::Rename { from, to } => parent_dir(from) == dir || parent_dir(to) == dir,
        }
    }
}

fn apply_dir(map: &mut BTreeMap<PathBuf, usize>, op: &DirOp) {
    match op {
        DirOp::Create { path, inode } => {
            map.insert(path.clone(), *inode);
        }
        DirOp::Rename { from, to } => {
            if let Some(inode) = map.remove(from) {
                map.insert(to.clone(), inode);
            }
        }
        DirOp::Remove { path } => {
            map.remove(path);
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    /// (global sequence number, operation), in order.
    pending: Vec<(u64, DataOp)>,
    /// `durable` with every pending operation applied.
    current: Vec<u8>,
}

impl Inode {
    fn with_content(bytes: Vec<u8>) -> Inode {
        Inode {
            durable: bytes.clone(),
            pending: Vec::new(),
            current: bytes,
        }
    }

    fn sync(&mut self) {
        if !self.pending.is_empty() {
            self.durable.clone_from(&self.current);
            self.pending.clear();
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    at: u64,
    kind: FaultKind,
    persistence: FaultPersistence,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    current: BTreeMap<PathBuf, usize>,
    durable: BTreeMap<PathBuf, usize>,
    /// (global sequence number, operation), in order.
    pending_dir: Vec<(u64, DirOp)>,
    dirs: BTreeSet<PathBuf>,
    ops: u64,
    seq: u64,
    crash_at: Option<u64>,
    crashed: bool,
    faults: Vec<Fault>,
    /// Held locks: `None` exclusive, `Some(n)` shared by `n` holders.
    locks: BTreeMap<PathBuf, Option<usize>>,
}

/// What a crash image keeps of one pending operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    All,
    Nothing,
    /// The first `n` bytes of a write.
    Prefix(usize),
}

/// A pending operation as a crash mode sees it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Global sequence number.
    seq: u64,
    /// Offset and length, for a write.
    write: Option<(u64, usize)>,
    /// Whether it is a rename.
    rename: bool,
}

impl State {
    /// Starts operation number `ops`: counts it and fails it if a crash or a fault
    /// is set for it.
    fn begin(&mut self) -> io::Result<()> {
        let n = self.ops;
        self.ops = self.ops.saturating_add(1);
        if let Some(c) = self.crash_at {
            if n >= c {
                self.crashed = true;
                return Err(crash_error());
            }
        }
        for f in &self.faults {
            let hit = match f.persistence {
                FaultPersistence::Once => n == f.at,
                FaultPersistence::Forever => n >= f.at,
            };
            if hit {
                return Err(f.kind.error());
            }
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.saturating_add(1);
        s
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.parent().is_none() || dir == Path::new(".") || self.dirs.contains(dir)
    }

    /// Checks that `path` names a file (not a directory) in an existing directory.
    fn check_file_path(&self, path: &Path) -> io::Result<()> {
        if path.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file name", path.display()),
            ));
        }
        let dir = parent_dir(path);
        if !self.dir_exists(&dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", dir.display()),
            ));
        }
        if self.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{}: is a directory", path.display()),
            ));
        }
        Ok(())
    }

    fn inode_of(&self, path: &Path) -> io::Result<usize> {
        self.check_file_path(path)?;
        self.current
            .get(path)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn inode_mut(&mut self, inode: usize) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(inode)
            .ok_or_else(|| io::Error::other("stale simulated file handle"))
    }

    fn new_inode(&mut self, bytes: Vec<u8>) -> usize {
        self.inodes.push(Inode::with_content(bytes));
        self.inodes.len() - 1
    }

    /// Creates the entry `path` for a new empty inode, pending until its directory
    /// is synced.
    fn create_entry(&mut self, path: &Path) -> usize {
        let inode = self.new_inode(Vec::new());
        self.current.insert(path.to_path_buf(), inode);
        let seq = self.next_seq();
        self.pending_dir.push((
            seq,
            DirOp::Create {
                path: path.to_path_buf(),
                inode,
            },
        ));
        inode
    }

    fn push_data(&mut self, inode: usize, op: DataOp) -> io::Result<()> {
        let seq = self.next_seq();
        let node = self.inode_mut(inode)?;
        apply_data(&mut node.current, &op);
        node.pending.push((seq, op));
        Ok(())
    }

    fn append(&mut self, inode: usize, buf: &[u8]) -> io::Result<()> {
        let offset = self.inode_mut(inode)?.current.len() as u64;
        check_len(offset.saturating_add(buf.len() as u64))?;
        if buf.is_empty() {
            return Ok(());
        }
        self.push_data(
            inode,
            DataOp::Write {
                offset,
                bytes: buf.to_vec(),
            },
        )
    }

    fn sync_entries(&mut self, dir: &Path) {
        let pending = std::mem::take(&mut self.pending_dir);
        for (seq, op) in pending {
            if op.in_dir(dir) {
                apply_dir(&mut self.durable, &op);
            } else {
                self.pending_dir.push((seq, op));
            }
        }
    }

    fn add_dirs(&mut self, dir: &Path) {
        for a in dir.ancestors() {
            if !a.as_os_str().is_empty() {
                self.dirs.insert(a.to_path_buf());
            }
        }
    }

    /// Decides, for every pending operation (by sequence number), what `mode`
    /// keeps of it.
    fn decide(&self, mode: CrashMode) -> BTreeMap<u64, Keep> {
        // Every pending operation, in global order.
        let mut all: Vec<Pending> = Vec::new();
        for node in &self.inodes {
            for (seq, op) in &node.pending {
                let write = match op {
                    DataOp::Write { offset, bytes } => Some((*offset, bytes.len())),
                    DataOp::SetLen(_) => None,
                };
                all.push(Pending {
                    seq: *seq,
                    write,
                    rename: false,
                });
            }
        }
        for (seq, op) in &self.pending_dir {
            all.push(Pending {
                seq: *seq,
                write: None,
                rename: matches!(op, DirOp::Rename { .. }),
            });
        }
        all.sort_by_key(|p| p.seq);

        let mut keep = BTreeMap::new();
        match mode {
            CrashMode::DropUnsynced => {
                for op in &all {
                    keep.insert(op.seq, Keep::Nothing);
                }
            }
            CrashMode::KeepRandom { seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for op in &all {
                    let k = if rng.gen::<bool>() {
                        Keep::All
                    } else {
                        Keep::Nothing
                    };
                    keep.insert(op.seq, k);
                }
            }
            CrashMode::TornLastWrite { sector } => {
                for op in &all {
                    keep.insert(op.seq, Keep::All);
                }
                let last = all
                    .iter()
                    .rev()
                    .find_map(|op| op.write.map(|(off, len)| (op.seq, off, len)));
                if let Some((seq, offset, len)) = last {
                    let sector = sector.max(1) as u64;
                    let end = offset.saturating_add(len as u64);
                    let aligned = end / sector * sector;
                    let kept = aligned.saturating_sub(offset);
                    let kept = usize::try_from(kept).unwrap_or(0).min(len);
                    keep.insert(seq, Keep::Prefix(kept));
                }
            }
            CrashMode::LoseRenames => {
                for op in &all {
                    let k = if op.rename { Keep::Nothing } else { Keep::All };
                    keep.insert(op.seq, k);
                }
            }
        }
        keep
    }

    /// The disk a power cut now would leave, under `mode`.
    fn crash_image(&self, mode: CrashMode) -> State {
        let keep = self.decide(mode);
        let kept = |seq: &u64| keep.get(seq).copied().unwrap_or(Keep::Nothing);

        let mut map = self.durable.clone();
        for (seq, op) in &self.pending_dir {
            if kept(seq) != Keep::Nothing {
                apply_dir(&mut map, op);
            }
        }

        // Only the inodes the surviving entries name, renumbered.
        let mut image = State {
            dirs: self.dirs.clone(),
            ..State::default()
        };
        let mut renumber: BTreeMap<usize, usize> = BTreeMap::new();
        for (path, old) in map {
            let new = match renumber.get(&old) {
                Some(&new) => new,
                None => {
                    let Some(node) = self.inodes.get(old) else {
                        continue;
                    };
                    let mut content = node.durable.clone();
                    for (seq, op) in &node.pending {
                        match (kept(seq), op) {
                            (Keep::All, op) => apply_data(&mut content, op),
                            (Keep::Prefix(n), DataOp::Write { offset, bytes }) => {
                                if let Some(prefix) = bytes.get(..n) {
                                    if !prefix.is_empty() {
                                        write_at(&mut content, *offset, prefix);
                                    }
                                }
                            }
                            (Keep::Prefix(_), op @ DataOp::SetLen(_)) => {
                                apply_data(&mut content, op);
                            }
                            (Keep::Nothing, _) => {}
                        }
                    }
                    let new = image.new_inode(content);
                    renumber.insert(old, new);
                    new
                }
            };
            image.current.insert(path.clone(), new);
            image.durable.insert(path, new);
        }
        image
    }
}

/// A simulated disk that records, for every file and directory entry, what was
/// written and what was synced; crashes at the N-th operation
/// ([`crash_at`](Self::crash_at)), builds the images a power cut would leave
/// ([`crash_image`](Self::crash_image)) and fails operations with EIO or ENOSPC
/// ([`fail_at`](Self::fail_at)). Clones share one disk (it is a cheap handle).
///
/// # Model
///
/// * Every file is an *inode* with its durable content (what survives a power
///   cut), the data operations not yet synced (writes and length changes, in
///   order) and its current content (durable content with every pending operation
///   applied), which is what reads see.
/// * The namespace is flat: a map from full path to inode. There is the current
///   map, which every call sees, the durable map, and the directory operations not
///   yet synced (create, rename, remove), in order. `sync_dir(dir)` makes durable,
///   in order, the pending operations on entries of `dir` (a rename is on the
///   entries of the directories of both its paths).
/// * Directories are a set of paths; creating one is immediately durable. `.` and
///   the root always exist. An operation on a path whose directory was never
///   created fails with [`io::ErrorKind::NotFound`].
/// * Every call of a [`FileSystem`] method (but
///   [`real_path`](FileSystem::real_path)) and every `write_all` and `sync_data` of
///   a handle, and every `write_at` and `sync_range` of a mapped file, the disk
///   gave out is one *operation*, numbered from 0 in call order;
///   [`SimFs::crash_at`] and [`SimFs::fail_at`] name operations by that number.
/// * [`SimFs::crash_image`] builds what a power cut now would leave on the disk,
///   under a [`CrashMode`].
/// * `list(dir)` names the files and the subdirectories of `dir`. `lock` creates
///   the lock file, empty, if missing (its entry pending like any creation).
/// * A write or a sync through a handle of a removed file goes to its inode
///   (unlinked, invisible); nothing panics.
/// * A mapped file ([`map_file`](FileSystem::map_file)) is a page-aligned heap
///   buffer, filled from the file's current content when mapped and never
///   moved. Its `write_at` is one operation: a write of the inode (pending like
///   any other, so a crash image keeps, drops or tears it by the crash mode)
///   that is also copied into the buffer; its `sync_range` is one operation that
///   syncs the whole inode (as `fdatasync` would: at least the range asked for).
///   The buffer is not the disk: a crash image holds only the inodes, and a
///   `map_file` on the image sees what the crash mode left of the file.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere while holding the lock leaves the state consistent
    // enough for tests: never propagate the poison.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimFs {
    fn take_lock(&self, path: &Path, shared: bool) -> io::Result<Box<dyn LockGuard>> {
        let mut s = self.state();
        s.begin()?;
        s.check_file_path(path)?;
        let held = s.locks.get(path).copied();
        match (held, shared) {
            (None, _) => {}
            (Some(Some(_)), true) => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another holder", path.display()),
                ))
            }
        }
        if !s.current.contains_key(path) {
            s.create_entry(path);
        }
        let now = if shared {
            Some(held.flatten().unwrap_or(0) + 1)
        } else {
            None
        };
        s.locks.insert(path.to_path_buf(), now);
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        }))
    }

    /// An empty disk: no files, no directories but `.` and the root.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.state)
    }

    /// How many operations have been issued so far (failed ones included); the
    /// next operation has this number.
    pub fn op_count(&self) -> u64 {
        self.state().ops
    }

    /// Kills the process at operation `n`: operation `n` and every later one fail
    /// with an [`io::ErrorKind::Other`] error "simulated crash" (see
    /// [`is_simulated_crash`]) and have no effect, reads included. Operations
    /// `0..n` take effect. Replaces an earlier crash mark.
    pub fn crash_at(&self, n: u64) {
        self.state().crash_at = Some(n);
    }

    /// Whether an operation has failed because of [`crash_at`](Self::crash_at)
    /// (since the last [`clear_faults`](Self::clear_faults)).
    pub fn crashed(&self) -> bool {
        self.state().crashed
    }

    /// Makes operation `n` fail with `kind`'s error and no effect; with
    /// [`FaultPersistence::Forever`] every later operation fails the same way too.
    /// Adds to the faults set before.
    pub fn fail_at(&self, n: u64, kind: FaultKind, persistence: FaultPersistence) {
        self.state().faults.push(Fault {
            at: n,
            kind,
            persistence,
        });
    }

    /// Removes every fault and the crash mark: like a restart of the process
    /// without a power cut (everything written, synced or not, stays).
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.faults.clear();
        s.crash_at = None;
        s.crashed = false;
    }

    /// A new, independent disk holding what a power cut now would leave under
    /// `mode`: synced content and entries, plus what `mode` keeps of the unsynced
    /// operations. Its operation count is 0; it has no faults, no crash mark and
    /// no locks held, and everything on it is durable.
    pub fn crash_image(&self, mode: CrashMode) -> SimFs {
        let image = self.state().crash_image(mode);
        SimFs {
            state: Arc::new(Mutex::new(image)),
        }
    }

    /// The paths of every current file, sorted (directories not included).
    pub fn file_names(&self) -> Vec<PathBuf> {
        self.state().current.keys().cloned().collect()
    }

    /// What a power cut now would leave of `path` with nothing unsynced
    /// surviving ([`CrashMode::DropUnsynced`]): its durable content if its entry
    /// is durable, else `None`. Not an operation.
    pub fn read_durable(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state();
        let inode = *s.durable.get(path)?;
        s.inodes.get(inode).map(|n| n.durable.clone())
    }

    /// Writes the file `path` with `bytes`, durably (entry and data), creating its
    /// directories; for tests that plant damaged files. Not an operation: no
    /// fault or crash mark applies. The pending entry operations of the file's
    /// directory are made durable first (as by `sync_dir`). Does nothing if `path`
    /// is a directory or has no file name.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.state();
        if path.file_name().is_none() || s.dirs.contains(path) {
            return;
        }
        let dir = parent_dir(path);
        s.add_dirs(&dir);
        s.sync_entries(&dir);
        let existing = s.current.get(path).copied();
        let inode = match existing.and_then(|i| s.inodes.get_mut(i).map(|n| (i, n))) {
            Some((i, node)) => {
                *node = Inode::with_content(bytes.to_vec());
                i
            }
            None => s.new_inode(bytes.to_vec()),
        };
        s.current.insert(path.to_path_buf(), inode);
        s.durable.insert(path.to_path_buf(), inode);
    }

    /// How many operations are not yet durable: unsynced data operations of
    /// every file (removed ones included) plus unsynced directory operations.
    pub fn pending_ops(&self) -> usize {
        let s = self.state();
        s.inodes.iter().map(|n| n.pending.len()).sum::<usize>() + s.pending_dir.len()
    }

    fn handle(&self, inode: usize) -> Box<dyn WritableFile> {
        Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode,
        })
    }
}

/// A handle of a simulated file: writes go to its inode, even after the file is
/// renamed or removed.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: usize,
}

impl WritableFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = lock_state(&self.state);
        s.begin()?;
        s.append(self.inode, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = lock_state(&self.state);
        s.begin()?;
        s.inode_mut(self.inode)?.sync();
        Ok(())
    }

    fn len(&self) -> u64 {
        let s = lock_state(&self.state);
        s.inodes
            .get(self.inode)
            .map_or(0, |n| n.current.len() as u64)
    }
}

/// A mapped simulated file: a heap buffer standing in for the mapping, and the
/// inode its writes go to.
#[derive(Debug)]
struct SimMap {
    state: Arc<Mutex<State>>,
    inode: usize,
    /// `layout.size()` bytes from `alloc_zeroed(layout)`, freed in drop; written
    /// only by `write_at`, under the state lock.
    buf: NonNull<u8>,
    layout: Layout,
}

/// Alignment of a simulated mapping: a page, as a real one.
const MAP_ALIGN: usize = 4096;

// SAFETY: `buf` is an allocation this map owns alone (like a `Box<[u8]>`); it is
// written only in `write_at`, with the disk's mutex held, so two threads never
// write it at once. Readers in other threads read it through `as_ptr` under the
// `MappedFile` contract (no reference to bytes that `write_at` writes while the
// reference lives), which is the same contract a real shared mapping has.
unsafe impl Send for SimMap {}
// SAFETY: as above.
unsafe impl Sync for SimMap {}

impl Drop for SimMap {
    fn drop(&mut self) {
        // SAFETY: `buf` came from `alloc_zeroed(self.layout)` and is freed once;
        // `&mut self` means no reference into it is alive (references derived
        // from `as_ptr` borrow the map).
        unsafe { alloc::dealloc(self.buf.as_ptr(), self.layout) };
    }
}

impl MappedFile for SimMap {
    fn as_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let mut s = lock_state(&self.state);
        s.begin()?;
        check_map_range(offset, bytes.len(), self.layout.size())?;
        if bytes.is_empty() {
            return Ok(());
        }
        s.push_data(
            self.inode,
            DataOp::Write {
                offset: offset as u64,
                bytes: bytes.to_vec(),
            },
        )?;
        // SAFETY: `offset..offset + bytes.len()` lies inside the buffer (checked
        // above); the state lock excludes every other write of it, and by the
        // `MappedFile` contract no reference covers these bytes now. `bytes` is
        // caller memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.as_ptr().add(offset),
                bytes.len(),
            );
        }
        Ok(())
    }

    fn sync_range(&self, offset: usize, len: usize) -> io::Result<()> {
        let mut s = lock_state(&self.state);
        s.begin()?;
        check_map_range(offset, len, self.layout.size())?;
        s.inode_mut(self.inode)?.sync();
        Ok(())
    }
}

/// A held lock of a [`SimFs`]; dropping it releases the path.
#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = lock_state(&self.state);
        match s.locks.get_mut(&self.path) {
            Some(Some(n)) if *n > 1 => *n -= 1,
            _ => {
                s.locks.remove(&self.path);
            }
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.begin()?;
        if let Some(file) = dir.ancestors().find(|a| s.current.contains_key(*a)) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: is a file", file.display()),
            ));
        }
        s.add_dirs(dir);
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let inode = {
            let mut s = self.state();
            s.begin()?;
            s.check_file_path(path)?;
            match s.current.get(path).copied() {
                Some(inode) => {
                    s.push_data(inode, DataOp::SetLen(0))?;
                    inode
                }
                None => s.create_entry(path),
            }
        };
        Ok(self.handle(inode))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let inode = {
            let mut s = self.state();
            s.begin()?;
            s.inode_of(path)?
        };
        Ok(self.handle(inode))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut s = self.state();
        s.begin()?;
        let inode = s.inode_of(path)?;
        Ok(s.inode_mut(inode)?.current.clone())
    }

    fn read_head(&self, path: &Path, n: usize) -> io::Result<(Vec<u8>, u64)> {
        let mut s = self.state();
        s.begin()?;
        let inode = s.inode_of(path)?;
        let content = &s.inode_mut(inode)?.current;
        let head = content[..n.min(content.len())].to_vec();
        Ok((head, content.len() as u64))
    }

    /// A heap buffer holding the file's current first `len` bytes; see the
    /// model in [`SimFs`].
    unsafe fn map_file(&self, path: &Path, len: usize) -> io::Result<Box<dyn MappedFile>> {
        let mut s = self.state();
        s.begin()?;
        let inode = s.inode_of(path)?;
        let content = &s.inode_mut(inode)?.current;
        if len == 0 || content.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: cannot map {len} bytes of a {}-byte file",
                    path.display(),
                    content.len()
                ),
            ));
        }
        let layout = Layout::from_size_align(len, MAP_ALIGN)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e.to_string()))?;
        // SAFETY: `layout` has a non-zero size (`len > 0`).
        let buf = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate a simulated mapping",
            )
        })?;
        // SAFETY: the buffer is `len` bytes, `content` holds at least `len`, and the
        // fresh allocation cannot overlap it.
        unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), buf.as_ptr(), len) };
        Ok(Box::new(SimMap {
            state: Arc::clone(&self.state),
            inode,
            buf,
            layout,
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        let mut s = self.state();
        if s.begin().is_err() {
            return false;
        }
        s.current.contains_key(path) || (!path.as_os_str().is_empty() && s.dir_exists(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.state();
        s.begin()?;
        if !s.dir_exists(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", dir.display()),
            ));
        }
        let mut names: Vec<String> = s
            .current
            .keys()
            .chain(s.dirs.iter())
            .filter(|p| parent_dir(p) == dir)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.state();
        s.begin()?;
        let inode = s.inode_of(path)?;
        check_len(len)?;
        s.push_data(inode, DataOp::SetLen(len))
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.begin()?;
        let inode = s.inode_of(path)?;
        s.inode_mut(inode)?.sync();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.begin()?;
        let inode = s.inode_of(from)?;
        s.check_file_path(to)?;
        if from == to {
            return Ok(());
        }
        s.current.remove(from);
        s.current.insert(to.to_path_buf(), inode);
        let seq = s.next_seq();
        s.pending_dir.push((
            seq,
            DirOp::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            },
        ));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.begin()?;
        s.inode_of(path)?;
        s.current.remove(path);
        let seq = s.next_seq();
        s.pending_dir.push((
            seq,
            DirOp::Remove {
                path: path.to_path_buf(),
            },
        ));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.begin()?;
        if !s.dir_exists(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", dir.display()),
            ));
        }
        s.sync_entries(dir);
        Ok(())
    }

    /// Exclusive per path within this disk (and its clones), against shared
    /// holders too. Creates the lock file, empty, if missing (its entry pending
    /// like any creation).
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.take_lock(path, false)
    }

    /// Shared per path: compatible with other shared holders only.
    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.take_lock(path, true)
    }

    fn real_path(&self, _path: &Path) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// A disk with directory `d` and file `d/f` holding `bytes`, all durable.
    fn disk_with(bytes: &[u8]) -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(&p("d")).unwrap();
        let mut f = fs.create(&p("d/f")).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("d")).unwrap();
        assert_eq!(fs.pending_ops(), 0);
        fs
    }

    fn read_image(fs: &SimFs, mode: CrashMode, path: &str) -> Option<Vec<u8>> {
        let img = fs.crash_image(mode);
        if img.exists(&p(path)) {
            Some(img.read(&p(path)).unwrap())
        } else {
            None
        }
    }

    #[test]
    fn unsynced_data_is_dropped() {
        let fs = disk_with(b"old");
        let mut f = fs.open_append(&p("d/f")).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"oldnew");
        assert_eq!(f.len(), 6);
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/f").unwrap(),
            b"old"
        );
        assert_eq!(fs.read_durable(&p("d/f")).unwrap(), b"old");
        f.sync_data().unwrap();
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/f").unwrap(),
            b"oldnew"
        );
    }

    #[test]
    fn synced_data_with_unsynced_entry_is_gone() {
        let fs = SimFs::new();
        fs.create_dir_all(&p("d")).unwrap();
        let mut f = fs.create(&p("d/g")).unwrap();
        f.write_all(b"data").unwrap();
        f.sync_data().unwrap();
        fs.sync_file(&p("d/g")).unwrap();
        assert!(fs.exists(&p("d/g")));
        assert_eq!(read_image(&fs, CrashMode::DropUnsynced, "d/g"), None);
        assert_eq!(fs.read_durable(&p("d/g")), None);
        // Syncing another directory does not help.
        fs.create_dir_all(&p("e")).unwrap();
        fs.sync_dir(&p("e")).unwrap();
        fs.sync_dir(&p(".")).unwrap();
        assert_eq!(read_image(&fs, CrashMode::DropUnsynced, "d/g"), None);
        // Its own directory does.
        fs.sync_dir(&p("d")).unwrap();
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/g").unwrap(),
            b"data"
        );
    }

    #[test]
    fn synced_entry_with_unsynced_data_is_empty() {
        let fs = SimFs::new();
        fs.create_dir_all(&p("d")).unwrap();
        let mut f = fs.create(&p("d/g")).unwrap();
        f.write_all(b"data").unwrap();
        fs.sync_dir(&p("d")).unwrap();
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/g").unwrap(),
            b""
        );
    }

    #[test]
    fn synced_data_and_dir_survive_every_mode() {
        let fs = disk_with(b"durable");
        for mode in CrashMode::all(7) {
            let img = fs.crash_image(mode);
            assert_eq!(img.read(&p("d/f")).unwrap(), b"durable", "{mode:?}");
            assert_eq!(img.list(&p("d")).unwrap(), vec!["f".to_string()]);
            assert_eq!(img.pending_ops(), 0);
            assert_eq!(img.op_count(), 2);
        }
    }

    #[test]
    fn crash_image_is_independent_and_fresh() {
        let fs = disk_with(b"x");
        fs.fail_at(100, FaultKind::Eio, FaultPersistence::Forever);
        fs.crash_at(50);
        let _g = fs.lock(&p("d/LOCK")).unwrap();
        let img = fs.crash_image(CrashMode::DropUnsynced);
        assert_eq!(img.op_count(), 0);
        assert!(!img.crashed());
        // no lock held in the image
        let _g2 = img.lock(&p("d/LOCK")).unwrap();
        let mut f = img.open_append(&p("d/f")).unwrap();
        f.write_all(b"y").unwrap();
        assert_eq!(img.read(&p("d/f")).unwrap(), b"xy");
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"x");
    }

    /// The checkpoint pattern: write tmp, sync it, rename over final, sync dir.
    fn rename_scenario(sync_dir_after: bool) -> SimFs {
        let fs = disk_with(b"old contents");
        let mut t = fs.create(&p("d/tmp")).unwrap();
        t.write_all(b"new contents!").unwrap();
        t.sync_data().unwrap();
        fs.rename(&p("d/tmp"), &p("d/f")).unwrap();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"new contents!");
        assert!(!fs.exists(&p("d/tmp")));
        if sync_dir_after {
            fs.sync_dir(&p("d")).unwrap();
        }
        fs
    }

    #[test]
    fn rename_is_atomic() {
        let fs = rename_scenario(false);
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/f").unwrap(),
            b"old contents"
        );
        assert_eq!(read_image(&fs, CrashMode::DropUnsynced, "d/tmp"), None);
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let got = read_image(&fs, CrashMode::KeepRandom { seed }, "d/f").unwrap();
            assert!(got == b"old contents" || got == b"new contents!", "{got:?}");
            seen.insert(got);
        }
        assert_eq!(seen.len(), 2, "both outcomes over seeds");

        let fs = rename_scenario(true);
        for mode in CrashMode::all(3) {
            assert_eq!(
                read_image(&fs, mode, "d/f").unwrap(),
                b"new contents!",
                "{mode:?}"
            );
            assert_eq!(read_image(&fs, mode, "d/tmp"), None);
        }
    }

    #[test]
    fn lose_renames_loses_only_unsynced_renames() {
        let fs = rename_scenario(false);
        // The rename is lost but the creation of tmp is kept.
        assert_eq!(
            read_image(&fs, CrashMode::LoseRenames, "d/f").unwrap(),
            b"old contents"
        );
        assert_eq!(
            read_image(&fs, CrashMode::LoseRenames, "d/tmp").unwrap(),
            b"new contents!"
        );
        let fs = rename_scenario(true);
        assert_eq!(
            read_image(&fs, CrashMode::LoseRenames, "d/f").unwrap(),
            b"new contents!"
        );
        assert_eq!(read_image(&fs, CrashMode::LoseRenames, "d/tmp"), None);
    }

    #[test]
    fn torn_last_write_keeps_the_aligned_prefix() {
        let head: Vec<u8> = (0..100u8).collect();
        let fs = disk_with(&head);
        let tail: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut f = fs.open_append(&p("d/f")).unwrap();
        f.write_all(&tail).unwrap();
        let full: Vec<u8> = head.iter().chain(tail.iter()).copied().collect();
        // Write covers [100, 1100): last 512-aligned offset inside is 1024.
        let got = read_image(&fs, CrashMode::TornLastWrite { sector: 512 }, "d/f").unwrap();
        assert_eq!(got.len(), 1024);
        assert_eq!(got, full[..1024]);
        // No 4096-aligned offset inside: the whole write is lost.
        let got = read_image(&fs, CrashMode::TornLastWrite { sector: 4096 }, "d/f").unwrap();
        assert_eq!(got, head);
        // Sector 1: nothing torn.
        let got = read_image(&fs, CrashMode::TornLastWrite { sector: 1 }, "d/f").unwrap();
        assert_eq!(got, full);
        // The torn write is the last one of all files; earlier ones are whole.
        let mut g = fs.create(&p("d/g")).unwrap();
        g.write_all(&[7u8; 600]).unwrap();
        let img = fs.crash_image(CrashMode::TornLastWrite { sector: 512 });
        assert_eq!(img.read(&p("d/f")).unwrap(), full);
        assert_eq!(img.read(&p("d/g")).unwrap(), vec![7u8; 512]);
        // A sector of 0 does not divide by zero.
        let img = fs.crash_image(CrashMode::TornLastWrite { sector: 0 });
        assert_eq!(img.read(&p("d/g")).unwrap(), vec![7u8; 600]);
    }

    #[test]
    fn keep_random_is_deterministic_and_varies_over_seeds() {
        let fs = disk_with(b"");
        let mut f = fs.open_append(&p("d/f")).unwrap();
        for i in 0..8u8 {
            f.write_all(&[b'a' + i; 4]).unwrap();
        }
        let mut kept_some = false;
        let mut dropped_some = false;
        let mut distinct = BTreeSet::new();
        for seed in 0..32 {
            let a = read_image(&fs, CrashMode::KeepRandom { seed }, "d/f").unwrap();
            let b = read_image(&fs, CrashMode::KeepRandom { seed }, "d/f").unwrap();
            assert_eq!(a, b, "same seed, same image");
            // Dropped writes leave zero-filled gaps (or a shorter file).
            for i in 0..8usize {
                match a.get(i * 4..i * 4 + 4) {
                    Some(chunk) if chunk == [b'a' + i as u8; 4] => kept_some = true,
                    Some(chunk) => {
                        assert_eq!(chunk, [0u8; 4]);
                        dropped_some = true;
                    }
                    None => dropped_some = true,
                }
            }
            distinct.insert(a);
        }
        assert!(kept_some && dropped_some);
        assert!(distinct.len() > 4);
    }

    #[test]
    fn crash_at_lets_exactly_n_ops_take_effect() {
        // ops: 0 create_dir_all, 1 create, 2..=6 write_all, 7 sync_data
        for n in 0..=9u64 {
            let fs = SimFs::new();
            fs.crash_at(n);
            let r0 = fs.create_dir_all(&p("d"));
            let f = fs.create(&p("d/f"));
            let mut results = vec![r0.is_ok(), f.is_ok()];
            if let Ok(mut f) = f {
                for i in 0..5u8 {
                    results.push(f.write_all(&[i]).is_ok());
                }
                results.push(f.sync_data().is_ok());
            }
            let ok = results.iter().filter(|r| **r).count() as u64;
            assert_eq!(ok, n.min(results.len() as u64), "n={n}");
            assert!(results[..ok as usize].iter().all(|r| *r));
            assert_eq!(fs.crashed(), n < 8, "n={n}");
            // reads fail after the crash
            let read = fs.read(&p("d/f"));
            if n <= 8 {
                let e = read.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::Other);
                assert!(is_simulated_crash(&e), "{e}");
                assert!(!fs.exists(&p("d")));
            }
            // What took effect is visible once the process "restarts".
            fs.clear_faults();
            assert!(!fs.crashed());
            if n >= 2 {
                let content = fs.read(&p("d/f")).unwrap();
                let writes = (n - 2).min(5) as usize;
                assert_eq!(content, (0..writes as u8).collect::<Vec<u8>>());
                let durable = fs.read_durable(&p("d/f"));
                assert_eq!(durable, None, "entry never synced");
            } else {
                assert!(!fs.exists(&p("d/f")));
            }
        }
    }

    #[test]
    fn crash_mid_sequence_keeps_earlier_state() {
        let fs = disk_with(b"abc");
        let n = fs.op_count();
        fs.crash_at(n + 1);
        let mut f = fs.open_append(&p("d/f")).unwrap();
        let e = f.write_all(b"zzz").unwrap_err();
        assert!(is_simulated_crash(&e));
        assert!(f.sync_data().is_err());
        assert!(fs.sync_dir(&p("d")).is_err());
        assert!(fs.create(&p("d/x")).is_err());
        assert_eq!(fs.op_count(), n + 5);
        for mode in CrashMode::all(1) {
            assert_eq!(read_image(&fs, mode, "d/f").unwrap(), b"abc");
            assert_eq!(read_image(&fs, mode, "d/x"), None);
        }
    }

    #[test]
    fn fail_once_then_succeed() {
        let fs = disk_with(b"a");
        let mut f = fs.open_append(&p("d/f")).unwrap();
        f.write_all(b"b").unwrap();
        let n = fs.op_count();
        fs.fail_at(n, FaultKind::Eio, FaultPersistence::Once);
        let e = f.sync_data().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5));
        // The failed sync had no effect: the data is still pending.
        assert_eq!(fs.pending_ops(), 1);
        assert_eq!(fs.read_durable(&p("d/f")).unwrap(), b"a");
        f.sync_data().unwrap();
        assert_eq!(fs.read_durable(&p("d/f")).unwrap(), b"ab");
        assert_eq!(fs.pending_ops(), 0);

        let n = fs.op_count();
        fs.fail_at(n, FaultKind::Enospc, FaultPersistence::Once);
        let e = f.write_all(b"c").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(
            fs.read(&p("d/f")).unwrap(),
            b"ab",
            "failed write had no effect"
        );
        f.write_all(b"c").unwrap();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"abc");
    }

    #[test]
    fn fail_forever_until_cleared() {
        let fs = disk_with(b"a");
        let n = fs.op_count();
        fs.fail_at(n + 1, FaultKind::Enospc, FaultPersistence::Forever);
        let mut f = fs.open_append(&p("d/f")).unwrap(); // op n: fine
        for _ in 0..3 {
            assert_eq!(f.write_all(b"x").unwrap_err().raw_os_error(), Some(28));
        }
        assert_eq!(
            fs.read(&p("d/f")).unwrap_err().raw_os_error(),
            Some(28),
            "reads fail too"
        );
        assert!(fs.rename(&p("d/f"), &p("d/g")).is_err());
        assert!(!fs.crashed());
        fs.clear_faults();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"a");
        f.write_all(b"x").unwrap();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"ax");
        assert!(fs.exists(&p("d/f")) && !fs.exists(&p("d/g")));
    }

    #[test]
    fn clear_faults_keeps_the_page_cache() {
        let fs = disk_with(b"a");
        let mut f = fs.open_append(&p("d/f")).unwrap();
        f.write_all(b"b").unwrap();
        fs.crash_at(fs.op_count());
        assert!(f.write_all(b"c").is_err());
        assert!(fs.crashed());
        fs.clear_faults();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"ab");
        assert_eq!(fs.read_durable(&p("d/f")).unwrap(), b"a");
    }

    #[test]
    fn shared_locks_exclude_only_an_exclusive_one() {
        let fs = SimFs::new();
        fs.create_dir_all(&p("d")).unwrap();
        let other = fs.clone();
        let r1 = fs.lock_shared(&p("d/LOCK")).unwrap();
        let r2 = other.lock_shared(&p("d/LOCK")).unwrap();
        let busy = |r: io::Result<Box<dyn LockGuard>>| r.err().map(|e| e.kind());
        assert_eq!(busy(fs.lock(&p("d/LOCK"))), Some(io::ErrorKind::WouldBlock));
        drop(r1);
        // One shared holder is still there.
        assert_eq!(
            busy(other.lock(&p("d/LOCK"))),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(r2);
        let w = fs.lock(&p("d/LOCK")).unwrap();
        assert_eq!(
            busy(other.lock_shared(&p("d/LOCK"))),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(w);
        let _r = other.lock_shared(&p("d/LOCK")).unwrap();
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let fs = SimFs::new();
        fs.create_dir_all(&p("d")).unwrap();
        let other = fs.clone();
        let g = fs.lock(&p("d/LOCK")).unwrap();
        assert!(fs.exists(&p("d/LOCK")));
        assert_eq!(
            other.lock(&p("d/LOCK")).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        let g2 = fs.lock(&p("d/OTHER")).unwrap();
        drop(g);
        let g3 = other.lock(&p("d/LOCK")).unwrap();
        assert_eq!(
            fs.lock(&p("d/LOCK")).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop((g2, g3));
        fs.lock(&p("d/LOCK")).unwrap();
        assert_eq!(
            fs.lock(&p("nodir/LOCK")).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn op_count_counts_every_call_and_handle_op() {
        let fs = SimFs::new();
        assert_eq!(fs.op_count(), 0);
        fs.create_dir_all(&p("d")).unwrap();
        let mut f = fs.create(&p("d/f")).unwrap();
        assert_eq!(fs.op_count(), 2);
        f.write_all(b"x").unwrap();
        f.write_all(b"").unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(fs.op_count(), 5, "len() does not count");
        assert_eq!(fs.real_path(&p("d/f")), None);
        assert_eq!(fs.op_count(), 5, "real_path does not count");
        fs.exists(&p("d/f"));
        fs.list(&p("d")).unwrap();
        fs.read(&p("d/f")).unwrap();
        fs.set_len(&p("d/f"), 0).unwrap();
        fs.sync_file(&p("d/f")).unwrap();
        fs.rename(&p("d/f"), &p("d/g")).unwrap();
        fs.remove_file(&p("d/g")).unwrap();
        fs.sync_dir(&p("d")).unwrap();
        let g = fs.lock(&p("d/L")).unwrap();
        let _ = fs.open_append(&p("d/missing"));
        assert_eq!(fs.op_count(), 15, "failed ops count too");
        drop(g);
        fs.put_file(&p("x/y"), b"planted");
        fs.file_names();
        fs.read_durable(&p("x/y"));
        fs.pending_ops();
        fs.crash_image(CrashMode::DropUnsynced);
        assert_eq!(fs.op_count(), 15, "test helpers do not count");
    }

    #[test]
    fn missing_parent_is_not_found() {
        let fs = SimFs::new();
        for r in [fs.create(&p("a/f")).err(), fs.open_append(&p("a/f")).err()] {
            assert_eq!(r.map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        }
        assert_eq!(
            fs.read(&p("a/f")).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert_eq!(
            fs.list(&p("a")).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert_eq!(
            fs.sync_dir(&p("a")).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        // Bare names live in `.`, which always exists; so does the root.
        fs.create(&p("top")).unwrap();
        fs.create(&p("/abs")).unwrap();
        assert_eq!(fs.list(&p(".")).unwrap(), vec!["top".to_string()]);
        fs.create_dir_all(&p("a/b/c")).unwrap();
        fs.create(&p("a/f")).unwrap();
        assert_eq!(
            fs.list(&p("a")).unwrap(),
            vec!["b".to_string(), "f".to_string()]
        );
        assert!(fs.exists(&p("a/b")));
        assert!(fs.create(&p("a/b")).is_err(), "a directory is not a file");
        assert!(fs.create_dir_all(&p("a/f/g")).is_err(), "a file is no dir");
    }

    #[test]
    fn create_truncates_and_rename_replaces() {
        let fs = disk_with(b"hello");
        let mut f = fs.create(&p("d/f")).unwrap();
        assert_eq!(f.len(), 0);
        f.write_all(b"hi").unwrap();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"hi");
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/f").unwrap(),
            b"hello"
        );
        fs.set_len(&p("d/f"), 4).unwrap();
        assert_eq!(fs.read(&p("d/f")).unwrap(), b"hi\0\0");
        fs.sync_file(&p("d/f")).unwrap();
        assert_eq!(fs.read_durable(&p("d/f")).unwrap(), b"hi\0\0");
        assert_eq!(
            fs.set_len(&p("d/f"), u64::MAX).err().map(|e| e.kind()),
            Some(io::ErrorKind::FileTooLarge)
        );
        fs.remove_file(&p("d/f")).unwrap();
        assert!(!fs.exists(&p("d/f")));
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "d/f").unwrap(),
            b"hi\0\0",
            "removal not synced"
        );
        fs.sync_dir(&p("d")).unwrap();
        assert_eq!(read_image(&fs, CrashMode::DropUnsynced, "d/f"), None);
        // The handle still writes to the unlinked inode, without panicking.
        f.write_all(b"more").unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len(), 8);
        assert!(fs.file_names().is_empty());
    }

    #[test]
    fn put_file_plants_durably() {
        let fs = SimFs::new();
        fs.put_file(&p("a/b/seg-1"), b"damaged");
        assert_eq!(fs.op_count(), 0);
        assert_eq!(fs.file_names(), vec![p("a/b/seg-1")]);
        assert_eq!(fs.read_durable(&p("a/b/seg-1")).unwrap(), b"damaged");
        assert_eq!(fs.pending_ops(), 0);
        let mut f = fs.open_append(&p("a/b/seg-1")).unwrap();
        f.write_all(b"!").unwrap();
        fs.put_file(&p("a/b/seg-1"), b"again");
        assert_eq!(fs.read(&p("a/b/seg-1")).unwrap(), b"again");
        assert_eq!(
            read_image(&fs, CrashMode::DropUnsynced, "a/b/seg-1").unwrap(),
            b"again"
        );
    }

    /// The bytes of a map, read through its pointer.
    fn mapped(m: &dyn MappedFile) -> Vec<u8> {
        // SAFETY: `len()` bytes are mapped and no write is in flight.
        unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) }.to_vec()
    }

    #[test]
    fn mapped_writes_are_pending_until_synced_and_crash_images_see_the_file() {
        let fs = disk_with(b"");
        fs.set_len(&p("d/f"), 8192).unwrap();
        fs.sync_file(&p("d/f")).unwrap();
        assert_eq!(fs.read_head(&p("d/f"), 3).unwrap(), (vec![0; 3], 8192));
        let n = fs.op_count();
        // SAFETY: nothing else touches the file while it is mapped.
        let m = unsafe { fs.map_file(&p("d/f"), 8192) }.unwrap();
        assert_eq!(m.as_ptr() as usize % MAP_ALIGN, 0);
        m.write_at(4096, b"rows").unwrap();
        m.write_at(100, b"").unwrap();
        assert_eq!(fs.op_count(), n + 3, "map, two writes");
        assert_eq!(&mapped(&*m)[4096..4100], b"rows");
        assert_eq!(&fs.read(&p("d/f")).unwrap()[4096..4100], b"rows");
        assert_eq!(fs.pending_ops(), 1);
        // Unsynced: a power cut drops it, or tears it at a sector boundary.
        let img = fs.crash_image(CrashMode::DropUnsynced);
        // SAFETY: as above, on the image.
        let mi = unsafe { img.map_file(&p("d/f"), 8192) }.unwrap();
        assert_eq!(mapped(&*mi), vec![0; 8192]);
        drop(mi);
        m.write_at(5118, b"abcd").unwrap();
        let torn = read_image(&fs, CrashMode::TornLastWrite { sector: 512 }, "d/f").unwrap();
        assert_eq!(&torn[4096..4100], b"rows");
        assert_eq!(&torn[5118..5122], b"ab\0\0", "torn at byte 5120");
        m.sync_range(4096, 4).unwrap();
        assert_eq!(fs.pending_ops(), 0, "the whole file is synced");
        let img = fs.crash_image(CrashMode::DropUnsynced);
        // SAFETY: as above, on the image.
        let mi = unsafe { img.map_file(&p("d/f"), 4100) }.unwrap();
        assert_eq!(&mapped(&*mi)[4096..], b"rows");
        // Out of range, and failed or crashed writes, change nothing.
        assert_eq!(
            m.write_at(8190, b"xyz").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(m.sync_range(8000, 500).is_err());
        fs.fail_at(fs.op_count(), FaultKind::Enospc, FaultPersistence::Once);
        assert_eq!(m.write_at(0, b"zz").unwrap_err().raw_os_error(), Some(28));
        fs.crash_at(fs.op_count());
        assert!(is_simulated_crash(&m.write_at(0, b"zz").unwrap_err()));
        assert!(m.sync_range(0, 1).is_err());
        assert_eq!(&mapped(&*m)[..2], &[0, 0]);
        fs.clear_faults();
        assert_eq!(&fs.read(&p("d/f")).unwrap()[..2], &[0, 0]);
        assert_eq!(fs.pending_ops(), 0);
        // Maps that do not fit, or of missing files.
        for bad in [0usize, 8193] {
            // SAFETY: as above.
            let e = unsafe { fs.map_file(&p("d/f"), bad) }.err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        // SAFETY: as above.
        let e = unsafe { fs.map_file(&p("d/nope"), 1) }.err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            fs.read_head(&p("d/nope"), 1).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }

    /// Random operation sequences never panic, and the image that keeps every
    /// operation (`TornLastWrite { sector: 1 }`) equals the current state.
    #[test]
    fn random_sequences_never_panic_and_keep_all_matches_current() {
        let names = ["d/a", "d/b", "d/c", "d/e/x", "d/e/y", "nodir/z"];
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let fs = SimFs::new();
            fs.create_dir_all(&p("d/e")).unwrap();
            if rng.gen_bool(0.3) {
                fs.fail_at(
                    rng.gen_range(0..60),
                    if rng.gen() {
                        FaultKind::Eio
                    } else {
                        FaultKind::Enospc
                    },
                    FaultPersistence::Once,
                );
            }
            let mut handles: Vec<Box<dyn WritableFile>> = Vec::new();
            let mut locks: Vec<Box<dyn LockGuard>> = Vec::new();
            for _ in 0..60 {
                let a = p(names[rng.gen_range(0..names.len())]);
                // Renames stay within one directory.
                let b = a.with_file_name(["a", "b", "c", "x", "y"][rng.gen_range(0..5)]);
                let len = rng.gen_range(0..700usize);
                let _ = match rng.gen_range(0..13) {
                    0 => fs.create(&a).map(|h| handles.push(h)),
                    1 => fs.open_append(&a).map(|h| handles.push(h)),
                    2 | 3 => match handles.len() {
                        0 => Ok(()),
                        n => handles[rng.gen_range(0..n)].write_all(&vec![seed as u8; len]),
                    },
                    4 => match handles.len() {
                        0 => Ok(()),
                        n => handles[rng.gen_range(0..n)].sync_data(),
                    },
                    5 => fs.rename(&a, &b),
                    6 => fs.remove_file(&a),
                    7 => fs.sync_dir(&parent_dir(&a)),
                    8 => fs.sync_file(&a),
                    9 => fs.set_len(&a, len as u64),
                    10 => fs.read(&a).map(|_| ()),
                    11 => fs.list(&parent_dir(&a)).map(|_| ()),
                    _ => fs.lock(&a).map(|g| locks.push(g)),
                };
                if rng.gen_bool(0.05) {
                    locks.clear();
                }
            }
            let keep_all = fs.crash_image(CrashMode::TornLastWrite { sector: 1 });
            assert_eq!(keep_all.file_names(), fs.file_names(), "seed {seed}");
            for name in fs.file_names() {
                assert_eq!(keep_all.read(&name).unwrap(), fs.read(&name).unwrap());
            }
            let drop_all = fs.crash_image(CrashMode::DropUnsynced);
            for name in drop_all.file_names() {
                assert_eq!(
                    Some(drop_all.read(&name).unwrap()),
                    fs.read_durable(&name),
                    "seed {seed}"
                );
            }
            for mode in CrashMode::all(seed) {
                let img = fs.crash_image(mode);
                for name in img.file_names() {
                    img.read(&name).unwrap();
                }
            }
            fs.crash_at(fs.op_count());
            for h in &mut handles {
                assert!(h.write_all(b"x").is_err());
            }
        }
    }
}
