//! Reopen time of a checkpointed collection, for profiling:
//! `cargo run --release -p omen --example reopen -- [n] [memory|mmap] [dir] [build|open]`.
//! With `build` (default) it builds the collection in `dir` (HNSW, M=16,
//! ef_construction=40, 128-d), checkpoints and closes it; then it times three
//! opens. `omen bench durability` is the reported figure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen::{Collection, CollectionConfig, DurableOptions, Metric, StorageKind};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).map_or(200_000, |s| s.parse().unwrap());
    let storage = match a.get(2) {
        Some(name) => StorageKind::from_name(name).unwrap(),
        None => StorageKind::default(),
    };
    let dir = a.get(3).map_or_else(
        || std::env::temp_dir().join("omen-reopen"),
        std::path::PathBuf::from,
    );
    let build = a.get(4).is_none_or(|s| s != "open");
    let dim = 128;
    if build {
        let _ = std::fs::remove_dir_all(&dir);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let data: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let ids: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
        let mut p = omen_hnsw::HnswParams::default();
        p.ef_construction = 40;
        let cfg = CollectionConfig::new(dim, Metric::L2)
            .index(p)
            .storage(storage);
        let c = Collection::create(&dir, &cfg, DurableOptions::default()).unwrap();
        let t = Instant::now();
        for (i, chunk) in data.chunks(10_000 * dim).enumerate() {
            let lo = i * 10_000;
            c.insert_batch(&ids[lo..lo + chunk.len() / dim], chunk)
                .unwrap();
        }
        c.checkpoint().unwrap();
        c.close().unwrap();
        println!("built {n} in {:.1} s", t.elapsed().as_secs_f64());
    }
    for _ in 0..3 {
        let t = Instant::now();
        let c = Collection::open(&dir, DurableOptions::default()).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "open: {s:.3} s, {} live, replayed {}",
            c.len(),
            c.recovery_info().unwrap().replayed_records
        );
        drop(c);
    }
}
