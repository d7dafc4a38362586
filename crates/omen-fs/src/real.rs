//! [`RealFs`]: the [`FileSystem`] over `std::fs`.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

use crate::{check_map_range, FileSystem, LockGuard, MappedFile, WritableFile};

/// The real file system, through `std::fs`.
///
/// `sync_data` is `fdatasync`, [`sync_file`](FileSystem::sync_file) is `fsync` of
/// the file, and [`sync_dir`](FileSystem::sync_dir) is `fsync` of the directory
/// (a no-op on platforms that cannot open a directory as a file).
/// [`lock`](FileSystem::lock) is an advisory exclusive lock (`flock` on Unix) on
/// the lock file: another holder, in this process through another open of the
/// file or in another process, makes it fail with [`io::ErrorKind::WouldBlock`]
/// after a quarter of a second of retries (a child being spawned holds a copy
/// of the lock until its `exec`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl RealFs {
    /// The real file system.
    pub fn new() -> RealFs {
        RealFs
    }
}

/// How long [`RealFs::lock`] keeps trying a busy lock before reporting it held:
/// long enough to outlast a child process's fork-to-exec window, short enough
/// that a lock really held by another process is reported at once to a person.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// A file of the real file system open for writing at its end.
#[derive(Debug)]
struct RealFile {
    file: File,
    len: u64,
}

impl WritableFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.file.write_all(buf) {
            Ok(()) => {
                self.len = self.len.saturating_add(buf.len() as u64);
                Ok(())
            }
            Err(e) => {
                // Part of the buffer may have been written: ask the file.
                if let Ok(meta) = self.file.metadata() {
                    self.len = meta.len();
                }
                Err(e)
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// A shared, read-write mapping of a real file, and the file for `pwrite`.
#[derive(Debug)]
struct RealMap {
    file: File,
    map: MmapMut,
}

impl MappedFile for RealMap {
    fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        check_map_range(offset, bytes.len(), self.map.len())?;
        // `pwrite` into the page cache the shared mapping maps: once it returns,
        // reads through the mapping see the bytes.
        write_all_at(&self.file, bytes, offset as u64)
    }

    fn sync_range(&self, offset: usize, len: usize) -> io::Result<()> {
        check_map_range(offset, len, self.map.len())?;
        self.map.flush_range(offset, len)
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    while !bytes.is_empty() {
        match std::os::windows::fs::FileExt::seek_write(file, bytes, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A held lock: the open lock file (closing it releases the lock).
#[derive(Debug)]
struct RealLock {
    _file: File,
}

impl LockGuard for RealLock {}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = File::create(path)?;
        Ok(Box::new(RealFile { file, len: 0 }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(RealFile { file, len }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_head(&self, path: &Path, n: usize) -> io::Result<(Vec<u8>, u64)> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = Vec::with_capacity(n.min(len as usize));
        file.take(n as u64).read_to_end(&mut head)?;
        Ok((head, len))
    }

    unsafe fn map_file(&self, path: &Path, len: usize) -> io::Result<Box<dyn MappedFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let file_len = file.metadata()?.len();
        if len == 0 || file_len < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: cannot map {len} bytes of a {file_len}-byte file",
                    path.display()
                ),
            ));
        }
        // SAFETY: memmap2 requires that the mapped bytes are not modified or
        // truncated by anything else while mapped: that is this method's
        // contract, passed on to its caller. The file holds at least `len` bytes
        // (checked above), so no page of the mapping lies beyond its end.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file)? };
        Ok(Box::new(RealMap { file, map }))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 are none of ours: skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // A directory cannot be opened as a file here; its entries are made
        // durable by the file system itself. Still report a missing directory.
        fs::metadata(dir).map(|_| ())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        take_lock(path, false)
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        take_lock(path, true)
    }

    fn real_path(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }
}

/// `flock` on `path`, exclusive or shared, tried again for [`LOCK_RETRY`]
/// before a busy lock is reported as `WouldBlock`.
fn take_lock(path: &Path, shared: bool) -> io::Result<Box<dyn LockGuard>> {
    // A shared holder only reads: the lock file is opened for reading when it
    // exists (a read-only open writes nothing), created only if missing.
    let existing = if shared {
        OpenOptions::new().read(true).open(path).ok()
    } else {
        None
    };
    let file = match existing {
        Some(f) => f,
        None => OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?,
    };
    // A lock released by this process may still be held for a moment by a
    // child it is spawning: between fork and exec the child holds copies of
    // every descriptor, close-on-exec or not, and `flock` belongs to the open
    // file description they share. So a busy lock is tried again for a short
    // while before it is reported as held.
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let tried = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match tried {
            Ok(()) => return Ok(Box::new(RealLock { _file: file })),
            Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_RETRY => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another holder", path.display()),
                ))
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_a_tempdir() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealFs::new();
        let dir = tmp.path().join("a/b");
        fs.create_dir_all(&dir).unwrap();
        fs.create_dir_all(&dir).unwrap(); // not an error if it exists
        let p = dir.join("log");
        assert!(!fs.exists(&p));
        let mut f = fs.create(&p).unwrap();
        assert!(f.is_empty());
        f.write_all(b"hello ").unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len(), 6);
        drop(f);
        let mut f = fs.open_append(&p).unwrap();
        assert_eq!(f.len(), 6);
        f.write_all(b"world").unwrap();
        assert_eq!(f.len(), 11);
        drop(f);
        assert!(fs.exists(&p));
        assert_eq!(fs.read(&p).unwrap(), b"hello world");
        fs.sync_file(&p).unwrap();
        fs.sync_dir(&dir).unwrap();

        // create truncates
        let mut f = fs.create(&p).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        assert_eq!(fs.read(&p).unwrap(), b"x");

        fs.set_len(&p, 3).unwrap();
        assert_eq!(fs.read(&p).unwrap(), b"x\0\0");
        fs.set_len(&p, 1).unwrap();
        assert_eq!(fs.read(&p).unwrap(), b"x");

        let q = dir.join("final");
        fs.rename(&p, &q).unwrap();
        assert!(!fs.exists(&p));
        assert_eq!(fs.read(&q).unwrap(), b"x");
        fs.create(&dir.join("c")).unwrap();
        assert_eq!(
            fs.list(&dir).unwrap(),
            vec!["c".to_string(), "final".to_string()]
        );
        fs.remove_file(&q).unwrap();
        assert_eq!(fs.list(&dir).unwrap(), vec!["c".to_string()]);
        assert_eq!(fs.real_path(&q), Some(q.clone()));

        assert_eq!(
            fs.open_append(&q).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert_eq!(
            fs.read(&q).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert!(fs.list(&dir.join("nope")).is_err());
    }

    #[test]
    fn mapped_file_sees_pwrites_and_reads_its_head() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealFs::new();
        let p = tmp.path().join("chunk");
        let mut f = fs.create(&p).unwrap();
        f.write_all(b"head").unwrap();
        drop(f);
        fs.set_len(&p, 8192).unwrap();
        assert_eq!(fs.read_head(&p, 2).unwrap(), (b"he".to_vec(), 8192));
        assert_eq!(fs.read_head(&p, 1 << 20).unwrap().0.len(), 8192);
        // SAFETY: nothing else touches the file while it is mapped.
        let m = unsafe { fs.map_file(&p, 8192) }.unwrap();
        assert_eq!(m.len(), 8192);
        assert_eq!(m.as_ptr() as usize % 4096, 0);
        m.write_at(4096, b"rows").unwrap();
        // SAFETY: bytes 0..4100 are mapped and no write is in flight.
        let seen = unsafe { std::slice::from_raw_parts(m.as_ptr(), 4100) };
        assert_eq!(&seen[..4], b"head");
        assert_eq!(&seen[4096..], b"rows");
        m.sync_range(4096, 4).unwrap();
        assert_eq!(
            m.write_at(8190, b"xyz").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(m.sync_range(usize::MAX, 2).is_err());
        drop(m);
        assert_eq!(&fs.read(&p).unwrap()[4096..4100], b"rows");
        for bad in [0usize, 8193] {
            // SAFETY: as above.
            let e = unsafe { fs.map_file(&p, bad) }.err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        // SAFETY: as above (the file does not exist).
        let e = unsafe { fs.map_file(&tmp.path().join("nope"), 1) }
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    /// Shared locks (read-only opens) coexist; an exclusive one excludes them
    /// and they exclude it. A shared holder of an existing lock file opens it
    /// read-only: it works on a file the process may not write.
    #[test]
    fn shared_locks_coexist_and_exclude_a_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealFs::new();
        let path = tmp.path().join("LOCK");
        let w = fs.lock(&path).unwrap();
        let busy = |r: io::Result<Box<dyn LockGuard>>| r.err().map(|e| e.kind());
        assert_eq!(busy(fs.lock_shared(&path)), Some(io::ErrorKind::WouldBlock));
        drop(w);
        let r1 = fs.lock_shared(&path).unwrap();
        let r2 = fs.lock_shared(&path).unwrap();
        assert_eq!(busy(fs.lock(&path)), Some(io::ErrorKind::WouldBlock));
        drop((r1, r2));
        drop(fs.lock(&path).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
            drop(fs.lock_shared(&path).unwrap());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }

    /// `File::try_lock` is `flock` on Linux: locks belong to the open file
    /// description, so a second open of the same path in the same process
    /// conflicts with the first.
    #[test]
    fn lock_contention_in_one_process_is_would_block() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealFs::new();
        let p = tmp.path().join("LOCK");
        let g = fs.lock(&p).unwrap();
        assert!(fs.exists(&p));
        let err = fs.lock(&p).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(g);
        let g2 = fs.lock(&p).unwrap();
        assert_eq!(
            fs.lock(&p).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(g2);
    }

    /// A lock released while another thread spawns processes is taken again
    /// at once: the children's fork-to-exec copies of the descriptor (which
    /// share the `flock`) are outlasted by the retry.
    #[cfg(unix)]
    #[test]
    fn lock_released_while_children_spawn_is_taken_again() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::Arc;
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealFs::new();
        let p = tmp.path().join("LOCK");
        let stop = Arc::new(AtomicBool::new(false));
        let spawned = Arc::new(AtomicU32::new(0));
        let spawner = {
            let (stop, spawned) = (Arc::clone(&stop), Arc::clone(&spawned));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut c) = std::process::Command::new("true").spawn() {
                        let _ = c.wait();
                        spawned.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let start = std::time::Instant::now();
        let mut takes = 0u32;
        while spawned.load(Ordering::Relaxed) < 200 && start.elapsed().as_secs() < 20 {
            let g = fs.lock(&p).unwrap_or_else(|e| panic!("take {takes}: {e}"));
            drop(g);
            takes += 1;
        }
        stop.store(true, Ordering::Relaxed);
        spawner.join().unwrap();
        assert!(
            spawned.load(Ordering::Relaxed) >= 200,
            "too few children spawned"
        );
        assert!(takes > 0);
    }
}
