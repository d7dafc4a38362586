//! The graph file: see `FORMAT.md` for the byte layout.

use crate::graph::{
    level_of, pack, read_list, status_of, write_list, Graph, ABSENT, DELETED, MAX_LEVEL, PRESENT,
    PURGED,
};
use crate::{entry_parts, entry_word, HnswIndex, HnswParams, NO_ENTRY};
use omen_core::sync::atomic::Ordering;
use omen_core::sync::write;
use omen_core::{Error, Metric, Result};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: [u8; 8] = *b"OMENHNSW";
const VERSION: u32 = 1;
const HEADER: usize = 72;
/// Status bytes in the file (decoupled from the in-memory encoding).
const F_ABSENT: u8 = 0;
const F_PRESENT: u8 = 2;
const F_DELETED: u8 = 3;
const F_PURGED: u8 = 4;

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::L2 => 0,
        Metric::InnerProduct => 1,
        // Cosine, and any later metric: the engine refuses to save what it cannot name.
        _ => 2,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a Path,
}

impl<'a> Reader<'a> {
    fn bad(&self, offset: usize, detail: impl Into<String>) -> Error {
        Error::corruption(self.file, offset as u64, detail)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.bad(self.pos, format!("truncated: {n} more bytes expected"))),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let lo = self.u32()? as u64;
        let hi = self.u32()? as u64;
        Ok(lo | (hi << 32))
    }
}

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
        let mut body = Vec::with_capacity(nodes * (2 + 4 * (self.params.m + 2)));
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
            body.push(status);
            body.push(if status == F_ABSENT { 0 } else { level as u8 });
            if status == F_ABSENT {
                continue;
            }
            for lc in 0..=level {
                match g.list(id, lc) {
                    Some(list) => read_list(list, &mut ids),
                    None => ids.clear(),
                }
                body.extend_from_slice(&(ids.len() as u16).to_le_bytes());
                for &t in &ids {
                    body.extend_from_slice(&t.to_le_bytes());
                }
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
        let mut out = Vec::with_capacity(HEADER + body.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&[metric_code(self.metric), u8::from(p.keep_pruned), 0, 0]);
        out.extend_from_slice(&(p.m as u32).to_le_bytes());
        out.extend_from_slice(&(p.m0() as u32).to_le_bytes());
        out.extend_from_slice(&(p.ef_construction as u32).to_le_bytes());
        out.extend_from_slice(&(p.ef_search as u32).to_le_bytes());
        out.extend_from_slice(&p.seed.to_le_bytes());
        out.extend_from_slice(&p.repair_threshold.to_bits().to_le_bytes());
        out.extend_from_slice(&(nodes as u32).to_le_bytes());
        out.extend_from_slice(&present.to_le_bytes());
        out.extend_from_slice(&deleted.to_le_bytes());
        out.extend_from_slice(&ep_slot.to_le_bytes());
        out.extend_from_slice(&ep_level.to_le_bytes());
        debug_assert_eq!(out.len(), HEADER);
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
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
        let stored = u32::from_le_bytes([
            bytes[body_end],
            bytes[body_end + 1],
            bytes[body_end + 2],
            bytes[body_end + 3],
        ]);
        let crc = crc32fast::hash(&bytes[..body_end]);
        // The fuzzer cannot forge checksums; skipping the check lets it reach the
        // validation behind it.
        if crc != stored && !cfg!(fuzzing) {
            return Err(Error::corruption(
                file,
                body_end as u64,
                format!("checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        let mut r = Reader {
            bytes: &bytes[..body_end],
            pos: 0,
            file,
        };
        if r.take(8)? != MAGIC {
            return Err(r.bad(0, "bad magic: not an Omen HNSW graph"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(r.bad(8, format!("unsupported version {version}")));
        }
        let dim = r.u32()? as usize;
        if dim == 0 {
            return Err(r.bad(12, "dimension 0"));
        }
        let metric = match r.u8()? {
            0 => Metric::L2,
            1 => Metric::InnerProduct,
            2 => Metric::Cosine,
            c => return Err(r.bad(16, format!("unknown metric code {c}"))),
        };
        let keep_pruned = match r.u8()? {
            0 => false,
            1 => true,
            b => return Err(r.bad(17, format!("keep_pruned byte {b} is not 0 or 1"))),
        };
        if r.take(2)? != [0, 0] {
            return Err(r.bad(18, "reserved bytes are not zero"));
        }
        let m = r.u32()? as usize;
        let m0 = r.u32()? as usize;
        let params = HnswParams {
            m,
            ef_construction: r.u32()? as usize,
            ef_search: r.u32()? as usize,
            seed: r.u64()?,
            keep_pruned,
            repair_threshold: f64::from_bits(r.u64()?),
        };
        params
            .validate()
            .map_err(|e| Error::corruption(file, 20, format!("parameters: {e}")))?;
        if m0 != params.m0() {
            return Err(r.bad(24, format!("M0 = {m0} is not 2·M = {}", params.m0())));
        }
        let nodes = r.u32()? as usize;
        let want_present = r.u32()?;
        let want_deleted = r.u32()?;
        let ep_slot = r.u32()?;
        let ep_level = r.u32()? as usize;
        // Every record takes at least two bytes: a count larger than that is a lie
        // that would otherwise allocate without bound.
        if nodes > (body_end - HEADER) / 2 {
            return Err(r.bad(52, format!("{nodes} nodes cannot fit in the file")));
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
            let at = r.pos;
            offsets.push(at);
            let status = match r.u8()? {
                F_ABSENT => ABSENT,
                F_PRESENT => PRESENT,
                F_DELETED => DELETED,
                F_PURGED => PURGED,
                s => return Err(r.bad(at, format!("node {id}: unknown status {s}"))),
            };
            let level = r.u8()? as usize;
            if status == ABSENT {
                if level != 0 {
                    return Err(r.bad(at, format!("absent node {id} has level {level}")));
                }
                continue;
            }
            if level > MAX_LEVEL {
                return Err(r.bad(at, format!("node {id}: level {level} above {MAX_LEVEL}")));
            }
            present += u32::from(status == PRESENT);
            deleted += u32::from(status == DELETED);
            max_level = max_level.max(Some(level));
            if status == PRESENT {
                max_present_level = max_present_level.max(level);
            }
            g.set_levels(id, level);
            for lc in 0..=level {
                let count = r.u16()? as usize;
                if count > g.cap(lc) {
                    return Err(r.bad(
                        at,
                        format!(
                            "node {id} level {lc}: {count} links, capacity {}",
                            g.cap(lc)
                        ),
                    ));
                }
                ids.clear();
                for _ in 0..count {
                    let t = r.u32()?;
                    if t as usize >= nodes || t == id {
                        return Err(r.bad(at, format!("node {id} level {lc}: bad link {t}")));
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
        if r.pos != body_end {
            return Err(r.bad(r.pos, format!("{} trailing bytes", body_end - r.pos)));
        }
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
                        return Err(r.bad(
                            offsets[id as usize],
                            format!("node {id} level {lc}: link {t} does not exist on that level"),
                        ));
                    }
                }
            }
        }
        if present != want_present || deleted != want_deleted {
            return Err(r.bad(
                52,
                format!(
                    "header counts {want_present} present / {want_deleted} removed, records hold {present} / {deleted}"
                ),
            ));
        }
        let entry = match max_level {
            None if ep_slot == u32::MAX => NO_ENTRY,
            None => return Err(r.bad(64, "entry point in an empty graph")),
            Some(_) => {
                let ew = g.node(ep_slot).map_or(0, |n| n.word());
                if status_of(ew) == ABSENT
                    || level_of(ew) != ep_level
                    || ep_level < max_present_level
                {
                    return Err(r.bad(
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
