//! How close is the flat scan to the machine's memory bandwidth, and how fast is
//! batched exact search?
//!
//! ```text
//! cargo run --release -p omen-flat --example flat_scan -- [--data DIR] [--metric ip|l2]
//!     [--threads 1,2] [--queries N] [--k K] [--repeats R]
//! ```
//!
//! 1. Single-core memory read bandwidth: sum a 1 GiB f32 buffer (best of 5).
//! 2. One query's flat scan over the base set, in GB/s of vector bytes read (best
//!    of `--repeats`); the base (78 MB for 390,000 × 50) is larger than the 32 MB
//!    L3, so the scan streams from memory.
//! 3. Batched search of every query (`--queries` caps them) on a rayon pool of
//!    each thread count in `--threads`, as queries per second.
//!
//! With `--data DIR`, `DIR/base.fbin` and `DIR/queries.fbin` (big-ann-benchmarks
//! `.fbin`: u32 LE count, u32 LE dim, then f32 LE rows) are loaded if present;
//! otherwise a seeded synthetic set of the GloVe-50 shape (390,000 × 50 base,
//! 10,000 queries, a Gaussian mixture, unit-normalised) is generated and written
//! there, so that FAISS can be run on exactly the same files. Output is
//! `key: value` lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_core::simd::Kernels;
use omen_core::{
    Metric, Neighbor, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage,
};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::error::Error;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    data: Option<PathBuf>,
    metric: Metric,
    threads: Vec<usize>,
    queries: Option<usize>,
    k: usize,
    repeats: usize,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        data: None,
        metric: Metric::InnerProduct,
        threads: vec![1, 2],
        queries: None,
        k: 10,
        repeats: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(PathBuf::from(value()?)),
            "--metric" => {
                a.metric = match value()?.as_str() {
                    "ip" => Metric::InnerProduct,
                    "l2" => Metric::L2,
                    other => return Err(format!("--metric must be ip or l2, got {other}").into()),
                }
            }
            "--threads" => {
                a.threads = value()?
                    .split(',')
                    .map(|t| t.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
                if a.threads.contains(&0) {
                    return Err("--threads: counts must be at least 1".into());
                }
            }
            "--queries" => a.queries = Some(value()?.parse()?),
            "--k" => a.k = value()?.parse()?,
            "--repeats" => a.repeats = value()?.parse::<usize>()?.max(1),
            "-h" | "--help" => {
                println!("flat_scan [--data DIR] [--metric ip|l2] [--threads 1,2] [--queries N] [--k K] [--repeats R]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// Reads a big-ann-benchmarks `.fbin` file: `(rows, dim)`.
fn read_fbin(path: &Path) -> Res<(Vec<f32>, usize)> {
    let mut f = BufReader::new(File::open(path)?);
    let mut header = [0u8; 8];
    f.read_exact(&mut header)?;
    let n = u32::from_le_bytes(header[..4].try_into()?) as usize;
    let dim = u32::from_le_bytes(header[4..].try_into()?) as usize;
    let expected = 8 + n as u64 * dim as u64 * 4;
    let actual = std::fs::metadata(path)?.len();
    if dim == 0 || actual != expected {
        return Err(format!(
            "{}: header says {n} x {dim} ({expected} bytes), file has {actual}",
            path.display()
        )
        .into());
    }
    let mut bytes = vec![0u8; n * dim * 4];
    f.read_exact(&mut bytes)?;
    let rows = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((rows, dim))
}

fn write_fbin(path: &Path, rows: &[f32], dim: usize) -> Res<()> {
    let mut f = BufWriter::new(File::create(path)?);
    f.write_all(&u32::try_from(rows.len() / dim)?.to_le_bytes())?;
    f.write_all(&u32::try_from(dim)?.to_le_bytes())?;
    for x in rows {
        f.write_all(&x.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

/// A seeded Gaussian mixture of the GloVe-50 shape, unit-normalised:
/// `(base, queries)`.
fn synthetic(n: usize, nq: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x0E11_2026);
    let unit = Normal::new(0.0f32, 1.0).unwrap();
    let spread = Normal::new(0.0f32, 0.6).unwrap();
    let centres: Vec<f32> = (0..256 * dim).map(|_| unit.sample(&mut rng)).collect();
    let mut draw = |count: usize| {
        let mut rows = Vec::with_capacity(count * dim);
        for _ in 0..count {
            let c = rng.gen_range(0..256);
            let start = rows.len();
            rows.extend((0..dim).map(|j| centres[c * dim + j] + spread.sample(&mut rng)));
            let r = &mut rows[start..];
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|x| *x /= norm);
        }
        rows
    };
    let base = draw(n);
    let queries = draw(nq);
    (base, queries)
}

fn load_or_generate(data: Option<&Path>) -> Res<(Vec<f32>, Vec<f32>, usize, String)> {
    const N: usize = 390_000;
    const NQ: usize = 10_000;
    const DIM: usize = 50;
    if let Some(dir) = data {
        let (b, q) = (dir.join("base.fbin"), dir.join("queries.fbin"));
        if b.exists() && q.exists() {
            let (base, dim) = read_fbin(&b)?;
            let (queries, qdim) = read_fbin(&q)?;
            if qdim != dim {
                return Err(format!("base dim {dim} but query dim {qdim}").into());
            }
            return Ok((base, queries, dim, dir.display().to_string()));
        }
        let (base, queries) = synthetic(N, NQ, DIM);
        std::fs::create_dir_all(dir)?;
        write_fbin(&b, &base, DIM)?;
        write_fbin(&q, &queries, DIM)?;
        return Ok((
            base,
            queries,
            DIM,
            format!("synthetic, written to {}", dir.display()),
        ));
    }
    let (base, queries) = synthetic(N, NQ, DIM);
    Ok((base, queries, DIM, "synthetic (in memory)".into()))
}

/// Best-of-5 single-core read bandwidth over a 1 GiB buffer, in GB/s, two ways:
/// a plain sum with 32 independent lanes (auto-vectorised for the build's
/// baseline ISA) and the chosen kernels' dot product of each 256 KiB chunk with
/// itself (each cache line comes from memory once, and the kernel is the one the
/// scan uses). Returns `(sum, kernel)`.
fn memory_read_gbps(kernels: &Kernels) -> (f64, f64) {
    let n = (1usize << 30) / 4;
    // Non-zero contents, written once, so every page is really backed.
    let buf: Vec<f32> = (0..n).map(|i| (i & 1023) as f32 * 1e-3).collect();
    let (mut best_sum, mut best_kernel) = (Duration::MAX, Duration::MAX);
    let mut sink = 0.0f32;
    for _ in 0..5 {
        let t = Instant::now();
        let mut acc = [0.0f32; 32];
        for c in buf.chunks_exact(32) {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        sink += std::hint::black_box(acc.iter().sum::<f32>());
        best_sum = best_sum.min(t.elapsed());

        let t = Instant::now();
        let mut total = 0.0f32;
        for c in buf.chunks(1 << 16) {
            total += kernels.dot(c, c);
        }
        sink += std::hint::black_box(total);
        best_kernel = best_kernel.min(t.elapsed());
    }
    let bytes = (n * 4) as f64;
    // The same kernel read over smaller prefixes shows where the cache ends: the
    // first level that stops fitting in the cache hierarchy drops to the 1 GiB rate.
    for mib in [16usize, 32, 64, 128, 256] {
        let part = &buf[..mib << 18];
        let mut best = Duration::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            let mut total = 0.0f32;
            for c in part.chunks(1 << 16) {
                total += kernels.dot(c, c);
            }
            sink += std::hint::black_box(total);
            best = best.min(t.elapsed());
        }
        println!(
            "read_gbps_{mib}mib: {:.2}",
            (part.len() * 4) as f64 / best.as_secs_f64() / 1e9
        );
    }
    std::hint::black_box(sink);
    (
        bytes / best_sum.as_secs_f64() / 1e9,
        bytes / best_kernel.as_secs_f64() / 1e9,
    )
}

/// User + system CPU seconds of this process so far (Linux; `None` elsewhere).
/// Next to wall-clock time it shows how much a loaded machine stole.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th
    // and 13th of those, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn ids(v: &[Neighbor]) -> Vec<u32> {
    v.iter().map(|n| n.slot).collect()
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let kernels = Kernels::best();
    println!("isa: {}", kernels.isa());

    let (base, mut queries, dim, source) = load_or_generate(args.data.as_deref())?;
    if let Some(cap) = args.queries {
        queries.truncate(cap * dim);
    }
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    println!("data: {source}");
    println!("base: {n} x {dim}");
    println!("base_mb: {:.1}", (base.len() * 4) as f64 / 1e6);
    println!("queries: {nq}");
    println!("metric: {}", args.metric);
    println!("k: {}", args.k);

    let (mem_sum, mem_kernel) = memory_read_gbps(kernels);
    let mem = mem_sum.max(mem_kernel);
    println!("memory_read_gbps_sum_loop: {mem_sum:.2}");
    println!("memory_read_gbps_kernel: {mem_kernel:.2}");
    println!("memory_read_gbps: {mem:.2}");

    let storage = MemoryStorage::new(dim)?;
    let slots = storage.append_batch(&base)?;
    drop(base);
    // The same kernel read over exactly the scanned bytes (the storage's blocks):
    // what the scan could reach if distance work were free.
    let sd: &dyn VectorStorage = &storage;
    let mut best = Duration::MAX;
    let mut sink = 0.0f32;
    for _ in 0..args.repeats {
        let t = Instant::now();
        for (_, block) in sd.blocks() {
            sink += kernels.dot(block, block);
        }
        best = best.min(t.elapsed());
    }
    std::hint::black_box(sink);
    let same_size = (n * dim * 4) as f64 / best.as_secs_f64() / 1e9;
    println!("read_gbps_base_bytes: {same_size:.2}");
    let index = FlatIndex::new(dim, args.metric)?;
    index.add(&storage, slots)?;
    let params = SearchParams::new();

    // (b) one query at a time, best of `repeats`.
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    let mut best = Duration::MAX;
    for r in 0..args.repeats {
        let q = &queries[(r % nq) * dim..(r % nq + 1) * dim];
        let t = Instant::now();
        index.search(
            &storage,
            &SearchRequest::new(q, args.k, &params),
            &mut scratch,
            &mut out,
        )?;
        best = best.min(t.elapsed());
    }
    let scan_gbps = (n * dim * 4) as f64 / best.as_secs_f64() / 1e9;
    println!("scan_single_query_ms: {:.3}", best.as_secs_f64() * 1e3);
    println!("scan_gbps: {scan_gbps:.2}");
    println!("scan_to_memory_ratio: {:.3}", scan_gbps / mem);
    println!("scan_to_base_read_ratio: {:.3}", scan_gbps / same_size);
    println!("single_query_qps: {:.1}", 1.0 / best.as_secs_f64());

    // (c) batched, per thread count.
    let mut batch_out = Vec::new();
    for &threads in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        pool.install(|| {
            index.search_batch(&storage, &queries, args.k, &params, None, &mut batch_out)
        })?;
        let secs = t.elapsed().as_secs_f64();
        println!("batch_threads_{threads}_seconds: {secs:.3}");
        println!("batch_threads_{threads}_qps: {:.1}", nq as f64 / secs);
        if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
            let cpu = b - a;
            println!("batch_threads_{threads}_cpu_seconds: {cpu:.2}");
            println!(
                "batch_threads_{threads}_qps_per_cpu_second: {:.1}",
                nq as f64 / cpu.max(1e-9)
            );
        }
    }

    // Sanity: the batched answers agree with single-query ones (ids, up to
    // near-ties from the tile kernel's rounding).
    let check = nq.min(50);
    let mut same = 0;
    for qi in 0..check {
        let q = &queries[qi * dim..(qi + 1) * dim];
        index.search(
            &storage,
            &SearchRequest::new(q, args.k, &params),
            &mut scratch,
            &mut out,
        )?;
        if batch_out.get(qi).is_some_and(|b| ids(b) == ids(&out)) {
            same += 1;
        }
    }
    println!("batch_single_identical_ids: {same}/{check}");
    Ok(())
}
