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
#[derive(Default)]
pub(crate) struct IdMap {
    version: u64,
    by_id: HashMap<Arc<str>, SlotId>,
    slot_ids: Vec<Option<Arc<str>>>,
    /// Bytes of id text held (each distinct id once).
    id_bytes: usize,
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
        let id = self.slot_ids.get(slot as usize)?.as_ref()?;
        (self.by_id.get(&**id) == Some(&slot)).then_some(id)
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
        self.slot_ids[i] = Some(id);
    }

    /// Makes `slot` the current slot of `id`; returns the previous one.
    pub(crate) fn make_current(&mut self, id: &Arc<str>, slot: SlotId) -> Option<SlotId> {
        self.version += 1;
        let old = self.by_id.insert(Arc::clone(id), slot);
        if old.is_none() {
            self.id_bytes += id.len();
        }
        old
    }

    /// Removes `id`; returns its slot.
    pub(crate) fn remove_id(&mut self, id: &str) -> Option<SlotId> {
        let slot = self.by_id.remove(id)?;
        self.version += 1;
        self.id_bytes -= id.len();
        Some(slot)
    }

    /// Forgets the id of a slot that is not current (never was, or just stopped).
    pub(crate) fn kill(&mut self, slot: SlotId) {
        if let Some(s) = self.slot_ids.get_mut(slot as usize) {
            *s = None;
        }
    }

    /// Approximate bytes held: the hash table, the slot table and the id text.
    pub(crate) fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one control byte per bucket plus the (key, value) pair.
        let table = self.by_id.capacity() * (size_of::<(Arc<str>, SlotId)>() + 1);
        let slots = self.slot_ids.capacity() * size_of::<Option<Arc<str>>>();
        // Each Arc<str> allocation carries two reference counts.
        let text = self.id_bytes + self.by_id.len() * 2 * size_of::<usize>();
        table + slots + text
    }
}
