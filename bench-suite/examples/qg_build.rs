//! Build speed and memory of the quantized-graph index (issue 14, item 3): builds
//! `QgIndex` over a dataset's base on 1 and then 2 threads, and prints the build
//! rate of each phase (the HNSW graph, then the PQ training, coding and block
//! layout) and the memory per vector of each part: the graph's links, the codes,
//! the node blocks, and the full vectors the re-rank reads (the storage's).
//!
//! ```text
//! cargo run --release -p omen-bench --example qg_build -- glove-50-l2 [THREADS,...] [EF_CONSTRUCTION]
//! ```
//!
//! The blocks' bytes are split into the neighbours' codes and the allocation's
//! unused capacity (the ids are the graph's own layer-0 lists, counted there).

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
    let efc: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let ds = omen_datasets::load_named(&name, &omen_datasets::default_data_dir(), 10)?;
    let dim = ds.base.dim();
    let storage = MemoryStorage::new(dim)?;
    storage.append_batch(ds.base.data())?;
    let n = storage.len();
    let metric: Metric = ds.metric;
    let mut params = QgParams::new();
    if let Some(ef) = efc {
        params = params.with_ef_construction(ef);
    }
    let pq_m = params.pq_m_for(dim);
    println!(
        "dataset {name}: {n} x {dim}, {metric:?}; QgParams: M {}, ef_construction {}, keep_pruned, fill_layer0, pq_m {pq_m}",
        params.m, params.ef_construction
    );
    println!("| threads | build s | vectors/s | graph B/vec | node codes B/vec | blocks B/vec: neighbour codes + slack | codebooks B | index B/vec | full vectors B/vec |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // A block: the 32 neighbours' codes in the fast-scan layout (their ids are
    // the graph's layer-0 list).
    let codes = omen_core::simd::fastscan::block_bytes(pq_m);
    for &t in &threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        let index = QgIndex::new(dim, metric, params.clone())?;
        let start = Instant::now();
        pool.install(|| index.add(&storage, 0..n as u32))?;
        let secs = start.elapsed().as_secs_f64();
        if !index.is_trained() {
            return Err("the index did not train (fewer rows than train_at)".into());
        }
        let m = index.memory_breakdown();
        let per = |b: usize| b as f64 / n as f64;
        let blocks = m.blocks / codes;
        println!(
            "| {t} | {secs:.1} | {:.0} | {:.1} | {:.1} | {:.1}: {:.1} + {:.1} | {} | {:.1} | {} |",
            n as f64 / secs,
            per(m.graph),
            per(m.codes),
            per(m.blocks),
            per(blocks * codes),
            per(m.blocks - blocks * codes),
            m.codebooks,
            per(m.graph + m.codes + m.blocks + m.codebooks),
            dim * 4
        );
    }
    Ok(())
}
