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
//! `QG_PREFETCH=0|1|N` picks the prefetch: none, the next unvisited beam entry
//! before expanding (a guess), or the next `N - 1` after expanding (default 3).
//!
//! Modes (printed per line):
//! * `node-lut` (L2): codes of `o - u` around the node `u`, a table per visited node
//!   built from the rotated `q - u`;
//! * `query-lut` (L2 and inner product): one table per query from the rotated `q`;
//!   `|o - q|² = |u - q|² + |r|² + 2<r, u> - 2<r, q>` with `<r, u>` stored per code,
//!   and `<o, q> = <u, q> + <r, q>`.

use omen_core::rabitq::{self, BlockFactors, QueryTable, Rotation};
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
    f: BlockFactors,
    ru: [f32; BLOCK],
}

struct Layout<const D: usize, const C: usize> {
    blocks: Vec<NodeBlock<D, C>>,
    upper: Vec<Vec<Vec<u32>>>,
    entry: u32,
    top: usize,
}

fn build_layout<const D: usize, const C: usize>(
    index: &HnswIndex,
    storage: &MemoryStorage,
    rot: &Rotation,
) -> Result<Layout<D, C>, Box<dyn Error>> {
    let n = storage.len();
    if rot.padded_dim() != D || fastscan::block_bytes(D / 4) != C {
        return Err("layout: dimensions do not match".into());
    }
    let empty = NodeBlock::<D, C> {
        vec: [0.0; D],
        ids: [u32::MAX; DEG],
        codes: [0; C],
        f: BlockFactors::default(),
        ru: [0.0; BLOCK],
    };
    let mut blocks = vec![empty; n];
    advise_huge_pages(&blocks);
    for (i, b) in blocks.iter_mut().enumerate() {
        let row = storage.get(i as u32).ok_or("missing row")?;
        rot.rotate(row, &mut b.vec);
    }
    let mut links = Vec::new();
    let (mut r, mut nib) = (vec![0f32; D], vec![0u8; D / 4]);
    for u in 0..n {
        index.links(u as u32, 0, &mut links);
        links.truncate(DEG);
        for (lane, &v) in links.iter().enumerate() {
            let vv = blocks[v as usize].vec;
            let b = &mut blocks[u];
            b.ids[lane] = v;
            for ((x, a), c) in r.iter_mut().zip(&vv).zip(&b.vec) {
                *x = a - c;
            }
            let f = rabitq::encode(&r, &mut nib);
            fastscan::set_codes(&mut b.codes, lane, &nib);
            b.f.set(lane, &f);
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
            s.table.prepare(&s.qr);
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
                    prefetch(std::slice::from_ref(&self.blocks[nx]));
                }
            }
            s.visits += 1;
            let nb = &self.blocks[u as usize];
            let (uv, block, f) = (&nb.vec[..], &nb.codes[..], &nb.f);
            let du = match (metric, mode) {
                (Metric::L2, Mode::NodeLut) => {
                    for ((r, a), b) in s.res.iter_mut().zip(&s.qr).zip(uv) {
                        *r = a - b;
                    }
                    s.table.prepare(&s.res);
                    let du = s.table.norm_sq();
                    s.table.estimate_l2(scanner, block, f, &mut est);
                    du
                }
                (Metric::L2, Mode::QueryLut) => {
                    let du = k.l2_sq(&s.qr, uv);
                    s.table.estimate_ip(scanner, block, f, &mut est);
                    for ((e, &n2), &r) in est.iter_mut().zip(&f.norm_sq).zip(&nb.ru) {
                        *e = du + n2 + 2.0 * r - 2.0 * *e;
                    }
                    du
                }
                _ => {
                    let ip = k.dot(&s.qr, uv);
                    s.table.estimate_ip(scanner, block, f, &mut est);
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
            for (lane, &v) in nb.ids.iter().enumerate() {
                if v == u32::MAX {
                    break;
                }
                let (w, bit) = (v as usize / 64, 1u64 << (v % 64));
                if s.visited[w] & bit != 0 {
                    continue;
                }
                s.visited[w] |= bit;
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
                    prefetch(std::slice::from_ref(&self.blocks[e.id as usize]));
                }
            }
        }
        out.clear();
        out.extend(s.pool.iter().filter(|e| e.visited).take(topk).map(|e| e.id));
    }
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
    let index = HnswIndex::new(
        dim,
        ds.metric,
        HnswParams::new().with_m(16).with_ef_construction(200),
    )?;
    let t = Instant::now();
    index.add(&storage, 0..n as u32)?;
    eprintln!(
        "{name}: HNSW build {:.1} s ({} threads)",
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
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
        let layout = build_layout::<D, C>(index, storage, rot)?;
        eprintln!(
        "layout {:.1} s; {n} nodes, {} B per node (rotated vector {} B, ids {} B, codes {C} B, factors {} B, <r,u> {} B)",
        t.elapsed().as_secs_f64(),
        std::mem::size_of::<NodeBlock<D, C>>(),
        D * 4,
        DEG * 4,
        std::mem::size_of::<BlockFactors>(),
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
        let modes: &[Mode] = if metric == Metric::L2 {
            &[Mode::NodeLut, Mode::QueryLut]
        } else {
            &[Mode::QueryLut]
        };
        for &ef in efs {
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
            for &mode in modes {
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
                for _ in 0..3 {
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
                let visits = s.visits as f64 / (4 * queries.len()) as f64;
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
