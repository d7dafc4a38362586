//! IVF-PQ sweep: train, add, then nprobe × rerank against exact ground truth.
//!
//! ```text
//! cargo run --release -p omen-ivfpq --example ivfpq_bench -- --data DIR \
//!     [--metric cosine|l2|ip] [--nlist 1024] [--m 50] [--nbits 4] [--train-size 100000] \
//!     [--nprobe 8,16,32,64] [--rerank 1,4,10] [--queries 10000] [--seed 0] [--iters 20] \
//!     [--repeat 1] [--index FILE] [--no-recall]
//! ```
//! `DIR` holds `base.fbin` and `queries.fbin` (u32 LE count, u32 dim, f32 rows).
//! With `--metric cosine` (the default, GloVe "angular") rows and queries are
//! L2-normalised first, as the collection does. Training uses every core (rayon);
//! adding runs on a one-thread pool; queries run one at a time on the main thread.
//! With `--index FILE` the trained and filled index is loaded from `FILE` when it
//! exists (built and saved there otherwise), so that profiling runs (`perf`,
//! `valgrind --tool=callgrind`) spend their time in search, not in training;
//! `--no-recall` skips the exact ground truth (recall is then reported as NaN).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
use omen_flat::FlatIndex;
use omen_ivfpq::{IvfPqIndex, IvfPqParams};
use omen_storage::MemoryStorage;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn read_fbin(path: &Path) -> (usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let dim = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        8 + n * dim * 4,
        "{}: size does not match header",
        path.display()
    );
    let v = bytes[8..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (dim, v)
}

/// CPU time of the calling thread (from the scheduler's accounting, in ns): the
/// machine is shared, so wall-clock rates understate what the code does.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |ns| ns * 1e-9)
}

fn list(s: &str) -> Vec<usize> {
    s.split(',').map(|x| x.trim().parse().unwrap()).collect()
}

fn main() {
    let mut data = PathBuf::from(".");
    let mut metric = Metric::Cosine;
    let (mut nlist, mut m, mut nbits, mut train_size) = (1024usize, 50usize, 4u32, 100_000usize);
    let mut nprobes = vec![8, 16, 32, 64];
    let mut reranks = vec![1, 4, 10];
    let (mut max_q, mut seed, mut iters, mut repeat) = (10_000usize, 0u64, 20usize, 1usize);
    let mut index_file: Option<PathBuf> = None;
    let mut recall = true;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--data" => data = PathBuf::from(v),
            "--metric" => metric = v.parse().unwrap(),
            "--nlist" => nlist = v.parse().unwrap(),
            "--m" => m = v.parse().unwrap(),
            "--nbits" => nbits = v.parse().unwrap(),
            "--train-size" => train_size = v.parse().unwrap(),
            "--nprobe" => nprobes = list(&v),
            "--rerank" => reranks = list(&v),
            "--queries" => max_q = v.parse().unwrap(),
            "--seed" => seed = v.parse().unwrap(),
            "--iters" => iters = v.parse().unwrap(),
            "--repeat" => repeat = v.parse().unwrap(),
            "--index" => index_file = Some(PathBuf::from(v)),
            "--no-recall" => {
                recall = false;
                i -= 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let (dim, mut base) = read_fbin(&data.join("base.fbin"));
    let (qdim, mut queries) = read_fbin(&data.join("queries.fbin"));
    assert_eq!(dim, qdim);
    queries.truncate(max_q * dim);
    if metric.normalizes() {
        for r in base
            .chunks_exact_mut(dim)
            .chain(queries.chunks_exact_mut(dim))
        {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    println!(
        "# {n} base × {dim}, {nq} queries, metric {metric}, scanner {}",
        omen_ivfpq::fastscan::Scanner::best().name()
    );
    let storage = MemoryStorage::new(dim).unwrap();
    let slots = storage.append_batch(&base).unwrap();

    let flat = FlatIndex::new(dim, metric).unwrap();
    flat.add(&storage, slots.clone()).unwrap();
    let t = Instant::now();
    let mut gt = Vec::new();
    if recall {
        flat.search_batch(
            &storage,
            &queries,
            10,
            &SearchParams::exhaustive(),
            None,
            &mut gt,
        )
        .unwrap();
        println!("# ground truth: {:.2}s", t.elapsed().as_secs_f64());
    } else {
        gt.resize(nq, Vec::new());
    }

    let index = match &index_file {
        Some(f) if f.exists() => {
            let t = Instant::now();
            let index = IvfPqIndex::load(f).unwrap();
            assert_eq!(index.len(), n, "{}: built over another base", f.display());
            assert_eq!(
                index.metric(),
                metric,
                "{}: built for another metric",
                f.display()
            );
            println!(
                "# loaded {}: {:.2}s",
                f.display(),
                t.elapsed().as_secs_f64()
            );
            index
        }
        _ => {
            let index = build(
                &storage, &base, dim, metric, nlist, m, nbits, train_size, seed, iters, &nprobes,
            );
            if let Some(f) = &index_file {
                index.save(f).unwrap();
            }
            index
        }
    };
    println!(
        "# bytes/vector in lists (codes + u32 ids + L2 terms): {:.2}; index memory_bytes/vector {:.2}",
        index.list_bytes_per_vector(),
        index.memory_bytes() as f64 / n as f64
    );
    println!("nprobe\trerank\trecall@10\tQPS(wall)\tQPS(thread CPU)");
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    for _ in 0..repeat {
        for &np in &nprobes {
            if np > nlist {
                continue;
            }
            for &rf in &reranks {
                let p = SearchParams::new()
                    .with("nprobe", np)
                    .with("rerank_factor", rf);
                // Warm-up pass, then the timed pass.
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
                let mut hits = 0usize;
                let t = Instant::now();
                let c = thread_cpu_s();
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
                        .filter(|n| want.iter().any(|w| w.slot == n.slot))
                        .count();
                }
                let cpu = thread_cpu_s() - c;
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "{np}\t{rf}\t{:.4}\t{:.0}\t{:.0}",
                    if recall {
                        hits as f64 / (nq * 10) as f64
                    } else {
                        f64::NAN
                    },
                    nq as f64 / secs,
                    nq as f64 / cpu
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    storage: &MemoryStorage,
    base: &[f32],
    dim: usize,
    metric: Metric,
    nlist: usize,
    m: usize,
    nbits: u32,
    train_size: usize,
    seed: u64,
    iters: usize,
    nprobes: &[usize],
) -> IvfPqIndex {
    let params = IvfPqParams::new(nlist, m)
        .with_nbits(nbits)
        .with_train_size(0)
        .with_seed(seed)
        .with_kmeans_iters(iters)
        .with_nprobe(nprobes[0].min(nlist));
    let index = IvfPqIndex::new(dim, metric, params).unwrap();
    let n = base.len() / dim;
    // Training sample: an evenly spaced subset of the base.
    let step = (n / train_size.min(n)).max(1);
    let sample: Vec<f32> = base
        .chunks_exact(dim)
        .step_by(step)
        .take(train_size)
        .flatten()
        .copied()
        .collect();
    let t = Instant::now();
    index.train(&sample).unwrap();
    println!(
        "# train: {} vectors, nlist {nlist}, m {m}, nbits {nbits}: {:.2}s ({} rayon threads)",
        sample.len() / dim,
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let t = Instant::now();
    let add_cpu = one.install(|| {
        let c = thread_cpu_s();
        index.add(storage, 0..n as u32).unwrap();
        thread_cpu_s() - c
    });
    let add_s = t.elapsed().as_secs_f64();
    println!(
        "# add (1 thread): {:.0} vectors/s wall ({add_s:.2}s), {:.0} vectors/s of thread CPU",
        n as f64 / add_s,
        n as f64 / add_cpu
    );
    index
}
