//! Writes seed inputs for the `ivfpq_load` fuzz target: the saved bytes of two
//! small trained indexes (4-bit L2, 8-bit cosine), each behind the target's mode
//! byte 1 (the target recomputes the checksum, so mutations reach the parser).
//!
//! ```sh
//! cargo run --release -p omen-ivfpq --example write_fuzz_seeds -- fuzz/corpus/ivfpq_load
//! ```

use omen_core::{Metric, VectorIndex, VectorStorage};
use omen_ivfpq::{IvfPqIndex, IvfPqParams};
use omen_storage::MemoryStorage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// `n` rows around 20 Gaussian centres (unit-normalised when `unit`).
fn data(n: usize, dim: usize, seed: u64, unit: bool) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gauss = move || -> f32 {
        // Box-Muller from two uniforms.
        let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let centres: Vec<f32> = (0..20 * dim).map(|_| gauss()).collect();
    let mut v = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = i % 20;
        let start = v.len();
        for d in 0..dim {
            v.push(centres[c * dim + d] + 0.5 * gauss());
        }
        if unit {
            let row = &mut v[start..];
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: write_fuzz_seeds DIR (for example fuzz/corpus/ivfpq_load)")?,
    );
    std::fs::create_dir_all(&dir)?;
    let dim = 12;
    for (i, (nbits, metric)) in [(4, Metric::L2), (8, Metric::Cosine)]
        .into_iter()
        .enumerate()
    {
        let rows = data(1500, dim, 8, metric != Metric::L2);
        let storage = MemoryStorage::new(dim)?;
        storage.append_batch(&rows)?;
        let params = IvfPqParams::new(8, 3)
            .with_nbits(nbits)
            .with_train_size(0)
            .with_nprobe(3);
        let index = IvfPqIndex::new(dim, metric, params)?;
        index.add(&storage, 0..100)?;
        index.train(&rows[..1000 * dim])?;
        index.add(&storage, 100..1450)?;
        index.remove(7)?;
        let bytes = index.to_bytes();
        // Mode byte 1, then the file without its trailing checksum.
        let mut seed = vec![1u8];
        seed.extend_from_slice(&bytes[..bytes.len() - 4]);
        let path = dir.join(format!("seed{i}"));
        std::fs::write(&path, seed)?;
        println!("{} ({} bytes)", path.display(), bytes.len() + 1 - 4);
    }
    Ok(())
}
