//! The set of slots present in a flat index.
//!
//! # Why this shape
//! Searches read the set for every candidate that beats the current threshold and
//! for every chunk of rows (to skip chunks with nothing present), so reading must
//! be cheap and must not wait on writers. Adds and removes are rare next to that.
//!
//! * The bits live in a `Vec<AtomicU64>`. Setting and clearing a bit is an atomic
//!   `fetch_or` / `fetch_and` made under the *read* side of the `RwLock`, so a
//!   remove or an add that fits the current capacity never blocks a search.
//! * The `RwLock` guards the `Vec` itself: only growth (amortised doubling) takes
//!   the write side, waiting for the searches that hold a read guard — which they
//!   do for one chunk of rows at a time, not for a whole scan.
//! * A mutex serialises writers, so that the all-or-nothing check of an add
//!   (no slot of the range already present) and its update are one step.
//!
//! A bit carries no data (the vectors are published by the storage), so bit reads
//! are `Relaxed`: a search concurrent with `add`/`remove` of a slot may or may not
//! see that slot, which is all the index contract asks. `count` is stored with
//! `Release` after the bits and loaded with `Acquire`, so a reader that sees the
//! count of an add also sees its bits.

use omen_core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use omen_core::sync::{self, Mutex, RwLock, RwLockReadGuard};
use omen_core::{Error, Result, SlotId};
use std::ops::Range;

/// Bits per word.
const W: usize = 64;

/// A growable, concurrently readable bitset of slots.
pub(crate) struct PresentSet {
    words: RwLock<Vec<AtomicU64>>,
    count: AtomicUsize,
    writer: Mutex<()>,
}

/// A read view of the set, valid while held. Hold it briefly: growth waits for it.
pub(crate) struct PresentView<'a> {
    words: RwLockReadGuard<'a, Vec<AtomicU64>>,
}

/// `bits` low bits set (`bits` in 0..=64).
#[inline]
fn low_mask(bits: usize) -> u64 {
    if bits >= W {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The words covering `r` as `(word index, mask of the bits of r in it)`.
fn word_masks(r: Range<usize>) -> impl Iterator<Item = (usize, u64)> {
    let (start, end) = (r.start, r.end);
    let (first, last) = (start / W, end.div_ceil(W));
    (first..last).map(move |w| {
        let lo = start.max(w * W) - w * W;
        let hi = end.min((w + 1) * W) - w * W;
        (w, low_mask(hi) & !low_mask(lo))
    })
}

impl PresentSet {
    pub(crate) fn new() -> Self {
        PresentSet {
            words: RwLock::new(Vec::new()),
            count: AtomicUsize::new(0),
            writer: Mutex::new(()),
        }
    }

    /// Number of present slots.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Bytes held by the bits.
    pub(crate) fn memory_bytes(&self) -> usize {
        sync::read(&self.words).capacity() * std::mem::size_of::<AtomicU64>()
    }

    /// A read view for a search.
    #[inline]
    pub(crate) fn view(&self) -> PresentView<'_> {
        PresentView {
            words: sync::read(&self.words),
        }
    }

    /// Whether `slot` is present.
    pub(crate) fn contains(&self, slot: SlotId) -> bool {
        self.view().contains(slot as usize)
    }

    /// Adds every slot of `slots`; if any is present already, returns `SlotExists`
    /// naming the first such slot and changes nothing.
    pub(crate) fn insert_range(&self, slots: Range<SlotId>) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let r = slots.start as usize..slots.end as usize;
        let _writer = sync::lock(&self.writer);
        {
            let words = sync::read(&self.words);
            for (w, mask) in word_masks(r.clone()) {
                let held = words.get(w).map_or(0, |x| x.load(Ordering::Relaxed)) & mask;
                if held != 0 {
                    let slot = w * W + held.trailing_zeros() as usize;
                    return Err(Error::SlotExists { slot: slot as u32 });
                }
            }
        }
        let need = r.end.div_ceil(W);
        if sync::read(&self.words).len() < need {
            let mut words = sync::write(&self.words);
            let target = need.max(words.len() * 2);
            words.resize_with(target, || AtomicU64::new(0));
        }
        let words = sync::read(&self.words);
        for (w, mask) in word_masks(r.clone()) {
            if let Some(x) = words.get(w) {
                x.fetch_or(mask, Ordering::Relaxed);
            }
        }
        // Release: a reader that acquires this count sees the bits set above.
        self.count.fetch_add(r.len(), Ordering::Release);
        Ok(())
    }

    /// Removes `slot`; `UnknownSlot` if it is not present.
    pub(crate) fn remove(&self, slot: SlotId) -> Result<()> {
        let _writer = sync::lock(&self.writer);
        let words = sync::read(&self.words);
        let i = slot as usize;
        let bit = 1u64 << (i % W);
        match words.get(i / W) {
            Some(x) if x.load(Ordering::Relaxed) & bit != 0 => {
                x.fetch_and(!bit, Ordering::Relaxed);
                self.count.fetch_sub(1, Ordering::Release);
                Ok(())
            }
            _ => Err(Error::UnknownSlot { slot }),
        }
    }
}

impl PresentView<'_> {
    /// Whether `slot` is present.
    #[inline]
    pub(crate) fn contains(&self, slot: usize) -> bool {
        self.words
            .get(slot / W)
            .is_some_and(|x| (x.load(Ordering::Relaxed) >> (slot % W)) & 1 != 0)
    }

    /// Whether any slot of `first..first + n` is present.
    #[inline]
    pub(crate) fn any_in(&self, first: usize, n: usize) -> bool {
        word_masks(first..first + n).any(|(w, mask)| {
            self.words
                .get(w)
                .is_some_and(|x| x.load(Ordering::Relaxed) & mask != 0)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_exactly_the_range() {
        for start in 0..130usize {
            for end in start..200 {
                let mut bits = vec![false; 256];
                for (w, m) in word_masks(start..end) {
                    for b in 0..64 {
                        if m >> b & 1 == 1 {
                            assert!(!bits[w * 64 + b]);
                            bits[w * 64 + b] = true;
                        }
                    }
                }
                for (i, &b) in bits.iter().enumerate() {
                    assert_eq!(b, (start..end).contains(&i), "{start}..{end} bit {i}");
                }
            }
        }
    }

    #[test]
    fn insert_is_all_or_nothing_and_remove_checks() {
        let s = PresentSet::new();
        s.insert_range(3..70).unwrap();
        assert_eq!(s.len(), 67);
        assert!(matches!(
            s.insert_range(60..200),
            Err(Error::SlotExists { slot: 60 })
        ));
        assert_eq!(s.len(), 67);
        assert!(!s.contains(100));
        assert!(s.contains(3) && s.contains(69) && !s.contains(2) && !s.contains(70));
        s.remove(64).unwrap();
        assert!(matches!(s.remove(64), Err(Error::UnknownSlot { slot: 64 })));
        assert!(matches!(s.remove(1 << 30), Err(Error::UnknownSlot { .. })));
        assert_eq!(s.len(), 66);
        let v = s.view();
        assert!(v.any_in(60, 10) && !v.any_in(0, 3) && !v.any_in(70, 1000));
        drop(v);
        s.insert_range(64..65).unwrap();
        assert_eq!(s.len(), 67);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    /// An add that grows the set races a reader: a reader that sees the count of
    /// the add sees every bit of it. (`started` gives loom a race to branch on
    /// before the writer's SeqCst-modelled mutex; see omen-storage's loom test.)
    #[test]
    fn count_publishes_bits() {
        loom::model(|| {
            let s = Arc::new(PresentSet::new());
            let started = Arc::new(AtomicBool::new(false));
            let (w, go) = (s.clone(), started.clone());
            let t = thread::spawn(move || {
                go.store(true, Ordering::Relaxed);
                w.insert_range(60..68).unwrap()
            });
            let _ = started.load(Ordering::Relaxed);
            if s.len() == 8 {
                let v = s.view();
                assert!((60..68).all(|i| v.contains(i)));
            }
            t.join().unwrap();
            assert!((60..68).all(|i| s.contains(i as SlotId)));
        });
    }

    /// Two overlapping adds race: exactly one wins and the set holds its range only.
    #[test]
    fn overlapping_adds_one_wins() {
        loom::model(|| {
            let s = Arc::new(PresentSet::new());
            let w = s.clone();
            let t = thread::spawn(move || w.insert_range(0..3).is_ok());
            let mine = s.insert_range(2..5).is_ok();
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs);
            assert_eq!(s.len(), 3);
            let want = if mine { 2..5 } else { 0..3 };
            for i in 0..6 {
                assert_eq!(s.contains(i), want.contains(&i));
            }
        });
    }
}
