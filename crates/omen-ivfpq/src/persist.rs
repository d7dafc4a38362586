//! Save and load, in the format of `FORMAT.md`. Loading validates every field and
//! returns `Error::Corruption` for anything inconsistent; it never panics on any
//! input (fuzzed by `fuzz/fuzz_targets/ivfpq_load.rs`).

use crate::fastscan::{self, BLOCK};
use crate::pq::ProductQuantizer;
use crate::{bit, set_bit, InvList, IvfPqIndex, IvfPqParams, Members, Model};
use omen_core::sync::{self, RwLock};
use omen_core::{Error, Metric, Result, VectorIndex};
use std::io::Write;
use std::path::Path;

/// File magic.
pub const MAGIC: &[u8; 8] = b"OMENIVPQ";
/// Current format version.
pub const VERSION: u32 = 1;

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::L2 => 0,
        Metric::InnerProduct => 1,
        _ => 2,
    }
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

struct R<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a Path,
}

impl<'a> R<'a> {
    fn err(&self, offset: usize, detail: impl Into<String>) -> Error {
        Error::corruption(self.file, offset as u64, detail)
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(self.err(self.pos, format!("truncated: {what} needs {n} bytes"))),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of `item_bytes` each, refused if the rest of the file
    /// cannot hold them (so no allocation is ever sized by an unchecked number).
    fn count(&mut self, item_bytes: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let room = (self.buf.len() - self.pos) / item_bytes.max(1);
        if n > room as u64 {
            return Err(self.err(at, format!("{what} = {n} exceeds the file size")));
        }
        Ok(n as usize)
    }
    fn u64s(&mut self, n: usize, what: &str) -> Result<Vec<u64>> {
        let b = self.take(n.saturating_mul(8), what)?;
        Ok(b.chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect())
    }
    fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>> {
        let b = self.take(n.saturating_mul(4), what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let at = self.pos;
        let b = self.take(n.saturating_mul(4), what)?;
        let v: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(self.err(at + 4 * i, format!("non-finite float in {what}")));
        }
        Ok(v)
    }
}

impl IvfPqIndex {
    /// Serialises the index (parameters, centroids, codebooks, lists, membership).
    /// Writers are held off while the snapshot is taken; searches are not.
    pub fn to_bytes(&self) -> Vec<u8> {
        let _w = sync::lock(&self.writer);
        let p = &self.params;
        let mut w = W(Vec::new());
        w.0.extend_from_slice(MAGIC);
        w.u32(VERSION);
        w.u32(self.dim as u32);
        w.u8(metric_code(self.metric));
        w.u8(p.nbits as u8);
        w.u32(p.nlist as u32);
        w.u32(p.m as u32);
        w.u64(p.train_size as u64);
        w.u64(p.rerank_factor as u64);
        w.u64(p.nprobe as u64);
        w.u64(p.seed);
        w.u64(p.kmeans_iters as u64);
        let model = self.snapshot();
        let mem = sync::read(&self.members);
        let words = mem.present.len().max(mem.known.len());
        w.u64(words as u64);
        for v in [&mem.present, &mem.known] {
            for i in 0..words {
                w.u64(v.get(i).copied().unwrap_or(0));
            }
        }
        w.u64(mem.pending.len() as u64);
        for &s in &mem.pending {
            w.u32(s);
        }
        match &model {
            None => w.u8(0),
            Some(model) => {
                w.u8(1);
                w.f32s(&model.coarse);
                w.f32s(model.pq.codebooks());
                for l in &model.lists {
                    let l = sync::read(l);
                    w.u64(l.ids.len() as u64);
                    for &s in &l.ids {
                        w.u32(s);
                    }
                    w.0.extend_from_slice(&l.codes);
                }
            }
        }
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        w.0
    }

    /// Writes [`to_bytes`](Self::to_bytes) to `path` (through a temporary file that
    /// is synced and renamed over it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes();
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(())
    }

    /// Reads an index written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<IvfPqIndex> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates [`to_bytes`](Self::to_bytes) output; `file` names the
    /// source in `Corruption` errors.
    pub fn from_bytes(bytes: &[u8], file: &Path) -> Result<IvfPqIndex> {
        if bytes.len() < MAGIC.len() + 8 {
            return Err(Error::corruption(file, 0, "file too short for a header"));
        }
        let body_len = bytes.len() - 4;
        let stored = u32::from_le_bytes([
            bytes[body_len],
            bytes[body_len + 1],
            bytes[body_len + 2],
            bytes[body_len + 3],
        ]);
        if &bytes[..8] != MAGIC {
            return Err(Error::corruption(file, 0, "bad magic"));
        }
        if crc32fast::hash(&bytes[..body_len]) != stored {
            return Err(Error::corruption(file, body_len as u64, "CRC32 mismatch"));
        }
        let mut r = R {
            buf: &bytes[..body_len],
            pos: 8,
            file,
        };
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(r.err(8, format!("unsupported version {version}")));
        }
        let dim = r.u32("dim")? as usize;
        let metric = match r.u8("metric")? {
            0 => Metric::L2,
            1 => Metric::InnerProduct,
            2 => Metric::Cosine,
            x => return Err(r.err(r.pos - 1, format!("unknown metric code {x}"))),
        };
        let nbits = r.u8("nbits")? as u32;
        let nlist = r.u32("nlist")? as usize;
        let m = r.u32("m")? as usize;
        let as_usize = |r: &R<'_>, v: u64| {
            usize::try_from(v).map_err(|_| r.err(r.pos - 8, "value out of range"))
        };
        let train_size = r.u64("train_size").and_then(|v| as_usize(&r, v))?;
        let rerank_factor = r.u64("rerank_factor").and_then(|v| as_usize(&r, v))?;
        let nprobe = r.u64("nprobe").and_then(|v| as_usize(&r, v))?;
        let seed = r.u64("seed")?;
        let kmeans_iters = r.u64("kmeans_iters").and_then(|v| as_usize(&r, v))?;
        let params = IvfPqParams {
            nlist,
            m,
            nbits,
            train_size,
            rerank_factor,
            nprobe,
            seed,
            kmeans_iters,
        };
        params
            .validate(dim)
            .map_err(|e| r.err(12, format!("invalid parameters: {e}")))?;

        let words = r.count(16, "bitset words")?;
        let present = r.u64s(words, "present bitset")?;
        let known = r.u64s(words, "known bitset")?;
        let slot_bound = words as u64 * 64;
        if present.iter().zip(&known).any(|(p, k)| p & !k != 0) {
            return Err(r.err(r.pos, "a present slot is not marked as added"));
        }
        let at = r.pos;
        let npending = r.count(4, "pending count")?;
        let pending = r.u32s(npending, "pending slots")?;
        let mut pending_bits = Vec::new();
        for (i, &s) in pending.iter().enumerate() {
            let off = at + 8 + 4 * i;
            if s as u64 >= slot_bound || !bit(&present, s) {
                return Err(r.err(off, format!("pending slot {s} out of range or not present")));
            }
            if bit(&pending_bits, s) {
                return Err(r.err(off, format!("pending slot {s} listed twice")));
            }
            set_bit(&mut pending_bits, s, true);
        }
        let len = present.iter().map(|w| w.count_ones() as usize).sum();
        let trained = match r.u8("trained flag")? {
            0 => false,
            1 => true,
            x => return Err(r.err(r.pos - 1, format!("bad trained flag {x}"))),
        };
        let mut seen: Vec<u64> = Vec::new();
        let model = if trained {
            let coarse = r.f32s(nlist.saturating_mul(dim), "coarse centroids")?;
            let books = r.f32s((1usize << nbits).saturating_mul(dim), "codebooks")?;
            let pq = ProductQuantizer::from_parts(dim, m, nbits, books)
                .map_err(|e| r.err(r.pos, format!("codebooks: {e}")))?;
            let mut lists = Vec::with_capacity(nlist);
            let bb = fastscan::block_bytes(m);
            let l2_terms = metric == Metric::L2;
            let mut term_table = vec![0f32; if l2_terms { m << nbits } else { 0 }];
            for li in 0..nlist {
                let at = r.pos;
                let n = r.count(4, "list length")?;
                let ids = r.u32s(n, "list ids")?;
                for (i, &s) in ids.iter().enumerate() {
                    let off = at + 8 + 4 * i;
                    if s as u64 >= slot_bound || !bit(&known, s) {
                        return Err(r.err(
                            off,
                            format!("list {li}: slot {s} out of range or never added"),
                        ));
                    }
                    if bit(&seen, s) || bit(&pending_bits, s) {
                        return Err(r.err(off, format!("list {li}: slot {s} stored twice")));
                    }
                    set_bit(&mut seen, s, true);
                }
                let code_len = if nbits == 8 {
                    n * m
                } else {
                    n.div_ceil(BLOCK) * bb
                };
                let code_at = r.pos;
                let codes = r.take(code_len, "list codes")?.to_vec();
                if nbits == 4 {
                    check_padding(&codes, n, m)
                        .map_err(|d| r.err(code_at, format!("list {li}: {d}")))?;
                }
                let terms = if l2_terms {
                    let c = &coarse[li * dim..(li + 1) * dim];
                    pq.list_terms_table(c, &mut term_table);
                    list_terms(&pq, &term_table, n, &codes)
                } else {
                    Vec::new()
                };
                lists.push(RwLock::new(InvList { ids, codes, terms }));
            }
            Some(Model {
                coarse,
                pq,
                lists,
                l2_terms,
            })
        } else {
            None
        };
        if r.pos != r.buf.len() {
            return Err(r.err(r.pos, "trailing bytes before the checksum"));
        }
        // Every present slot must be findable: pending (exact scan) or in a list.
        for (w, &p) in present.iter().enumerate() {
            let reach =
                pending_bits.get(w).copied().unwrap_or(0) | seen.get(w).copied().unwrap_or(0);
            if p & !reach != 0 {
                let s = w * 64 + (p & !reach).trailing_zeros() as usize;
                return Err(r.err(
                    r.pos,
                    format!("present slot {s} is neither pending nor in a list"),
                ));
            }
        }
        let members = Members {
            present,
            known,
            pending_bits,
            pending,
            len,
        };
        let idx = IvfPqIndex::from_state(dim, metric, params, model, members);
        debug_assert_eq!(idx.len(), len);
        Ok(idx)
    }
}

/// The L2 terms of a list's `n` entries (not stored in the file): the same
/// arithmetic, in the same order, as when the entries were added, so a loaded
/// index estimates exactly as the saved one did.
fn list_terms(pq: &ProductQuantizer, table: &[f32], n: usize, codes: &[u8]) -> Vec<f32> {
    let m = pq.m();
    if pq.nbits() == 8 {
        return codes
            .chunks_exact(m)
            .take(n)
            .map(|c| pq.code_term(table, c.iter().copied()))
            .collect();
    }
    let bb = fastscan::block_bytes(m);
    let mut terms = vec![0f32; n.div_ceil(BLOCK) * BLOCK];
    for (i, t) in terms.iter_mut().enumerate().take(n) {
        if let Some(block) = codes.get((i / BLOCK) * bb..(i / BLOCK + 1) * bb) {
            *t = pq.code_term(
                table,
                (0..m).map(|j| fastscan::get_code(block, i % BLOCK, j)),
            );
        }
    }
    terms
}

/// 4-bit blocks: codes of padding vectors and padding sub-quantizers must be zero
/// (the scan relies on the padding sub-quantizer's code being 0).
fn check_padding(codes: &[u8], n: usize, m: usize) -> std::result::Result<(), String> {
    let bb = fastscan::block_bytes(m);
    let mp = fastscan::padded_m(m);
    for (b, block) in codes.chunks_exact(bb).enumerate() {
        for i in 0..BLOCK {
            let live = b * BLOCK + i < n;
            for j in 0..mp {
                if (!live || j >= m) && fastscan::get_code(block, i, j) != 0 {
                    return Err(format!("non-zero padding code in block {b}"));
                }
            }
        }
    }
    Ok(())
}
