//! Criterion benches: every kernel × every ISA available here × dimension.
//!
//! One-to-one and one-to-many benches report bytes of vector data read per second
//! (`Throughput::Bytes`); the tile benches report floating-point operations
//! (`Throughput::Elements` = 2·nq·nr·dim, one multiply and one add per component,
//! the GEMM convention), so criterion's "elem/s" there reads as FLOP/s.
//!
//! Run with `cargo bench -p omen-simd --bench kernels`; filter with a trailing
//! argument, e.g. `-- 'dot_tile/'`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use omen_simd::{Isa, Kernels};
use std::hint::black_box;
use std::time::Duration;

const DIMS: [usize; 8] = [25, 50, 96, 128, 384, 768, 960, 1536];
/// Rows per one-to-many call: an HNSW neighbour list is 16–64, a flat-scan block
/// a few hundred; 256 keeps the block in L2 up to 768 dimensions.
const MANY_ROWS: usize = 256;
/// The tile shape the flat index calls with (queries × rows).
const TILE: (usize, usize) = (256, 1024);

fn data(n: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic generator; values in [-1, 1).
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tables() -> Vec<Kernels> {
    Isa::available()
        .into_iter()
        .map(|isa| Kernels::for_isa(isa).unwrap())
        .collect()
}

type One = fn(&Kernels, &[f32], &[f32]) -> f32;
type Many = fn(&Kernels, &[f32], &[f32], &mut [f32]);
type Tile = fn(&Kernels, &[f32], &[f32], usize, &mut [f32], &mut Vec<f32>);

fn one_to_one(c: &mut Criterion) {
    let kernels: [(&str, One); 3] = [
        ("l2_sq", |k, a, b| k.l2_sq(a, b)),
        ("dot", |k, a, b| k.dot(a, b)),
        ("cosine", |k, a, b| k.cosine(a, b)),
    ];
    for (name, f) in kernels {
        let mut g = c.benchmark_group(name);
        for dim in DIMS {
            let (a, b) = (data(dim, 1), data(dim, 2));
            g.throughput(Throughput::Bytes((2 * dim * 4) as u64));
            for k in tables() {
                g.bench_with_input(BenchmarkId::new(k.isa().name(), dim), &dim, |bch, _| {
                    bch.iter(|| f(&k, black_box(&a), black_box(&b)))
                });
            }
        }
        g.finish();
    }
}

fn one_to_many(c: &mut Criterion) {
    let kernels: [(&str, Many); 3] = [
        ("l2_sq_many", |k, q, r, o| k.l2_sq_many(q, r, o)),
        ("dot_many", |k, q, r, o| k.dot_many(q, r, o)),
        ("cosine_many", |k, q, r, o| k.cosine_many(q, r, o)),
    ];
    for (name, f) in kernels {
        let mut g = c.benchmark_group(name);
        for dim in DIMS {
            let (q, rows) = (data(dim, 3), data(dim * MANY_ROWS, 4));
            let mut out = vec![0.0; MANY_ROWS];
            g.throughput(Throughput::Bytes(((MANY_ROWS + 1) * dim * 4) as u64));
            for k in tables() {
                g.bench_with_input(BenchmarkId::new(k.isa().name(), dim), &dim, |bch, _| {
                    bch.iter(|| f(&k, black_box(&q), black_box(&rows), black_box(&mut out)))
                });
            }
        }
        g.finish();
    }
}

fn tiles(c: &mut Criterion) {
    let kernels: [(&str, Tile); 2] = [
        ("dot_tile", |k, q, r, d, o, s| k.dot_tile(q, r, d, o, s)),
        ("l2_sq_tile", |k, q, r, d, o, s| k.l2_sq_tile(q, r, d, o, s)),
    ];
    let (nq, nr) = TILE;
    for (name, f) in kernels {
        let mut g = c.benchmark_group(name);
        // Each call is 1–300 ms: few, equal-sized samples.
        g.sampling_mode(SamplingMode::Flat).sample_size(10);
        for dim in DIMS {
            let (q, rows) = (data(dim * nq, 5), data(dim * nr, 6));
            let mut out = vec![0.0; nq * nr];
            let mut scratch = Vec::new();
            g.throughput(Throughput::Elements((2 * nq * nr * dim) as u64));
            for k in tables() {
                g.bench_with_input(BenchmarkId::new(k.isa().name(), dim), &dim, |bch, &dim| {
                    bch.iter(|| {
                        f(
                            &k,
                            black_box(&q),
                            black_box(&rows),
                            dim,
                            &mut out,
                            &mut scratch,
                        )
                    })
                });
            }
        }
        g.finish();
    }
}

/// Block shapes for the flat index's batched search at GloVe's 50 dimensions: the
/// figure behind the block sizes recommended in the crate docs.
fn tile_blocks(c: &mut Criterion) {
    let dim = 50;
    let mut g = c.benchmark_group("dot_tile_blocks_d50");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for nq in [32, 64, 128, 256, 512] {
        for nr in [128, 256, 512, 1024, 2048, 4096] {
            let (q, rows) = (data(dim * nq, 7), data(dim * nr, 8));
            let mut out = vec![0.0; nq * nr];
            let mut scratch = Vec::new();
            g.throughput(Throughput::Elements((2 * nq * nr * dim) as u64));
            for k in tables().into_iter().filter(|k| k.isa() != Isa::Scalar) {
                let id = BenchmarkId::new(k.isa().name(), format!("{nq}x{nr}"));
                g.bench_function(id, |bch| {
                    bch.iter(|| {
                        k.dot_tile(black_box(&q), black_box(&rows), dim, &mut out, &mut scratch)
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        // The default 100,000 bootstrap resamples and the SVG plots cost seconds
        // per bench on a 2-core machine, more than the measurement itself.
        .nresamples(10_000)
        .without_plots();
    targets = one_to_one, one_to_many, tiles, tile_blocks
}
criterion_main!(benches);
