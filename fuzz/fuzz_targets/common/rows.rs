//! Read-only rows for the index-loading fuzz targets (`#[path]`-included).

use omen_core::{Error, SlotId, VectorStorage};
use std::ops::Range;

/// Read-only rows, enough for a loaded graph to be walked.
pub struct Rows {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl VectorStorage for Rows {
    fn name(&self) -> &'static str {
        "fuzz"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn len(&self) -> usize {
        self.data.len() / self.dim
    }
    fn append(&self, _: &[f32]) -> omen_core::Result<SlotId> {
        Err(Error::invalid_param("append", "read-only"))
    }
    fn append_batch(&self, _: &[f32]) -> omen_core::Result<Range<SlotId>> {
        Err(Error::invalid_param("append", "read-only"))
    }
    fn get(&self, slot: SlotId) -> Option<&[f32]> {
        let s = slot as usize * self.dim;
        self.data.get(s..s + self.dim)
    }
    fn block(&self, start: SlotId) -> Option<&[f32]> {
        self.data
            .get(start as usize * self.dim..)
            .filter(|b| !b.is_empty())
    }
    fn memory_bytes(&self) -> usize {
        self.data.len() * 4
    }
}

