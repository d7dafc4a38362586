use crate::neighbor::{Neighbor, TopK};
use crate::SlotId;
use std::any::Any;

/// Generation-stamped visited set: clearing is O(1) (bump the generation) except
/// once every 2³² - 1 queries, when the marks are zeroed.
#[derive(Clone, Debug, Default)]
pub struct VisitedSet {
    marks: Vec<u32>,
    generation: u32,
}

impl VisitedSet {
    /// Prepares for a new query over slots `0..n`, growing if needed.
    pub fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// Marks `slot`; returns `true` if it was not yet marked in this generation.
    /// Slots beyond the size given to `reset` grow the set.
    #[inline]
    pub fn insert(&mut self, slot: SlotId) -> bool {
        let i = slot as usize;
        if i >= self.marks.len() {
            self.marks.resize(i + 1, 0);
        }
        let m = &mut self.marks[i];
        if *m == self.generation {
            false
        } else {
            *m = self.generation;
            true
        }
    }

    /// Whether `slot` is marked in this generation.
    #[inline]
    pub fn contains(&self, slot: SlotId) -> bool {
        self.marks
            .get(slot as usize)
            .is_some_and(|&m| m == self.generation)
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.marks.capacity() * 4
    }
}

/// Reusable per-thread working memory for searches, so that the query path does
/// not allocate once it has warmed up. Every index may use any field; an index
/// with needs of its own keeps them in `extra`.
#[derive(Default)]
pub struct SearchScratch {
    /// The result heap.
    pub top: TopK,
    /// Visited marks for graph traversals.
    pub visited: VisitedSet,
    /// Candidate lists.
    pub candidates: Vec<Neighbor>,
    /// Distances of a block of rows.
    pub distances: Vec<f32>,
    /// Floats: a normalised query copy, lookup tables, packed rows.
    pub floats: Vec<f32>,
    /// Bytes: quantised lookup tables.
    pub bytes: Vec<u8>,
    /// Index-specific state.
    pub extra: Option<Box<dyn Any + Send>>,
}

impl SearchScratch {
    /// Empty scratch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index-specific state of type `T`, created with `init` on first use (or
    /// when another index left a different type there).
    pub fn extra_or_insert_with<T: Any + Send>(&mut self, init: impl FnOnce() -> T) -> &mut T {
        let fresh = !matches!(&self.extra, Some(b) if b.is::<T>());
        if fresh {
            self.extra = Some(Box::new(init()));
        }
        match self.extra.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(t) => t,
            // Unreachable: the slot was just filled with a `T`.
            None => unreachable!("scratch extra holds a value of the requested type"),
        }
    }
}

impl std::fmt::Debug for SearchScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchScratch").finish_non_exhaustive()
    }
}
