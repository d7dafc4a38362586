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
//! then mapped shared and read-write. Every step goes through the storage's
//! [`FileSystem`] ([`MmapStorage::create_in`], [`MmapStorage::open_in`]), so on
//! the simulated disk of the crash tests chunk files are crashed, torn and failed
//! like every other file. A mapping, once made, is never moved or unmapped
//! before the storage is dropped: that is what lets a reader keep a `&[f32]` into
//! it while a writer appends.
//!
//! # Publication protocol
//! The geometry, the writer lock, the published length and the argument that
//! shared row slices are sound are [`ChunkedRows`]'s, the same core as
//! `MemoryStorage`'s; this file is the chunk-file [`Backing`] (create, map,
//! `pwrite`) and the on-disk format.
//!
//! # The file contract
//! A mapping is shared with the file: the slices handed out are only sound while
//! nothing else writes or truncates the chunk files. The collection directory is
//! protected by a lock file held by the storage's owner (the durable collection),
//! and nothing in Omen touches the chunk files of an open storage; another process
//! that modifies them anyway breaks this contract (a truncation turns reads into
//! `SIGBUS`). Chunk files are sparse; rows are written with `pwrite`
//! ([`MappedFile::write_at`], not through the mapping), so a full file system is
//! an `Io` error (ENOSPC) on append, never a fault.
//!
//! # Length and durability
//! The storage does not persist its own length. Its owner records how many rows
//! are valid (in its checkpoint manifest) and reopens with
//! [`MmapStorage::open_in`]`(fs, dir, dim, rows)`; rows past `rows` in the files are
//! unpublished and later appends overwrite them. [`MmapStorage::flush`] makes every
//! row published so far durable (`msync`).

use crate::buckets::BUCKETS;
use crate::chunked::{Backing, ChunkedRows};
use omen_core::codec::{check_crc32, ByteReader, ByteWriter};
use omen_core::sync::{self, Mutex};
use omen_core::{Error, Result, SlotId, VectorStorage, MAX_SLOTS};
use omen_fs::{parent_dir, FileSystem, MappedFile, RealFs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

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

/// Whether `name` is the name of a chunk file (of any chunk).
fn is_chunk_name(name: &str) -> bool {
    name.starts_with("chunk-") && name.ends_with(".omv")
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
fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))
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
    rows: ChunkedRows<ChunkFiles>,
    /// Rows known durable: every row below it has been flushed (or was read from
    /// the files at open). Its mutex serialises [`flush`](Self::flush).
    flushed: Mutex<usize>,
}

/// The chunk-file backing: bucket `b` is chunk file `b`, mapped through the
/// [`FileSystem`].
pub(crate) struct ChunkFiles {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    dim: usize,
    /// log2 of the rows in chunk 0.
    base_shift: u32,
    /// The mappings, kept alive (and never replaced) until drop. Appends go
    /// through their `write_at` (`pwrite` into the page cache that the mappings
    /// share: faulting in fresh file pages through the mapping, one
    /// `page_mkwrite` per 4 KiB, was 2–3x slower).
    maps: [OnceLock<Box<dyn MappedFile>>; BUCKETS],
}

impl ChunkFiles {
    fn path(&self, b: usize) -> PathBuf {
        self.dir.join(chunk_name(b))
    }

    /// Bytes of row data in chunk `b`, or `CapacityExceeded` on overflow.
    fn data_bytes(&self, b: usize) -> Result<usize> {
        let rows = crate::buckets::rows(self.base_shift, b);
        data_bytes(rows, self.dim).ok_or_else(|| Error::CapacityExceeded {
            what: format!(
                "mmap storage chunk {b} of {rows} rows × {} floats overflows the address space",
                self.dim
            ),
        })
    }

    /// Maps the (checked, or freshly written) chunk file `b` and returns its rows'
    /// base. Called with the writer lock held or before the storage is shared.
    fn map_chunk(&self, b: usize) -> Result<NonNull<f32>> {
        let path = self.path(b);
        let data = self.data_bytes(b)?;
        // SAFETY: `map_file` requires that nothing but the map's own `write_at`
        // changes or truncates the file while it is mapped. The chunk files belong
        // to this storage alone: the owner holds the directory's lock file, nothing
        // in Omen touches the files of an open storage (a stale chunk is recreated
        // only before it is mapped), and within this process every write goes
        // through `Backing::write`, i.e. this map's `write_at`.
        let map = unsafe { self.fs.map_file(&path, MMAP_HEADER_BYTES + data) }
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is `MMAP_HEADER_BYTES + data` bytes long, so the offset
        // stays in bounds. The base is page-aligned, and `MMAP_HEADER_BYTES` is a
        // multiple of 4, so the row pointer is aligned for f32. Rows are only read
        // through it; every write goes through `write_at`.
        let rows = unsafe { map.as_ptr().add(MMAP_HEADER_BYTES) }
            .cast::<f32>()
            .cast_mut();
        let Some(rows) = NonNull::new(rows) else {
            return Err(Error::corruption(path, 0, "mapped at a null address"));
        };
        if self.maps[b].set(map).is_err() {
            // Unreachable: a chunk is mapped once, under the writer lock or at open.
            return Err(Error::corruption(path, 0, "chunk mapped twice"));
        }
        // Moving the boxed map into the cell does not move the mapping, so `rows`
        // stays valid for as long as the cell lives (until drop).
        Ok(rows)
    }
}

// SAFETY: a bucket is the row area of one `MappedFile` of
// `MMAP_HEADER_BYTES + rows * dim * 4` bytes (page-aligned base, so the row
// pointer is aligned for f32), kept in `maps` and never replaced or unmapped
// until the backing is dropped. Nothing but `write` changes it: `map_file`'s
// contract, which the files' owner keeps by holding the directory's lock (the
// file contract in the module docs). `write` is the map's `write_at`, after
// which (the `MappedFile` contract) reads through the mapping see the bytes; a
// thread ordered after it by the core's release store of `len` sees them too.
unsafe impl Backing for ChunkFiles {
    const WHAT: &'static str = "mmap storage";

    /// Creates chunk file `b` (truncating any stale file of that name), writes its
    /// header, extends it to full size, makes it durable and maps it.
    fn create(&self, b: usize, rows: usize, dim: usize) -> Result<NonNull<f32>> {
        let path = self.path(b);
        let data = self.data_bytes(b)?;
        let header = Header {
            dim: dim as u32,
            index: b as u32,
            base_rows: 1u64 << self.base_shift,
            capacity: rows as u64,
        };
        let io = |e| Error::io(&path, e);
        let fs = &*self.fs;
        let mut file = fs.create(&path).map_err(io)?;
        file.write_all(&header.encode()).map_err(io)?;
        fs.set_len(&path, (MMAP_HEADER_BYTES + data) as u64)
            .map_err(io)?;
        file.sync_data().map_err(io)?;
        drop(file);
        sync_dir(fs, &self.dir)?;
        self.map_chunk(b)
    }

    unsafe fn write(&self, b: usize, _base: NonNull<f32>, at: usize, src: &[f32]) -> Result<()> {
        let Some(map) = self.maps[b].get() else {
            // Unreachable: the core writes only to buckets `create` or `open` made.
            return Err(Error::corruption(self.path(b), 0, "chunk file not mapped"));
        };
        // SAFETY: `src` is an initialised `&[f32]`; viewing its bytes as `u8`
        // (alignment 1, same length in bytes, every bit pattern valid) is sound.
        // The rows are stored little-endian, which is the native order on every
        // target this crate builds for (see the compile-time check below).
        let bytes = unsafe {
            std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src))
        };
        // `pwrite` (the caller's contract: nothing reads these bytes yet).
        map.write_at(MMAP_HEADER_BYTES + at * 4, bytes)
            .map_err(|e| Error::io(self.path(b), e))
    }

    unsafe fn release(&mut self, _: usize, _: NonNull<f32>, _: usize, _: usize) {
        // The mappings are unmapped when `maps` drops, after the core's drop.
    }
}

impl MmapStorage {
    /// A new, empty storage of `dim`-wide rows in `dir` (created if missing), with
    /// [`DEFAULT_MMAP_CHUNK_ROWS`] rows in the first chunk file. See
    /// [`create_with_chunk_rows`](Self::create_with_chunk_rows).
    pub fn create(dir: &Path, dim: usize) -> Result<MmapStorage> {
        Self::create_with_chunk_rows(dir, dim, DEFAULT_MMAP_CHUNK_ROWS)
    }

    /// [`create_in`](Self::create_in) on the real file system.
    pub fn create_with_chunk_rows(
        dir: &Path,
        dim: usize,
        chunk_rows: usize,
    ) -> Result<MmapStorage> {
        Self::create_in(Arc::new(RealFs), dir, dim, chunk_rows)
    }

    /// A new, empty storage in `dir` of `fs` whose first chunk file holds
    /// `chunk_rows` rows (rounded up to a power of two; each following chunk
    /// doubles). No chunk file is written until the first append; every chunk
    /// file is created, grown, synced and mapped through `fs`.
    ///
    /// Errors: `dim == 0`, `chunk_rows == 0` or `chunk_rows > 2^31` is
    /// `InvalidParameter`, and so is a `dir` that already holds chunk files (a
    /// storage is never clobbered); `Io` if `dir` cannot be created or listed.
    pub fn create_in(
        fs: Arc<dyn FileSystem>,
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
        let existed = fs.exists(dir);
        fs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if !existed {
            // Make the new directory's own entry durable.
            sync_dir(&*fs, &parent_dir(dir))?;
        }
        for name in fs.list(dir).map_err(|e| Error::io(dir, e))? {
            if is_chunk_name(&name) {
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
            fs,
            dir,
            dim,
            chunk_rows.next_power_of_two().trailing_zeros(),
        ))
    }

    /// [`open_in`](Self::open_in) on the real file system.
    pub fn open(dir: &Path, dim: usize, rows: usize) -> Result<MmapStorage> {
        Self::open_in(Arc::new(RealFs), dir, dim, rows)
    }

    /// Opens the storage in `dir` of `fs` and publishes exactly its first `rows`
    /// rows.
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
    pub fn open_in(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        dim: usize,
        rows: usize,
    ) -> Result<MmapStorage> {
        Self::check_dim(dim)?;
        if rows > MAX_SLOTS {
            return Err(Error::invalid_param(
                "rows",
                format!("{rows} exceeds the limit of {MAX_SLOTS}"),
            ));
        }
        let base_shift = if rows == 0 {
            // Nothing to validate; keep the geometry of a readable chunk 0 if any.
            match read_header(&*fs, dir, 0, dim, None) {
                Ok(h) => h.base_rows.trailing_zeros(),
                Err(_) => DEFAULT_MMAP_CHUNK_ROWS.trailing_zeros(),
            }
        } else {
            read_header(&*fs, dir, 0, dim, None)?
                .base_rows
                .trailing_zeros()
        };
        let mut s = Self::empty(fs, dir, dim, base_shift);
        if rows > 0 {
            let last = s.rows.locate(rows - 1).0;
            for b in 0..=last {
                let base_rows = 1u64 << base_shift;
                read_header(&*s.rows.backing().fs, dir, b, dim, Some(base_rows))?;
                let base = s.rows.backing().map_chunk(b)?;
                // SAFETY: `map_chunk` returned the row area of chunk `b`'s mapping,
                // checked to hold its full capacity, kept in the backing until drop
                // (the `Backing` contract); file-backed pages are initialised.
                unsafe { s.rows.adopt(b, base) };
            }
        }
        s.rows.publish_opened(rows)?;
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
        let end = self.rows.len();
        let files = self.rows.backing();
        let mut row = *flushed;
        while row < end {
            let (b, off) = self.rows.locate(row);
            let take = (end - row).min(self.rows.bucket_rows(b) - off);
            let path = files.path(b);
            let Some(map) = files.maps[b].get() else {
                // Unreachable: a published row's chunk was mapped before `len` was
                // stored.
                return Err(Error::corruption(path, 0, "published chunk is not mapped"));
            };
            let row_bytes = self.rows.dim() * 4;
            map.sync_range(MMAP_HEADER_BYTES + off * row_bytes, take * row_bytes)
                .map_err(|e| Error::io(&path, e))?;
            row += take;
            *flushed = row;
        }
        Ok(())
    }

    /// Removes every chunk file in `dir` of `fs` and syncs the directory: for an
    /// owner that abandons a storage it never recorded (a `create` that did not
    /// finish), so that [`create_in`](Self::create_in) accepts the directory
    /// again. A missing `dir` is not an error. Must not run while a storage of
    /// `dir` is open.
    pub fn remove_in(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        if !fs.exists(dir) {
            return Ok(());
        }
        let mut removed = false;
        for name in fs.list(dir).map_err(|e| Error::io(dir, e))? {
            if is_chunk_name(&name) {
                let path = dir.join(&name);
                fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(fs, dir)?;
        }
        Ok(())
    }

    /// The directory holding the chunk files.
    pub fn dir(&self) -> &Path {
        &self.rows.backing().dir
    }

    /// Rows in chunk file 0 (a power of two).
    pub fn chunk_rows(&self) -> usize {
        self.rows.chunk_rows()
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

    fn empty(fs: Arc<dyn FileSystem>, dir: &Path, dim: usize, base_shift: u32) -> MmapStorage {
        let files = ChunkFiles {
            fs,
            dir: dir.to_path_buf(),
            dim,
            base_shift,
            maps: std::array::from_fn(|_| OnceLock::new()),
        };
        MmapStorage {
            rows: ChunkedRows::new(files, dim, base_shift),
            flushed: Mutex::new(0),
        }
    }

    /// The storage kind's name, in manifests, flags and reports.
    pub const NAME: &'static str = crate::MMAP_STORAGE_NAME;
}

impl VectorStorage for MmapStorage {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn flush(&self) -> Result<()> {
        MmapStorage::flush(self)
    }

    fn dim(&self) -> usize {
        self.rows.dim()
    }

    #[inline]
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn append(&self, vector: &[f32]) -> Result<SlotId> {
        self.rows.append(vector)
    }

    fn append_batch(&self, rows: &[f32]) -> Result<Range<SlotId>> {
        self.rows.append_batch(rows)
    }

    #[inline]
    fn get(&self, slot: SlotId) -> Option<&[f32]> {
        self.rows.get(slot)
    }

    #[inline]
    fn block(&self, start: SlotId) -> Option<&[f32]> {
        self.rows.block(start)
    }

    fn memory_bytes(&self) -> usize {
        self.rows.bytes()
    }
}

impl std::fmt::Debug for MmapStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapStorage")
            .field("dir", &self.dir())
            .field("dim", &self.dim())
            .field("len", &self.len())
            .field("chunk_rows", &self.chunk_rows())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

/// Opens chunk file `b` read-write and checks its header and length. With
/// `base_rows = None` (chunk 0, geometry unknown) any valid base is accepted.
fn read_header(
    fs: &dyn FileSystem,
    dir: &Path,
    b: usize,
    dim: usize,
    base_rows: Option<u64>,
) -> Result<Header> {
    let path = dir.join(chunk_name(b));
    let bad = |off: usize, detail: String| Error::corruption(&path, off as u64, detail);
    let (page, file_len) = match fs.read_head(&path, MMAP_HEADER_BYTES) {
        Ok(head) => head,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(
                0,
                "missing chunk file needed for the published rows".into(),
            ))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
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
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
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
            s.rows.backing().data_bytes(31),
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

    use omen_fs::{CrashMode, SimFs};

    /// The flushed rows survive a crash at every file-system operation of a
    /// workload that creates, grows and flushes chunk files on the simulated
    /// disk, under every crash mode; the image then takes more rows.
    #[test]
    fn flushed_rows_survive_a_crash_at_every_operation() {
        let dim = 3;
        let dir = Path::new("/db/vectors");
        // (rows to append, flush after) steps; chunks of 1, 2, 4, 8 rows.
        let steps: &[(usize, bool)] = &[(1, true), (5, false), (0, true), (3, true), (4, false)];
        let run = |fs: &SimFs| -> (usize, Result<()>) {
            let mut durable = 0;
            let r = (|| {
                let s = MmapStorage::create_in(Arc::new(fs.clone()), dir, dim, 1)?;
                for &(n, flush) in steps {
                    let at = s.len();
                    s.append_batch(&rows(at, at + n, dim))?;
                    if flush {
                        s.flush()?;
                        durable = s.len();
                    }
                }
                Ok(())
            })();
            (durable, r)
        };
        let full = SimFs::new();
        assert!(run(&full).1.is_ok());
        let k = full.op_count();
        let mut crashed_in_growth = 0;
        for n in 0..=k {
            let fs = SimFs::new();
            fs.crash_at(n);
            let (durable, r) = run(&fs);
            assert_eq!(r.is_ok(), n == k, "crash at {n}");
            if fs.file_names().len() > 1 && durable < 13 {
                crashed_in_growth += 1;
            }
            for mode in CrashMode::all(n) {
                let ctx = format!("crash at op {n}, {mode:?}");
                let img = fs.crash_image(mode);
                let s = MmapStorage::open_in(Arc::new(img.clone()), dir, dim, durable)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                check_rows(&s, durable, dim);
                if durable == 0 && !img.exists(&dir.join(chunk_name(0))) {
                    continue;
                }
                // Later appends overwrite whatever the crash left past `durable`,
                // recreating stale or torn chunks.
                s.append_batch(&rows(durable, 20, dim)).unwrap();
                s.flush().unwrap();
                drop(s);
                let s = MmapStorage::open_in(Arc::new(img.clone()), dir, dim, 20).unwrap();
                check_rows(&s, 20, dim);
                let again = img.crash_image(CrashMode::DropUnsynced);
                check_rows(
                    &MmapStorage::open_in(Arc::new(again), dir, dim, 20).unwrap(),
                    20,
                    dim,
                );
            }
        }
        assert!(crashed_in_growth > 0);
    }

    #[test]
    fn unflushed_rows_are_not_durable_on_the_simulated_disk() {
        let fs = SimFs::new();
        let dir = Path::new("/v");
        let s = MmapStorage::create_in(Arc::new(fs.clone()), dir, 2, 4).unwrap();
        s.append_batch(&rows(0, 3, 2)).unwrap();
        s.flush().unwrap();
        s.append(&row(3, 2)).unwrap();
        // The chunk file exists durably; row 3 is written but not synced.
        let img = fs.crash_image(CrashMode::DropUnsynced);
        let t = MmapStorage::open_in(Arc::new(img), dir, 2, 4).unwrap();
        for i in 0..3 {
            assert_eq!(t.get(i as SlotId).unwrap(), &row(i, 2)[..]);
        }
        assert_eq!(t.get(3).unwrap(), &[0.0, 0.0]);
        // Through the page cache (no power cut) it is there.
        drop(s);
        check_rows(
            &MmapStorage::open_in(Arc::new(fs.clone()), dir, 2, 4).unwrap(),
            4,
            2,
        );
        // Chunk files are refused by create, and removed by remove_in.
        assert!(matches!(
            MmapStorage::create_in(Arc::new(fs.clone()), dir, 2, 4),
            Err(Error::InvalidParameter { name: "dir", .. })
        ));
        MmapStorage::remove_in(&fs, dir).unwrap();
        MmapStorage::remove_in(&fs, Path::new("/missing")).unwrap();
        assert_eq!(fs.list(dir).unwrap(), Vec::<String>::new());
        assert!(fs
            .crash_image(CrashMode::DropUnsynced)
            .list(dir)
            .unwrap()
            .is_empty());
        MmapStorage::create_in(Arc::new(fs), dir, 2, 4).unwrap();
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
