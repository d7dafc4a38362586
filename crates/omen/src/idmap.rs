//! External string ids ↔ storage slots.

use omen_core::SlotId;
/// foldhash: a fast, randomly seeded hasher (hashbrown's default); SipHash was
/// a tenth of ingest time.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

/// The id map of a collection.
///
/// `by_id` names the *current* slot of every live id. `slot_ids[s]` is the id slot
/// `s` was written for, kept while `s` may still become or be current and cleared
/// once `s` is dead (deleted or overwritten). A slot is current exactly when both
/// agree: `slot_ids[s] == Some(id)` and `by_id[id] == s`. Searches report only
/// current slots, which is what lets a writer put a slot into the index before it
/// becomes current (upsert) and take it out after it stopped being current
/// (delete) without a search ever seeing an id twice or a dead id.
///
/// `version` changes whenever the set of current slots does (`make_current`,
/// `remove_id`; `record` and `kill` touch only slots that are not current), so
/// that a search that ran without the lock can tell whether the map it maps hits
/// with is the one it started with.
///
/// `current` caches the "both agree" test as one bit per slot, so that mapping a
/// search hit costs a bit test instead of hashing the id and probing `by_id`
/// (two cache misses per hit on a large collection). Every method that changes
/// `by_id` or `slot_ids` keeps it exact.
#[derive(Default)]
pub(crate) struct IdMap {
    version: u64,
    by_id: HashMap<Arc<str>, SlotId>,
    slot_ids: Vec<Option<Arc<str>>>,
    /// Bit `s` set exactly when slot `s` is current.
    current: Vec<u64>,
    /// Bytes of id text held (each distinct id once).
    id_bytes: usize,
    /// The indexed watermark: every current slot below it is in the index; the
    /// current slots from it up to [`published`](Self::published) (the unindexed
    /// tail) are not, and searches scan them exactly. Moved only forward: by the
    /// indexer, under the same write lock in which it decides which of the slots
    /// it added died meanwhile, or by an inline write.
    indexed: SlotId,
}

impl IdMap {
    /// An empty map with room for `ids` live ids over `slots` slots (reopening).
    pub(crate) fn with_capacity(ids: usize, slots: usize) -> IdMap {
        IdMap {
            by_id: HashMap::with_capacity_and_hasher(ids, Default::default()),
            slot_ids: Vec::with_capacity(slots),
            ..IdMap::default()
        }
    }

    /// Changes whenever the set of current slots does.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Number of live ids.
    /// Slots below this are recorded (live or dead) or were never published;
    /// no slot at or above it is current.
    pub(crate) fn published(&self) -> SlotId {
        self.slot_ids.len() as SlotId
    }

    /// The indexed watermark (see the field).
    pub(crate) fn indexed(&self) -> SlotId {
        self.indexed
    }

    /// Moves the indexed watermark to `w` (never backwards).
    pub(crate) fn set_indexed(&mut self, w: SlotId) {
        self.indexed = self.indexed.max(w);
    }

    /// Rows recorded but not yet indexed (live or dead).
    pub(crate) fn tail_rows(&self) -> usize {
        self.published().saturating_sub(self.indexed) as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The current slot of `id`.
    pub(crate) fn slot(&self, id: &str) -> Option<SlotId> {
        self.by_id.get(id).copied()
    }

    /// Whether `id` is live.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Every live id with its current slot, in slot order (the order of writes).
    pub(crate) fn live(&self) -> Vec<(Arc<str>, SlotId)> {
        let mut v: Vec<(Arc<str>, SlotId)> = self
            .by_id
            .iter()
            .map(|(id, &s)| (Arc::clone(id), s))
            .collect();
        v.sort_unstable_by_key(|&(_, s)| s);
        v
    }

    /// The id of `slot` if the slot is current.
    #[inline]
    pub(crate) fn current_id(&self, slot: SlotId) -> Option<&Arc<str>> {
        if !self.is_current(slot) {
            return None;
        }
        self.slot_ids.get(slot as usize)?.as_ref()
    }

    /// Whether `slot` was written for `id`.
    fn slot_is(&self, slot: SlotId, id: &str) -> bool {
        self.slot_ids
            .get(slot as usize)
            .is_some_and(|s| s.as_deref() == Some(id))
    }

    #[inline]
    fn is_current(&self, slot: SlotId) -> bool {
        self.current
            .get(slot as usize / 64)
            .is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }

    fn set_current(&mut self, slot: SlotId, on: bool) {
        let w = slot as usize / 64;
        if w >= self.current.len() {
            if !on {
                return;
            }
            self.current.resize(w + 1, 0);
        }
        let b = 1u64 << (slot % 64);
        if on {
            self.current[w] |= b;
        } else {
            self.current[w] &= !b;
        }
    }

    /// Whether `slot` has an id recorded (current or about to be).
    pub(crate) fn is_recorded(&self, slot: SlotId) -> bool {
        self.slot_ids
            .get(slot as usize)
            .is_some_and(Option::is_some)
    }

    /// Records that `slot` holds a vector written for `id`, without making it current.
    pub(crate) fn record(&mut self, slot: SlotId, id: Arc<str>) {
        let i = slot as usize;
        if self.slot_ids.len() <= i {
            // Slots are appended in order, so this normally grows by one; a gap would
            // mean another writer appended to the storage, and those slots stay dead.
            self.slot_ids.resize(i + 1, None);
        }
        // Current exactly when `by_id` already names this slot for `id`.
        let current = self.by_id.get(&*id) == Some(&slot);
        self.slot_ids[i] = Some(id);
        self.set_current(slot, current);
    }

    /// Makes `slot` the current slot of `id`; returns the previous one.
    pub(crate) fn make_current(&mut self, id: &Arc<str>, slot: SlotId) -> Option<SlotId> {
        self.version += 1;
        let old = self.by_id.insert(Arc::clone(id), slot);
        match old {
            None => self.id_bytes += id.len(),
            // The old slot stops being current only if it was current for `id`.
            Some(o) if o != slot && self.slot_is(o, id) => self.set_current(o, false),
            Some(_) => {}
        }
        // Otherwise `slot` stays as it was: current for its own id or not at all.
        if self.slot_is(slot, id) {
            self.set_current(slot, true);
        }
        old
    }

    /// Removes `id`; returns its slot.
    pub(crate) fn remove_id(&mut self, id: &str) -> Option<SlotId> {
        let slot = self.by_id.remove(id)?;
        if self.slot_is(slot, id) {
            self.set_current(slot, false);
        }
        self.version += 1;
        self.id_bytes -= id.len();
        Some(slot)
    }

    /// Forgets the id of a slot that is not current (never was, or just stopped).
    pub(crate) fn kill(&mut self, slot: SlotId) {
        if let Some(s) = self.slot_ids.get_mut(slot as usize) {
            *s = None;
        }
        self.set_current(slot, false);
    }

    /// Approximate bytes held: the hash table, the slot table and the id text.
    pub(crate) fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one control byte per bucket plus the (key, value) pair.
        let table = self.by_id.capacity() * (size_of::<(Arc<str>, SlotId)>() + 1);
        let slots = self.slot_ids.capacity() * size_of::<Option<Arc<str>>>()
            + self.current.capacity() * size_of::<u64>();
        // Each Arc<str> allocation carries two reference counts.
        let text = self.id_bytes + self.by_id.len() * 2 * size_of::<usize>();
        table + slots + text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition the `current` bits cache: both maps agree.
    fn current_by_definition(m: &IdMap, slot: SlotId) -> Option<&Arc<str>> {
        let id = m.slot_ids.get(slot as usize)?.as_ref()?;
        (m.by_id.get(&**id) == Some(&slot)).then_some(id)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record(SlotId, u8),
        MakeCurrent(u8, SlotId),
        Remove(u8),
        Kill(SlotId),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40, 0u8..8).prop_map(|(s, i)| Op::Record(s, i)),
            (0u8..8, 0u32..40).prop_map(|(i, s)| Op::MakeCurrent(i, s)),
            (0u8..8).prop_map(Op::Remove),
            (0u32..40).prop_map(Op::Kill),
        ]
    }

    proptest! {
        /// In any order of writes (the collection's order and others), the bit
        /// test answers what the two maps say.
        #[test]
        fn current_bits_match_the_definition(ops in proptest::collection::vec(op(), 0..80)) {
            let mut m = IdMap::default();
            let name = |i: u8| -> Arc<str> { Arc::from(format!("id-{i}")) };
            for op in ops {
                match op {
                    Op::Record(s, i) => m.record(s, name(i)),
                    Op::MakeCurrent(i, s) => {
                        m.make_current(&name(i), s);
                    }
                    Op::Remove(i) => {
                        m.remove_id(&name(i));
                    }
                    Op::Kill(s) => m.kill(s),
                }
                for s in 0..48 {
                    prop_assert_eq!(m.current_id(s), current_by_definition(&m, s), "slot {}", s);
                }
            }
        }
    }
}
