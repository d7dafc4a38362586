//! Durable ingest throughput of one configuration, for profiling:
//! `cargo run --release -p omen --example ingest -- [n] [batch] [mode: group|per-write|none] [writers] [dir]`.
//! The benchmark suite's `omen bench durability` is the reported figure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen::{Collection, CollectionConfig, Durability, DurableOptions, Metric};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).map_or(200_000, |s| s.parse().unwrap());
    let batch: usize = a.get(2).map_or(1000, |s| s.parse().unwrap());
    let mode = match a.get(3).map_or("group", String::as_str) {
        "per-write" => Durability::PerWrite,
        "none" => Durability::None,
        _ => Durability::default(),
    };
    let writers: usize = a.get(4).map_or(1, |s| s.parse().unwrap());
    let base = a
        .get(5)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = base.join(format!("omen-ingest-{}", std::process::id()));
    let dim = 128;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let data: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
    let opts = DurableOptions::default()
        .durability(mode)
        .checkpoint_log_bytes(u64::MAX);
    let c = Collection::create(&dir, &CollectionConfig::new(dim, Metric::L2), opts).unwrap();
    let t = Instant::now();
    let per = n / writers;
    std::thread::scope(|s| {
        for w in 0..writers {
            let (c, data, ids) = (&c, &data, &ids);
            s.spawn(move || {
                let (lo, hi) = (w * per, (w + 1) * per);
                let mut i = lo;
                let mut pending = None;
                while i < hi {
                    let j = (i + batch).min(hi);
                    let t = c
                        .insert_batch_deferred(&ids[i..j], &data[i * dim..j * dim])
                        .unwrap();
                    if let Some(p) = pending.replace(t) {
                        omen::WriteTicket::wait(p).unwrap();
                    }
                    i = j;
                }
                if let Some(p) = pending {
                    p.wait().unwrap();
                }
            });
        }
    });
    c.sync().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let log: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "{} writers, batch {batch}, {}: {:.0} vectors/s, log {:.0} MB/s ({} MB in {secs:.2} s)",
        writers,
        mode.label(),
        (per * writers) as f64 / secs,
        log as f64 / secs / 1e6,
        log / 1_000_000
    );
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}
