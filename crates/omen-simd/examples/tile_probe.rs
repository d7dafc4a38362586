//! Best-of-N timing of the tile kernels, robust to a shared, busy machine (the
//! minimum over many short runs approximates an uncontended run).
//!
//! `cargo run --release -p omen-simd --example tile_probe [dim] [nq] [nr]`

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

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let dim = args.first().copied().unwrap_or(50);
    let nq = args.get(1).copied().unwrap_or(256);
    let nr = args.get(2).copied().unwrap_or(1024);
    let (q, r) = (data(nq * dim, 1), data(nr * dim, 2));
    let mut out = vec![0.0; nq * nr];
    let mut scratch = Vec::new();
    let flops = 2.0 * (nq * nr * dim) as f64;
    for isa in Isa::available() {
        let k = Kernels::for_isa(isa).unwrap();
        for l2 in [false, true] {
            let mut best = f64::INFINITY;
            let reps = ((2e9 / flops) as usize).clamp(30, 2000);
            for _ in 0..reps {
                let t = Instant::now();
                if l2 {
                    k.l2_sq_tile(black_box(&q), black_box(&r), dim, &mut out, &mut scratch);
                } else {
                    k.dot_tile(black_box(&q), black_box(&r), dim, &mut out, &mut scratch);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{:>6} {:>6} dim={dim} {nq}x{nr}: {:8.1} us  {:6.1} GFLOP/s",
                isa.name(),
                if l2 { "l2" } else { "dot" },
                best * 1e6,
                flops / best / 1e9
            );
        }
    }
}
