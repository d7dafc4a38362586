//! Memory-mapped chunk files.
//!
//! # Layout
//! Rows live in at most [`BUCKETS`] chunk files `chunk-NN.omv` in one directory,
//! with the geometry of [`MemoryStorage`](crate::MemoryStorage): chunk `b` holds
//! `base << b` rows (`base` a power of two) and starts at row `base * (2^b - 1)`.
//! Each file is a [`MMAP_HEADER_BYTES`]-byte header page followed by `rows × dim`
//! little-endian f32s, so every chunk's rows start on a page boundary of the map.
//! See `docs/FORMAT.md` for the header.
//!
//! A chunk file is created when an append first reaches it: created, header
//! written, extended (sparsely) to its full size, fsynced, the directory fsynced,
//! then mapped shared and read-write. A mapping, once made, is never moved or
//! unmapped before the storage is dropped: that is what lets a reader keep a
//! `&[f32]` into it while a writer appends.
//!
//! # Publication protocol
//! The protocol of `MemoryStorage`:
//! * Writers take `writer` (a mutex), so at most one thread ever writes rows.
//! * A writer only writes rows at or beyond `len`, mapping chunk files first; once
//!   every byte of the new rows is written, it stores the new `len` with `Release`.
//! * A reader loads `len` with `Acquire` and touches rows below it only. No thread
//!   of this process writes those bytes again, so shared slices into them are sound
//!   for as long as `&self` lives.
//!
//! # The file contract
//! A mapping is shared with the file: the slices handed out are only sound while
//! nothing else writes or truncates the chunk files. The collection directory is
//! protected by a lock file held by the storage's owner (the durable collection),
//! and nothing in Omen touches the chunk files of an open storage; another process
//! that modifies them anyway breaks this contract (a truncation turns reads into
//! `SIGBUS`). Chunk files are sparse; rows are written with `pwrite` (not through
//! the mapping), so a full file system is an `Io` error (ENOSPC) on append, never
//! a fault.
//!
//! # Length and durability
//! The storage does not persist its own length. Its owner records how many rows
//! are valid (in its checkpoint manifest) and reopens with
//! [`MmapStorage::open`]`(dir, dim, rows)`; rows past `rows` in the files are
//! unpublished and later appends overwrite them. [`MmapStorage::flush`] makes every
//! row published so far durable (`msync`).

use crate::buckets::{self, BUCKETS};
use memmap2::{MmapMut, MmapOptions};
use omen_core::codec::{check_crc32, ByteReader, ByteWriter};
use omen_core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use omen_core::sync::{self, Mutex};
use omen_core::{Error, Result, SlotId, VectorStorage, MAX_SLOTS};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::OnceLock;

/// Default number of rows in the first chunk file.
pub const DEFAULT_MMAP_CHUNK_ROWS: usize = 65_536;

/// Bytes of the header page at the start of every chunk file.
pub const MMAP_HEADER_BYTES: usize = 4096;

/// Magic number at offset 0 of every chunk file.
const MAGIC: &[u8; 8] = b"OMENCHNK";

/// Chunk file format version.
const VERSION: u32 = 1;

// Header field offsets (the magic is at 0), in the order `Header::encode` writes
// them and `read_header` reads them.
const OFF_VERSION: usize = 8;
const OFF_DIM: usize = 12;
const OFF_INDEX: usize = 16;
const OFF_RESERVED: usize = 20;
const OFF_BASE_ROWS: usize = 24;
const OFF_CAPACITY: usize = 32;
const OFF_CRC: usize = 40;
/// End of the header fields; the rest of the page is zero.
const FIELDS_END: usize = 44;

/// Largest accepted `chunk_rows` (and `base_rows` in a header).
const MAX_CHUNK_ROWS: usize = 1 << 31;

/// The file name of chunk `b`.
fn chunk_name(b: usize) -> String {
    format!("chunk-{b:02}.omv")
}

/// The parsed fields of a chunk header.
struct Header {
    dim: u32,
    index: u32,
    base_rows: u64,
    capacity: u64,
}

impl Header {
    /// The header page: fields, CRC-32C of the fields, zeros.
    fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::with_capacity(MMAP_HEADER_BYTES);
        w.bytes(MAGIC)
            .u32(VERSION)
            .u32(self.dim)
            .u32(self.index)
            .u32(0)
            .u64(self.base_rows)
            .u64(self.capacity);
        debug_assert_eq!(w.len(), OFF_CRC);
        let crc = w.crc32_from(0);
        w.u32(crc).zeros(MMAP_HEADER_BYTES - FIELDS_END);
        w.finish()
    }
}

/// Bytes of row data in a chunk of `capacity` rows of `dim` floats, or `None` on
/// overflow (of `usize`, or of `isize` for the mapping).
fn data_bytes(capacity: usize, dim: usize) -> Option<usize> {
    capacity
        .checked_mul(dim)?
        .checked_mul(4)?
        .checked_add(MMAP_HEADER_BYTES)
        .filter(|&n| isize::try_from(n).is_ok())
        .map(|n| n - MMAP_HEADER_BYTES)
}

/// Fsyncs a directory, so that entries created in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// An append-only storage of `dim`-wide f32 rows in memory-mapped chunk files.
///
/// Appends take `&self` and are serialised by an internal mutex; reads
/// ([`get`](VectorStorage::get), [`block`](VectorStorage::block), `len`) take no
/// lock and may run while another thread appends. Stored rows never move. The
/// storage does not record its own length: its owner does, and reopens it with
/// [`open`](Self::open). The directory must be protected by a lock file held by the
/// owner: see the module documentation.
///
/// ```
/// use omen_core::VectorStorage;
/// use omen_storage::MmapStorage;
///
/// let dir = tempfile::tempdir()?;
/// let s = MmapStorage::create(dir.path(), 2)?;
/// let slot = s.append(&[1.0, 2.0])?;
/// s.flush()?;
/// let n = s.len();
/// drop(s);
/// let s = MmapStorage::open(dir.path(), 2, n)?;
/// assert_eq!(s.get(slot), Some(&[1.0f32, 2.0][..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MmapStorage {
    dir: PathBuf,
    dim: usize,
    /// log2 of the rows in chunk 0.
    base_shift: u32,
    /// Published rows.
    len: AtomicUsize,
    /// Chunk `b`'s rows (`(1 << base_shift << b) * dim` floats just past the header
    /// page of its mapping), or null while not yet mapped.
    buckets: [AtomicPtr<f32>; BUCKETS],
    /// The mappings behind `buckets`, kept alive (and never replaced) until drop.
    maps: [OnceLock<MmapMut>; BUCKETS],
    /// The chunk files, open for writing: appends go through `pwrite` into the
    /// page cache that the mappings share (faulting in fresh file pages through
    /// the mapping, one `page_mkwrite` per 4 KiB, was 2–3x slower).
    files: [OnceLock<File>; BUCKETS],
    /// Bytes of mapped row space.
    mapped: AtomicUsize,
    /// Serialises writers.
    writer: Mutex<()>,
    /// Rows known durable: every row below it has been flushed (or was read from
    /// the files at open). Its mutex serialises [`flush`](Self::flush).
    flushed: Mutex<usize>,
}

impl MmapStorage {
    /// A new, empty storage of `dim`-wide rows in `dir` (created if missing), with
    /// [`DEFAULT_MMAP_CHUNK_ROWS`] rows in the first chunk file. See
    /// [`create_with_chunk_rows`](Self::create_with_chunk_rows).
    pub fn create(dir: &Path, dim: usize) -> Result<MmapStorage> {
        Self::create_with_chunk_rows(dir, dim, DEFAULT_MMAP_CHUNK_ROWS)
    }

    /// A new, empty storage in `dir` whose first chunk file holds `chunk_rows` rows
    /// (rounded up to a power of two; each following chunk doubles). No chunk file
    /// is written until the first append.
    ///
    /// Errors: `dim == 0`, `chunk_rows == 0` or `chunk_rows > 2^31` is
    /// `InvalidParameter`, and so is a `dir` that already holds chunk files (a
    /// storage is never clobbered); `Io` if `dir` cannot be created or listed.
    pub fn create_with_chunk_rows(
        dir: &Path,
        dim: usize,
        chunk_rows: usize,
    ) -> Result<MmapStorage> {
        if chunk_rows == 0 || chunk_rows > MAX_CHUNK_ROWS {
            return Err(Error::invalid_param(
                "chunk_rows",
                format!("must be in 1..=2^31, got {chunk_rows}"),
            ));
        }
        Self::check_dim(dim)?;
        let existed = dir.is_dir();
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if !existed {
            // Make the new directory's own entry durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("chunk-") && name.ends_with(".omv") {
                return Err(Error::invalid_param(
                    "dir",
                    format!(
                        "{} already holds mmap chunk files ({name}); open it instead",
                        dir.display()
                    ),
                ));
            }
        }
        Ok(Self::empty(
            dir,
            dim,
            chunk_rows.next_power_of_two().trailing_zeros(),
        ))
    }

    /// Opens the storage in `dir` and publishes exactly its first `rows` rows.
    ///
    /// The storage does not record its length: `rows` is what its owner recorded
    /// as valid. Rows past `rows` in the files are not published, and later appends
    /// overwrite them. Every chunk file needed to hold `rows` rows is checked and
    /// mapped; chunk files beyond those are ignored and recreated when an append
    /// reaches them. The chunk geometry comes from `chunk-00.omv` (or is the default
    /// when `rows == 0` and that file is missing or unreadable).
    ///
    /// Errors: `dim == 0` or `rows > MAX_SLOTS` is `InvalidParameter`; a missing
    /// chunk file, a damaged or foreign header (magic, version, CRC, dimension,
    /// chunk index, base rows, capacity, non-zero padding) or a file too short for
    /// its capacity is `Corruption` naming the file and the byte offset; `Io` on a
    /// failure to read or map.
    pub fn open(dir: &Path, dim: usize, rows: usize) -> Result<MmapStorage> {
        Self::check_dim(dim)?;
        if rows > MAX_SLOTS {
            return Err(Error::invalid_param(
                "rows",
                format!("{rows} exceeds the limit of {MAX_SLOTS}"),
            ));
        }
        let base_shift = if rows == 0 {
            // Nothing to validate; keep the geometry of a readable chunk 0 if any.
            match Self::read_header(dir, 0, dim, None) {
                Ok((_, h)) => h.base_rows.trailing_zeros(),
                Err(_) => DEFAULT_MMAP_CHUNK_ROWS.trailing_zeros(),
            }
        } else {
            let (_, h) = Self::read_header(dir, 0, dim, None)?;
            h.base_rows.trailing_zeros()
        };
        let s = Self::empty(dir, dim, base_shift);
        if rows > 0 {
            let last = s.locate(rows - 1).0;
            for b in 0..=last {
                let base_rows = 1u64 << base_shift;
                let (file, _) = Self::read_header(dir, b, dim, Some(base_rows))?;
                s.map_chunk(b, file)?;
            }
        }
        s.len.store(rows, Ordering::Release);
        *sync::lock(&s.flushed) = rows;
        Ok(s)
    }

    /// Makes every published row durable: `msync`s the rows published since the
    /// last successful flush. After it returns `Ok`, a crash followed by
    /// [`open`](Self::open)`(dir, dim, n)` with `n` no more than the rows published
    /// when it was called returns those rows exactly. Appends may run meanwhile.
    ///
    /// Errors: `Io` naming the chunk file. After an error the durability of the
    /// rows concerned is unknown (a retried `msync` may report success for pages
    /// the kernel already dropped); the owner should treat it as fatal.
    pub fn flush(&self) -> Result<()> {
        let mut flushed = sync::lock(&self.flushed);
        let end = self.len.load(Ordering::Acquire);
        let mut row = *flushed;
        while row < end {
            let (b, off) = self.locate(row);
            let take = (end - row).min(self.bucket_rows(b) - off);
            let path = self.dir.join(chunk_name(b));
            let Some(map) = self.maps[b].get() else {
                // Unreachable: a published row's chunk was mapped before `len` was
                // stored.
                return Err(Error::corruption(path, 0, "published chunk is not mapped"));
            };
            let row_bytes = self.dim * 4;
            map.flush_range(MMAP_HEADER_BYTES + off * row_bytes, take * row_bytes)
                .map_err(|e| Error::io(&path, e))?;
            row += take;
            *flushed = row;
        }
        Ok(())
    }

    /// The directory holding the chunk files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows in chunk file 0 (a power of two).
    pub fn chunk_rows(&self) -> usize {
        1 << self.base_shift
    }

    fn check_dim(dim: usize) -> Result<()> {
        if dim == 0 {
            return Err(Error::invalid_param("dim", "must be at least 1"));
        }
        if dim > u32::MAX as usize {
            return Err(Error::invalid_param(
                "dim",
                format!("{dim} does not fit the chunk header's u32"),
            ));
        }
        Ok(())
    }

    fn empty(dir: &Path, dim: usize, base_shift: u32) -> MmapStorage {
        MmapStorage {
            dir: dir.to_path_buf(),
            dim,
            base_shift,
            len: AtomicUsize::new(0),
            buckets: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            maps: std::array::from_fn(|_| OnceLock::new()),
            files: std::array::from_fn(|_| OnceLock::new()),
            mapped: AtomicUsize::new(0),
            writer: Mutex::new(()),
            flushed: Mutex::new(0),
        }
    }

    /// Rows held by chunk `b`.
    #[inline]
    fn bucket_rows(&self, b: usize) -> usize {
        buckets::rows(self.base_shift, b)
    }

    /// First row of chunk `b`.
    #[inline]
    fn bucket_start(&self, b: usize) -> usize {
        buckets::start(self.base_shift, b)
    }

    /// The chunk holding `row` and the row's offset in it. Requires
    /// `row < MAX_SLOTS`, which bounds the chunk below [`BUCKETS`].
    #[inline]
    fn locate(&self, row: usize) -> (usize, usize) {
        buckets::locate(self.base_shift, row)
    }

    /// Bytes of row data in chunk `b`, or `CapacityExceeded` on overflow.
    fn chunk_data_bytes(&self, b: usize) -> Result<usize> {
        data_bytes(self.bucket_rows(b), self.dim).ok_or_else(|| Error::CapacityExceeded {
            what: format!(
                "mmap storage chunk {b} of {} rows × {} floats overflows the address space",
                self.bucket_rows(b),
                self.dim
            ),
        })
    }

    /// Opens chunk file `b` read-write and checks its header and length. With
    /// `base_rows = None` (chunk 0, geometry unknown) any valid base is accepted.
    fn read_header(
        dir: &Path,
        b: usize,
        dim: usize,
        base_rows: Option<u64>,
    ) -> Result<(File, Header)> {
        let path = dir.join(chunk_name(b));
        let bad = |off: usize, detail: String| Error::corruption(&path, off as u64, detail);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(
                    0,
                    "missing chunk file needed for the published rows".into(),
                ))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut page = Vec::with_capacity(MMAP_HEADER_BYTES);
        (&mut file)
            .take(MMAP_HEADER_BYTES as u64)
            .read_to_end(&mut page)
            .map_err(|e| Error::io(&path, e))?;
        if page.len() < MMAP_HEADER_BYTES {
            return Err(bad(
                page.len(),
                format!(
                    "file of {} bytes is shorter than the {MMAP_HEADER_BYTES}-byte header",
                    page.len()
                ),
            ));
        }
        let mut r = ByteReader::new(&page, &path);
        r.expect_magic(MAGIC, "an Omen chunk file")?;
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(bad(
                OFF_VERSION,
                format!("unsupported format version {version}"),
            ));
        }
        let dim_field = r.u32("dimension")?;
        let index = r.u32("chunk index")?;
        let reserved = r.u32("reserved field")?;
        let base = r.u64("base rows")?;
        let capacity = r.u64("capacity")?;
        let crc = r.u32("header CRC")?;
        if !cfg!(fuzzing) {
            check_crc32(crc, &page[..OFF_CRC], &path, OFF_CRC as u64, "header")?;
        }
        let h = Header {
            dim: dim_field,
            index,
            base_rows: base,
            capacity,
        };
        if h.dim as usize != dim {
            return Err(bad(
                OFF_DIM,
                format!("chunk holds {}-wide rows, expected {dim}", h.dim),
            ));
        }
        if h.index as usize != b {
            return Err(bad(
                OFF_INDEX,
                format!("header names chunk {}, file is chunk {b}", h.index),
            ));
        }
        if reserved != 0 {
            return Err(bad(
                OFF_RESERVED,
                format!("reserved field is {reserved}, not 0"),
            ));
        }
        match base_rows {
            Some(want) if h.base_rows != want => {
                return Err(bad(
                    OFF_BASE_ROWS,
                    format!("base rows {} differ from chunk 0's {want}", h.base_rows),
                ))
            }
            _ if h.base_rows == 0
                || !h.base_rows.is_power_of_two()
                || h.base_rows > MAX_CHUNK_ROWS as u64 =>
            {
                return Err(bad(
                    OFF_BASE_ROWS,
                    format!(
                        "base rows {} is not a power of two in 1..=2^31",
                        h.base_rows
                    ),
                ))
            }
            _ => {}
        }
        // `base_rows <= 2^31` and `b < 32`: the shift cannot overflow a u64.
        if h.base_rows << b != h.capacity {
            return Err(bad(
                OFF_CAPACITY,
                format!(
                    "capacity {} is not base rows {} << chunk {b}",
                    h.capacity, h.base_rows
                ),
            ));
        }
        r.zeros(MMAP_HEADER_BYTES - FIELDS_END, "header padding")?;
        // In u64 first: a forged capacity that overflows cannot fit in any file.
        let need = h
            .capacity
            .checked_mul(dim as u64)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(MMAP_HEADER_BYTES as u64));
        match need {
            Some(need) if file_len >= need => {}
            _ => {
                let need = need.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
                return Err(Error::corruption(
                    &path,
                    file_len,
                    format!("file of {file_len} bytes is truncated: its capacity needs {need}"),
                ));
            }
        }
        // A file this long exists, but it may still not fit the address space (on
        // 32-bit targets).
        if usize::try_from(h.capacity)
            .ok()
            .and_then(|c| data_bytes(c, dim))
            .is_none()
        {
            return Err(Error::CapacityExceeded {
                what: format!(
                    "{}: chunk of {} rows × {dim} floats does not fit the address space",
                    path.display(),
                    h.capacity
                ),
            });
        }
        Ok((file, h))
    }

    /// Maps the (checked, or freshly written) chunk file `b` and publishes its base
    /// pointer. Called with the writer lock held or before the storage is shared.
    fn map_chunk(&self, b: usize, file: File) -> Result<()> {
        let path = self.dir.join(chunk_name(b));
        let data = self.chunk_data_bytes(b)?;
        // SAFETY: memmap2 requires that the file is not modified or truncated by
        // anything else while mapped. The chunk files belong to this storage alone:
        // the owner holds the directory's lock file, nothing in Omen touches the
        // files of an open storage, and within this process every write goes through
        // the publication protocol. The length covers the header page and the rows,
        // and the caller checked (or just set) that the file is at least that long.
        let mut map = unsafe {
            MmapOptions::new()
                .len(MMAP_HEADER_BYTES + data)
                .map_mut(&file)
                .map_err(|e| Error::io(&path, e))?
        };
        // SAFETY: the map is `MMAP_HEADER_BYTES + data` bytes long, so the offset stays in
        // bounds. The base is page-aligned, and `MMAP_HEADER_BYTES` is a multiple of 4,
        // so the row pointer is aligned for f32. `as_mut_ptr` borrows the map
        // mutably only for this statement; the map is never dereferenced again
        // (only `flush_range`, which passes the address to `msync`, and drop touch
        // it), so every later access goes through pointers derived from this one.
        let rows = unsafe { map.as_mut_ptr().add(MMAP_HEADER_BYTES) }.cast::<f32>();
        if self.maps[b].set(map).is_err() || self.files[b].set(file).is_err() {
            // Unreachable: a chunk is mapped once, under the writer lock or at open.
            return Err(Error::corruption(path, 0, "chunk mapped twice"));
        }
        // Moving the `MmapMut` into the cell does not move the mapping, so `rows`
        // stays valid for as long as the cell lives (until drop).
        // Release: a reader that loads the pointer directly sees the mapping.
        self.buckets[b].store(rows, Ordering::Release);
        self.mapped.fetch_add(data, Ordering::Relaxed);
        Ok(())
    }

    /// Creates chunk file `b` (truncating any stale file of that name), writes its
    /// header, extends it to full size, makes it durable and maps it. Called with
    /// the writer lock held.
    fn create_chunk(&self, b: usize) -> Result<()> {
        let path = self.dir.join(chunk_name(b));
        let data = self.chunk_data_bytes(b)?;
        let header = Header {
            dim: self.dim as u32,
            index: b as u32,
            base_rows: 1u64 << self.base_shift,
            capacity: self.bucket_rows(b) as u64,
        };
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(&header.encode()).map_err(io)?;
        file.set_len((MMAP_HEADER_BYTES + data) as u64)
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_dir(&self.dir)?;
        self.map_chunk(b, file)
    }

    /// Makes sure the chunks holding rows `from..to` are mapped. Called with the
    /// writer lock held. On error, chunks mapped so far stay (unpublished
    /// capacity).
    fn reserve(&self, from: usize, to: usize) -> Result<()> {
        let first = self.locate(from).0;
        let last = self.locate(to - 1).0;
        for b in first..=last {
            if self.buckets[b].load(Ordering::Relaxed).is_null() {
                self.create_chunk(b)?;
            }
        }
        Ok(())
    }

    /// Writes `src` (a whole number of rows) at rows `at..`, then publishes them.
    /// Called with the writer lock held and `at == len`.
    fn write_and_publish(&self, at: usize, src: &[f32]) -> Result<Range<SlotId>> {
        let n = src.len() / self.dim;
        let end = match at.checked_add(n) {
            Some(end) if end <= MAX_SLOTS => end,
            _ => {
                return Err(Error::CapacityExceeded {
                    what: format!(
                        "mmap storage holds {at} rows; {n} more exceed the limit of {MAX_SLOTS}"
                    ),
                })
            }
        };
        if n == 0 {
            return Ok(at as SlotId..at as SlotId);
        }
        self.reserve(at, end)?;
        let mut row = at;
        let mut src = src;
        while row < end {
            let (b, off) = self.locate(row);
            let take = (end - row).min(self.bucket_rows(b) - off);
            let (head, rest) = src.split_at(take * self.dim);
            let base = self.buckets[b].load(Ordering::Relaxed);
            if base.is_null() {
                // Unreachable: `reserve` mapped chunk `b`.
                return Err(Error::corruption(
                    self.dir.join(chunk_name(b)),
                    0,
                    "chunk not mapped after reserve",
                ));
            }
            let Some(file) = self.files[b].get() else {
                return Err(Error::corruption(
                    self.dir.join(chunk_name(b)),
                    0,
                    "chunk file not open after reserve",
                ));
            };
            // SAFETY: `head` is an initialised `&[f32]`; viewing its bytes as `u8`
            // (alignment 1, same length in bytes, every bit pattern valid) is sound.
            // The rows are stored little-endian, which is the native order on every
            // target this crate builds for (see the compile-time check below).
            let bytes = unsafe {
                std::slice::from_raw_parts(head.as_ptr().cast::<u8>(), std::mem::size_of_val(head))
            };
            // `pwrite` into the page cache the mapping shares: rows at or beyond
            // `len` are read by no one, and the writer lock excludes other writers.
            // The release store of `len` below happens after the syscall returned,
            // so a reader that acquires it reads the rows through the mapping.
            let at_byte = (MMAP_HEADER_BYTES + off * self.dim * 4) as u64;
            file.write_all_at(bytes, at_byte)
                .map_err(|e| Error::io(self.dir.join(chunk_name(b)), e))?;
            let _ = base;
            row += take;
            src = rest;
        }
        // Release: publishes every byte written above to readers that acquire `len`.
        self.len.store(end, Ordering::Release);
        Ok(at as SlotId..end as SlotId)
    }

    /// A published run of `rows` rows from offset `off` of chunk `b`. Requires the
    /// rows to be below a `len` observed with `Acquire`, and in chunk `b`.
    #[inline]
    fn published(&self, b: usize, off: usize, rows: usize) -> Option<&[f32]> {
        let base = self.buckets[b].load(Ordering::Acquire);
        if base.is_null() {
            // Unreachable: a published row's chunk was mapped before `len` was stored.
            return None;
        }
        // SAFETY: the caller observed (with Acquire) a `len` covering these rows,
        // which synchronises with the Release store made after the chunk was mapped
        // and the rows written (or, after `open`, with the store that published the
        // rows read from the file). The chunk's mapping holds `bucket_rows(b) * dim`
        // floats past `base`, and `off + rows <= bucket_rows(b)`, so the slice is in
        // bounds; file-backed pages are always initialised and every bit pattern is
        // an f32. Published rows are never written again by this process, nothing
        // else writes the files (the directory's lock file), and the mappings are
        // released only in drop (which needs `&mut self`), so the shared slice
        // stays valid and unchanged for the borrow of `self`.
        Some(unsafe { std::slice::from_raw_parts(base.add(off * self.dim), rows * self.dim) })
    }
}

impl MmapStorage {
    /// The storage kind's name, in manifests, flags and reports.
    pub const NAME: &'static str = "mmap";
}

impl VectorStorage for MmapStorage {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn flush(&self) -> Result<()> {
        MmapStorage::flush(self)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    #[inline]
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn append(&self, vector: &[f32]) -> Result<SlotId> {
        buckets::check_row(self.dim, vector)?;
        let _guard = sync::lock(&self.writer);
        // Relaxed: only writers store `len`, and the lock orders us after the last one.
        let at = self.len.load(Ordering::Relaxed);
        self.write_and_publish(at, vector).map(|r| r.start)
    }

    fn append_batch(&self, rows: &[f32]) -> Result<Range<SlotId>> {
        buckets::check_rows(self.dim, rows)?;
        let _guard = sync::lock(&self.writer);
        let at = self.len.load(Ordering::Relaxed);
        self.write_and_publish(at, rows)
    }

    #[inline]
    fn get(&self, slot: SlotId) -> Option<&[f32]> {
        let row = slot as usize;
        if row >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (b, off) = self.locate(row);
        self.published(b, off, 1)
    }

    #[inline]
    fn block(&self, start: SlotId) -> Option<&[f32]> {
        let row = start as usize;
        let len = self.len.load(Ordering::Acquire);
        if row >= len {
            return None;
        }
        let (b, off) = self.locate(row);
        let end = (self.bucket_start(b) + self.bucket_rows(b)).min(len);
        self.published(b, off, end - row)
    }

    fn memory_bytes(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for MmapStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapStorage")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("chunk_rows", &self.chunk_rows())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(i: usize, dim: usize) -> Vec<f32> {
        (0..dim).map(|c| (i * 31 + c) as f32 + 0.5).collect()
    }

    fn rows(from: usize, to: usize, dim: usize) -> Vec<f32> {
        (from..to).flat_map(|i| row(i, dim)).collect()
    }

    fn check_rows(s: &MmapStorage, n: usize, dim: usize) {
        assert_eq!(s.len(), n);
        for i in 0..n {
            assert_eq!(s.get(i as SlotId).unwrap(), &row(i, dim)[..], "row {i}");
        }
        assert!(s.get(n as SlotId).is_none());
    }

    fn corruption_file(e: Error) -> (PathBuf, u64) {
        match e {
            Error::Corruption { file, offset, .. } => (file, offset),
            other => panic!("expected Corruption, got {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_parameters() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            MmapStorage::create(d.path(), 0),
            Err(Error::InvalidParameter { name: "dim", .. })
        ));
        for bad in [0usize, (1 << 31) + 1] {
            assert!(matches!(
                MmapStorage::create_with_chunk_rows(d.path(), 4, bad),
                Err(Error::InvalidParameter {
                    name: "chunk_rows",
                    ..
                })
            ));
        }
        assert!(matches!(
            MmapStorage::open(d.path(), 0, 0),
            Err(Error::InvalidParameter { name: "dim", .. })
        ));
        let s = MmapStorage::create_with_chunk_rows(d.path(), 4, 3).unwrap();
        assert_eq!(s.chunk_rows(), 4);
        assert_eq!(s.dir(), d.path());
        assert_eq!(s.name(), "mmap");
        assert_eq!(s.memory_bytes(), 0);
    }

    #[test]
    fn oversized_chunk_is_a_capacity_error() {
        let d = tempfile::tempdir().unwrap();
        let s = MmapStorage::create_with_chunk_rows(d.path(), u32::MAX as usize, 1 << 31).unwrap();
        assert!(matches!(
            s.chunk_data_bytes(31),
            Err(Error::CapacityExceeded { .. })
        ));
    }

    #[test]
    fn append_reopen_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let dim = 5;
        let s = MmapStorage::create_with_chunk_rows(d.path(), dim, 4).unwrap();
        for i in 0..10 {
            assert_eq!(s.append(&row(i, dim)).unwrap(), i as SlotId);
        }
        assert_eq!(s.append_batch(&rows(10, 100, dim)).unwrap(), 10..100);
        s.flush().unwrap();
        // Chunks 0..=4 hold 4 + 8 + 16 + 32 + 64 = 124 rows.
        assert_eq!(s.memory_bytes(), 124 * dim * 4);
        drop(s);
        for b in 0..5 {
            let len = fs::metadata(d.path().join(chunk_name(b))).unwrap().len();
            assert_eq!(len, (MMAP_HEADER_BYTES + (4 << b) * dim * 4) as u64);
        }
        let s = MmapStorage::open(d.path(), dim, 100).unwrap();
        assert_eq!(s.chunk_rows(), 4);
        check_rows(&s, 100, dim);
        assert_eq!(s.append_batch(&rows(100, 300, dim)).unwrap(), 100..300);
        assert_eq!(s.append(&row(300, dim)).unwrap(), 300);
        s.flush().unwrap();
        check_rows(&s, 301, dim);
        drop(s);
        let s = MmapStorage::open(d.path(), dim, 301).unwrap();
        check_rows(&s, 301, dim);
        // Flushing with nothing new is a no-op.
        s.flush().unwrap();
        s.flush().unwrap();
    }

    #[test]
    fn open_with_fewer_rows_ignores_the_rest_and_appends_overwrite_them() {
        let d = tempfile::tempdir().unwrap();
        let dim = 3;
        let s = MmapStorage::create_with_chunk_rows(d.path(), dim, 2).unwrap();
        s.append_batch(&rows(0, 50, dim)).unwrap();
        s.flush().unwrap();
        drop(s);
        // Only 20 rows were recorded as valid.
        let s = MmapStorage::open(d.path(), dim, 20).unwrap();
        check_rows(&s, 20, dim);
        assert!(s.block(19).unwrap().len() == dim);
        let fresh: Vec<f32> = (0..30 * dim).map(|x| -(x as f32)).collect();
        assert_eq!(s.append_batch(&fresh).unwrap(), 20..50);
        for j in 0..30 {
            assert_eq!(
                s.get((20 + j) as SlotId).unwrap(),
                &fresh[j * dim..(j + 1) * dim]
            );
        }
        s.flush().unwrap();
        drop(s);
        let s = MmapStorage::open(d.path(), dim, 50).unwrap();
        for j in 0..30 {
            assert_eq!(
                s.get((20 + j) as SlotId).unwrap(),
                &fresh[j * dim..(j + 1) * dim]
            );
        }
        // rows == 0 opens whatever is there, keeping chunk 0's geometry.
        drop(s);
        let s = MmapStorage::open(d.path(), dim, 0).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.chunk_rows(), 2);
        s.append(&row(0, dim)).unwrap();
        check_rows(&s, 1, dim);
    }

    #[test]
    fn chunks_beyond_the_rows_are_recreated_even_if_damaged() {
        let d = tempfile::tempdir().unwrap();
        let dim = 2;
        let s = MmapStorage::create_with_chunk_rows(d.path(), dim, 1).unwrap();
        s.append_batch(&rows(0, 7, dim)).unwrap(); // chunks 0, 1, 2
        s.flush().unwrap();
        drop(s);
        // A torn chunk 2 (as if the crash hit its creation) and junk chunk 5.
        fs::write(d.path().join(chunk_name(2)), b"OMENCH").unwrap();
        fs::write(d.path().join(chunk_name(5)), vec![0xAB; 100]).unwrap();
        let s = MmapStorage::open(d.path(), dim, 3).unwrap();
        check_rows(&s, 3, dim);
        s.append_batch(&rows(3, 100, dim)).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = MmapStorage::open(d.path(), dim, 100).unwrap();
        check_rows(&s, 100, dim);
    }

    #[test]
    fn every_header_byte_flip_is_corruption_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let dim = 4;
        let s = MmapStorage::create_with_chunk_rows(d.path(), dim, 2).unwrap();
        s.append_batch(&rows(0, 5, dim)).unwrap(); // chunks 0 and 1
        s.flush().unwrap();
        drop(s);
        for b in 0..2 {
            let path = d.path().join(chunk_name(b));
            let good = fs::read(&path).unwrap();
            for i in 0..64 {
                for flip in [0x01u8, 0x80, 0xFF] {
                    let mut bad = good.clone();
                    bad[i] ^= flip;
                    fs::write(&path, &bad).unwrap();
                    let e = MmapStorage::open(d.path(), dim, 5).unwrap_err();
                    let (file, offset) = corruption_file(e);
                    assert_eq!(file, path, "byte {i}");
                    assert!(offset <= i as u64 || offset == OFF_CRC as u64, "byte {i}");
                }
            }
            fs::write(&path, &good).unwrap();
        }
        check_rows(&MmapStorage::open(d.path(), dim, 5).unwrap(), 5, dim);
    }

    #[test]
    fn forged_fields_with_a_valid_crc_are_caught_at_their_offset() {
        let d = tempfile::tempdir().unwrap();
        let dim = 4;
        let s = MmapStorage::create_with_chunk_rows(d.path(), dim, 2).unwrap();
        s.append_batch(&rows(0, 5, dim)).unwrap();
        drop(s);
        let path = d.path().join(chunk_name(1));
        let good = fs::read(&path).unwrap();
        let forge = |h: Header| {
            let mut f = good.clone();
            f[..MMAP_HEADER_BYTES].copy_from_slice(&h.encode());
            fs::write(&path, &f).unwrap();
            corruption_file(MmapStorage::open(d.path(), dim, 5).unwrap_err()).1
        };
        let h = |dim, index, base_rows, capacity| Header {
            dim,
            index,
            base_rows,
            capacity,
        };
        assert_eq!(forge(h(5, 1, 2, 4)), OFF_DIM as u64);
        assert_eq!(forge(h(4, 0, 2, 4)), OFF_INDEX as u64);
        assert_eq!(forge(h(4, 1, 4, 8)), OFF_BASE_ROWS as u64);
        assert_eq!(forge(h(4, 1, 2, 5)), OFF_CAPACITY as u64);
        assert_eq!(forge(h(4, 1, 2, 1 << 40)), OFF_CAPACITY as u64);
        fs::write(&path, &good).unwrap();
        // Chunk 0 with a base that is not a power of two.
        let p0 = d.path().join(chunk_name(0));
        let mut f = fs::read(&p0).unwrap();
        f[..MMAP_HEADER_BYTES].copy_from_slice(&h(4, 0, 3, 3).encode());
        fs::write(&p0, &f).unwrap();
        let (file, off) = corruption_file(MmapStorage::open(d.path(), dim, 1).unwrap_err());
        assert_eq!((file, off), (p0, OFF_BASE_ROWS as u64));
    }

    #[test]
    fn truncated_missing_and_mismatched_chunks_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let dim = 4;
        let s = MmapStorage::create_with_chunk_rows(d.path(), dim, 2).unwrap();
        s.append_batch(&rows(0, 5, dim)).unwrap(); // chunks 0 (2 rows) and 1 (4 rows)
        s.flush().unwrap();
        drop(s);
        let p1 = d.path().join(chunk_name(1));
        let full = fs::metadata(&p1).unwrap().len();
        // Truncated data.
        let f = OpenOptions::new().write(true).open(&p1).unwrap();
        f.set_len(full - 1).unwrap();
        let (file, off) = corruption_file(MmapStorage::open(d.path(), dim, 5).unwrap_err());
        assert_eq!((file, off), (p1.clone(), full - 1));
        // Truncated header.
        f.set_len(10).unwrap();
        let (file, off) = corruption_file(MmapStorage::open(d.path(), dim, 5).unwrap_err());
        assert_eq!((file, off), (p1.clone(), 10));
        // Rows that chunk 0 holds alone still open.
        check_rows(&MmapStorage::open(d.path(), dim, 2).unwrap(), 2, dim);
        // Missing chunk.
        fs::remove_file(&p1).unwrap();
        let (file, off) = corruption_file(MmapStorage::open(d.path(), dim, 3).unwrap_err());
        assert_eq!((file, off), (p1, 0));
        // Dimension mismatch.
        let (file, off) = corruption_file(MmapStorage::open(d.path(), 8, 1).unwrap_err());
        assert_eq!((file, off), (d.path().join(chunk_name(0)), OFF_DIM as u64));
        // No chunk at all but rows wanted.
        let empty = tempfile::tempdir().unwrap();
        let (file, off) = corruption_file(MmapStorage::open(empty.path(), dim, 1).unwrap_err());
        assert_eq!((file, off), (empty.path().join(chunk_name(0)), 0));
        // An empty directory opens empty, with the default geometry.
        let s = MmapStorage::open(empty.path(), dim, 0).unwrap();
        assert_eq!(s.chunk_rows(), DEFAULT_MMAP_CHUNK_ROWS);
    }

    #[test]
    fn create_refuses_an_existing_storage_and_creates_missing_dirs() {
        let d = tempfile::tempdir().unwrap();
        let nested = d.path().join("a/b/vectors");
        let s = MmapStorage::create_with_chunk_rows(&nested, 2, 1).unwrap();
        // No chunk file yet: creating again is allowed.
        drop(MmapStorage::create(&nested, 2).unwrap());
        s.append(&[1.0, 2.0]).unwrap();
        drop(s);
        assert!(matches!(
            MmapStorage::create(&nested, 2),
            Err(Error::InvalidParameter { name: "dir", .. })
        ));
        // The existing rows are untouched.
        let s = MmapStorage::open(&nested, 2, 1).unwrap();
        assert_eq!(s.get(0).unwrap(), &[1.0, 2.0]);
    }

    #[test]
    fn concurrent_reader_sees_whole_rows_while_appending() {
        let d = tempfile::tempdir().unwrap();
        let dim = 8;
        let s = Arc::new(MmapStorage::create_with_chunk_rows(d.path(), dim, 2).unwrap());
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..5000usize {
                    if i % 7 == 0 {
                        let b: Vec<f32> = (0..3).flat_map(|_| vec![(i + 1) as f32; dim]).collect();
                        s.append_batch(&b).unwrap();
                    } else {
                        s.append(&vec![(i + 1) as f32; dim]).unwrap();
                    }
                    if i % 1000 == 0 {
                        s.flush().unwrap();
                    }
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() || seen < s.len() {
            let n = s.len();
            let sd: &dyn VectorStorage = &*s;
            let mut covered = 0;
            for (start, block) in sd.blocks() {
                assert_eq!(start as usize, covered);
                for r in block.chunks_exact(dim) {
                    assert!(r[0] != 0.0 && r.iter().all(|&x| x == r[0]), "torn {r:?}");
                }
                covered += block.len() / dim;
            }
            assert!(covered >= n);
            seen = n;
        }
        writer.join().unwrap();
        s.flush().unwrap();
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("the mmap storage stores rows little-endian and writes native f32 bytes");
