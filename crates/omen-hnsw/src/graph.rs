//! The graph's memory: per-node state words, per-node locks, level-0 adjacency in
//! fixed-size slots and upper-level adjacency in a per-node side table.
//!
//! # Layout
//! Nodes are numbered by storage slot. They live in chunks of `CHUNK` nodes; a
//! chunk holds the nodes' metadata (8 bytes each: the state word and where the
//! node's upper lists start), one allocation of `CHUNK * (M0 + 1)` words for their
//! level-0 lists, and an arena for the upper lists of its nodes. Growing appends
//! chunks and never moves a published one. A list is `[count, id, id, ...]`; a node
//! of level `L > 0` owns `L * (M + 1)` consecutive words of its chunk's arena for
//! levels `1..=L`, taken when the node is reserved (under the write lock, so the
//! arena never grows while a reader holds a list in it).
//!
//! Writers of a node's lists serialise on a lock striped by node id
//! ([`Graph::lock`]): a per-node mutex would cost 8 bytes a node, a fifth of the
//! graph's memory at M = 16. No code path holds two node locks at once, so two
//! nodes sharing a stripe can only wait for each other, never deadlock.
//!
//! # Concurrency
//! The chunk vector sits behind the index's `RwLock`: growing and reserving nodes
//! take it for writing (rarely, once per `add` call), every insert and search holds
//! it for reading. Under the read lock the lists are shared between threads:
//! * writers change a node's lists only while holding that node's `lock`, storing
//!   ids first and the count last, all with `Release`;
//! * readers take no lock: they load the count and ids with `Acquire`. A reader
//!   racing a writer may see a mix of the old and new list, but every word it can
//!   see is an id that was written as a link, i.e. a reserved node whose level is at
//!   least the list's level, so the mix is a valid (if momentarily odd) list.
//!   `Acquire` on the id makes the linked node's reservation visible before it is
//!   followed.
//!
//! Everything is safe Rust: the words are atomics (a plain `mov` on x86 for
//! `Acquire`/`Release`), and indexes are bounds-checked.

use omen_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use omen_core::sync::Mutex;

/// log2 of the nodes per chunk. Small under loom, where every node's mutex is a
/// modelled object.
#[cfg(not(loom))]
const CHUNK_SHIFT: u32 = 12;
#[cfg(loom)]
const CHUNK_SHIFT: u32 = 1;
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// Stripes of the node-lock table (a power of two). Small under loom, where
/// every mutex is a modelled object.
#[cfg(not(loom))]
const LOCK_STRIPES: usize = 4096;
#[cfg(loom)]
const LOCK_STRIPES: usize = 2;

/// The highest level a node may have. With mL = 1/ln M, a level above 16 has
/// probability M^-16 per node; the cap keeps a corrupted or adversarial level from
/// allocating without bound.
pub(crate) const MAX_LEVEL: usize = 31;

/// Node status, kept in bits 8.. of the state word (bits 0..8 hold the level).
pub(crate) const ABSENT: u32 = 0;
/// Reserved by an `add` whose insertion has not finished: routable, not returned.
pub(crate) const RESERVED: u32 = 1;
/// Linked and returned by searches.
pub(crate) const PRESENT: u32 = 2;
/// Removed: still routed through, never returned, links to it not yet repaired.
pub(crate) const DELETED: u32 = 3;
/// Removed and repaired: live nodes no longer link to it (except new inserts that
/// raced the repair, which is harmless: its own lists stay intact).
pub(crate) const PURGED: u32 = 4;

#[inline]
pub(crate) fn pack(status: u32, level: usize) -> u32 {
    (status << 8) | level as u32
}

#[inline]
pub(crate) fn status_of(word: u32) -> u32 {
    word >> 8
}

#[inline]
pub(crate) fn level_of(word: u32) -> usize {
    (word & 0xff) as usize
}

/// Per-node metadata.
pub(crate) struct Node {
    /// `status << 8 | level`.
    pub(crate) state: AtomicU32,
    /// `start << 5 | levels`: the node's upper lists (levels `1..=levels`, `M + 1`
    /// words each) start at word `start` of its chunk's arena. Written only under
    /// the graph's write lock.
    upper: u32,
}

/// Bits of [`Node::upper`] holding the number of upper levels (`MAX_LEVEL` < 32).
const UPPER_LEVEL_BITS: u32 = 5;

impl Node {
    fn new() -> Node {
        Node {
            state: AtomicU32::new(0),
            upper: 0,
        }
    }

    /// Where the node's upper lists start in its chunk's arena, and how many levels.
    #[inline]
    fn upper(&self) -> (usize, usize) {
        (
            (self.upper >> UPPER_LEVEL_BITS) as usize,
            (self.upper & ((1 << UPPER_LEVEL_BITS) - 1)) as usize,
        )
    }

    #[inline]
    pub(crate) fn word(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }
}

struct Chunk {
    nodes: Box<[Node]>,
    links: Box<[AtomicU32]>,
    /// One bit per node, set while the node is `PRESENT`: searches test it for
    /// every candidate, and 4096 nodes' bits fit in eight cache lines where their
    /// state words would take two thousand.
    live: Box<[AtomicU64]>,
    /// One bit per node, set before the node's level-0 list is written and
    /// cleared by [`Graph::clear_changed`]: how an index layered on the graph
    /// (qg's code blocks) learns exactly which lists an insert or repair changed
    /// since it last read them.
    changed: Box<[AtomicU64]>,
    /// The upper lists of the chunk's nodes; grows only under the write lock.
    upper: Vec<AtomicU32>,
}

/// The graph's storage; see the module documentation.
pub(crate) struct Graph {
    m: usize,
    m0: usize,
    chunks: Vec<Chunk>,
    upper_words: usize,
    locks: Box<[Mutex<()>]>,
}

fn atomics(n: usize) -> Box<[AtomicU32]> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

impl Graph {
    pub(crate) fn new(m: usize, m0: usize) -> Graph {
        Graph {
            m,
            m0,
            chunks: Vec::new(),
            upper_words: 0,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The lock serialising writers of node `id`'s lists (shared with the other
    /// nodes of its stripe). Never hold two at once.
    #[inline]
    pub(crate) fn lock(&self, id: u32) -> &Mutex<()> {
        &self.locks[id as usize & (LOCK_STRIPES - 1)]
    }

    /// Number of node slots allocated.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.len() << CHUNK_SHIFT
    }

    /// Grows so that nodes `0..n` exist.
    pub(crate) fn grow_to(&mut self, n: usize) {
        let stride = self.m0 + 1;
        while self.capacity() < n {
            self.chunks.push(Chunk {
                nodes: (0..CHUNK).map(|_| Node::new()).collect(),
                links: atomics(CHUNK * stride),
                live: (0..CHUNK.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
                changed: (0..CHUNK.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
                upper: Vec::new(),
            });
        }
    }

    #[inline]
    pub(crate) fn node(&self, id: u32) -> Option<&Node> {
        let id = id as usize;
        self.chunks
            .get(id >> CHUNK_SHIFT)
            .and_then(|c| c.nodes.get(id & (CHUNK - 1)))
    }

    /// Whether node `id` is present (its live bit is set).
    #[inline]
    pub(crate) fn is_live(&self, id: u32) -> bool {
        let i = id as usize;
        let local = i & (CHUNK - 1);
        self.chunks
            .get(i >> CHUNK_SHIFT)
            .and_then(|c| c.live.get(local / 64))
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (local % 64)) != 0)
    }

    /// Sets or clears node `id`'s live bit; called right after its state word
    /// becomes, or stops being, `PRESENT`.
    pub(crate) fn set_live(&self, id: u32, live: bool) {
        let i = id as usize;
        let local = i & (CHUNK - 1);
        if let Some(w) = self
            .chunks
            .get(i >> CHUNK_SHIFT)
            .and_then(|c| c.live.get(local / 64))
        {
            let bit = 1u64 << (local % 64);
            if live {
                w.fetch_or(bit, Ordering::AcqRel);
            } else {
                w.fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }

    /// Marks node `id`'s level-0 list as changed. Every writer of a level-0
    /// list calls it *before* writing, so that a reader that loads an id of the
    /// new list (`Acquire`, pairing with the write's `Release`) and then finds
    /// the mark clear knows the list it read is the one last marked clean.
    #[inline]
    pub(crate) fn mark_changed(&self, id: u32) {
        if let Some((w, bit)) = self.changed_word(id) {
            w.fetch_or(bit, Ordering::AcqRel);
        }
    }

    #[inline]
    fn changed_word(&self, id: u32) -> Option<(&AtomicU64, u64)> {
        let i = id as usize;
        let local = i & (CHUNK - 1);
        self.chunks
            .get(i >> CHUNK_SHIFT)
            .and_then(|c| c.changed.get(local / 64))
            .map(|w| (w, 1u64 << (local % 64)))
    }

    /// Whether node `id`'s level-0 list changed since its mark was last cleared.
    #[inline]
    pub(crate) fn is_changed(&self, id: u32) -> bool {
        self.changed_word(id)
            .is_some_and(|(w, bit)| w.load(Ordering::Acquire) & bit != 0)
    }

    /// Clears node `id`'s mark (its list has been consumed as it now stands).
    pub(crate) fn clear_changed(&self, id: u32) {
        if let Some((w, bit)) = self.changed_word(id) {
            w.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// Appends to `out`, in slot order, every node whose mark is set.
    pub(crate) fn changed(&self, out: &mut Vec<u32>) {
        for (c, chunk) in self.chunks.iter().enumerate() {
            for (w, word) in chunk.changed.iter().enumerate() {
                let mut bits = word.load(Ordering::Acquire);
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    out.push(((c << CHUNK_SHIFT) + w * 64 + b) as u32);
                }
            }
        }
    }

    /// Gives node `id` (which must exist) room for `level` upper levels; called under
    /// the write lock, before the node is linked anywhere.
    /// A node whose level changes (a removed node added again) gets fresh words; its
    /// old ones stay in the arena, unused, until the graph is dropped or reloaded.
    pub(crate) fn set_levels(&mut self, id: u32, level: usize) {
        let level = level.min(MAX_LEVEL);
        let words = level * (self.m + 1);
        let id = id as usize;
        let Some(chunk) = self.chunks.get_mut(id >> CHUNK_SHIFT) else {
            return;
        };
        let Some(node) = chunk.nodes.get_mut(id & (CHUNK - 1)) else {
            return;
        };
        if node.upper().1 == level {
            return;
        }
        let start = chunk.upper.len();
        // Exact growth: a doubling arena wasted about 1 B per vector at M = 16. The
        // copy is cheap (a chunk's arena is a few thousand words) and runs under the
        // write lock, where no reader holds a list.
        chunk.upper.reserve_exact(words);
        chunk.upper.extend((0..words).map(|_| AtomicU32::new(0)));
        self.upper_words += words;
        node.upper = ((start as u32) << UPPER_LEVEL_BITS) | level as u32;
    }

    /// Node `id`'s list at `level`, `[count, ids...]`; `None` when the node does not
    /// exist or its upper table does not reach `level`.
    #[inline]
    pub(crate) fn list(&self, id: u32, level: usize) -> Option<&[AtomicU32]> {
        let i = id as usize;
        let chunk = self.chunks.get(i >> CHUNK_SHIFT)?;
        let local = i & (CHUNK - 1);
        if level == 0 {
            let stride = self.m0 + 1;
            chunk.links.get(local * stride..(local + 1) * stride)
        } else {
            let stride = self.m + 1;
            let (start, levels) = chunk.nodes.get(local)?.upper();
            if level > levels {
                return None;
            }
            let at = start + (level - 1) * stride;
            chunk.upper.get(at..at + stride)
        }
    }

    /// The largest number of links a list at `level` holds.
    #[inline]
    pub(crate) fn cap(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// Bytes held by node metadata, lists and locks.
    pub(crate) fn memory_bytes(&self) -> usize {
        let per_chunk = CHUNK * std::mem::size_of::<Node>()
            + CHUNK * (self.m0 + 1) * std::mem::size_of::<u32>()
            + 2 * CHUNK.div_ceil(64) * std::mem::size_of::<u64>();
        self.chunks.len() * per_chunk
            + self
                .chunks
                .iter()
                .map(|c| c.upper.capacity() * std::mem::size_of::<u32>())
                .sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.locks.len() * std::mem::size_of::<Mutex<()>>()
    }
}

/// Reads a list's ids into `out` (cleared first). Takes no lock; see the module
/// documentation for why a racing writer cannot make it return a non-link.
#[inline]
pub(crate) fn read_list(list: &[AtomicU32], out: &mut Vec<u32>) {
    out.clear();
    let Some((count, ids)) = list.split_first() else {
        return;
    };
    let n = (count.load(Ordering::Acquire) as usize).min(ids.len());
    out.extend(ids[..n].iter().map(|a| a.load(Ordering::Acquire)));
}

/// Replaces a list's ids; the caller holds the node's lock. Ids first, count last,
/// so that a reader that sees the count sees ids that are all links.
pub(crate) fn write_list(list: &[AtomicU32], ids: impl ExactSizeIterator<Item = u32>) {
    let Some((count, slots)) = list.split_first() else {
        return;
    };
    let mut n = 0;
    for (slot, id) in slots.iter().zip(ids) {
        slot.store(id, Ordering::Release);
        n += 1;
    }
    count.store(n as u32, Ordering::Release);
}

/// Appends one id if there is room; the caller holds the node's lock. Returns
/// whether it was appended.
pub(crate) fn push_list(list: &[AtomicU32], id: u32) -> bool {
    let Some((count, slots)) = list.split_first() else {
        return false;
    };
    let n = count.load(Ordering::Acquire) as usize;
    match slots.get(n) {
        Some(slot) => {
            slot.store(id, Ordering::Release);
            count.store(n as u32 + 1, Ordering::Release);
            true
        }
        None => false,
    }
}

/// A read view of the graph ([`crate::HnswIndex::view`]): it holds the graph's
/// read lock, so the chunks cannot move while it lives, and reads lists as a
/// search does (no per-list lock; see the module documentation). Do not call a
/// method of the index that takes the graph's lock while holding one: a read
/// lock taken twice can deadlock against a waiting writer.
pub struct GraphView<'a>(pub(crate) omen_core::sync::RwLockReadGuard<'a, Graph>);

impl GraphView<'_> {
    /// Node `slot`'s list at `level`; `None` past the graph's capacity or above
    /// the node's level. A slot that was never inserted has an empty level-0 list.
    #[inline]
    pub fn list(&self, slot: u32, level: usize) -> Option<List<'_>> {
        self.0.list(slot, level).map(List)
    }

    /// Whether node `slot` is present (inserted and not removed).
    #[inline]
    pub fn is_live(&self, slot: u32) -> bool {
        self.0.is_live(slot)
    }

    /// Whether node `slot`'s level-0 list was written since its mark was last
    /// cleared ([`clear_changed`](Self::clear_changed)). Writers mark a list
    /// before writing it: a reader that read ids of a list and then finds its
    /// mark clear read the list as it stood when the mark was cleared.
    #[inline]
    pub fn is_changed(&self, slot: u32) -> bool {
        self.0.is_changed(slot)
    }

    /// Clears node `slot`'s mark: the caller has consumed its list as it stands
    /// and no writer of it runs meanwhile (a write racing the clear could
    /// otherwise go unnoticed).
    pub fn clear_changed(&self, slot: u32) {
        self.0.clear_changed(slot)
    }
}

/// One list of a [`GraphView`].
#[derive(Clone, Copy)]
pub struct List<'a>(&'a [AtomicU32]);

impl List<'_> {
    /// The number of ids (read with `Acquire`: every id below it is a link).
    #[inline]
    pub fn len(&self) -> usize {
        match self.0.split_first() {
            Some((count, ids)) => (count.load(Ordering::Acquire) as usize).min(ids.len()),
            None => 0,
        }
    }

    /// Whether the list holds no id.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `i` (below [`len`](Self::len)); `u32::MAX` past the list's room.
    #[inline]
    pub fn id(&self, i: usize) -> u32 {
        self.0
            .get(i + 1)
            .map_or(u32::MAX, |a| a.load(Ordering::Acquire))
    }

    /// Asks the CPU to load the list's cache lines.
    #[inline]
    pub fn prefetch(&self) {
        omen_core::simd::prefetch(self.0);
    }
}
