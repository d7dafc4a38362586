//! The code layer: every node's block (its layer-0 neighbours' 4-bit PQ codes in
//! the fast-scan layout, lane `i` coding the `i`-th id of the node's layer-0 list
//! in the HNSW graph) and each node's own code, packed two to a byte, from which
//! blocks are rebuilt when lists change. The ids are not copied: the walk reads
//! them from the graph's list, which holds them already.

use omen_core::pq::ProductQuantizer;
use omen_core::simd::fastscan::{self, BLOCK};
use omen_core::SlotId;

/// Lanes per block: one fast-scan block of neighbours.
pub const DEGREE: usize = BLOCK;
/// Alignment of block 0 (a cache line). A block is a multiple of 32 bytes, so
/// every block starts on a line or half way through one.
const ALIGN: usize = 64;

/// Blocks of `stride` bytes, one per slot: the neighbours' codes in the fast-scan
/// layout ([`fastscan::set_codes`]). Whether a block is current is the graph's
/// business: a node whose list was written since its block was built carries the
/// graph's changed mark ([`omen_hnsw::GraphView::is_changed`]), and the walk
/// expands it from the graph instead.
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

    /// Block `u`'s bytes (zeros for one never built), or `None` past the end.
    #[inline]
    pub(crate) fn bytes(&self, u: SlotId) -> Option<&[u8]> {
        let at = self.off + u as usize * self.stride;
        if (u as usize) >= self.slots {
            return None;
        }
        self.buf.get(at..at + self.stride)
    }

    /// Grows to `slots` blocks (new ones zero). Capacity doubles, so
    /// a run of small adds copies the blocks a logarithmic number of times; a new
    /// allocation gets huge-page advice before it is touched.
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
        self.buf.resize(self.off + slots * self.stride, 0);
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
    /// `ceil(m / 2)` bytes per slot: code `j` in the low nibble of byte `j / 2`
    /// for even `j`, the high one for odd; zeros for a slot never coded.
    codes: Vec<u8>,
    pub(crate) blocks: Blocks,
}

/// A block's byte length for `m` sub-quantizers: the fast-scan codes of 32 lanes.
pub(crate) fn stride_for(m: usize) -> usize {
    fastscan::block_bytes(m)
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

    /// Bytes of one packed code.
    fn packed(&self) -> usize {
        self.m().div_ceil(2)
    }

    /// Slots with a code (coded or not yet: zeros).
    pub(crate) fn coded_slots(&self) -> usize {
        self.codes.len() / self.packed().max(1)
    }

    /// Bytes held by the codes.
    pub(crate) fn codes_bytes(&self) -> usize {
        self.codes.capacity()
    }

    /// Slot `v`'s code, one value per byte, into `out` (`m` bytes); false (and
    /// `out` zeros) for a slot past the table.
    pub(crate) fn code_into(&self, v: SlotId, out: &mut [u8]) -> bool {
        let p = self.packed();
        let Some(src) = self.codes.get(v as usize * p..(v as usize + 1) * p) else {
            out.fill(0);
            return false;
        };
        for (j, o) in out.iter_mut().enumerate() {
            let b = src.get(j / 2).copied().unwrap_or(0);
            *o = if j % 2 == 0 { b & 0x0f } else { b >> 4 };
        }
        true
    }

    /// Room for `slots` codes without another allocation (exact: a doubling
    /// table left a third of it unused).
    pub(crate) fn reserve_codes(&mut self, slots: usize) {
        let need = slots * self.packed();
        if need > self.codes.len() {
            self.codes.reserve_exact(need - self.codes.len());
        }
    }

    /// Sets slot `v`'s code (`m` values, each < 16), growing the table.
    pub(crate) fn set_code(&mut self, v: SlotId, code: &[u8]) {
        let p = self.packed();
        let end = (v as usize + 1) * p;
        if self.codes.len() < end {
            self.codes.resize(end, 0);
        }
        let dst = &mut self.codes[v as usize * p..end];
        dst.fill(0);
        for (j, &c) in code.iter().enumerate().take(2 * p) {
            dst[j / 2] |= (c & 0x0f) << (4 * (j % 2));
        }
    }

    /// Every slot's code below `slots`, one value per byte (the file layout).
    pub(crate) fn unpacked_codes(&self, slots: usize) -> Vec<u8> {
        let m = self.m();
        let mut out = vec![0u8; slots * m];
        for (v, c) in out.chunks_exact_mut(m.max(1)).enumerate() {
            self.code_into(v as SlotId, c);
        }
        out
    }

    /// Writes into `out` (`stride` bytes) the block of a node whose layer-0 list
    /// is `ids` (at most [`DEGREE`] are coded; lane `i` codes `ids[i]`).
    pub(crate) fn make_block(&self, ids: &[u32], out: &mut Vec<u8>) {
        let stride = stride_for(self.m());
        out.clear();
        out.resize(stride, 0);
        let mut code = vec![0u8; self.m()];
        for (lane, &v) in ids.iter().take(DEGREE).enumerate() {
            self.code_into(v, &mut code);
            fastscan::set_codes(out, lane, &code);
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
        if let Some(top) = u.codes.iter().map(|(v, _)| *v as usize + 1).max() {
            self.reserve_codes(top.max(u.slots));
        }
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
