//! Graph walks: greedy descent, the layer beam search, the query path with its
//! filter and exact fallbacks.

use crate::graph::{read_list, Graph};
use crate::{entry_parts, splitmix, HnswIndex, NO_ENTRY};
use omen_core::simd::prefetch;
use omen_core::sync::atomic::Ordering;
use omen_core::{
    Metric, Neighbor, SearchRequest, SearchScratch, SlotFilter, SlotId, TopK, VectorStorage,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Rows remembered per expanded node: M0 = 64 covers M up to 32.
pub(crate) const ROW_CACHE: usize = 64;
/// Rows whose vectors are being loaded ahead of the distance loop.
const PREFETCH_AHEAD: usize = 6;

/// Nodes sampled to estimate a filter's selectivity.
const SELECTIVITY_SAMPLES: usize = 256;
/// Below this estimated fraction of matching nodes, a filtered query scans the
/// matching nodes instead of walking the graph: the walk would visit about
/// `ef / fraction` nodes to collect `ef` matches.
pub const FLAT_FRACTION: f64 = 0.02;
/// ... or when fewer than this many times `ef` nodes are expected to match.
pub const FLAT_EF_FACTOR: f64 = 8.0;

/// Generation-stamped visited marks of one byte per node: a quarter of
/// `omen_core::VisitedSet`'s footprint, so that the marks of a few hundred
/// thousand nodes stay in L2. The marks are zeroed once every 255 walks.
#[derive(Default)]
pub(crate) struct Visited {
    marks: Vec<u8>,
    generation: u8,
}

impl Visited {
    /// Prepares for a new walk over nodes `0..n`.
    pub(crate) fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `id`; returns whether it was unmarked in this walk.
    #[inline]
    pub(crate) fn insert(&mut self, id: SlotId) -> bool {
        let i = id as usize;
        if i >= self.marks.len() {
            self.marks.resize(i + 1, 0);
        }
        let m = &mut self.marks[i];
        let fresh = *m != self.generation;
        *m = self.generation;
        fresh
    }
}

/// A neighbour packed in a `u64` whose integer order is [`Neighbor`]'s order
/// (distance by IEEE total order, then slot): the heaps compare one integer
/// instead of two floats' total-order transforms and a slot.
#[inline]
pub(crate) fn key(n: Neighbor) -> u64 {
    let b = n.distance.to_bits();
    let ordered = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((ordered as u64) << 32) | n.slot as u64
}

/// The inverse of [`key`].
#[inline]
pub(crate) fn unkey(k: u64) -> Neighbor {
    let u = (k >> 32) as u32;
    let b = if u & 0x8000_0000 != 0 {
        u & 0x7fff_ffff
    } else {
        !u
    };
    Neighbor::new(k as u32, f32::from_bits(b))
}

#[inline]
fn key_distance(k: u64) -> f32 {
    unkey(k).distance
}

/// Per-thread working memory of inserts and searches, reused across calls.
#[derive(Default)]
pub(crate) struct Work {
    pub(crate) visited: Visited,
    /// Candidates to expand, closest on top ([`key`]s).
    pub(crate) cand: BinaryHeap<Reverse<u64>>,
    /// Results so far, farthest on top ([`key`]s).
    pub(crate) top: BinaryHeap<u64>,
    pub(crate) ids: Vec<u32>,
    pub(crate) ids2: Vec<u32>,
    pub(crate) eps: Vec<Neighbor>,
    pub(crate) found: Vec<Neighbor>,
    pub(crate) sel2: Vec<Neighbor>,
    pub(crate) pruned: Vec<Neighbor>,
    pub(crate) tmp: Vec<Neighbor>,
    pub(crate) topk: TopK,
    pub(crate) levels: Vec<Vec<Neighbor>>,
}

impl HnswIndex {
    /// Greedy descent on one layer: moves to the closest neighbour until none is
    /// closer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn greedy(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        q: &[f32],
        mut cur: Neighbor,
        level: usize,
        work: &mut Work,
        dc: &mut u64,
    ) -> Neighbor {
        loop {
            let Some(list) = g.list(cur.slot, level) else {
                return cur;
            };
            read_list(list, &mut work.ids);
            let mut changed = false;
            for &id in &work.ids {
                if let Some(v) = storage.get(id) {
                    *dc += 1;
                    let d = self.dist(q, v);
                    if d < cur.distance {
                        cur = Neighbor::new(id, d);
                        changed = true;
                    }
                }
            }
            if !changed {
                return cur;
            }
        }
    }

    /// Beam search of width `ef` on `level` from `eps`. Leaves in `work.top` up to
    /// `ef` nodes, the closest found among the eligible ones: present nodes when
    /// `live_only` (all otherwise) that `filter` allows. `exclude` is never returned nor expanded (an insert's own node).
    /// With `restricted`, the walk does not stop while fewer than `ef` eligible
    /// nodes are held (hnswlib's rule with deletions or a filter).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn search_layer(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        q: &[f32],
        eps: &[Neighbor],
        ef: usize,
        level: usize,
        exclude: Option<SlotId>,
        live_only: bool,
        filter: Option<&dyn SlotFilter>,
        restricted: bool,
        work: &mut Work,
        dc: &mut u64,
    ) {
        let eligible =
            |id: SlotId| (!live_only || g.is_live(id)) && filter.is_none_or(|f| f.allows(id));
        let Work {
            visited,
            cand,
            top,
            ids,
            ..
        } = work;
        visited.reset(g.capacity());
        cand.clear();
        top.clear();
        if let Some(x) = exclude {
            visited.insert(x);
        }
        for &e in eps {
            if !visited.insert(e.slot) {
                continue;
            }
            cand.push(Reverse(key(e)));
            if eligible(e.slot) {
                top.push(key(e));
                if top.len() > ef {
                    top.pop();
                }
            }
        }
        let mut lower = top.peek().map_or(f32::INFINITY, |&k| key_distance(k));
        let mut rows: Vec<&[f32]> = Vec::with_capacity(2 * self.params.m);
        while let Some(Reverse(c)) = cand.pop() {
            let c = unkey(c);
            if c.distance > lower && (top.len() >= ef || !restricted) {
                break;
            }
            let Some(list) = g.list(c.slot, level) else {
                continue;
            };
            // The next node to expand is most often the next candidate: start
            // loading its list now, so that it arrives while this one's neighbours
            // are scored.
            if let Some(l) = cand.peek().and_then(|&Reverse(k)| g.list(k as u32, level)) {
                prefetch(&l[..1]);
            }
            // Unvisited neighbours first, with their rows (a storage lookup is a
            // virtual call). Their vectors are prefetched a few rows ahead of the
            // distance loop: the loads overlap each other and the distances, and
            // the window keeps the outstanding misses (4 lines per GloVe-50 row)
            // within what the core can track. Prefetching a whole list at once
            // stalled on full miss buffers and was 10 % slower (GloVe-50, 390k).
            ids.clear();
            rows.clear();
            if let Some((count, words)) = list.split_first() {
                let n = (count.load(Ordering::Acquire) as usize).min(words.len());
                for w in &words[..n] {
                    let id = w.load(Ordering::Acquire);
                    if visited.insert(id) {
                        if let Some(v) = storage.get(id) {
                            if rows.len() < PREFETCH_AHEAD {
                                prefetch(v);
                            }
                            rows.push(v);
                            ids.push(id);
                        }
                    }
                }
            }
            for (j, (&id, &v)) in ids.iter().zip(rows.iter()).enumerate() {
                if let Some(ahead) = rows.get(j + PREFETCH_AHEAD) {
                    prefetch(ahead);
                }
                *dc += 1;
                let d = self.dist(q, v);
                if top.len() < ef || d < lower {
                    let k = key(Neighbor::new(id, d));
                    cand.push(Reverse(k));
                    if eligible(id) {
                        top.push(k);
                        if top.len() > ef {
                            top.pop();
                        }
                    }
                    lower = top.peek().map_or(f32::INFINITY, |&k| key_distance(k));
                }
            }
            // The next node to expand is known now: start loading its list.
            if let Some(l) = cand.peek().and_then(|&Reverse(k)| g.list(k as u32, level)) {
                prefetch(l);
            }
        }
    }

    /// The query path; returns the distances computed.
    pub(crate) fn search_graph(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        knobs: crate::HnswSearch,
        scratch: &mut SearchScratch,
        out: &mut Vec<Neighbor>,
    ) -> u64 {
        out.clear();
        let work = scratch.extra_or_insert_with(Work::default);
        let mut dc = 0u64;
        let k = req.k;
        let present = self.present.load(Ordering::Acquire);
        if present == 0 {
            return 0;
        }
        let ef = knobs.ef.unwrap_or(self.params.ef_search).max(k);
        // A beam as wide as the index would visit every node: the scan does that
        // with less work and does not depend on every node being reachable.
        if req.params.exhaustive || ef >= present {
            self.flat_scan(g, storage, req, work, out, &mut dc);
            return dc;
        }
        if let Some(f) = req.filter {
            let p = self.selectivity(g, f);
            if p < FLAT_FRACTION || p * (present as f64) < FLAT_EF_FACTOR * ef as f64 {
                self.flat_scan(g, storage, req, work, out, &mut dc);
                return dc;
            }
        }
        let ep = self.entry.load(Ordering::Acquire);
        if ep == NO_ENTRY {
            self.flat_scan(g, storage, req, work, out, &mut dc);
            return dc;
        }
        let (ep_slot, top_level) = entry_parts(ep);
        let q = req.query;
        let Some(ev) = storage.get(ep_slot) else {
            self.flat_scan(g, storage, req, work, out, &mut dc);
            return dc;
        };
        dc += 1;
        let mut cur = Neighbor::new(ep_slot, self.dist(q, ev));
        for lc in (1..=top_level).rev() {
            cur = self.greedy(g, storage, q, cur, lc, work, &mut dc);
        }
        let restricted =
            req.filter.is_some() || self.tombstones.load(Ordering::Relaxed) > 0 || present < ef;
        self.search_layer(
            g,
            storage,
            q,
            &[cur],
            ef,
            0,
            None,
            true,
            req.filter,
            restricted,
            work,
            &mut dc,
        );
        while work.top.len() > k {
            work.top.pop();
        }
        out.extend(work.top.drain().map(unkey));
        if self.metric == Metric::Cosine {
            for n in out.iter_mut() {
                if let Some(v) = storage.get(n.slot) {
                    n.distance = self.exact_dist(q, v);
                }
            }
        }
        out.sort_unstable();
        // A walk that found fewer than k cannot tell "fewer match" from "not
        // reached": the scan settles it, so k come back whenever k match.
        if out.len() < k && out.len() < present {
            self.flat_scan(g, storage, req, work, out, &mut dc);
        }
        dc
    }

    /// Exact search over the present nodes that the filter allows.
    fn flat_scan(
        &self,
        g: &Graph,
        storage: &dyn VectorStorage,
        req: &SearchRequest<'_>,
        work: &mut Work,
        out: &mut Vec<Neighbor>,
        dc: &mut u64,
    ) {
        let top = &mut work.topk;
        top.reset(req.k);
        let cap = g.capacity().min(u32::MAX as usize) as SlotId;
        let mut offer = |id: SlotId| {
            if let Some(v) = storage.get(id) {
                *dc += 1;
                top.push(Neighbor::new(id, self.exact_dist(req.query, v)));
            }
        };
        match req.filter.and_then(|f| f.bitmap()) {
            // A bitmap filter: only its set bits are visited.
            Some(bits) => omen_core::bitmap_slots(bits)
                .take_while(|&id| id < cap)
                .filter(|&id| g.is_live(id))
                .for_each(&mut offer),
            None => (0..cap)
                .filter(|&id| g.is_live(id) && req.allows(id))
                .for_each(&mut offer),
        }
        top.drain_sorted_into(out);
    }

    /// Fraction of sampled present nodes that `filter` allows (1 when none sampled).
    fn selectivity(&self, g: &Graph, filter: &dyn SlotFilter) -> f64 {
        let cap = g.capacity() as u64;
        if cap == 0 {
            return 1.0;
        }
        if let Some(bits) = filter.bitmap() {
            // Exact for a bitmap (its set bits over the present nodes' count; a
            // set bit on a removed node only overestimates, towards the walk).
            let set: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
            let present = self.present.load(Ordering::Relaxed).max(1) as f64;
            return (set as f64 / present).min(1.0);
        }
        let mut state = 0x0123_4567_89ab_cdef_u64;
        let (mut seen, mut allowed) = (0usize, 0usize);
        for _ in 0..SELECTIVITY_SAMPLES * 4 {
            if seen >= SELECTIVITY_SAMPLES {
                break;
            }
            let id = (splitmix(&mut state) % cap) as SlotId;
            if g.is_live(id) {
                seen += 1;
                allowed += usize::from(filter.allows(id));
            }
        }
        if seen == 0 {
            1.0
        } else {
            allowed as f64 / seen as f64
        }
    }
}
