//! The chunked-rows core under both storages: the bucket geometry, the writer
//! mutex, the published length and the one argument that handing out `&[f32]`
//! rows while another thread appends is sound. What backs a bucket (heap memory,
//! a mapped chunk file) is a [`Backing`], plugged in as a type parameter so that
//! the read path (`get`, `block`) has no dynamic call and no lock.
//!
//! # Layout
//! Rows live in at most [`BUCKETS`] buckets. Bucket `b` holds `base << b` rows and
//! starts at row `base * (2^b - 1)`, so the buckets double in size (the scheme of
//! the `boxcar` crate) and 32 of them address more than [`MAX_SLOTS`] rows for any
//! `base >= 1` (see [`buckets`]). A bucket, once made by its backing, is never
//! moved or released before the storage is dropped: that is what lets a reader
//! keep a `&[f32]` into it while a writer appends.
//!
//! # Publication protocol
//! * Writers take `writer` (a mutex), so at most one thread ever writes rows.
//! * A writer only writes rows at or beyond `len`, making buckets first; once
//!   every byte of the new rows is written, it stores the new `len` with
//!   `Release`.
//! * A reader loads `len` with `Acquire` and touches rows below it only. The
//!   acquire synchronises with the release that published those rows, so it sees
//!   the bucket pointer and every byte of the row as written; no thread writes
//!   those bytes again, so shared slices into them are sound for as long as
//!   `&self` lives.
//!
//! Under `cfg(loom)` every row also has a shadow `loom::cell::UnsafeCell` that
//! writers touch mutably and readers immutably, so loom reports a causality
//! violation if the ordering above were ever weakened.

use crate::buckets::{self, BUCKETS};
use omen_core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use omen_core::sync::{self, Mutex};
use omen_core::{Error, Result, SlotId, MAX_SLOTS};
use std::ops::Range;
use std::ptr::{self, NonNull};

/// What holds the rows of each bucket.
///
/// # Safety
/// The core hands out shared slices into buckets on the strength of this
/// contract, so an implementation must keep it:
/// * [`create`](Self::create)`(b, rows, dim)` returns a pointer, aligned for
///   `f32`, to room for `rows * dim` floats that stays valid at the same address
///   until [`release`](Self::release) of that bucket or the drop of the backing,
///   whichever comes first; nothing but [`write`](Self::write) changes a float of
///   it (no other handle of this process, no other process: a mapped file's owner
///   guarantees that by locking its directory).
/// * [`write`](Self::write) stores `src` at floats `at..at + src.len()` of the
///   bucket so that, once it returns, a read through the bucket's pointer in this
///   thread, or in a thread that synchronises with this one afterwards, sees them.
pub(crate) unsafe trait Backing: Send + Sync {
    /// The storage's name in error messages ("memory storage").
    const WHAT: &'static str;

    /// Makes bucket `b`, with room for `rows` rows of `dim` floats. Called with
    /// the writer lock held, once per bucket. Errors: `CapacityExceeded` if it
    /// does not fit the address space or memory, `Io` for a file.
    fn create(&self, b: usize, rows: usize, dim: usize) -> Result<NonNull<f32>>;

    /// Writes `src` at floats `at..` of bucket `b`, whose base is `base`.
    ///
    /// # Safety
    /// `base` is what `create` (or the caller of
    /// [`ChunkedRows::adopt`]) returned for bucket `b`; the floats
    /// `at..at + src.len()` lie inside the bucket, belong to no published row,
    /// and the caller holds the writer lock: nothing else reads or writes them.
    unsafe fn write(&self, b: usize, base: NonNull<f32>, at: usize, src: &[f32]) -> Result<()>;

    /// Releases bucket `b` of `rows` rows of `dim` floats at `base`. Called once
    /// per bucket, from the core's drop.
    ///
    /// # Safety
    /// `base` is what `create` returned for bucket `b` (or was adopted), with the
    /// same `rows` and `dim`; no reference into the bucket outlives this call.
    unsafe fn release(&mut self, b: usize, base: NonNull<f32>, rows: usize, dim: usize);
}

/// Rows tracked by the loom shadow cells; loom models stay far below this.
#[cfg(loom)]
const LOOM_SHADOW_ROWS: usize = 64;

/// Loom-only shadow of the rows: one tracked cell per row.
#[cfg(loom)]
struct Shadow(Box<[loom::cell::UnsafeCell<()>]>);

// SAFETY: the cells hold `()`; they exist only so that loom checks, on every
// access, that reads of a row happen after its write. Sharing them is the point.
#[cfg(loom)]
unsafe impl Sync for Shadow {}

/// An append-only run of `dim`-wide f32 rows in doubling buckets held by a
/// [`Backing`]. Appends take `&self` and are serialised by a mutex; reads take no
/// lock. See the module documentation for the protocol.
pub(crate) struct ChunkedRows<B: Backing> {
    dim: usize,
    /// log2 of the rows in bucket 0.
    base_shift: u32,
    /// Published rows.
    len: AtomicUsize,
    /// Bucket `b` points at room for `(1 << base_shift << b) * dim` floats (rows
    /// below `len` written, the rest not read), or is null while not yet made.
    buckets: [AtomicPtr<f32>; BUCKETS],
    /// Bytes of row space in the buckets made so far.
    bytes: AtomicUsize,
    /// Serialises writers.
    writer: Mutex<()>,
    backing: B,
    #[cfg(loom)]
    shadow: Shadow,
}

impl<B: Backing> ChunkedRows<B> {
    /// An empty run whose bucket 0 holds `1 << base_shift` rows. The caller checks
    /// `dim >= 1` and `base_shift <= 31`.
    pub(crate) fn new(backing: B, dim: usize, base_shift: u32) -> ChunkedRows<B> {
        debug_assert!(dim >= 1 && base_shift <= 31);
        ChunkedRows {
            dim,
            base_shift,
            len: AtomicUsize::new(0),
            buckets: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            bytes: AtomicUsize::new(0),
            writer: Mutex::new(()),
            backing,
            #[cfg(loom)]
            shadow: Shadow(
                (0..LOOM_SHADOW_ROWS)
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            ),
        }
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn backing(&self) -> &B {
        &self.backing
    }

    #[inline]
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Rows in bucket 0 (a power of two).
    pub(crate) fn chunk_rows(&self) -> usize {
        1 << self.base_shift
    }

    /// Rows held by bucket `b`.
    #[inline]
    pub(crate) fn bucket_rows(&self, b: usize) -> usize {
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
    pub(crate) fn locate(&self, row: usize) -> (usize, usize) {
        buckets::locate(self.base_shift, row)
    }

    /// Published rows.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Bytes of row space in the buckets made so far.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Installs bucket `b` at `base` (made by the backing outside `create`, e.g. a
    /// chunk file opened from disk). Before the run is shared (`&mut self`).
    ///
    /// # Safety
    /// `base` keeps the [`Backing`] contract of a pointer `create(b, ..)` would
    /// return, and its rows that [`publish_opened`](Self::publish_opened) will
    /// publish are initialised.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) unsafe fn adopt(&mut self, b: usize, base: NonNull<f32>) {
        let old = self.buckets[b].swap(base.as_ptr(), Ordering::Release);
        debug_assert!(old.is_null(), "bucket {b} adopted twice");
        self.bytes
            .fetch_add(self.bucket_rows(b) * self.dim * 4, Ordering::Relaxed);
    }

    /// Publishes the first `rows` rows of adopted buckets, before the run is
    /// shared. `InvalidParameter` if a bucket they need was not adopted (the
    /// caller's bug, reported rather than trusted).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn publish_opened(&mut self, rows: usize) -> Result<()> {
        if rows > 0 {
            let last = self.locate(rows - 1).0;
            if let Some(b) = (0..=last).find(|&b| self.buckets[b].load(Ordering::Relaxed).is_null())
            {
                return Err(Error::invalid_param(
                    "rows",
                    format!("{rows} rows need bucket {b}, which is not there"),
                ));
            }
        }
        self.len.store(rows, Ordering::Release);
        Ok(())
    }

    /// Appends one row; `DimensionMismatch` unless it has `dim` floats.
    pub(crate) fn append(&self, vector: &[f32]) -> Result<SlotId> {
        buckets::check_row(self.dim, vector)?;
        let _guard = sync::lock(&self.writer);
        // Relaxed: only writers store `len`, and the lock orders us after the last one.
        let at = self.len.load(Ordering::Relaxed);
        self.write_and_publish(at, vector).map(|r| r.start)
    }

    /// Appends a whole number of rows.
    pub(crate) fn append_batch(&self, rows: &[f32]) -> Result<Range<SlotId>> {
        buckets::check_rows(self.dim, rows)?;
        let _guard = sync::lock(&self.writer);
        let at = self.len.load(Ordering::Relaxed);
        self.write_and_publish(at, rows)
    }

    /// Makes sure the buckets holding rows `from..to` exist. Called with the writer
    /// lock held. On error, buckets made so far stay (unpublished capacity).
    fn reserve(&self, from: usize, to: usize) -> Result<()> {
        let first = self.locate(from).0;
        let last = self.locate(to - 1).0;
        for b in first..=last {
            if !self.buckets[b].load(Ordering::Relaxed).is_null() {
                continue;
            }
            let rows = self.bucket_rows(b);
            let p = self.backing.create(b, rows, self.dim)?;
            // Release: readers also reach this pointer through `len`'s release, but a
            // reader that loads it directly must see a fully made bucket.
            self.buckets[b].store(p.as_ptr(), Ordering::Release);
            self.bytes.fetch_add(rows * self.dim * 4, Ordering::Relaxed);
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
                        "{} holds {at} rows; {n} more exceed the limit of {MAX_SLOTS}",
                        B::WHAT
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
            let Some(base) = NonNull::new(self.buckets[b].load(Ordering::Relaxed)) else {
                // Unreachable: `reserve` made bucket `b`.
                return Err(Error::CapacityExceeded {
                    what: format!("{} bucket {b} missing after reserve", B::WHAT),
                });
            };
            // SAFETY: `base` is bucket `b`'s pointer from the backing. Rows
            // `off..off + take` lie inside it (`take <= bucket_rows(b) - off`), so
            // floats `off * dim..(off + take) * dim` do. They are at or beyond `len`,
            // so no reader holds a reference to them, and the writer lock (held by
            // our caller) excludes every other writer.
            unsafe { self.backing.write(b, base, off * self.dim, head)? };
            #[cfg(loom)]
            self.shadow_write(row..row + take);
            row += take;
            src = rest;
        }
        // Release: publishes every byte written above to readers that acquire `len`.
        self.len.store(end, Ordering::Release);
        Ok(at as SlotId..end as SlotId)
    }

    /// A published run of `rows` rows from offset `off` of bucket `b`. Requires
    /// the rows to lie in bucket `b` and below a `len` observed with `Acquire`.
    #[inline]
    fn published(&self, b: usize, off: usize, rows: usize) -> Option<&[f32]> {
        let base = self.buckets[b].load(Ordering::Acquire);
        if base.is_null() {
            // Unreachable: a published row's bucket was stored before `len` was.
            return None;
        }
        // SAFETY: the one argument for every storage. The caller observed (with
        // Acquire) a `len` covering these rows, which synchronises with the
        // writer's Release store made after the bucket was made and the rows
        // written through the backing (or, after an open, with the store that
        // published the adopted rows). By the `Backing` contract the bucket holds
        // `bucket_rows(b) * dim` floats at `base`, aligned, and the written ones
        // are visible to us; `off + rows <= bucket_rows(b)`, so the slice is in
        // bounds and initialised (every bit pattern is an f32). Published rows are
        // never written again (writers only write at or beyond `len`), nothing
        // but `Backing::write` changes a bucket, and buckets are released only in
        // drop (which needs `&mut self`), so the shared slice stays valid and
        // unchanged for the borrow of `self`.
        Some(unsafe { std::slice::from_raw_parts(base.add(off * self.dim), rows * self.dim) })
    }

    /// Row `slot`, if published.
    #[inline]
    pub(crate) fn get(&self, slot: SlotId) -> Option<&[f32]> {
        let row = slot as usize;
        if row >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (b, off) = self.locate(row);
        #[cfg(loom)]
        self.shadow_read(row..row + 1);
        self.published(b, off, 1)
    }

    /// The published rows from `start` to the end of its bucket (or of the
    /// published rows).
    #[inline]
    pub(crate) fn block(&self, start: SlotId) -> Option<&[f32]> {
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
}

impl<B: Backing> Drop for ChunkedRows<B> {
    fn drop(&mut self) {
        for b in 0..BUCKETS {
            let Some(p) = NonNull::new(self.buckets[b].load(Ordering::Relaxed)) else {
                continue;
            };
            let rows = self.bucket_rows(b);
            // SAFETY: `p` is bucket `b`'s pointer, made by the backing (or adopted)
            // for `rows` rows of `dim` floats, and released once: `&mut self` means
            // no reader holds a row, and the run is going away.
            unsafe { self.backing.release(b, p, rows, self.dim) };
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A backing that records its calls, over heap vectors.
    #[derive(Default)]
    struct Recording {
        made: std::sync::Mutex<Vec<(usize, Box<[f32]>)>>,
        fail_bucket: Option<usize>,
    }

    // SAFETY: each bucket is a boxed slice of `rows * dim` floats that is kept,
    // never moved (boxes do not move their heap data) and never touched but by
    // `write`, until the backing is dropped.
    unsafe impl Backing for Recording {
        const WHAT: &'static str = "test storage";

        fn create(&self, b: usize, rows: usize, dim: usize) -> Result<NonNull<f32>> {
            if self.fail_bucket == Some(b) {
                return Err(Error::CapacityExceeded {
                    what: format!("bucket {b}"),
                });
            }
            let mut v = vec![0.0f32; rows * dim].into_boxed_slice();
            let p = NonNull::new(v.as_mut_ptr()).ok_or_else(|| Error::CapacityExceeded {
                what: "null".into(),
            })?;
            self.made
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((b, v));
            Ok(p)
        }

        unsafe fn write(&self, _: usize, base: NonNull<f32>, at: usize, src: &[f32]) -> Result<()> {
            // SAFETY: the caller's contract: `at..at + src.len()` is inside the
            // bucket and nothing else touches it.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), base.as_ptr().add(at), src.len()) };
            Ok(())
        }

        unsafe fn release(&mut self, _: usize, _: NonNull<f32>, _: usize, _: usize) {}
    }

    #[test]
    fn locate_matches_a_linear_walk() {
        for shift in [0u32, 1, 2, 10] {
            let s = ChunkedRows::new(Recording::default(), 1, shift);
            let (mut b, mut off) = (0usize, 0usize);
            for r in 0..20_000usize {
                assert_eq!(s.locate(r), (b, off), "shift {shift} row {r}");
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
    fn a_failed_bucket_publishes_nothing() {
        let s = ChunkedRows::new(
            Recording {
                fail_bucket: Some(2),
                ..Recording::default()
            },
            2,
            0,
        );
        assert_eq!(s.append_batch(&[1.0; 6]).unwrap(), 0..3);
        // Rows 3..7 are bucket 2: refused, nothing published.
        assert!(matches!(
            s.append_batch(&[2.0; 4]),
            Err(Error::CapacityExceeded { .. })
        ));
        assert_eq!(s.len(), 3);
        assert!(s.get(3).is_none());
        assert_eq!(s.bytes(), 3 * 2 * 4);
        assert_eq!(s.block(1).unwrap(), &[1.0; 4]);
        assert_eq!(s.backing().made.lock().unwrap().len(), 2);
    }

    #[test]
    fn publish_opened_refuses_missing_buckets() {
        let mut s = ChunkedRows::new(Recording::default(), 1, 0);
        let p = s.backing.create(0, 1, 1).unwrap();
        // SAFETY: `p` comes from the backing's `create` for bucket 0 (1 row).
        unsafe { s.adopt(0, p) };
        assert!(s.publish_opened(2).is_err(), "row 1 is bucket 1");
        s.publish_opened(1).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(0).unwrap(), &[0.0]);
        assert_eq!(s.append(&[5.0]).unwrap(), 1);
        assert_eq!(s.get(1).unwrap(), &[5.0]);
    }

    #[test]
    fn wrong_widths_and_the_slot_limit_are_refused() {
        let s = ChunkedRows::new(Recording::default(), 2, 0);
        assert!(matches!(
            s.append(&[1.0]),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            s.append_batch(&[1.0; 3]),
            Err(Error::DimensionMismatch { .. })
        ));
        let e = s.write_and_publish(MAX_SLOTS, &[1.0, 1.0]).unwrap_err();
        assert!(e.to_string().contains("test storage"), "{e}");
        assert_eq!(s.len(), 0);
    }
}
