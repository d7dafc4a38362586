//! Save and load, in the format of `FORMAT.md`. Loading validates every field and
//! returns `Error::Corruption` for anything inconsistent; it never panics on any
//! input (fuzzed by `fuzz/fuzz_targets/ivfpq_load.rs`).

use crate::fastscan::{self, BLOCK};
use crate::pq::ProductQuantizer;
use crate::{bit, set_bit, InvList, IvfPqIndex, IvfPqParams, Members, Model};
use omen_core::codec::{
    check_checksum, crc32, crc32_ieee_legacy, metric_code, metric_from_code, ByteReader, ByteWriter,
};
use omen_core::sync::{self, RwLock};
use omen_core::{Error, Metric, Result, VectorIndex};
use std::io::Write;
use std::path::Path;

/// File magic.
pub const MAGIC: &[u8; 8] = b"OMENIVPQ";
/// Current format version: 2 checksums with CRC-32C; version 1 (still read) used
/// CRC-32/IEEE.
pub const VERSION: u32 = 2;

impl IvfPqIndex {
    /// Serialises the index (parameters, centroids, codebooks, lists, membership).
    /// Writers are held off while the snapshot is taken; searches are not.
    pub fn to_bytes(&self) -> Vec<u8> {
        let _w = sync::lock(&self.writer);
        let p = &self.params;
        let mut w = ByteWriter::new();
        w.bytes(MAGIC)
            .u32(VERSION)
            .u32(self.dim as u32)
            .u8(metric_code(self.metric))
            .u8(p.nbits as u8)
            .u32(p.nlist as u32)
            .u32(p.m as u32)
            .u64(p.train_size as u64)
            .u64(p.rerank_factor as u64)
            .u64(p.nprobe as u64)
            .u64(p.seed)
            .u64(p.kmeans_iters as u64);
        let model = self.snapshot();
        let mem = sync::read(&self.members);
        let words = mem.present.len().max(mem.known.len());
        w.u64(words as u64);
        for v in [&mem.present, &mem.known] {
            for i in 0..words {
                w.u64(v.get(i).copied().unwrap_or(0));
            }
        }
        w.u64(mem.pending.len() as u64).u32s(&mem.pending);
        match &model {
            None => {
                w.u8(0);
            }
            Some(model) => {
                w.u8(1).f32s(&model.coarse).f32s(model.pq.codebooks());
                for l in &model.lists {
                    let l = sync::read(l);
                    w.u64(l.ids.len() as u64).u32s(&l.ids).bytes(&l.codes);
                }
            }
        }
        let crc = w.crc32_from(0);
        w.u32(crc);
        w.finish()
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
        let (body, trailer) = bytes.split_at(body_len);
        let mut r = ByteReader::new(body, file);
        r.expect_magic(MAGIC, "an Omen IVF-PQ index")?;
        let version = r.u32("version")?;
        let computed = match version {
            1 => crc32_ieee_legacy(body),
            VERSION => crc32(body),
            v => return Err(r.error_at(8, format!("unsupported version {v}"))),
        };
        let stored = ByteReader::at(trailer, file, body_len as u64).u32("checksum")?;
        check_checksum(stored, computed, file, body_len as u64, "index")?;
        let dim = r.u32("dim")? as usize;
        let code = r.u8("metric")?;
        let metric = metric_from_code(code)
            .ok_or_else(|| r.error_at(16, format!("unknown metric code {code}")))?;
        let nbits = r.u8("nbits")? as u32;
        let nlist = r.u32("nlist")? as usize;
        let m = r.u32("m")? as usize;
        let as_usize = |r: &ByteReader<'_>, v: u64| {
            usize::try_from(v).map_err(|_| r.error_at(r.position() - 8, "value out of range"))
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
            .map_err(|e| r.error_at(12, format!("invalid parameters: {e}")))?;

        let words = r.count_u64(16, "bitset words")?;
        let present = r.u64s(words, "present bitset")?;
        let known = r.u64s(words, "known bitset")?;
        let slot_bound = words as u64 * 64;
        if present.iter().zip(&known).any(|(p, k)| p & !k != 0) {
            return Err(r.error("a present slot is not marked as added"));
        }
        let at = r.position();
        let npending = r.count_u64(4, "pending count")?;
        let pending = r.u32s(npending, "pending slots")?;
        let mut pending_bits = Vec::new();
        for (i, &s) in pending.iter().enumerate() {
            let off = at + 8 + 4 * i;
            if s as u64 >= slot_bound || !bit(&present, s) {
                return Err(
                    r.error_at(off, format!("pending slot {s} out of range or not present"))
                );
            }
            if bit(&pending_bits, s) {
                return Err(r.error_at(off, format!("pending slot {s} listed twice")));
            }
            set_bit(&mut pending_bits, s, true);
        }
        let len = present.iter().map(|w| w.count_ones() as usize).sum();
        let trained = match r.u8("trained flag")? {
            0 => false,
            1 => true,
            x => return Err(r.error_at(r.position() - 1, format!("bad trained flag {x}"))),
        };
        let mut seen: Vec<u64> = Vec::new();
        let model = if trained {
            let coarse = r
                .finite_f32s(nlist.saturating_mul(dim), "coarse centroids")?
                .into_owned();
            let books = r
                .finite_f32s((1usize << nbits).saturating_mul(dim), "codebooks")?
                .into_owned();
            let pq = ProductQuantizer::from_parts(dim, m, nbits, books)
                .map_err(|e| r.error(format!("codebooks: {e}")))?;
            let mut lists = Vec::with_capacity(nlist);
            let bb = fastscan::block_bytes(m);
            let l2_terms = metric == Metric::L2;
            let mut term_table = vec![0f32; if l2_terms { m << nbits } else { 0 }];
            for li in 0..nlist {
                let at = r.position();
                let n = r.count_u64(4, "list length")?;
                let ids = r.u32s(n, "list ids")?;
                for (i, &s) in ids.iter().enumerate() {
                    let off = at + 8 + 4 * i;
                    if s as u64 >= slot_bound || !bit(&known, s) {
                        return Err(r.error_at(
                            off,
                            format!("list {li}: slot {s} out of range or never added"),
                        ));
                    }
                    if bit(&seen, s) || bit(&pending_bits, s) {
                        return Err(r.error_at(off, format!("list {li}: slot {s} stored twice")));
                    }
                    set_bit(&mut seen, s, true);
                }
                let code_len = if nbits == 8 {
                    n * m
                } else {
                    n.div_ceil(BLOCK) * bb
                };
                let code_at = r.position();
                let codes = r.bytes(code_len, "list codes")?.to_vec();
                if nbits == 4 {
                    check_padding(&codes, n, m)
                        .map_err(|d| r.error_at(code_at, format!("list {li}: {d}")))?;
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
        r.expect_end("the index, before the checksum")?;
        // Every present slot must be findable: pending (exact scan) or in a list.
        for (w, &p) in present.iter().enumerate() {
            let reach =
                pending_bits.get(w).copied().unwrap_or(0) | seen.get(w).copied().unwrap_or(0);
            if p & !reach != 0 {
                let s = w * 64 + (p & !reach).trailing_zeros() as usize;
                return Err(r.error(format!("present slot {s} is neither pending nor in a list")));
            }
        }
        // Entries of removed slots still in the lists.
        let dead = seen
            .iter()
            .enumerate()
            .map(|(w, &x)| (x & !present.get(w).copied().unwrap_or(0)).count_ones() as usize)
            .sum();
        let members = Members {
            present,
            known,
            pending_bits,
            pending,
            len,
            dead,
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
