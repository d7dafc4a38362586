//! The chunked in-memory arena: [`ChunkedRows`] over heap buckets.
//!
//! The geometry, the publication protocol and the argument that readers may hold
//! `&[f32]` rows while a writer appends live in [`crate::chunked`]; this file is
//! the heap [`Backing`]: how a bucket is allocated (huge-page advice, prefault),
//! written (a copy through its pointer) and freed.

use crate::buckets::{self, BUCKETS};
use crate::chunked::{Backing, ChunkedRows};
use omen_core::{Error, Result, SlotId, VectorStorage};
use std::alloc::{self, Layout};
use std::ops::Range;
use std::ptr::{self, NonNull};

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

/// Layout of a bucket of `rows` rows of `dim` floats, or `CapacityExceeded` if
/// its size overflows.
fn bucket_layout(b: usize, rows: usize, dim: usize) -> Result<Layout> {
    rows.checked_mul(dim)
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
                "memory storage bucket {b} of {rows} rows × {dim} floats overflows the address space"
            ),
        })
}

/// The heap backing: one allocation per bucket.
#[derive(Debug)]
pub(crate) struct Heap {
    /// The first bucket of at least [`HUGE_BUCKET`] bytes: it and every later one
    /// are allocated unzeroed and prefaulted ahead of each write.
    huge_from: usize,
}

impl Heap {
    fn new(dim: usize, base_shift: u32) -> Heap {
        let huge_from = (0..BUCKETS)
            .find(|&b| {
                buckets::rows(base_shift, b)
                    .saturating_mul(dim)
                    .saturating_mul(4)
                    >= HUGE_BUCKET
            })
            .unwrap_or(BUCKETS);
        Heap { huge_from }
    }
}

// SAFETY: a bucket is one allocation of `rows * dim` floats (`bucket_layout`,
// aligned for f32), freed only in `release`; the allocation never moves, and no
// one but `write` (a copy through the pointer, in the writing thread) changes it.
// A later reader sees the copied floats by the happens-before the core's release
// store of `len` establishes.
unsafe impl Backing for Heap {
    const WHAT: &'static str = "memory storage";

    fn create(&self, b: usize, rows: usize, dim: usize) -> Result<NonNull<f32>> {
        let layout = bucket_layout(b, rows, dim)?;
        NonNull::new(alloc_bucket(layout)).ok_or_else(|| Error::CapacityExceeded {
            what: format!(
                "memory storage could not allocate {} bytes for bucket {b}",
                layout.size()
            ),
        })
    }

    #[inline]
    unsafe fn write(&self, b: usize, base: NonNull<f32>, at: usize, src: &[f32]) -> Result<()> {
        // SAFETY: by the caller's contract `at..at + src.len()` lies inside the
        // bucket at `base`, so the offset pointer is in bounds.
        let dst = unsafe { base.as_ptr().add(at) };
        if b >= self.huge_from {
            prefault(dst, std::mem::size_of_val(src));
        }
        // SAFETY: `dst..dst + src.len()` is inside the bucket and, by the caller's
        // contract, read and written by no one else; `src` is caller memory, so
        // the ranges do not overlap.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    unsafe fn release(&mut self, b: usize, base: NonNull<f32>, rows: usize, dim: usize) {
        // The layout was computed successfully when the bucket was allocated and
        // depends only on `b`, `rows` and `dim`, which are the same here.
        if let Ok(layout) = bucket_layout(b, rows, dim) {
            // SAFETY: `base` came from `alloc_bucket(layout)` with this same layout
            // (the caller's contract) and is freed once.
            unsafe { alloc::dealloc(base.as_ptr().cast::<u8>(), layout) };
        }
    }
}

/// A chunked, append-only in-memory arena of `dim`-wide f32 rows.
///
/// Appends take `&self` and are serialised by an internal mutex; reads
/// ([`get`](VectorStorage::get), [`block`](VectorStorage::block), `len`) take no
/// lock and may run while another thread appends. Stored rows never move. See
/// [`crate::chunked`] for the publication protocol.
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
    rows: ChunkedRows<Heap>,
}

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
            rows: ChunkedRows::new(Heap::new(dim, base_shift), dim, base_shift),
        })
    }

    /// Rows in bucket 0 (a power of two).
    pub fn chunk_rows(&self) -> usize {
        self.rows.chunk_rows()
    }

    /// The storage kind's name, in manifests, flags and reports.
    pub const NAME: &'static str = "memory";
}

impl VectorStorage for MemoryStorage {
    fn name(&self) -> &'static str {
        Self::NAME
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

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("dim", &self.dim())
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
            s.rows.backing().huge_from <= 3 && s.rows.bucket_rows(3) * dim * 4 >= HUGE_BUCKET,
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
            bucket_layout(0, 1, usize::MAX / 2),
            Err(Error::CapacityExceeded { .. })
        ));
        assert!(matches!(
            s.append(&[]),
            Err(Error::DimensionMismatch { .. })
        ));
        assert_eq!(Heap::new(usize::MAX / 2, 0).huge_from, 0);
        assert_eq!(Heap::new(1, 0).huge_from, 20);
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
    use omen_core::sync::atomic::Ordering;

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
