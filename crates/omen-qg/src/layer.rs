//! The code layer: every node's block (its layer-0 neighbours' ids and their 4-bit
//! PQ codes in the fast-scan layout) and each node's own code, from which blocks
//! are rebuilt when lists change.

use omen_core::pq::ProductQuantizer;
use omen_core::simd::fastscan::{self, BLOCK};
use omen_core::SlotId;

/// Lanes per block: one fast-scan block of neighbours.
pub const DEGREE: usize = BLOCK;
/// An empty lane's id.
pub const NO_NODE: u32 = u32::MAX;
/// Lane 0's id in a block not built yet. (A node whose first neighbour has this
/// slot number, 2^32 - 2, reads as unbuilt and is expanded from the graph: slower,
/// still correct.)
pub const UNBUILT: u32 = u32::MAX - 1;
/// Block alignment (a cache line), so that a block spans as few lines as it can.
const ALIGN: usize = 64;

/// Blocks of `stride` bytes, one per slot, each starting on a cache line: `32`
/// little-endian `u32` ids (unused lanes [`NO_NODE`]), then the neighbours' codes in
/// the fast-scan layout ([`fastscan::set_codes`]).
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    buf: Vec<u8>,
    /// Where block 0 starts in `buf` (the allocation is over-sized by a line).
    off: usize,
    stride: usize,
    slots: usize,
}

impl Blocks {
    pub(crate) fn new(stride: usize) -> Blocks {
        Blocks {
            buf: Vec::new(),
            off: 0,
            stride,
            slots: 0,
        }
    }

    /// Slots with a block (built or empty).
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Block `u`, or `None` past the end or before it is built (a node whose add
    /// is in flight: the walk expands it from the graph instead). An unbuilt
    /// block's lane 0 holds [`UNBUILT`]: the mark is read from the block's first
    /// line, which the walk loads anyway (a separate flag array cost a cache miss
    /// per visit).
    #[inline]
    pub(crate) fn get(&self, u: SlotId) -> Option<&[u8]> {
        self.bytes(u).filter(|b| lane_id(b, 0) != UNBUILT)
    }

    /// Block `u`'s bytes, built or not, without reading them: what a prefetch
    /// takes (reading the mark there would wait for the very miss the prefetch
    /// is meant to hide).
    #[inline]
    pub(crate) fn bytes(&self, u: SlotId) -> Option<&[u8]> {
        let at = self.off + u as usize * self.stride;
        if (u as usize) >= self.slots {
            return None;
        }
        self.buf.get(at..at + self.stride)
    }

    /// Grows to `slots` blocks (new ones empty: every lane [`NO_NODE`]). Capacity
    /// doubles, so a run of small adds copies the blocks a logarithmic number of
    /// times; a new allocation gets huge-page advice before it is touched.
    pub(crate) fn grow_to(&mut self, slots: usize) {
        if slots <= self.slots {
            return;
        }
        let need = slots * self.stride + ALIGN;
        if need > self.buf.capacity() {
            let cap = need.max(self.buf.capacity().saturating_mul(2));
            let mut buf: Vec<u8> = Vec::with_capacity(cap);
            advise_huge_pages(buf.spare_capacity_mut());
            let off = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
            buf.resize(off, 0);
            let used = self.slots * self.stride;
            buf.extend_from_slice(&self.buf[self.off..self.off + used]);
            self.buf = buf;
            self.off = off;
        }
        let mut empty = empty_block(self.stride);
        empty[..4].copy_from_slice(&UNBUILT.to_le_bytes());
        for _ in self.slots..slots {
            self.buf.extend_from_slice(&empty);
        }
        self.slots = slots;
    }

    /// Overwrites block `u` (which must exist) with `bytes` (`stride` of them).
    pub(crate) fn set(&mut self, u: SlotId, bytes: &[u8]) {
        let at = self.off + u as usize * self.stride;
        if let Some(dst) = self.buf.get_mut(at..at + self.stride) {
            dst.copy_from_slice(bytes);
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

fn empty_block(stride: usize) -> Vec<u8> {
    let mut b = vec![0u8; stride];
    for lane in 0..DEGREE {
        b[4 * lane..4 * lane + 4].copy_from_slice(&NO_NODE.to_le_bytes());
    }
    b
}

/// The id in `lane` of a block.
#[inline(always)]
pub(crate) fn lane_id(block: &[u8], lane: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&block[4 * lane..4 * lane + 4]);
    u32::from_le_bytes(w)
}

/// Asks for transparent huge pages over a fresh allocation (THP is commonly in
/// `madvise` mode): a walk reads blocks at random, and with 4 KiB pages nearly
/// every visit missed the TLB (measured in `qg_probe`: the advice given after
/// the pages were touched left them small, and the walk 25 % slower).
fn advise_huge_pages<T>(v: &[T]) {
    #[cfg(all(target_os = "linux", not(loom)))]
    {
        let (start, len) = (v.as_ptr() as usize, std::mem::size_of_val(v));
        let page = 4096;
        let aligned = start.div_ceil(page) * page;
        if len > (aligned - start) + 2 * 1024 * 1024 {
            // SAFETY: madvise gives advice about pages of this process's own
            // allocation (rounded in to whole pages); MADV_HUGEPAGE changes no byte
            // of it and cannot fault. A failure (THP off) is harmless and ignored.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    len - (aligned - start),
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(all(target_os = "linux", not(loom))))]
    let _ = v;
}

/// The trained quantizer, every coded slot's code and the blocks.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) pq: ProductQuantizer,
    /// `m` bytes per slot (one code, < 16, per byte); zeros for a slot never coded.
    pub(crate) codes: Vec<u8>,
    pub(crate) blocks: Blocks,
}

/// A block's byte length for `m` sub-quantizers, rounded up to whole lines.
pub(crate) fn stride_for(m: usize) -> usize {
    (4 * DEGREE + fastscan::block_bytes(m)).div_ceil(ALIGN) * ALIGN
}

impl Layer {
    pub(crate) fn new(pq: ProductQuantizer) -> Layer {
        let stride = stride_for(pq.m());
        Layer {
            pq,
            codes: Vec::new(),
            blocks: Blocks::new(stride),
        }
    }

    pub(crate) fn m(&self) -> usize {
        self.pq.m()
    }

    /// Slots with a code (coded or not yet: zeros).
    pub(crate) fn coded_slots(&self) -> usize {
        self.codes.len() / self.m().max(1)
    }

    /// Slot `v`'s code.
    pub(crate) fn code(&self, v: SlotId) -> Option<&[u8]> {
        let m = self.m();
        self.codes.get(v as usize * m..(v as usize + 1) * m)
    }

    /// Sets slot `v`'s code, growing the table.
    pub(crate) fn set_code(&mut self, v: SlotId, code: &[u8]) {
        let m = self.m();
        let end = (v as usize + 1) * m;
        if self.codes.len() < end {
            self.codes.resize(end, 0);
        }
        self.codes[v as usize * m..end].copy_from_slice(code);
    }

    /// Writes the block of a node whose neighbours are `ids` (at most [`DEGREE`]
    /// are kept) into `out` (`stride` bytes), with their codes.
    pub(crate) fn make_block(&self, ids: &[u32], out: &mut Vec<u8>) {
        let stride = stride_for(self.m());
        out.clear();
        out.extend_from_slice(&empty_block(stride));
        let cb = fastscan::block_bytes(self.m());
        let zero = vec![0u8; self.m()];
        for (lane, &v) in ids.iter().take(DEGREE).enumerate() {
            out[4 * lane..4 * lane + 4].copy_from_slice(&v.to_le_bytes());
            let code = self.code(v).unwrap_or(&zero);
            fastscan::set_codes(&mut out[4 * DEGREE..4 * DEGREE + cb], lane, code);
        }
    }
}

/// A batch of new codes and rebuilt blocks, computed under the read lock and
/// applied under the write lock (so that a search sees a block either before or
/// after, never half-written).
#[derive(Debug, Default)]
pub(crate) struct Update {
    pub(crate) codes: Vec<(SlotId, Vec<u8>)>,
    pub(crate) blocks: Vec<(SlotId, Vec<u8>)>,
    /// Blocks to exist after the update.
    pub(crate) slots: usize,
}

impl Layer {
    pub(crate) fn apply(&mut self, u: Update) {
        for (v, c) in &u.codes {
            self.set_code(*v, c);
        }
        let top = u
            .blocks
            .iter()
            .map(|(s, _)| *s as usize + 1)
            .max()
            .unwrap_or(0)
            .max(u.slots);
        self.blocks.grow_to(top);
        for (s, b) in &u.blocks {
            self.blocks.set(*s, b);
        }
    }
}
