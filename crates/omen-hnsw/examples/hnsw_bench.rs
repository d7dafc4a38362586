//! Build and query benchmark for [`HnswIndex`] on `.fbin` files.
//!
//! ```text
//! cargo run --release -p omen-hnsw --example hnsw_bench -- --data DIR \
//!     [--m 16] [--efc 200] [--threads 1] [--ef 16,32,64,128,256] [--nq 2000] \
//!     [--limit N] [--metric ip|l2|cosine] [--graph FILE]
//! ```
//! `DIR` holds `base.fbin` and `queries.fbin` (u32 LE count, u32 dim, f32 rows).
//! With `--metric ip` (the default, as ann-benchmarks' angular sets) or `cosine`,
//! rows and queries are L2-normalised first. Ground truth is exact search with the
//! flat index. Reports the index build rate (the storage append is not counted),
//! then per `ef`: recall@10 and single-thread QPS, one query at a time. With
//! `--graph FILE`, a graph saved there by an earlier run is loaded instead of built
//! (and a freshly built one is saved there).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
use omen_flat::FlatIndex;
use omen_hnsw::{HnswIndex, HnswParams};
use omen_storage::MemoryStorage;
use std::time::Instant;

fn read_fbin(path: &std::path::Path) -> (usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() >= 8, "{}: too short", path.display());
    let n = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let dim = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        8 + n * dim * 4,
        "{}: size mismatch",
        path.display()
    );
    let rows = bytes[8..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (dim, rows)
}

/// This thread's CPU time in seconds (Linux `schedstat`), or `None` elsewhere: on a
/// shared machine it is steadier than the wall clock.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

/// CPU seconds used by the whole process so far (Linux `/proc/self/stat`, 100 Hz
/// ticks), or `None` elsewhere.
fn process_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn normalise(rows: &mut [f32], dim: usize) {
    for r in rows.chunks_exact_mut(dim) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let data = std::path::PathBuf::from(arg("--data").expect("--data DIR is required"));
    let m: usize = arg("--m").map_or(16, |s| s.parse().unwrap());
    let efc: usize = arg("--efc").map_or(200, |s| s.parse().unwrap());
    let threads: usize = arg("--threads").map_or(1, |s| s.parse().unwrap());
    let nq_max: usize = arg("--nq").map_or(2000, |s| s.parse().unwrap());
    let limit: Option<usize> = arg("--limit").map(|s| s.parse().unwrap());
    let metric: Metric = arg("--metric").map_or(Metric::InnerProduct, |s| s.parse().unwrap());
    let efs: Vec<usize> = arg("--ef")
        .unwrap_or_else(|| "16,32,64,128,256".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();

    let (dim, mut base) = read_fbin(&data.join("base.fbin"));
    let (qdim, mut queries) = read_fbin(&data.join("queries.fbin"));
    assert_eq!(dim, qdim, "base and queries differ in dimension");
    if let Some(l) = limit {
        base.truncate(l * dim);
    }
    queries.truncate(nq_max * dim);
    if metric != Metric::L2 {
        normalise(&mut base, dim);
        normalise(&mut queries, dim);
    }
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    let storage = MemoryStorage::new(dim).unwrap();
    let slots = storage.append_batch(&base).unwrap();
    println!(
        "# data {} n={n} dim={dim} queries={nq} metric={metric}",
        data.display()
    );

    let params = HnswParams::default().with_m(m).with_ef_construction(efc);
    let index = HnswIndex::new(dim, metric, params).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let graph = arg("--graph").map(std::path::PathBuf::from);
    let index = match graph.as_ref().filter(|p| p.exists()) {
        Some(p) => {
            let loaded = HnswIndex::load(&mut std::fs::File::open(p).unwrap(), p).unwrap();
            println!("# graph loaded from {} (no build)", p.display());
            loaded
        }
        None => {
            let t = Instant::now();
            let c = process_cpu();
            pool.install(|| index.add(&storage, slots.clone())).unwrap();
            let build = t.elapsed().as_secs_f64();
            let cpu = c.and_then(|c| Some(process_cpu()? - c));
            println!(
                "build (index only): M={m} efc={efc} threads={threads}: {:.1}s, {:.0} vectors/s wall, {:.0} vectors per process-CPU-second, top level {:?}",
                build,
                n as f64 / build,
                cpu.map_or(f64::NAN, |c| n as f64 / c),
                index.top_level()
            );
            if let Some(p) = &graph {
                index.save(&mut std::fs::File::create(p).unwrap()).unwrap();
            }
            index
        }
    };
    let mem = index.memory_bytes();
    println!(
        "memory: index {:.1} bytes/vector (graph), storage {:.1} bytes/vector (vectors)",
        mem as f64 / n as f64,
        storage.memory_bytes() as f64 / n as f64
    );

    let flat = FlatIndex::new(dim, metric).unwrap();
    flat.add(&storage, slots).unwrap();
    let t = Instant::now();
    let mut gt = Vec::new();
    flat.search_batch(
        &storage,
        &queries,
        10,
        &SearchParams::exhaustive(),
        None,
        &mut gt,
    )
    .unwrap();
    println!(
        "# ground truth (flat, all threads): {:.1}s",
        t.elapsed().as_secs_f64()
    );

    println!("ef\trecall@10\tQPS(1 thread, wall)\tQPS(thread CPU)\tdistances/query");
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    for &ef in &efs {
        let p = SearchParams::new().with("ef", ef);
        // Warm the caches and the scratch.
        for q in queries.chunks_exact(dim).take(200) {
            index
                .search(
                    &storage,
                    &SearchRequest::new(q, 10, &p),
                    &mut scratch,
                    &mut out,
                )
                .unwrap();
        }
        let before = index.stats();
        let mut hits = 0usize;
        let t = Instant::now();
        let c = thread_cpu();
        for (q, want) in queries.chunks_exact(dim).zip(&gt) {
            index
                .search(
                    &storage,
                    &SearchRequest::new(q, 10, &p),
                    &mut scratch,
                    &mut out,
                )
                .unwrap();
            hits += out
                .iter()
                .filter(|g| want.iter().any(|w| w.slot == g.slot))
                .count();
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = c.and_then(|c| Some(thread_cpu()? - c));
        let dcs = index.stats().search_distance_computations - before.search_distance_computations;
        println!(
            "{ef}\t{:.4}\t{:.0}\t{:.0}\t{:.0}",
            hits as f64 / (10 * nq) as f64,
            nq as f64 / secs,
            cpu.map_or(f64::NAN, |c| nq as f64 / c),
            dcs as f64 / nq as f64
        );
    }
}
