//! The graph file: see `FORMAT.md` for the byte layout.

use crate::graph::{
    level_of, pack, read_list, status_of, write_list, Graph, ABSENT, DELETED, MAX_LEVEL, PRESENT,
    PURGED,
};
use crate::{entry_parts, entry_word, HnswIndex, HnswParams, NO_ENTRY};
use omen_core::codec::{
    check_checksum, crc32, crc32_ieee_legacy, metric_code, metric_from_code, ByteReader, ByteWriter,
};
use omen_core::sync::atomic::Ordering;
use omen_core::sync::write;
use omen_core::{Error, Result};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: [u8; 8] = *b"OMENHNSW";
/// Version 2 checksums with CRC-32C; version 1 (still read) used CRC-32/IEEE.
const VERSION: u32 = 2;
const HEADER: usize = 72;
/// Status bytes in the file (decoupled from the in-memory encoding).
const F_ABSENT: u8 = 0;
const F_PRESENT: u8 = 2;
const F_DELETED: u8 = 3;
const F_PURGED: u8 = 4;

impl HnswIndex {
    /// Writes the graph (parameters, node states, levels and links; not the
    /// vectors, which belong to the storage) in the format of `FORMAT.md`. Takes a
    /// consistent snapshot: it waits for inserts in flight and holds back new ones
    /// while it copies.
    pub fn save<W: Write>(&self, w: &mut W) -> Result<()> {
        let bytes = self.to_bytes();
        w.write_all(&bytes)?;
        Ok(())
    }

    /// The bytes [`save`](Self::save) writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let g = write(&self.graph);
        let cap = g.capacity();
        let nodes = (0..cap as u32)
            .rev()
            .find(|&id| g.node(id).is_some_and(|n| status_of(n.word()) != ABSENT))
            .map_or(0, |id| id as usize + 1);
        let (mut present, mut deleted) = (0u32, 0u32);
        let mut body = ByteWriter::with_capacity(nodes * (2 + 4 * (self.params.m + 2)));
        let mut ids = Vec::new();
        for id in 0..nodes as u32 {
            let Some(n) = g.node(id) else { break };
            let word = n.word();
            let status = match status_of(word) {
                ABSENT => F_ABSENT,
                PRESENT => {
                    present += 1;
                    F_PRESENT
                }
                DELETED => {
                    deleted += 1;
                    F_DELETED
                }
                // Reserved by an unfinished add: not present, but links may point
                // at it, so it is kept as a repaired-removed node.
                _ => F_PURGED,
            };
            let level = level_of(word);
            body.u8(status)
                .u8(if status == F_ABSENT { 0 } else { level as u8 });
            if status == F_ABSENT {
                continue;
            }
            for lc in 0..=level {
                match g.list(id, lc) {
                    Some(list) => read_list(list, &mut ids),
                    None => ids.clear(),
                }
                body.u16(ids.len() as u16).u32s(&ids);
            }
        }
        let ep = self.entry.load(Ordering::Acquire);
        let (ep_slot, ep_level) = if ep == NO_ENTRY {
            (u32::MAX, 0)
        } else {
            let (s, l) = entry_parts(ep);
            (s, l as u32)
        };
        let p = &self.params;
        let mut w = ByteWriter::with_capacity(HEADER + body.len() + 4);
        w.bytes(&MAGIC)
            .u32(VERSION)
            .u32(self.dim as u32)
            .u8(metric_code(self.metric))
            .u8(u8::from(p.keep_pruned) | (u8::from(p.fill_layer0) << 1))
            .zeros(2)
            .u32(p.m as u32)
            .u32(p.m0() as u32)
            .u32(p.ef_construction as u32)
            .u32(p.ef_search as u32)
            .u64(p.seed)
            .f64(p.repair_threshold)
            .u32(nodes as u32)
            .u32(present)
            .u32(deleted)
            .u32(ep_slot)
            .u32(ep_level);
        debug_assert_eq!(w.len(), HEADER);
        w.bytes(body.as_slice());
        let crc = w.crc32_from(0);
        w.u32(crc);
        w.finish()
    }

    /// Reads a graph written by [`save`](Self::save). `file` names the source in
    /// errors. Every field and link is validated: damage gives
    /// [`Error::Corruption`], never a panic.
    pub fn load<R: Read>(r: &mut R, file: &Path) -> Result<HnswIndex> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).map_err(|e| Error::io(file, e))?;
        Self::from_bytes(&bytes, file)
    }

    /// [`load`](Self::load) from a byte slice.
    pub fn from_bytes(bytes: &[u8], file: &Path) -> Result<HnswIndex> {
        if bytes.len() < HEADER + 4 {
            return Err(Error::corruption(
                file,
                0,
                format!("{} bytes is shorter than the header", bytes.len()),
            ));
        }
        let body_end = bytes.len() - 4;
        let (body, trailer) = bytes.split_at(body_end);
        let mut r = ByteReader::new(body, file);
        r.expect_magic(&MAGIC, "an Omen HNSW graph")?;
        let version = r.u32("version")?;
        let computed = match version {
            1 => crc32_ieee_legacy(body),
            VERSION => crc32(body),
            v => return Err(r.error_at(8, format!("unsupported version {v}"))),
        };
        let stored = ByteReader::at(trailer, file, body_end as u64).u32("checksum")?;
        // The fuzzer cannot forge checksums; skipping the check lets it reach the
        // validation behind it.
        if !cfg!(fuzzing) {
            check_checksum(stored, computed, file, body_end as u64, "graph")?;
        }
        let dim = r.u32("dimension")? as usize;
        if dim == 0 {
            return Err(r.error_at(12, "dimension 0"));
        }
        let code = r.u8("metric")?;
        let metric = metric_from_code(code)
            .ok_or_else(|| r.error_at(16, format!("unknown metric code {code}")))?;
        // Bit 0: keep_pruned; bit 1: fill_layer0 (clear in files written before
        // it existed).
        let flags = r.flags("flags", &["keep_pruned", "fill_layer0"])?;
        let keep_pruned = flags & 1 != 0;
        let fill_layer0 = flags & 2 != 0;
        r.zeros(2, "reserved bytes")?;
        let m = r.u32("M")? as usize;
        let m0 = r.u32("M0")? as usize;
        let params = HnswParams {
            m,
            ef_construction: r.u32("ef_construction")? as usize,
            ef_search: r.u32("ef_search")? as usize,
            seed: r.u64("seed")?,
            keep_pruned,
            fill_layer0,
            repair_threshold: r.f64("repair_threshold")?,
        };
        params
            .validate()
            .map_err(|e| r.error_at(20, format!("parameters: {e}")))?;
        if m0 != params.m0() {
            return Err(r.error_at(24, format!("M0 = {m0} is not 2·M = {}", params.m0())));
        }
        let nodes = r.u32("node count")? as usize;
        let want_present = r.u32("present count")?;
        let want_deleted = r.u32("removed count")?;
        let ep_slot = r.u32("entry point")?;
        let ep_level = r.u32("entry level")? as usize;
        // Every record takes at least two bytes: a count larger than that is a lie
        // that would otherwise allocate without bound.
        if nodes > (body_end - HEADER) / 2 {
            return Err(r.error_at(52, format!("{nodes} nodes cannot fit in the file")));
        }
        let mut g = Graph::new(m, m0);
        g.grow_to(nodes);
        let mut offsets = Vec::with_capacity(nodes);
        let mut ids = Vec::new();
        let (mut present, mut deleted, mut max_level) = (0u32, 0u32, None::<usize>);
        // The highest level of a present node: the entry point is at least that
        // high (a repair moves it off removed nodes, which may stand higher).
        let mut max_present_level = 0usize;
        for id in 0..nodes as u32 {
            let at = r.position();
            offsets.push(at);
            let status = match r.u8("node status")? {
                F_ABSENT => ABSENT,
                F_PRESENT => PRESENT,
                F_DELETED => DELETED,
                F_PURGED => PURGED,
                s => return Err(r.error_at(at, format!("node {id}: unknown status {s}"))),
            };
            let level = r.u8("node level")? as usize;
            if status == ABSENT {
                if level != 0 {
                    return Err(r.error_at(at, format!("absent node {id} has level {level}")));
                }
                continue;
            }
            if level > MAX_LEVEL {
                return Err(r.error_at(at, format!("node {id}: level {level} above {MAX_LEVEL}")));
            }
            present += u32::from(status == PRESENT);
            deleted += u32::from(status == DELETED);
            max_level = max_level.max(Some(level));
            if status == PRESENT {
                max_present_level = max_present_level.max(level);
            }
            g.set_levels(id, level);
            for lc in 0..=level {
                let count = r.u16("link count")? as usize;
                if count > g.cap(lc) {
                    return Err(r.error_at(
                        at,
                        format!(
                            "node {id} level {lc}: {count} links, capacity {}",
                            g.cap(lc)
                        ),
                    ));
                }
                ids.clear();
                for _ in 0..count {
                    let t = r.u32("link")?;
                    if t as usize >= nodes || t == id {
                        return Err(r.error_at(at, format!("node {id} level {lc}: bad link {t}")));
                    }
                    ids.push(t);
                }
                if let Some(list) = g.list(id, lc) {
                    write_list(list, ids.iter().copied());
                }
            }
            if let Some(n) = g.node(id) {
                n.state.store(pack(status, level), Ordering::Release);
            }
            g.set_live(id, status == PRESENT);
        }
        r.expect_end("the node records")?;
        // Links must point at nodes that exist on the link's level: a search follows
        // them without checking.
        for id in 0..nodes as u32 {
            let word = g.node(id).map_or(0, |n| n.word());
            if status_of(word) == ABSENT {
                continue;
            }
            for lc in 0..=level_of(word) {
                match g.list(id, lc) {
                    Some(list) => read_list(list, &mut ids),
                    None => ids.clear(),
                }
                for &t in &ids {
                    let tw = g.node(t).map_or(0, |n| n.word());
                    if status_of(tw) == ABSENT || level_of(tw) < lc {
                        return Err(r.error_at(
                            offsets[id as usize],
                            format!("node {id} level {lc}: link {t} does not exist on that level"),
                        ));
                    }
                }
            }
        }
        if present != want_present || deleted != want_deleted {
            return Err(r.error_at(
                52,
                format!(
                    "header counts {want_present} present / {want_deleted} removed, records hold {present} / {deleted}"
                ),
            ));
        }
        let entry = match max_level {
            None if ep_slot == u32::MAX => NO_ENTRY,
            None => return Err(r.error_at(64, "entry point in an empty graph")),
            Some(_) => {
                let ew = g.node(ep_slot).map_or(0, |n| n.word());
                if status_of(ew) == ABSENT
                    || level_of(ew) != ep_level
                    || ep_level < max_present_level
                {
                    return Err(r.error_at(
                        64,
                        format!(
                            "entry point {ep_slot} at level {ep_level} is not a node of that level \
                             at or above every present node (top present level {max_present_level})"
                        ),
                    ));
                }
                entry_word(ep_slot, ep_level)
            }
        };
        let index = HnswIndex::build(dim, metric, params, g);
        index.entry.store(entry, Ordering::Release);
        index.present.store(present as usize, Ordering::Release);
        index.tombstones.store(deleted as usize, Ordering::Release);
        {
            let mut rng = omen_core::sync::lock(&index.rng);
            // A loaded index must not replay the level sequence it was built with.
            *rng ^= (nodes as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        Ok(index)
    }
}
