//! Probe for the frontier-index issue (issue 14): does walking a graph on its
//! neighbours' RaBitQ codes pay on this machine, before a crate is built for it?
//!
//! Builds omen's HNSW (M = 16, ef_construction = 200) over a dataset, lays its
//! layer-0 graph out as one block per node (the node's rotated vector, its up to 32
//! neighbours' ids, their one-bit codes relative to the node in the fast-scan layout,
//! and their factors), and searches it with a beam search driven by estimated
//! distances, each visited node scored exactly from its own block. Beside it, omen's
//! HNSW searching the same graph. Both are in-process Rust, one thread, one query per
//! call, the same queries and clock: the ratio between them is like for like. The
//! figures are a probe's, not a system's: no concurrency, no persistence.
//!
//! ```text
//! cargo run --release -p omen-bench --example qg_probe -- glove-50-l2 [QUERIES [EF,EF,...]]
//! cargo run --release -p omen-bench --example qg_probe -- glove-50-angular
//! ```
//!
//! Environment: `QG_CACHE=DIR` keeps the built graph between runs;
//! `QG_KEEP_PRUNED=1` builds it with pruned candidates kept; `QG_FILL=1` fills
//! every layer-0 list to 32 with the nearest neighbours' neighbours;
//! `QG_MODES=hnsw,node,query,pq` picks the systems; `QG_PASSES=N` the timed
//! passes (best kept); `QG_PQ_M` and `QG_RERANK` the PQ variant's code width and
//! re-ranked pool.
//!
//! * `pq`: the neighbours' 4-bit PQ codes (one codebook, `m` sub-quantizers of
//!   `dim / m` components) in each block, one table per query, the walk on
//!   estimates alone and the final beam re-ranked exactly from storage. On
//!   GloVe-50 L2 it ran at 1.7-1.9x omen HNSW's QPS at equal ef with equal or
//!   higher recall, where the RaBitQ modes (a table or an exact distance per
//!   visited node) ran at 0.5-0.6x: the design the frontier index takes.
//!
//! `QG_PREFETCH=0|1|N` picks the prefetch: none, the next unvisited beam entry
//! before expanding (a guess), or the next `N - 1` after expanding (default 3).
//!
//! Modes (printed per line):
//! * `node-lut` (L2): codes of `o - u` around the node `u`, a table per visited node
//!   built from the rotated `q - u`;
//! * `query-lut` (L2 and inner product): one table per query from the rotated `q`;
//!   `|o - q|² = |u - q|² + |r|² + 2<r, u> - 2<r, q>` with `<r, u>` stored per code,
//!   and `<o, q> = <u, q> + <r, q>`.

use omen_core::rabitq::{self, QueryTable, Rotation};
use omen_core::simd::fastscan::{self, Scanner, BLOCK};
use omen_core::simd::{prefetch, Kernels};
use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
use omen_hnsw::{HnswIndex, HnswParams};
use omen_storage::MemoryStorage;
use std::error::Error;
use std::time::Instant;

const DEG: usize = 32;

/// One node's block, contiguous and cache-line aligned, so that a visit reads one
/// region (one TLB entry) instead of five arrays: its rotated vector, its
/// neighbours' ids, their codes (relative to the node) in the fast-scan layout,
/// their factors and, for query-lut L2, `<r, u>` per code. `D` is the rotated
/// dimension and `C = fastscan::block_bytes(D / 4)`.
#[repr(C, align(64))]
#[derive(Clone)]
struct NodeBlock<const D: usize, const C: usize> {
    vec: [f32; D],
    ids: [u32; DEG],
    codes: [u8; C],
    /// Bit `i` set when lane `i` holds a neighbour.
    live: u32,
    /// `|r|²` and `|r|²/|r|_1` of each code (the bound's factor is not kept).
    nsq: [f32; BLOCK],
    ipf: [f32; BLOCK],
    /// Read by query-lut only, so last: node-lut prefetches the block up to here.
    ru: [f32; BLOCK],
}

struct Layout<const D: usize, const C: usize> {
    blocks: Vec<NodeBlock<D, C>>,
    upper: Vec<Vec<Vec<u32>>>,
    entry: u32,
    top: usize,
}

/// Layer-0 lists of the HNSW graph, cut to DEG.
fn graph_lists(index: &HnswIndex, storage: &MemoryStorage) -> Vec<Vec<u32>> {
    let n = storage.len();
    // Layer-0 lists, filled up to DEG (with QG_FILL=1) by the nearest of the
    // neighbours' neighbours not linked yet: a block scans 32 codes whatever the
    // degree, so the slots cost nothing to read.
    let fill = std::env::var("QG_FILL").is_ok_and(|v| v == "1");
    let lists: Vec<Vec<u32>> = (0..n)
        .map(|u| {
            let mut l = Vec::new();
            index.links(u as u32, 0, &mut l);
            l.truncate(DEG);
            l
        })
        .collect();
    if fill {
        use rayon::prelude::*;
        let kern = Kernels::best();
        (0..n)
            .into_par_iter()
            .map(|u| {
                let mut l = lists[u].clone();
                let uv = storage.get(u as u32).unwrap_or(&[]);
                let mut cand: Vec<(f32, u32)> = Vec::new();
                for &v in &lists[u] {
                    for &w in &lists[v as usize] {
                        if w as usize != u && !l.contains(&w) && !cand.iter().any(|c| c.1 == w) {
                            let wv = storage.get(w).unwrap_or(&[]);
                            cand.push((kern.l2_sq(uv, wv), w));
                        }
                    }
                }
                cand.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (_, w) in cand {
                    if l.len() >= DEG {
                        break;
                    }
                    l.push(w);
                }
                l
            })
            .collect()
    } else {
        lists
    }
}

fn build_layout<const D: usize, const C: usize>(
    index: &HnswIndex,
    storage: &MemoryStorage,
    rot: &Rotation,
    lists: &[Vec<u32>],
) -> Result<Layout<D, C>, Box<dyn Error>> {
    let n = storage.len();
    if rot.padded_dim() != D || fastscan::block_bytes(D / 4) != C {
        return Err("layout: dimensions do not match".into());
    }
    let empty = NodeBlock::<D, C> {
        vec: [0.0; D],
        ids: [u32::MAX; DEG],
        codes: [0; C],
        live: 0,
        nsq: [0.0; BLOCK],
        ipf: [0.0; BLOCK],
        ru: [0.0; BLOCK],
    };
    // Advice before the first touch: pages already faulted in stay 4 KiB.
    let mut blocks = Vec::with_capacity(n);
    advise_huge_pages(blocks.spare_capacity_mut());
    blocks.resize(n, empty);
    for (i, b) in blocks.iter_mut().enumerate() {
        let row = storage.get(i as u32).ok_or("missing row")?;
        rot.rotate(row, &mut b.vec);
    }
    let (mut r, mut nib) = (vec![0f32; D], vec![0u8; D / 4]);
    for u in 0..n {
        let links = &lists[u];
        for (lane, &v) in links.iter().enumerate() {
            let vv = blocks[v as usize].vec;
            let b = &mut blocks[u];
            b.ids[lane] = v;
            b.live |= 1 << lane;
            for ((x, a), c) in r.iter_mut().zip(&vv).zip(&b.vec) {
                *x = a - c;
            }
            let f = rabitq::encode(&r, &mut nib);
            fastscan::set_codes(&mut b.codes, lane, &nib);
            b.nsq[lane] = f.norm_sq;
            b.ipf[lane] = f.ip_factor;
            b.ru[lane] = r.iter().zip(&b.vec).map(|(a, c)| a * c).sum();
        }
    }
    let top = index.top_level().unwrap_or(0);
    let mut upper = vec![Vec::new(); top + 1];
    for (level, lists) in upper.iter_mut().enumerate().skip(1) {
        *lists = vec![Vec::new(); n];
        for (u, list) in lists.iter_mut().enumerate() {
            index.links(u as u32, level, list);
        }
    }
    Ok(Layout {
        blocks,
        upper,
        entry: index.entry_point().ok_or("empty index")?,
        top,
    })
}

/// Asks for transparent huge pages over the blocks (THP is in `madvise` mode on
/// these machines): a visit is a random read, and with 4 KiB pages each one missed
/// the TLB.
fn advise_huge_pages<T>(v: &[T]) {
    let (start, len) = (v.as_ptr() as usize, std::mem::size_of_val(v));
    let page = 4096;
    let aligned = start.div_ceil(page) * page;
    if len > aligned - start {
        // SAFETY: madvise only gives advice about how the pages of this process's
        // own allocation (rounded in to whole pages) are backed; MADV_HUGEPAGE
        // changes no byte of it and cannot fault.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                len - (aligned - start),
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[derive(Copy, Clone, PartialEq)]
enum Mode {
    NodeLut,
    QueryLut,
}

struct Searcher {
    /// One bit per node, cleared per query (48 KiB for 390,000 nodes: it stays in
    /// cache, where a word per node did not).
    visited: Vec<u64>,
    qr: Vec<f32>,
    res: Vec<f32>,
    table: QueryTable,
    /// The beam: at most `ef` entries sorted by distance (estimated until the node
    /// is visited, exact after), as NSG/glass-style searches keep it.
    pool: Vec<Entry>,
    /// Nodes visited (scored exactly and expanded), summed over queries.
    visits: u64,
    /// 0: no prefetch; 1: the next unvisited entry before expanding (a guess);
    /// n >= 2: the next n - 1 unvisited entries after expanding (`QG_PREFETCH`).
    prefetch: usize,
}

#[derive(Copy, Clone)]
struct Entry {
    dist: f32,
    id: u32,
    visited: bool,
}

/// Inserts into the sorted beam of capacity `ef`; returns the position, or `None`
/// when it does not make the beam.
fn pool_insert(pool: &mut Vec<Entry>, ef: usize, e: Entry) -> Option<usize> {
    if pool.len() >= ef && pool.last().is_some_and(|l| e.dist >= l.dist) {
        return None;
    }
    let at = pool.partition_point(|p| p.dist <= e.dist);
    if pool.len() >= ef {
        pool.pop();
    }
    pool.insert(at, e);
    Some(at)
}

impl<const D: usize, const C: usize> Layout<D, C> {
    /// Starts loading the part of node `u`'s block a visit in `mode` reads.
    #[inline(always)]
    fn prefetch_block(&self, u: usize, mode: Mode) {
        let b = &self.blocks[u];
        prefetch(&b.vec);
        prefetch(&b.ids);
        prefetch(&b.codes);
        prefetch(&b.nsq);
        prefetch(&b.ipf);
        if mode == Mode::QueryLut {
            prefetch(&b.ru);
        }
    }

    /// Exact distance of the query (rotated) to node `u`.
    fn exact(&self, metric: Metric, k: &Kernels, qr: &[f32], u: u32) -> f32 {
        let v = &self.blocks[u as usize].vec;
        match metric {
            Metric::L2 => k.l2_sq(qr, v),
            _ => 1.0 - k.dot(qr, v),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        s: &mut Searcher,
        scanner: &Scanner,
        k: &Kernels,
        metric: Metric,
        mode: Mode,
        q: &[f32],
        rot: &Rotation,
        ef: usize,
        out: &mut Vec<u32>,
        topk: usize,
    ) {
        rot.rotate(q, &mut s.qr);
        s.visited.fill(0);
        // Greedy descent through the upper layers, exact.
        let mut cur = self.entry;
        let mut dcur = self.exact(metric, k, &s.qr, cur);
        for level in (1..=self.top).rev() {
            loop {
                let mut moved = false;
                for &v in &self.upper[level][cur as usize] {
                    let dv = self.exact(metric, k, &s.qr, v);
                    if dv < dcur {
                        (cur, dcur) = (v, dv);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        if mode == Mode::QueryLut {
            s.table.prepare_with(scanner, &s.qr);
        }
        s.pool.clear();
        s.visited[cur as usize / 64] |= 1 << (cur % 64);
        s.pool.push(Entry {
            dist: dcur,
            id: cur,
            visited: false,
        });
        let mut est = [0f32; BLOCK];
        // The first entry not yet visited.
        let mut cursor = 0;
        while cursor < s.pool.len() {
            let u = s.pool[cursor].id;
            // Visiting: score exactly, replace the entry, then expand.
            if s.prefetch == 1 {
                if let Some(nx) = s.pool[cursor + 1..]
                    .iter()
                    .find(|e| !e.visited)
                    .map(|e| e.id as usize)
                {
                    self.prefetch_block(nx, mode);
                }
            }
            s.visits += 1;
            let nb = &self.blocks[u as usize];
            let (uv, block) = (&nb.vec[..], &nb.codes[..]);
            let du = match (metric, mode) {
                (Metric::L2, Mode::NodeLut) => {
                    for ((r, a), b) in s.res.iter_mut().zip(&s.qr).zip(uv) {
                        *r = a - b;
                    }
                    s.table.prepare_with(scanner, &s.res);
                    let du = s.table.norm_sq();
                    s.table.estimate_ip_with(scanner, block, &nb.ipf, &mut est);
                    for (e, &n2) in est.iter_mut().zip(&nb.nsq) {
                        *e = n2 + du - 2.0 * *e;
                    }
                    du
                }
                (Metric::L2, Mode::QueryLut) => {
                    let du = k.l2_sq(&s.qr, uv);
                    s.table.estimate_ip_with(scanner, block, &nb.ipf, &mut est);
                    for ((e, &n2), &r) in est.iter_mut().zip(&nb.nsq).zip(&nb.ru) {
                        *e = du + n2 + 2.0 * r - 2.0 * *e;
                    }
                    du
                }
                _ => {
                    let ip = k.dot(&s.qr, uv);
                    s.table.estimate_ip_with(scanner, block, &nb.ipf, &mut est);
                    for e in est.iter_mut() {
                        *e = 1.0 - (ip + *e);
                    }
                    1.0 - ip
                }
            };
            s.pool.remove(cursor);
            let mut next = pool_insert(
                &mut s.pool,
                ef,
                Entry {
                    dist: du,
                    id: u,
                    visited: true,
                },
            )
            .map_or(cursor, |p| if p <= cursor { cursor + 1 } else { cursor });
            // Only the lanes whose estimate makes the beam (a mask from one compare
            // pass, instead of a branch per neighbour).
            let thr = if s.pool.len() >= ef {
                s.pool.last().map_or(f32::INFINITY, |l| l.dist)
            } else {
                f32::INFINITY
            };
            let mut mask = 0u32;
            for (lane, &e) in est.iter().enumerate() {
                mask |= ((e < thr) as u32) << lane;
            }
            // Every neighbour is marked seen (a neighbour that misses the beam now
            // is not estimated again from another node); those that pass go in.
            let mut live = nb.live;
            while live != 0 {
                let lane = live.trailing_zeros() as usize;
                live &= live - 1;
                let v = nb.ids[lane];
                let (w, bit) = (v as usize / 64, 1u64 << (v % 64));
                let seen = s.visited[w] & bit != 0;
                s.visited[w] |= bit;
                if seen || mask >> lane & 1 == 0 {
                    continue;
                }
                if let Some(p) = pool_insert(
                    &mut s.pool,
                    ef,
                    Entry {
                        dist: est[lane],
                        id: v,
                        visited: false,
                    },
                ) {
                    next = next.min(p);
                }
            }
            cursor = next;
            while cursor < s.pool.len() && s.pool[cursor].visited {
                cursor += 1;
            }
            if s.prefetch >= 2 {
                // The next visits are known now: start loading up to `prefetch - 1`
                // of them.
                for e in s.pool[cursor..]
                    .iter()
                    .filter(|e| !e.visited)
                    .take(s.prefetch - 1)
                {
                    self.prefetch_block(e.id as usize, mode);
                }
            }
        }
        out.clear();
        out.extend(s.pool.iter().filter(|e| e.visited).take(topk).map(|e| e.id));
    }
}

/// The PQ variant: each node's block holds its neighbours' ids and their 4-bit PQ
/// codes (one codebook for the whole set, not relative to the node) in the
/// fast-scan layout; a query builds one table, the walk runs on estimates alone,
/// and the final beam is re-ranked exactly from storage.
struct PqLayout {
    /// `stride` bytes per node: 32 ids (u32), then the code block.
    bytes: Vec<u8>,
    stride: usize,
    m: usize,
    pq: omen_ivfpq::pq::ProductQuantizer,
    upper: Vec<Vec<Vec<u32>>>,
    entry: u32,
    top: usize,
}

impl PqLayout {
    fn build(
        index: &HnswIndex,
        storage: &MemoryStorage,
        lists: &[Vec<u32>],
        m: usize,
    ) -> Result<PqLayout, Box<dyn Error>> {
        let n = storage.len();
        let dim = storage.dim();
        let kern = Kernels::best();
        let sample = n.min(65_536);
        let mut train = Vec::with_capacity(sample * dim);
        for i in 0..sample {
            train.extend_from_slice(storage.get(i as u32).ok_or("row")?);
        }
        let pq = omen_ivfpq::pq::ProductQuantizer::train(kern, &train, dim, m, 4, 7, 10)?;
        let mut codes = vec![0u8; n * m];
        let mut scratch = Vec::new();
        for i in 0..n {
            pq.encode(
                kern,
                storage.get(i as u32).ok_or("row")?,
                &mut codes[i * m..(i + 1) * m],
                &mut scratch,
            );
        }
        let cb = fastscan::block_bytes(m);
        let stride = (4 * DEG + cb).div_ceil(64) * 64;
        let mut bytes: Vec<u8> = Vec::with_capacity(n * stride + 64);
        advise_huge_pages(bytes.spare_capacity_mut());
        bytes.resize(n * stride + 64, 0);
        // Blocks start on a cache line.
        let off = bytes.as_ptr().align_offset(64);
        for (u, list) in lists.iter().enumerate() {
            let b = &mut bytes[off + u * stride..off + (u + 1) * stride];
            for lane in 0..DEG {
                let v = list.get(lane).copied().unwrap_or(u32::MAX);
                b[4 * lane..4 * lane + 4].copy_from_slice(&v.to_le_bytes());
            }
            for (lane, &v) in list.iter().enumerate() {
                let c = &codes[v as usize * m..(v as usize + 1) * m];
                fastscan::set_codes(&mut b[4 * DEG..4 * DEG + cb], lane, c);
            }
        }
        bytes.drain(..off);
        let top = index.top_level().unwrap_or(0);
        let mut upper = vec![Vec::new(); top + 1];
        for (level, ls) in upper.iter_mut().enumerate().skip(1) {
            *ls = vec![Vec::new(); n];
            for (u, list) in ls.iter_mut().enumerate() {
                index.links(u as u32, level, list);
            }
        }
        Ok(PqLayout {
            bytes,
            stride,
            m,
            pq,
            upper,
            entry: index.entry_point().ok_or("empty index")?,
            top,
        })
    }

    fn block(&self, u: u32) -> &[u8] {
        &self.bytes[u as usize * self.stride..(u as usize + 1) * self.stride]
    }

    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        s: &mut PqSearcher,
        scanner: &Scanner,
        k: &Kernels,
        metric: Metric,
        storage: &MemoryStorage,
        q: &[f32],
        ef: usize,
        rerank: usize,
        out: &mut Vec<u32>,
        topk: usize,
    ) {
        let exact = |v: u32| -> f32 {
            let x = storage.get(v).unwrap_or(&[]);
            match metric {
                Metric::L2 => k.l2_sq(q, x),
                _ => 1.0 - k.dot(q, x),
            }
        };
        s.visited.fill(0);
        let mut cur = self.entry;
        let mut dcur = exact(cur);
        for level in (1..=self.top).rev() {
            loop {
                let mut moved = false;
                for &v in &self.upper[level][cur as usize] {
                    let dv = exact(v);
                    if dv < dcur {
                        (cur, dcur) = (v, dv);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let m = self.m;
        s.table.resize(m * 16, 0.0);
        match metric {
            Metric::L2 => self.pq.l2_table(k, q, &mut s.table),
            _ => self.pq.neg_ip_table(k, q, &mut s.table),
        }
        let (scale, bias) = fastscan::quantize_lut(&s.table, m, &mut s.lut);
        let inv = 1.0 / scale;
        s.pool.clear();
        s.visited[cur as usize / 64] |= 1 << (cur % 64);
        s.pool.push(Entry {
            dist: dcur,
            id: cur,
            visited: false,
        });
        let mut sums = [0u16; BLOCK];
        let mut cursor = 0;
        let cb = fastscan::block_bytes(m);
        while cursor < s.pool.len() {
            let u = s.pool[cursor].id;
            s.pool[cursor].visited = true;
            s.visits += 1;
            let b = self.block(u);
            scanner.scan_block(&b[4 * DEG..4 * DEG + cb], &s.lut, m, &mut sums);
            let thr = if s.pool.len() >= ef {
                s.pool.last().map_or(f32::INFINITY, |l| l.dist)
            } else {
                f32::INFINITY
            };
            let mut next = cursor + 1;
            for lane in 0..DEG {
                let v = u32::from_le_bytes([
                    b[4 * lane],
                    b[4 * lane + 1],
                    b[4 * lane + 2],
                    b[4 * lane + 3],
                ]);
                if v == u32::MAX {
                    break;
                }
                let (w, bit) = (v as usize / 64, 1u64 << (v % 64));
                let seen = s.visited[w] & bit != 0;
                s.visited[w] |= bit;
                let est = bias + sums[lane] as f32 * inv;
                if seen || est >= thr {
                    continue;
                }
                if let Some(p) = pool_insert(
                    &mut s.pool,
                    ef,
                    Entry {
                        dist: est,
                        id: v,
                        visited: false,
                    },
                ) {
                    next = next.min(p);
                }
            }
            cursor = next;
            while cursor < s.pool.len() && s.pool[cursor].visited {
                cursor += 1;
            }
            for e in s.pool[cursor..]
                .iter()
                .filter(|e| !e.visited)
                .take(s.prefetch)
            {
                prefetch(self.block(e.id));
            }
        }
        // Exact re-rank of the best `rerank` by estimate.
        let r = rerank.min(s.pool.len());
        for e in &s.pool[..r] {
            prefetch(storage.get(e.id).unwrap_or(&[]));
        }
        s.ranked.clear();
        s.ranked
            .extend(s.pool[..r].iter().map(|e| (exact(e.id), e.id)));
        s.ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.clear();
        out.extend(s.ranked.iter().take(topk).map(|e| e.1));
    }
}

struct PqSearcher {
    visited: Vec<u64>,
    table: Vec<f32>,
    lut: Vec<u8>,
    pool: Vec<Entry>,
    ranked: Vec<(f32, u32)>,
    visits: u64,
    prefetch: usize,
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "glove-50-l2".into());
    let nq: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let efs: Vec<usize> = match args.next() {
        Some(list) => list
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        None => vec![10, 16, 24, 32, 48, 64, 96, 128, 256],
    };
    let k = 10;
    let ds = omen_datasets::load_named(&name, &omen_datasets::default_data_dir(), k)?;
    let dim = ds.base.dim();
    let storage = MemoryStorage::new(dim)?;
    storage.append_batch(ds.base.data())?;
    let n = storage.len();
    let keep = std::env::var("QG_KEEP_PRUNED").is_ok_and(|v| v == "1");
    // `QG_CACHE=DIR` keeps the built graph between runs of the probe.
    let cache = std::env::var("QG_CACHE")
        .ok()
        .map(|d| std::path::PathBuf::from(d).join(format!("{name}-keep{keep}.hnsw")));
    let index = match cache.as_ref().filter(|p| p.exists()) {
        Some(p) => HnswIndex::from_bytes(&std::fs::read(p)?, p)?,
        None => {
            let index = HnswIndex::new(
                dim,
                ds.metric,
                HnswParams::new()
                    .with_m(16)
                    .with_ef_construction(200)
                    .with_keep_pruned(keep),
            )?;
            let t = Instant::now();
            index.add(&storage, 0..n as u32)?;
            eprintln!(
                "{name}: HNSW build {:.1} s ({} threads)",
                t.elapsed().as_secs_f64(),
                rayon::current_num_threads()
            );
            if let Some(p) = &cache {
                std::fs::write(p, index.to_bytes())?;
            }
            index
        }
    };
    let rot = Rotation::random(dim, 0x5eed)?;
    let run = Run {
        name: &name,
        ds: &ds,
        storage: &storage,
        index: &index,
        rot: &rot,
        nq,
        k,
        efs: &efs,
    };
    match rot.padded_dim() {
        64 => run.go::<64, 256>(),
        128 => run.go::<128, 512>(),
        d => Err(format!("the probe is built for rotated dimensions 64 and 128, not {d}").into()),
    }
}

struct Run<'a> {
    name: &'a str,
    ds: &'a omen_datasets::Dataset,
    storage: &'a MemoryStorage,
    index: &'a HnswIndex,
    rot: &'a Rotation,
    nq: usize,
    k: usize,
    efs: &'a [usize],
}

impl Run<'_> {
    fn go<const D: usize, const C: usize>(&self) -> Result<(), Box<dyn Error>> {
        let Run {
            name,
            ds,
            storage,
            index,
            rot,
            nq,
            k,
            efs,
        } = *self;
        let gt = ds.ground_truth.as_ref().ok_or("no ground truth")?;
        let metric = ds.metric;
        let n = storage.len();
        let t = Instant::now();
        let lists = graph_lists(index, storage);
        let layout = build_layout::<D, C>(index, storage, rot, &lists)?;
        eprintln!(
        "layout {:.1} s; {n} nodes, {} B per node (rotated vector {} B, ids {} B, codes {C} B, factors {} B, <r,u> {} B)",
        t.elapsed().as_secs_f64(),
        std::mem::size_of::<NodeBlock<D, C>>(),
        D * 4,
        DEG * 4,
        8 * BLOCK,
        4 * BLOCK
    );
        let kern = Kernels::best();
        let scanner = Scanner::best();
        println!(
            "dataset {name}, n {n}, queries {nq}, k {k}, one thread, ISA {} / fast-scan {}",
            kern.isa().name(),
            scanner.name()
        );
        println!("| system | ef | recall@10 | QPS | work |");
        println!("|---|---:|---:|---:|---|");
        let queries: Vec<&[f32]> = ds.queries.iter_rows().take(nq).collect();
        let recall = |qi: usize, ids: &[u32]| -> usize {
            let truth = &gt.query_ids(qi).unwrap_or(&[])[..k];
            ids.iter().filter(|i| truth.contains(i)).count()
        };
        // `QG_MODES=hnsw,node,query` picks what runs (default: all that apply).
        let want = std::env::var("QG_MODES").unwrap_or_else(|_| "hnsw,node,query".into());
        let want: Vec<&str> = want.split(',').collect();
        let modes: Vec<Mode> = [Mode::NodeLut, Mode::QueryLut]
            .into_iter()
            .filter(|&m| match m {
                Mode::NodeLut => metric == Metric::L2 && want.contains(&"node"),
                Mode::QueryLut => want.contains(&"query"),
            })
            .collect();
        let pq_layout = if want.contains(&"pq") {
            let m: usize = std::env::var("QG_PQ_M")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(ds.base.dim());
            let t = Instant::now();
            let l = PqLayout::build(index, storage, &lists, m)?;
            eprintln!(
                "PQ layout {:.1} s, {} B per node",
                t.elapsed().as_secs_f64(),
                l.stride
            );
            Some(l)
        } else {
            None
        };
        let degree = layout
            .blocks
            .iter()
            .map(|b| b.ids.iter().filter(|&&v| v != u32::MAX).count())
            .sum::<usize>() as f64
            / n as f64;
        println!("layer-0 mean out-degree {degree:.1}");
        for &ef in efs {
            if want.contains(&"hnsw") {
                // omen HNSW on the same graph.
                let params = SearchParams::new().with("ef", ef);
                let mut scratch = SearchScratch::new();
                let mut out = Vec::new();
                let mut hnsw = |q: &[f32], out: &mut Vec<_>| {
                    index.search(
                        storage,
                        &SearchRequest::new(q, k, &params),
                        &mut scratch,
                        out,
                    )
                };
                // Recall from an untimed pass; QPS is the best of three timed passes that do
                // nothing but search.
                let mut hits = 0;
                for (qi, q) in queries.iter().enumerate() {
                    hnsw(q, &mut out)?;
                    let ids: Vec<u32> = out.iter().map(|x| x.slot).collect();
                    hits += recall(qi, &ids);
                }
                let mut best_qps = 0f64;
                let before = index.stats().search_distance_computations;
                for _ in 0..3 {
                    let t = Instant::now();
                    for q in &queries {
                        hnsw(q, &mut out)?;
                    }
                    best_qps = best_qps.max(queries.len() as f64 / t.elapsed().as_secs_f64());
                }
                let dists = (index.stats().search_distance_computations - before) as f64
                    / (3 * queries.len()) as f64;
                println!(
                    "| omen HNSW | {ef} | {:.4} | {:.0} | {dists:.0} distances/query |",
                    hits as f64 / (k * queries.len()) as f64,
                    best_qps
                );
            }
            if let Some(pql) = &pq_layout {
                let rerank: usize = std::env::var("QG_RERANK")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(ef);
                let mut s = PqSearcher {
                    visited: vec![0; n.div_ceil(64)],
                    table: Vec::new(),
                    lut: Vec::new(),
                    pool: Vec::with_capacity(ef + 1),
                    ranked: Vec::new(),
                    visits: 0,
                    prefetch: std::env::var("QG_PREFETCH")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(2),
                };
                let mut ids = Vec::new();
                let mut hits = 0;
                for (qi, q) in queries.iter().enumerate() {
                    pql.search(
                        &mut s, &scanner, kern, metric, storage, q, ef, rerank, &mut ids, k,
                    );
                    hits += recall(qi, &ids);
                }
                let passes: usize = std::env::var("QG_PASSES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(3);
                s.visits = 0;
                let mut best_qps = 0f64;
                for _ in 0..passes {
                    let t = Instant::now();
                    for q in &queries {
                        pql.search(
                            &mut s, &scanner, kern, metric, storage, q, ef, rerank, &mut ids, k,
                        );
                    }
                    best_qps = best_qps.max(queries.len() as f64 / t.elapsed().as_secs_f64());
                }
                println!(
                    "| probe (PQ{}x4 codes, rerank {rerank}) | {ef} | {:.4} | {:.0} | {:.0} visits/query |",
                    pql.m,
                    hits as f64 / (k * queries.len()) as f64,
                    best_qps,
                    s.visits as f64 / (passes * queries.len()) as f64
                );
            }
            for &mode in &modes {
                let mut s = Searcher {
                    visited: vec![0; n.div_ceil(64)],
                    qr: vec![0.0; D],
                    res: vec![0.0; D],
                    table: QueryTable::new(),
                    pool: Vec::with_capacity(ef + 1),
                    visits: 0,
                    prefetch: std::env::var("QG_PREFETCH")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(3),
                };
                let mut ids = Vec::new();
                let mut hits = 0;
                for (qi, q) in queries.iter().enumerate() {
                    layout.search(
                        &mut s, &scanner, kern, metric, mode, q, rot, ef, &mut ids, k,
                    );
                    hits += recall(qi, &ids);
                }
                let mut best_qps = 0f64;
                let passes: usize = std::env::var("QG_PASSES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(3);
                s.visits = 0;
                for _ in 0..passes {
                    let t = Instant::now();
                    for q in &queries {
                        layout.search(
                            &mut s, &scanner, kern, metric, mode, q, rot, ef, &mut ids, k,
                        );
                    }
                    best_qps = best_qps.max(queries.len() as f64 / t.elapsed().as_secs_f64());
                }
                let label = if mode == Mode::NodeLut {
                    "codes, node-lut"
                } else {
                    "codes, query-lut"
                };
                let visits = s.visits as f64 / (passes * queries.len()) as f64;
                println!(
                    "| probe ({label}) | {ef} | {:.4} | {:.0} | {visits:.0} visits/query |",
                    hits as f64 / (k * queries.len()) as f64,
                    best_qps
                );
            }
        }
        Ok(())
    }
}
