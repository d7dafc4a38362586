//! The quantized-graph file: see `FORMAT.md` ("Quantized graph") for the layout.

use crate::layer::Layer;
use crate::{QgIndex, QgParams};
use omen_core::codec::{
    check_checksum, crc32, metric_code, metric_from_code, ByteReader, ByteWriter,
};
use omen_core::pq::ProductQuantizer;
use omen_core::sync::{lock, read};
use omen_core::{Error, Result, SlotId, VectorIndex};
use omen_hnsw::HnswIndex;
use std::path::Path;

const MAGIC: [u8; 8] = *b"OMENQGIX";
const VERSION: u32 = 1;
/// Bytes before the embedded graph file.
const HEADER: usize = 80;

impl QgIndex {
    /// The index's state as bytes: parameters, the HNSW graph file, and (once
    /// trained) the codebooks and every node's code. Blocks are not written; they
    /// are rebuilt from the graph and the codes on load. Waits for an add in
    /// flight, so the graph and the codes agree.
    pub fn to_bytes(&self) -> Vec<u8> {
        let _w = lock(&self.writer);
        let graph = self.graph.to_bytes();
        let layer = read(&self.layer);
        let p = &self.params;
        let m = p.pq_m_for(self.dim);
        let mut w = ByteWriter::with_capacity(HEADER + graph.len() + 64);
        w.bytes(&MAGIC)
            .u32(VERSION)
            .u32(self.dim as u32)
            .u8(metric_code(self.metric))
            .u8(u8::from(p.keep_pruned) | (u8::from(p.fill_layer0) << 1))
            .u8(u8::from(layer.is_some()))
            .zeros(1)
            .u32(p.m as u32)
            .u32(p.ef_construction as u32)
            .u32(p.ef_search as u32)
            .u64(p.seed)
            .u32(m as u32)
            .zeros(4)
            .u64(p.train_at as u64)
            .u64(p.train_sample as u64)
            .u64(graph.len() as u64);
        debug_assert_eq!(w.len(), HEADER - 8);
        // Reserved.
        w.zeros(8);
        debug_assert_eq!(w.len(), HEADER);
        w.bytes(&graph);
        if let Some(l) = layer.as_ref() {
            w.f32s(l.pq.codebooks());
            let slots = l.coded_slots();
            w.u32(slots as u32);
            w.bytes(&l.unpacked_codes(slots));
        }
        let crc = w.crc32_from(0);
        w.u32(crc);
        w.finish()
    }

    /// Reads a file written by [`to_bytes`](Self::to_bytes); every field is
    /// validated and damage is [`Error::Corruption`] naming `file` and the offset,
    /// never a panic. Rebuilds the blocks (no distance is computed).
    pub fn from_bytes(bytes: &[u8], file: &Path) -> Result<QgIndex> {
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
        r.expect_magic(&MAGIC, "an Omen quantized-graph index")?;
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(r.error_at(8, format!("unsupported version {version}")));
        }
        let stored = ByteReader::at(trailer, file, body_end as u64).u32("checksum")?;
        // The fuzzer cannot forge checksums; skipping the check lets it reach the
        // validation behind it.
        if !cfg!(fuzzing) {
            check_checksum(stored, crc32(body), file, body_end as u64, "index")?;
        }
        let dim = r.u32("dimension")? as usize;
        if dim == 0 {
            return Err(r.error_at(12, "dimension 0"));
        }
        let code = r.u8("metric")?;
        let metric = metric_from_code(code)
            .ok_or_else(|| r.error_at(16, format!("unknown metric code {code}")))?;
        let flag = |r: &mut ByteReader<'_>, at: usize, what: &str| -> Result<bool> {
            match r.u8(what)? {
                0 => Ok(false),
                1 => Ok(true),
                b => Err(r.error_at(at, format!("{what} byte {b} is not 0 or 1"))),
            }
        };
        // Bit 0: keep_pruned; bit 1: fill_layer0 (clear in files written before
        // it existed).
        let flags = r.flags("flags", &["keep_pruned", "fill_layer0"])?;
        let (keep_pruned, fill_layer0) = (flags & 1 != 0, flags & 2 != 0);
        let trained = flag(&mut r, 18, "trained")?;
        r.zeros(1, "reserved byte")?;
        let params = QgParams {
            m: r.u32("M")? as usize,
            ef_construction: r.u32("ef_construction")? as usize,
            ef_search: r.u32("ef_search")? as usize,
            seed: r.u64("seed")?,
            keep_pruned,
            fill_layer0,
            pq_m: Some(r.u32("pq_m")? as usize),
            train_at: {
                r.zeros(4, "reserved bytes")?;
                usize::try_from(r.u64("train_at")?).unwrap_or(usize::MAX)
            },
            train_sample: usize::try_from(r.u64("train_sample")?).unwrap_or(usize::MAX),
        };
        params
            .validate(dim)
            .map_err(|e| r.error_at(20, format!("parameters: {e}")))?;
        let graph_len = r.u64("graph length")?;
        r.zeros(8, "reserved bytes")?;
        let graph_at = r.position();
        let graph_len = usize::try_from(graph_len)
            .ok()
            .filter(|&n| n <= r.remaining())
            .ok_or_else(|| {
                r.error_at(64, format!("graph length {graph_len} runs past the file"))
            })?;
        let graph_bytes = r.bytes(graph_len, "graph")?;
        // The graph's own errors count from its first byte: moved to the file's.
        let graph = HnswIndex::from_bytes(graph_bytes, file).map_err(|e| match e {
            Error::Corruption {
                file,
                offset,
                detail,
            } => Error::Corruption {
                file,
                offset: offset + graph_at as u64,
                detail: format!("in the embedded graph: {detail}"),
            },
            e => e,
        })?;
        if graph.dim() != dim || graph.metric() != metric {
            return Err(r.error_at(
                graph_at,
                format!(
                    "the graph is {}-d {:?}, the index {dim}-d {metric:?}",
                    graph.dim(),
                    graph.metric()
                ),
            ));
        }
        let gp = graph.params();
        if (gp.m, gp.keep_pruned, gp.fill_layer0)
            != (params.m, params.keep_pruned, params.fill_layer0)
        {
            return Err(r.error_at(
                graph_at,
                format!(
                    "the graph was built with M {}, keep_pruned {}, fill_layer0 {}; the index says M {}, keep_pruned {}, fill_layer0 {}",
                    gp.m, gp.keep_pruned, gp.fill_layer0, params.m, params.keep_pruned, params.fill_layer0
                ),
            ));
        }
        let layer = if trained {
            let m = params.pq_m_for(dim);
            let floats = 16 * dim;
            let at = r.position();
            if r.remaining() < floats * 4 {
                return Err(r.error_at(at, "the codebooks run past the file"));
            }
            let mut books = Vec::with_capacity(floats);
            for _ in 0..floats {
                let x = r.f32("codebook")?;
                if !x.is_finite() {
                    return Err(r.error(format!("codebook value {x} is not finite")));
                }
                books.push(x);
            }
            let pq = ProductQuantizer::from_parts(dim, m, 4, books)
                .map_err(|e| r.error_at(at, format!("codebooks: {e}")))?;
            let slots = r.u32("coded slots")? as usize;
            let at = r.position();
            if slots.checked_mul(m).is_none_or(|n| n != r.remaining()) {
                return Err(r.error_at(
                    at,
                    format!(
                        "{slots} codes of {m} bytes do not fill the {} bytes left",
                        r.remaining()
                    ),
                ));
            }
            let codes = r.bytes(slots * m, "codes")?;
            if let Some(i) = codes.iter().position(|&c| c >= 16) {
                return Err(r.error_at(at + i, format!("code {} is not a 4-bit value", codes[i])));
            }
            let mut layer = Layer::new(pq);
            layer.reserve_codes(slots);
            for (v, c) in codes.chunks_exact(m.max(1)).enumerate() {
                layer.set_code(v as SlotId, c);
            }
            Some(layer)
        } else {
            if r.remaining() != 0 {
                return Err(r.error(format!(
                    "{} bytes after the graph of an untrained index",
                    r.remaining()
                )));
            }
            None
        };
        let coded = layer.as_ref().map_or(0, |l| l.coded_slots());
        let index = QgIndex::from_parts(dim, metric, params, graph, layer);
        if index.is_trained() {
            let nodes = index.graph_nodes(coded);
            // Every node must have been coded: a list pointing past the codes is
            // damage (the codes and the graph were saved together).
            let mut ids = Vec::new();
            for &u in &nodes {
                index.graph.links(u, 0, &mut ids);
                if let Some(&v) = ids.iter().find(|&&v| v as usize >= coded) {
                    return Err(Error::corruption(
                        file,
                        graph_at as u64,
                        format!("node {u} links to {v}, past the {coded} coded slots"),
                    ));
                }
            }
            if index
                .graph
                .entry_point()
                .is_some_and(|e| e as usize >= coded)
            {
                return Err(Error::corruption(
                    file,
                    graph_at as u64,
                    format!("the entry point lies past the {coded} coded slots"),
                ));
            }
            index.removed_any.store(
                nodes.len() > index.graph.len(),
                omen_core::sync::atomic::Ordering::Release,
            );
            index.rebuild_blocks(&nodes, coded);
        }
        Ok(index)
    }
}
