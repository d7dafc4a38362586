//! The candidate pool of a search: the `cap` best entries by estimated distance,
//! kept without a heap.
//!
//! A scan offers thousands of entries per query and keeps a few hundred. A bounded
//! binary heap pays a sift-down for every entry that enters; this pool instead
//! appends every entry at most its threshold to a buffer of twice the capacity,
//! and when the buffer is full selects the `cap` best in linear time
//! (`select_nth_unstable`) and lowers the threshold to the worst of them (the
//! scheme of FAISS's fast-scan reservoir result handler). The threshold lags
//! behind a heap's, so a few more entries are appended, but appending is a store.
//! (Setting a first threshold from the first `cap` entries was tried: no fewer
//! instructions.)
//!
//! Entries are kept as [`order_key`]s, so the selection compares integers.
//!
//! The kept set is exactly a bounded heap's: the `cap` smallest entries in
//! [`omen_core::Neighbor`]'s order (distance, then slot), whatever the order of
//! the offers.

#[cfg(test)]
use omen_core::Neighbor;
use omen_core::SlotId;

/// A distance and a number packed so that integer order is the order of
/// `(distance by f32::total_cmp, number)`, [`omen_core::Neighbor`]'s order:
/// selecting by key compares integers instead of calling a comparator.
#[inline]
pub(crate) fn order_key(d: f32, n: u32) -> u64 {
    let b = d.to_bits();
    // Negative floats reversed below the positive ones: IEEE total order.
    let ord = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    (ord as u64) << 32 | n as u64
}

/// The distance and number of an [`order_key`].
#[inline]
pub(crate) fn from_key(key: u64) -> (f32, u32) {
    let ord = (key >> 32) as u32;
    let b = if ord >> 31 == 1 {
        ord & !(1 << 31)
    } else {
        !ord
    };
    (f32::from_bits(b), key as u32)
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct CandidatePool {
    cap: usize,
    thr: f32,
    buf: Vec<u64>,
}

impl Default for CandidatePool {
    fn default() -> Self {
        CandidatePool {
            cap: 0,
            thr: f32::INFINITY,
            buf: Vec::new(),
        }
    }
}

/// The buffer holds this many entries beyond the capacity (at least) before it is
/// cut back, so that a small capacity does not select after every few offers.
const MIN_SLACK: usize = 64;

impl CandidatePool {
    /// Empties the pool for a query keeping `cap` candidates (`usize::MAX`: all).
    pub(crate) fn reset(&mut self, cap: usize) {
        self.cap = cap;
        self.thr = if cap == 0 {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
        self.buf.clear();
    }

    /// The distance an entry must not exceed to be offered: +∞ until the first
    /// cut, then the worst distance kept by the latest cut.
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        self.thr
    }

    /// Offers an entry; entries above the threshold are dropped here too (the
    /// float comparison lets both zeros through, a superset of the key order's).
    #[inline]
    pub(crate) fn push(&mut self, slot: SlotId, d: f32) {
        if d <= self.thr {
            self.buf.push(order_key(d, slot));
            if self.buf.len() >= self.cap.saturating_add(self.cap.max(MIN_SLACK)) {
                self.cut();
            }
        }
    }

    /// Keeps the `cap` best entries and lowers the threshold to the worst of them.
    fn cut(&mut self) {
        if self.buf.len() <= self.cap {
            return;
        }
        let Some(nth) = self.cap.checked_sub(1) else {
            self.buf.clear();
            return;
        };
        let (_, worst, _) = self.buf.select_nth_unstable(nth);
        self.thr = from_key(*worst).0;
        self.buf.truncate(self.cap);
    }

    /// The kept candidates' slots, in no particular order.
    pub(crate) fn finish(&mut self) -> impl Iterator<Item = SlotId> + '_ {
        self.cut();
        self.buf.iter().map(|&k| k as SlotId)
    }

    /// The kept candidates, in no particular order (for tests).
    #[cfg(test)]
    fn finish_neighbors(&mut self) -> Vec<Neighbor> {
        self.cut();
        self.buf
            .iter()
            .map(|&k| {
                let (d, s) = from_key(k);
                Neighbor::new(s, d)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omen_core::TopK;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keeps_what_a_bounded_heap_keeps(
            // Few distinct distances: many ties, broken by slot.
            ds in proptest::collection::vec(0u8..40, 0..2000),
            slots in proptest::collection::vec(any::<u32>(), 2000),
            cap in prop_oneof![0usize..5, 5usize..300, Just(usize::MAX)],
        ) {
            let mut pool = CandidatePool::default();
            pool.reset(cap);
            let mut heap = TopK::new(cap.min(1 << 20));
            for (&d, &s) in ds.iter().zip(&slots) {
                // Negative distances too (inner product estimates can be).
                let n = Neighbor::new(s, d as f32 * 0.5 - 5.0);
                if n.distance <= pool.threshold() {
                    pool.push(n.slot, n.distance);
                }
                heap.push(n);
            }
            let mut got = pool.finish_neighbors();
            got.sort_unstable();
            let mut want = Vec::new();
            heap.drain_sorted_into(&mut want);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn reset_keeps_the_allocation_and_forgets_the_threshold() {
        let mut pool = CandidatePool::default();
        pool.reset(2);
        for (s, d) in (0..200u32).map(|s| (s, (200 - s) as f32)) {
            pool.push(s, d);
        }
        assert!(pool.threshold() < f32::INFINITY);
        let mut got: Vec<u32> = pool.finish().collect();
        got.sort_unstable();
        assert_eq!(got, vec![198, 199]);
        pool.reset(1);
        assert_eq!(pool.threshold(), f32::INFINITY);
        pool.push(7, 1e9);
        assert_eq!(pool.finish_neighbors(), vec![Neighbor::new(7, 1e9)]);
        pool.reset(0);
        pool.push(7, 0.0);
        assert_eq!(pool.finish().count(), 0);
    }

    proptest! {
        #[test]
        fn keys_order_as_neighbors_and_round_trip(
            a in any::<f32>(), b in any::<f32>(), sa in any::<u32>(), sb in any::<u32>(),
        ) {
            let (na, nb) = (Neighbor::new(sa, a), Neighbor::new(sb, b));
            prop_assert_eq!(order_key(a, sa).cmp(&order_key(b, sb)), na.cmp(&nb));
            let (d, s) = from_key(order_key(a, sa));
            prop_assert_eq!((d.to_bits(), s), (a.to_bits(), sa));
        }
    }
}
