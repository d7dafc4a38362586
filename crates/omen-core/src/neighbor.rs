use crate::SlotId;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One search result: a slot and its distance to the query (smaller is closer).
///
/// Ordered by distance (IEEE total order), ties broken by slot number, so that
/// every index that finds the same set of neighbours returns them in the same order.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Neighbor {
    /// The slot of the stored vector.
    pub slot: SlotId,
    /// Its distance to the query under the index's metric.
    pub distance: f32,
}

impl Neighbor {
    /// A neighbour.
    #[inline]
    pub fn new(slot: SlotId, distance: f32) -> Self {
        Neighbor { slot, distance }
    }
}

impl Eq for Neighbor {}

impl PartialOrd for Neighbor {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Neighbor {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.slot.cmp(&other.slot))
    }
}

/// A bounded max-heap that keeps the `k` smallest [`Neighbor`]s pushed into it.
///
/// Reusable: [`TopK::reset`] clears it for a new query without freeing memory.
#[derive(Clone, Debug, Default)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Neighbor>,
}

impl TopK {
    /// An empty heap keeping at most `k` neighbours.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        }
    }

    /// Empties the heap and sets a new bound, keeping its allocation.
    pub fn reset(&mut self, k: usize) {
        self.k = k;
        self.heap.clear();
    }

    /// The bound.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of neighbours held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no neighbour is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether `k` neighbours are held.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.k
    }

    /// The distance a candidate must beat (be at most) to enter: the worst held
    /// distance when full, +∞ otherwise.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.is_full() {
            self.heap.peek().map_or(f32::INFINITY, |n| n.distance)
        } else {
            f32::INFINITY
        }
    }

    /// The worst neighbour held, if any.
    pub fn worst(&self) -> Option<Neighbor> {
        self.heap.peek().copied()
    }

    /// Offers a candidate; returns whether it was kept.
    #[inline]
    pub fn push(&mut self, n: Neighbor) -> bool {
        if self.k == 0 {
            return false;
        }
        if self.heap.len() < self.k {
            self.heap.push(n);
            return true;
        }
        match self.heap.peek_mut() {
            Some(mut top) if n < *top => {
                *top = n;
                true
            }
            _ => false,
        }
    }

    /// Moves the held neighbours into `out` (cleared first), closest first, and
    /// empties the heap.
    pub fn drain_sorted_into(&mut self, out: &mut Vec<Neighbor>) {
        out.clear();
        out.extend(self.heap.drain());
        out.sort_unstable();
    }

    /// The held neighbours, closest first.
    pub fn into_sorted_vec(self) -> Vec<Neighbor> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn topk_keeps_the_k_smallest(ds in proptest::collection::vec(-1e3f32..1e3, 0..200), k in 1usize..20) {
            let mut t = TopK::new(k);
            for (i, d) in ds.iter().enumerate() {
                t.push(Neighbor::new(i as u32, *d));
            }
            let mut want: Vec<Neighbor> = ds.iter().enumerate().map(|(i, d)| Neighbor::new(i as u32, *d)).collect();
            want.sort();
            want.truncate(k);
            let mut got = Vec::new();
            t.drain_sorted_into(&mut got);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn ties_break_by_slot() {
        let mut t = TopK::new(2);
        for s in [5u32, 1, 3, 2] {
            t.push(Neighbor::new(s, 1.0));
        }
        let got: Vec<u32> = t.into_sorted_vec().iter().map(|n| n.slot).collect();
        assert_eq!(got, vec![1, 2]);
    }
}
