//! Best-of-N timing of the one-to-one and one-to-many kernels per ISA, robust to
//! a shared, busy machine: `cargo run --release -p omen-simd --example pair_probe`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen_simd::{Isa, Kernels};
use std::hint::black_box;
use std::time::Instant;

fn data(n: usize, seed: u32) -> Vec<f32> {
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

/// Best time per inner call, in ns, over 200 batches of `inner` calls.
fn best_ns(inner: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / inner as f64);
    }
    best * 1e9
}

fn main() {
    let dims: Vec<usize> = match std::env::args().nth(1) {
        Some(list) => list.split(',').map(|d| d.parse().unwrap()).collect(),
        None => vec![4, 8, 12, 16, 25, 32, 50, 96, 128, 384, 768, 960, 1536],
    };
    const ROWS: usize = 256;
    const GATHER: usize = 16;
    println!(
        "ns per call (one-to-one) and per row (one-to-many, {ROWS} rows; scattered rows, \
         {GATHER} of them in shuffled order, by l2_sq_rows and by one l2_sq_many call per row)"
    );
    println!(
        "{:>5} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "dim", "isa", "l2", "dot", "cos", "l2_many", "dot_many", "cos_many", "l2_rows", "l2_1row"
    );
    for dim in dims {
        let (a, b) = (data(dim, 1), data(dim, 2));
        let rows = data(dim * ROWS, 3);
        let mut out = vec![0.0; ROWS];
        let inner = (20_000 / dim).max(10);
        for isa in Isa::available() {
            let k = Kernels::for_isa(isa).unwrap();
            let l2 = best_ns(inner, || {
                black_box(k.l2_sq(black_box(&a), black_box(&b)));
            });
            let dot = best_ns(inner, || {
                black_box(k.dot(black_box(&a), black_box(&b)));
            });
            let cos = best_ns(inner, || {
                black_box(k.cosine(black_box(&a), black_box(&b)));
            });
            let inner_many = (inner / ROWS).max(2);
            let per_row = |f: fn(&Kernels, &[f32], &[f32], &mut [f32]), out: &mut [f32]| {
                best_ns(inner_many, || {
                    f(&k, black_box(&a), black_box(&rows), black_box(&mut *out))
                }) / ROWS as f64
            };
            let l2m = per_row(|k, q, r, o| k.l2_sq_many(q, r, o), &mut out);
            let dotm = per_row(|k, q, r, o| k.dot_many(q, r, o), &mut out);
            let cosm = per_row(|k, q, r, o| k.cosine_many(q, r, o), &mut out);
            // A re-ranking batch: rows picked out of order from the block (all in
            // cache here; this times the arithmetic, not the misses).
            let picked: Vec<&[f32]> = (0..GATHER)
                .map(|i| {
                    let r = (i * 97 + 13) % ROWS;
                    &rows[r * dim..(r + 1) * dim]
                })
                .collect();
            let inner_rows = (inner / GATHER).max(2);
            let l2r = best_ns(inner_rows, || {
                k.l2_sq_rows(
                    black_box(&a),
                    black_box(&picked),
                    black_box(&mut out[..GATHER]),
                )
            }) / GATHER as f64;
            let l2one = best_ns(inner_rows, || {
                for (r, o) in picked.iter().zip(out.iter_mut()) {
                    k.l2_sq_many(black_box(&a), black_box(r), std::slice::from_mut(o));
                }
            }) / GATHER as f64;
            println!(
                "{dim:>5} {:>7} {l2:8.2} {dot:8.2} {cos:8.2} {l2m:9.2} {dotm:9.2} {cosm:9.2} \
                 {l2r:9.2} {l2one:9.2}",
                isa.name()
            );
        }
    }
}
