//! The chunked in-memory arena.
//!
//! # Layout
//! Rows live in at most [`BUCKETS`] separately allocated buckets. Bucket `b` holds
//! `base << b` rows and starts at row `base * (2^b - 1)`, so the buckets double in
//! size (the scheme of the `boxcar` crate) and 32 of them address more than
//! [`MAX_SLOTS`] rows for any `base >= 1`. A bucket, once allocated, is never moved
//! or freed before the storage is dropped: that is what lets a reader keep a
//! `&[f32]` into it while a writer appends.
//!
//! # Publication protocol
//! * Writers take `writer` (a mutex), so at most one thread ever writes rows.
//! * A writer only writes rows at or beyond `len`, allocating buckets
//!   first; once every byte of the new rows is written, it stores the new `len`
//!   with `Release`.
//! * A reader loads `len` with `Acquire` and touches rows below it only. The
//!   acquire synchronises with the release that published those rows, so it sees
//!   the bucket pointer and every byte of the row as written; no thread writes those
//!   bytes again, so shared slices into them are sound for as long as `&self` lives.
//!
//! Under `cfg(loom)` every row also has a shadow `loom::cell::UnsafeCell` that
//! writers touch mutably and readers immutably, so loom reports a causality
//! violation if the ordering above were ever weakened.

use crate::buckets::{self, BUCKETS};
use omen_core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use omen_core::sync::{self, Mutex};
use omen_core::{Error, Result, SlotId, VectorStorage, MAX_SLOTS};
use std::alloc::{self, Layout};
use std::ops::Range;
use std::ptr;

/// Buckets this large (bytes) are left unzeroed by the allocator (they come
/// fresh from the kernel) and prefaulted in bulk as rows reach them.
const HUGE_BUCKET: usize = 4 << 20;

/// Allocates a bucket. Small buckets are zeroed by the allocator. Large ones are
/// not (the allocator maps them fresh from the kernel, untouched) and their pages
/// are faulted in by [`prefault`] ahead of each write. No row is ever read before
/// it is written: readers only see published rows.
fn alloc_bucket(layout: Layout) -> *mut f32 {
    if layout.size() < HUGE_BUCKET || cfg!(loom) {
        // SAFETY: `layout` has non-zero size: `dim >= 1` and every bucket holds at
        // least one row.
        return unsafe { alloc::alloc_zeroed(layout) }.cast::<f32>();
    }
    // SAFETY: as above, non-zero size.
    let p = unsafe { alloc::alloc(layout) };
    advise_huge_pages(p, layout.size());
    p.cast::<f32>()
}

/// Alignment of large buckets: one transparent huge page, so that the whole
/// bucket can be backed by them.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back a large bucket with transparent huge pages (where THP
/// is in `madvise` mode, the default of most distributions, nothing else would).
/// Searches read rows at random: with 4 KiB pages nearly every row read misses
/// the TLB once a collection outgrows a few MiB. Best effort, like [`prefault`].
fn advise_huge_pages(p: *mut u8, len: usize) {
    #[cfg(all(target_os = "linux", not(loom)))]
    if !p.is_null() {
        // SAFETY: `[p, p + len)` is one live allocation just returned by the
        // allocator; MADV_HUGEPAGE changes how its pages are backed, not a byte
        // of its contents.
        unsafe {
            libc::madvise(p.cast::<libc::c_void>(), len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(all(target_os = "linux", not(loom))))]
    let _ = (p, len);
}

/// Faults in the pages of `len` bytes at `p` (inside a large bucket) with one
/// `MADV_POPULATE_WRITE` instead of one page fault per 4 KiB, which was most of
/// the time of a storage-only append. Best effort: older kernels refuse it, and
/// the write then faults the pages in as usual.
#[inline]
fn prefault(p: *mut f32, len: usize) {
    #[cfg(all(target_os = "linux", not(loom)))]
    {
        const PAGE: usize = 4096;
        let start = (p as usize) & !(PAGE - 1);
        let end = (p as usize + len).div_ceil(PAGE) * PAGE;
        // SAFETY: `[p, p + len)` lies inside one live bucket allocation; the
        // page-rounded range may reach into the allocator's neighbouring memory,
        // but MADV_POPULATE_WRITE only faults pages in (as a write would) and
        // changes no byte, so it cannot disturb anything there.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
    #[cfg(not(all(target_os = "linux", not(loom))))]
    let _ = (p, len);
}

/// Default number of rows in the first bucket.
pub const DEFAULT_CHUNK_ROWS: usize = 1024;

/// Rows tracked by the loom shadow cells; loom models stay far below this.
#[cfg(loom)]
const LOOM_SHADOW_ROWS: usize = 64;

/// A chunked, append-only in-memory arena of `dim`-wide f32 rows.
///
/// Appends take `&self` and are serialised by an internal mutex; reads
/// ([`get`](VectorStorage::get), [`block`](VectorStorage::block), `len`) take no
/// lock and may run while another thread appends. Stored rows never move. See the
/// module documentation for the publication protocol.
///
/// ```
/// use omen_core::VectorStorage;
/// use omen_storage::MemoryStorage;
///
/// let s = MemoryStorage::new(2)?;
/// let slot = s.append(&[1.0, 2.0])?;
/// assert_eq!(s.get(slot), Some(&[1.0f32, 2.0][..]));
/// # Ok::<(), omen_core::Error>(())
/// ```
pub struct MemoryStorage {
    dim: usize,
    /// log2 of the rows in bucket 0.
    base_shift: u32,
    /// Published rows.
    len: AtomicUsize,
    /// Bucket `b` points at room for `(1 << base_shift << b) * dim` floats (rows
    /// below `len` written, the rest not read),
    /// or is null while not yet allocated.
    buckets: [AtomicPtr<f32>; BUCKETS],
    /// Bytes of the allocated buckets.
    allocated: AtomicUsize,
    /// Serialises writers.
    writer: Mutex<()>,
    #[cfg(loom)]
    shadow: Shadow,
}

/// Loom-only shadow of the rows: one tracked cell per row.
#[cfg(loom)]
struct Shadow(Box<[loom::cell::UnsafeCell<()>]>);

// SAFETY: the cells hold `()`; they exist only so that loom checks, on every
// access, that reads of a row happen after its write. Sharing them is the point.
#[cfg(loom)]
unsafe impl Sync for Shadow {}

impl MemoryStorage {
    /// An empty storage of `dim`-wide rows, with [`DEFAULT_CHUNK_ROWS`] rows in the
    /// first bucket. `dim == 0` is `InvalidParameter`.
    pub fn new(dim: usize) -> Result<MemoryStorage> {
        Self::with_chunk_rows(dim, DEFAULT_CHUNK_ROWS)
    }

    /// An empty storage whose first bucket holds `chunk_rows` rows (rounded up to a
    /// power of two; each following bucket doubles). Small values exercise bucket
    /// boundaries in tests; nothing is allocated until the first append.
    /// `dim == 0`, `chunk_rows == 0` or `chunk_rows > 2^31` is `InvalidParameter`.
    pub fn with_chunk_rows(dim: usize, chunk_rows: usize) -> Result<MemoryStorage> {
        if dim == 0 {
            return Err(Error::invalid_param("dim", "must be at least 1"));
        }
        if chunk_rows == 0 || chunk_rows > 1 << 31 {
            return Err(Error::invalid_param(
                "chunk_rows",
                format!("must be in 1..=2^31, got {chunk_rows}"),
            ));
        }
        let base_shift = chunk_rows.next_power_of_two().trailing_zeros();
        Ok(MemoryStorage {
            dim,
            base_shift,
            len: AtomicUsize::new(0),
            buckets: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            allocated: AtomicUsize::new(0),
            writer: Mutex::new(()),
            #[cfg(loom)]
            shadow: Shadow(
                (0..LOOM_SHADOW_ROWS)
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            ),
        })
    }

    /// Rows in bucket 0 (a power of two).
    pub fn chunk_rows(&self) -> usize {
        1 << self.base_shift
    }

    /// Rows held by bucket `b`.
    #[inline]
    fn bucket_rows(&self, b: usize) -> usize {
        buckets::rows(self.base_shift, b)
    }

    /// First row of bucket `b`.
    #[inline]
    fn bucket_start(&self, b: usize) -> usize {
        buckets::start(self.base_shift, b)
    }

    /// The bucket holding `row` and the row's offset in it. Requires
    /// `row < MAX_SLOTS`, which bounds the bucket below [`BUCKETS`].
    #[inline]
    fn locate(&self, row: usize) -> (usize, usize) {
        buckets::locate(self.base_shift, row)
    }

    /// Layout of bucket `b`, or `CapacityExceeded` if its size overflows.
    fn bucket_layout(&self, b: usize) -> Result<Layout> {
        self.bucket_rows(b)
            .checked_mul(self.dim)
            .and_then(|n| Layout::array::<f32>(n).ok())
            .and_then(|l| {
                if l.size() < HUGE_BUCKET {
                    Some(l)
                } else {
                    l.align_to(HUGE_PAGE).ok()
                }
            })
            .ok_or_else(|| Error::CapacityExceeded {
                what: format!(
                    "memory storage bucket {b} of {} rows × {} floats overflows the address space",
                    self.bucket_rows(b),
                    self.dim
                ),
            })
    }

    /// Makes sure the buckets holding rows `from..to` exist. Called with the writer
    /// lock held. On error, buckets allocated so far stay (unpublished capacity).
    fn reserve(&self, from: usize, to: usize) -> Result<()> {
        let first = self.locate(from).0;
        let last = self.locate(to - 1).0;
        for b in first..=last {
            if !self.buckets[b].load(Ordering::Relaxed).is_null() {
                continue;
            }
            let layout = self.bucket_layout(b)?;
            let p = alloc_bucket(layout);
            if p.is_null() {
                return Err(Error::CapacityExceeded {
                    what: format!(
                        "memory storage could not allocate {} bytes for bucket {b}",
                        layout.size()
                    ),
                });
            }
            // Release: readers also reach this pointer through `len`'s release, but a
            // reader that loads it directly must see a fully initialised allocation.
            self.buckets[b].store(p, Ordering::Release);
            self.allocated.fetch_add(layout.size(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Loom: records a write of rows `rows` in the shadow cells.
    #[cfg(loom)]
    fn shadow_write(&self, rows: Range<usize>) {
        for r in rows.take_while(|&r| r < LOOM_SHADOW_ROWS) {
            self.shadow.0[r].with_mut(|_| ());
        }
    }

    /// Loom: records a read of rows `rows` in the shadow cells.
    #[cfg(loom)]
    fn shadow_read(&self, rows: Range<usize>) {
        for r in rows.take_while(|&r| r < LOOM_SHADOW_ROWS) {
            self.shadow.0[r].with(|_| ());
        }
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
                        "memory storage holds {at} rows; {n} more exceed the limit of {MAX_SLOTS}"
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
            debug_assert!(!base.is_null(), "reserve allocated bucket {b}");
            if self.bucket_rows(b) * self.dim * 4 >= HUGE_BUCKET {
                // SAFETY: `off * dim` is inside bucket `b` (see below).
                prefault(unsafe { base.add(off * self.dim) }, head.len() * 4);
            }
            // SAFETY: `reserve` allocated bucket `b` (non-null, `bucket_rows(b) * dim`
            // floats) and buckets are never freed while `self` lives. Rows
            // `off..off + take` lie inside it (`take <= bucket_rows(b) - off`). They
            // are at or beyond `len`, so no reader holds a reference to them, and the
            // writer lock excludes every other writer: this is the only access.
            // `head` is caller memory, so the ranges do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(head.as_ptr(), base.add(off * self.dim), head.len());
            }
            #[cfg(loom)]
            self.shadow_write(row..row + take);
            row += take;
            src = rest;
        }
        // Release: publishes every byte written above to readers that acquire `len`.
        self.len.store(end, Ordering::Release);
        Ok(at as SlotId..end as SlotId)
    }

    /// A published run of rows `start..end` within one bucket. Requires
    /// `start < end <= len` (as observed with `Acquire`) and all rows in one bucket.
    #[inline]
    fn published(&self, b: usize, off: usize, rows: usize) -> Option<&[f32]> {
        let base = self.buckets[b].load(Ordering::Acquire);
        if base.is_null() {
            // Unreachable: a published row's bucket was stored before `len` was.
            return None;
        }
        // SAFETY: the caller observed (with Acquire) a `len` covering these rows,
        // which synchronises with the writer's Release store made after the bucket
        // was allocated and the rows written. The bucket holds `bucket_rows(b) * dim`
        // floats and `off + rows <= bucket_rows(b)`, so the slice is in bounds and
        // initialised. Published rows are never written again and buckets are freed
        // only in `Drop` (which needs `&mut self`), so the shared slice stays valid
        // and unchanged for the borrow of `self`.
        Some(unsafe { std::slice::from_raw_parts(base.add(off * self.dim), rows * self.dim) })
    }
}

impl MemoryStorage {
    /// The storage kind's name, in manifests, flags and reports.
    pub const NAME: &'static str = "memory";
}

impl VectorStorage for MemoryStorage {
    fn name(&self) -> &'static str {
        Self::NAME
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
        #[cfg(loom)]
        self.shadow_read(row..row + 1);
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
        #[cfg(loom)]
        self.shadow_read(row..end);
        self.published(b, off, end - row)
    }

    fn memory_bytes(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryStorage {
    fn drop(&mut self) {
        for b in 0..BUCKETS {
            let p = self.buckets[b].load(Ordering::Relaxed);
            if p.is_null() {
                continue;
            }
            // The layout was computed successfully when the bucket was allocated and
            // depends only on `b`, `dim` and `base_shift`, which never change.
            if let Ok(layout) = self.bucket_layout(b) {
                // SAFETY: `p` came from `alloc_bucket(layout)` with this same layout
                // and is freed once: `&mut self` means no reader holds a row, and the
                // storage is going away.
                unsafe { alloc::dealloc(p.cast::<u8>(), layout) };
            }
        }
    }
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("chunk_rows", &self.chunk_rows())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Rows in the large buckets (allocated unzeroed, prefaulted in bulk) read
    /// back exactly, in batches that straddle bucket boundaries.
    #[test]
    fn large_unzeroed_buckets_hold_every_row() {
        let dim = 128;
        let s = MemoryStorage::new(dim).unwrap();
        let row = |i: usize| -> Vec<f32> { (0..dim).map(|j| (i * 7 + j) as f32).collect() };
        let mut i = 0;
        while i < 40_000 {
            let n = 997.min(40_000 - i);
            let rows: Vec<f32> = (i..i + n).flat_map(row).collect();
            s.append_batch(&rows).unwrap();
            i += n;
        }
        assert!(
            s.bucket_rows(3) * dim * 4 >= HUGE_BUCKET,
            "the test must reach a large bucket"
        );
        for i in (0..40_000).step_by(13) {
            assert_eq!(s.get(i as SlotId).unwrap(), &row(i)[..]);
        }
    }

    fn row(i: usize, dim: usize) -> Vec<f32> {
        (0..dim).map(|c| (i * 31 + c) as f32).collect()
    }

    #[test]
    fn locate_matches_a_linear_walk() {
        for chunk in [1usize, 2, 4, 1024] {
            let s = MemoryStorage::with_chunk_rows(1, chunk).unwrap();
            let (mut b, mut off) = (0usize, 0usize);
            for r in 0..20_000usize {
                assert_eq!(s.locate(r), (b, off), "chunk {chunk} row {r}");
                off += 1;
                if off == s.bucket_rows(b) {
                    b += 1;
                    off = 0;
                }
            }
            // The last addressable slot stays inside the directory.
            assert!(s.locate(MAX_SLOTS - 1).0 < BUCKETS);
        }
    }

    #[test]
    fn refuses_zero_dim_and_bad_chunks() {
        assert!(matches!(
            MemoryStorage::new(0),
            Err(Error::InvalidParameter { name: "dim", .. })
        ));
        assert!(matches!(
            MemoryStorage::with_chunk_rows(4, 0),
            Err(Error::InvalidParameter { .. })
        ));
        assert_eq!(
            MemoryStorage::with_chunk_rows(4, 3).unwrap().chunk_rows(),
            4
        );
    }

    #[test]
    fn round_trip_across_many_buckets() {
        let dim = 3;
        let s = MemoryStorage::with_chunk_rows(dim, 1).unwrap();
        for i in 0..1000 {
            assert_eq!(s.append(&row(i, dim)).unwrap(), i as SlotId);
        }
        let batch: Vec<f32> = (1000..1300).flat_map(|i| row(i, dim)).collect();
        assert_eq!(s.append_batch(&batch).unwrap(), 1000..1300);
        assert_eq!(s.len(), 1300);
        for i in 0..1300 {
            assert_eq!(s.get(i as SlotId).unwrap(), &row(i, dim)[..]);
        }
        assert!(s.get(1300).is_none());
        // Blocks end at bucket boundaries: 1, 2, 4, ... rows.
        let sd: &dyn VectorStorage = &s;
        let sizes: Vec<usize> = sd.blocks().map(|(_, b)| b.len() / dim).collect();
        assert_eq!(&sizes[..4], &[1, 2, 4, 8]);
        assert_eq!(sizes.iter().sum::<usize>(), 1300);
        // Buckets 0..=10 hold 2047 rows, 1300 rows need buckets 0..=10.
        assert_eq!(s.memory_bytes(), 2047 * dim * 4);
    }

    #[test]
    fn wrong_dimension_changes_nothing() {
        let s = MemoryStorage::new(4).unwrap();
        assert!(matches!(
            s.append(&[1.0; 3]),
            Err(Error::DimensionMismatch {
                expected: 4,
                got: 3
            })
        ));
        assert!(matches!(
            s.append_batch(&[1.0; 9]),
            Err(Error::DimensionMismatch { .. })
        ));
        assert_eq!(s.len(), 0);
        assert_eq!(s.memory_bytes(), 0);
        assert_eq!(s.append_batch(&[]).unwrap(), 0..0);
    }

    #[test]
    fn oversized_bucket_is_a_capacity_error() {
        // A dimension so wide that one bucket overflows the address space.
        let s = MemoryStorage::with_chunk_rows(usize::MAX / 2, 1).unwrap();
        assert!(matches!(
            s.bucket_layout(0),
            Err(Error::CapacityExceeded { .. })
        ));
    }

    #[test]
    fn reader_thread_sees_whole_rows_while_appending() {
        let dim = 8;
        let s = std::sync::Arc::new(MemoryStorage::with_chunk_rows(dim, 2).unwrap());
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                // Miri runs this too, slowly: fewer rows there.
                let total = if cfg!(miri) { 120 } else { 5000 };
                for i in 0..total {
                    if i % 7 == 0 {
                        let b: Vec<f32> = (0..3).flat_map(|_| vec![(i + 1) as f32; dim]).collect();
                        s.append_batch(&b).unwrap();
                    } else {
                        s.append(&vec![(i + 1) as f32; dim]).unwrap();
                    }
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() || seen < s.len() {
            let n = s.len();
            let sd: &dyn VectorStorage = &*s;
            let mut covered = 0;
            for (start, rows) in sd.blocks() {
                assert_eq!(start as usize, covered);
                for r in rows.chunks_exact(dim) {
                    assert!(
                        r[0] != 0.0 && r.iter().all(|&x| x == r[0]),
                        "torn row {r:?}"
                    );
                }
                covered += rows.len() / dim;
            }
            // `blocks()` takes its own, possibly newer, length.
            assert!(covered >= n);
            seen = n;
        }
        writer.join().unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    fn check_published(s: &MemoryStorage) {
        let n = s.len();
        for r in 0..n {
            let got = s.get(r as SlotId).unwrap();
            assert_eq!(got, &[(r + 1) as f32; 2][..], "row {r}");
        }
        let sd: &dyn VectorStorage = s;
        let mut covered = 0;
        for (start, rows) in sd.blocks() {
            assert_eq!(start as usize, covered);
            for (i, r) in rows.chunks_exact(2).enumerate() {
                assert_eq!(r, &[(covered + i + 1) as f32; 2][..]);
            }
            covered += rows.len() / 2;
        }
        assert!(covered >= n);
    }

    /// One writer appends a batch that crosses the bucket 0 → 1 boundary and then a
    /// row that opens bucket 2 (bucket base of one row); a reader concurrently reads
    /// `len` and every published row. Loom's shadow cells catch any reader access
    /// not ordered after the write it reads.
    ///
    /// `started` is there for loom's sake: loom treats a mutex lock and a thread
    /// join as SeqCst, so without an earlier race between the two threads it orders
    /// the reader's loads before the writer's lock and never interleaves them.
    #[test]
    fn publication_is_seen_whole() {
        loom::model(|| {
            let s = Arc::new(MemoryStorage::with_chunk_rows(2, 1).unwrap());
            let started = Arc::new(AtomicBool::new(false));
            let (w, go) = (s.clone(), started.clone());
            let t = thread::spawn(move || {
                go.store(true, Ordering::Relaxed);
                assert_eq!(w.append_batch(&[1.0, 1.0, 2.0, 2.0]).unwrap(), 0..2);
                assert_eq!(w.append(&[3.0, 3.0]).unwrap(), 2);
                assert_eq!(w.append(&[4.0, 4.0]).unwrap(), 3);
            });
            let _ = started.load(Ordering::Relaxed);
            check_published(&s);
            check_published(&s);
            t.join().unwrap();
            assert_eq!(s.len(), 4);
            check_published(&s);
        });
    }

    /// Two writers race: their slots are distinct and every row is whole.
    #[test]
    fn writers_are_serialised() {
        loom::model(|| {
            let s = Arc::new(MemoryStorage::with_chunk_rows(1, 1).unwrap());
            let w = s.clone();
            let t = thread::spawn(move || w.append_batch(&[7.0, 7.0]).unwrap());
            let mine = s.append(&[9.0]).unwrap();
            let theirs = t.join().unwrap();
            assert!(!theirs.contains(&mine));
            assert_eq!(s.len(), 3);
            assert_eq!(s.get(mine).unwrap(), &[9.0]);
            for slot in theirs {
                assert_eq!(s.get(slot).unwrap(), &[7.0]);
            }
        });
    }
}
