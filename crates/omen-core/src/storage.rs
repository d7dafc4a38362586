use crate::error::Result;
use crate::SlotId;
use std::ops::Range;

/// Where vector bytes live: an append-only array of fixed-width f32 rows.
///
/// # Contract
/// * Slots are numbered densely from 0 in append order and never reused or moved.
/// * [`append`](Self::append) and [`append_batch`](Self::append_batch) take `&self`:
///   implementations serialise writers internally. A row is *published* when `len`
///   covers it; a reader that observes `len() > s` (or gets `Some` from `get(s)`)
///   sees every byte of row `s` as written — never a half-written vector.
/// * Growth never moves stored vectors: a `&[f32]` returned by [`get`](Self::get) or
///   [`block`](Self::block) stays valid and unchanged for the borrow of `&self`,
///   even while another thread appends.
/// * A batch is all or nothing: on error nothing is published. Its rows become
///   visible together and occupy consecutive slots.
/// * The storage checks dimensions only; finiteness and normalisation are the
///   caller's concern (the collection validates before it appends).
pub trait VectorStorage: Send + Sync {
    /// A short name for reports (`memory`, `mmap`).
    fn name(&self) -> &'static str;

    /// The width of every row.
    fn dim(&self) -> usize;

    /// Number of published rows.
    fn len(&self) -> usize;

    /// Whether no row is published.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one row; returns its slot. Errors: `DimensionMismatch`,
    /// `CapacityExceeded`, `Io`.
    fn append(&self, vector: &[f32]) -> Result<SlotId>;

    /// Appends `rows.len() / dim` rows at consecutive slots, published together.
    /// Errors as [`append`](Self::append); `DimensionMismatch` if `rows.len()` is not
    /// a multiple of `dim`.
    fn append_batch(&self, rows: &[f32]) -> Result<Range<SlotId>>;

    /// The row at `slot`, without copying; `None` if not published.
    fn get(&self, slot: SlotId) -> Option<&[f32]>;

    /// The longest contiguous run of published rows starting at `start` (at least one
    /// row when `start < len()`), as one slice of `n * dim` floats; `None` when
    /// `start >= len()`. Scanning indexes walk the storage with it.
    fn block(&self, start: SlotId) -> Option<&[f32]>;

    /// Bytes of memory (or mapped file) held for vectors.
    fn memory_bytes(&self) -> usize;

    /// Makes every published row durable, for file-backed storages (the mmap
    /// storage syncs its mapped files); a no-op for memory.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

impl dyn VectorStorage + '_ {
    /// Iterates the published rows as `(first slot, rows)` blocks, up to the length
    /// seen when the iterator was created.
    pub fn blocks(&self) -> StorageBlocks<'_> {
        StorageBlocks {
            storage: self,
            next: 0,
            end: self.len(),
        }
    }
}

/// Iterator over a storage's contiguous blocks; see [`VectorStorage::block`].
pub struct StorageBlocks<'a> {
    storage: &'a dyn VectorStorage,
    next: usize,
    end: usize,
}

impl<'a> Iterator for StorageBlocks<'a> {
    type Item = (SlotId, &'a [f32]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let dim = self.storage.dim().max(1);
        let start = self.next as SlotId;
        let block = self.storage.block(start)?;
        let rows = (block.len() / dim).min(self.end - self.next);
        if rows == 0 {
            return None;
        }
        self.next += rows;
        Some((start, &block[..rows * dim]))
    }
}
