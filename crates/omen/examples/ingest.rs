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
    // Batches submitted ahead of the oldest acknowledgement (OMEN_PIPELINE).
    let depth: usize = std::env::var("OMEN_PIPELINE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let data: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
    let opts = DurableOptions::default()
        .durability(mode)
        .checkpoint_log_bytes(u64::MAX);
    let c = Collection::create(&dir, &CollectionConfig::new(dim, Metric::L2), opts).unwrap();
    let cpu_before = thread_cpu();
    let t = Instant::now();
    let per = n / writers;
    std::thread::scope(|s| {
        for w in 0..writers {
            let (c, data, ids) = (&c, &data, &ids);
            s.spawn(move || {
                let (lo, hi) = (w * per, (w + 1) * per);
                let mut i = lo;
                // Up to `depth` batches submitted ahead of the oldest acknowledgement
                // (4 in `omen bench durability`).
                let mut pending = std::collections::VecDeque::new();
                while i < hi {
                    let j = (i + batch).min(hi);
                    if pending.len() == depth {
                        omen::WriteTicket::wait(pending.pop_front().unwrap()).unwrap();
                    }
                    pending.push_back(
                        c.insert_batch_deferred(&ids[i..j], &data[i * dim..j * dim])
                            .unwrap(),
                    );
                    i = j;
                }
                for p in pending {
                    p.wait().unwrap();
                }
                let own = thread_cpu_self();
                println!("  writer {w}: {own:.2} CPU s");
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
    // CPU seconds each thread spent during the ingest (Linux), to see which one
    // is the bottleneck.
    let after = thread_cpu();
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    for (tid, (name, secs)) in &after {
        let before = cpu_before.get(tid).map_or(0.0, |(_, s)| *s);
        *by_name.entry(name.clone()).or_default() += secs - before;
    }
    let parts: Vec<String> = by_name
        .iter()
        .filter(|(_, s)| **s > 0.005)
        .map(|(n, s)| format!("{n} {s:.2}s"))
        .collect();
    println!("  CPU during the ingest by thread: {}", parts.join(", "));
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CPU seconds of the calling thread so far (Linux; 0 elsewhere).
fn thread_cpu_self() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns * 1e-9)
}

/// (thread name, CPU seconds) of every thread of this process, by thread id,
/// from `/proc/self/task/*/stat` (empty elsewhere).
fn thread_cpu() -> std::collections::BTreeMap<u64, (String, f64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(a), Some(b)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[a + 1..b].to_string();
        let f: Vec<&str> = stat[b + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
        out.insert(tid, (name, (ticks(11) + ticks(12)) / 100.0));
    }
    out
}
