//! Build speed and memory of the quantized-graph index (issue 14, item 3): builds
//! `QgIndex` over a dataset's base on 1 and then 2 threads, and prints the build
//! rate of each phase (the HNSW graph, then the PQ training, coding and block
//! layout) and the memory per vector of each part: the graph's links, the codes,
//! the node blocks, and the full vectors the re-rank reads (the storage's).
//!
//! ```text
//! cargo run --release -p omen-bench --example qg_build -- glove-50-l2 [THREADS,...]
//! ```

use omen_core::{Metric, VectorIndex, VectorStorage};
use omen_qg::{QgIndex, QgParams};
use omen_storage::MemoryStorage;
use std::error::Error;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "glove-50-l2".into());
    let threads: Vec<usize> = match args.next() {
        Some(list) => list
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        None => vec![1, 2],
    };
    let ds = omen_datasets::load_named(&name, &omen_datasets::default_data_dir(), 10)?;
    let dim = ds.base.dim();
    let storage = MemoryStorage::new(dim)?;
    storage.append_batch(ds.base.data())?;
    let n = storage.len();
    let metric: Metric = ds.metric;
    println!("dataset {name}: {n} x {dim}, {metric:?}; QgParams defaults (M 16, ef_construction 200, keep_pruned, fill_layer0, pq_m {})", omen_qg::default_pq_m(dim));
    println!("| threads | build s | vectors/s | graph B/vec | codes B/vec | blocks B/vec | codebooks B | full vectors B/vec |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &t in &threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        let index = QgIndex::new(dim, metric, QgParams::new())?;
        let start = Instant::now();
        pool.install(|| index.add(&storage, 0..n as u32))?;
        let secs = start.elapsed().as_secs_f64();
        if !index.is_trained() {
            return Err("the index did not train (fewer rows than train_at)".into());
        }
        let m = index.memory_breakdown();
        let per = |b: usize| b as f64 / n as f64;
        println!(
            "| {t} | {secs:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
            n as f64 / secs,
            per(m.graph),
            per(m.codes),
            per(m.blocks),
            m.codebooks,
            dim * 4
        );
    }
    Ok(())
}
