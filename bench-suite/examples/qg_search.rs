//! Searches the quantized-graph index in-process (one query per call, one thread;
//! then the same queries in one `search_batch` call on a one-thread pool) over a
//! dataset, for profiling the walk: `QG_INDEX=FILE` keeps the built index
//! between runs (it is loaded with `QgIndex::from_bytes`, blocks rebuilt);
//! `QG_PQ_M=M` builds with `M` sub-quantizers instead of the default, and
//! `QG_EFC=N` with `ef_construction` N, and `QG_FILL=0` without `fill_layer0` (plain HNSW layer-0 lists, about 24 of a
//! block's 32 lanes filled).
//!
//! ```text
//! cargo run --release -p omen-bench --example qg_search -- glove-50-l2 2000 64,256 [RERANK]
//! ```

use omen_core::{SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
use omen_qg::{QgIndex, QgParams};
use omen_storage::MemoryStorage;
use std::error::Error;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "glove-50-l2".into());
    let nq: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let efs: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "64".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let rerank: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let k = 10;
    let ds = omen_datasets::load_named(&name, &omen_datasets::default_data_dir(), k)?;
    let dim = ds.base.dim();
    let storage = MemoryStorage::new(dim)?;
    storage.append_batch(ds.base.data())?;
    let n = storage.len();
    let cache = std::env::var("QG_INDEX").ok().map(std::path::PathBuf::from);
    let index = match cache.as_ref().filter(|p| p.exists()) {
        Some(p) => QgIndex::from_bytes(&std::fs::read(p)?, p)?,
        None => {
            let mut params = QgParams::new();
            if let Some(m) = std::env::var("QG_PQ_M").ok().and_then(|m| m.parse().ok()) {
                params = params.with_pq_m(m);
            }
            if let Some(ef) = std::env::var("QG_EFC").ok().and_then(|m| m.parse().ok()) {
                params = params.with_ef_construction(ef);
            }
            if std::env::var("QG_FILL").is_ok_and(|v| v == "0") {
                params = params.with_fill_layer0(false);
            }
            let index = QgIndex::new(dim, ds.metric, params)?;
            let t = Instant::now();
            index.add(&storage, 0..n as u32)?;
            eprintln!("built in {:.1} s", t.elapsed().as_secs_f64());
            if let Some(p) = &cache {
                std::fs::write(p, index.to_bytes())?;
            }
            index
        }
    };
    {
        // Layer-0 out-degree: a block has 32 lanes, the graph's list fills some.
        let mut ids = Vec::new();
        let (mut nodes, mut links, mut full) = (0usize, 0usize, 0usize);
        for s in 0..n as u32 {
            if index.graph().links(s, 0, &mut ids) {
                nodes += 1;
                links += ids.len().min(32);
                full += usize::from(ids.len() >= 32);
            }
        }
        eprintln!(
            "layer-0 out-degree: mean {:.2} over {nodes} nodes, {:.1} % with 32 or more",
            links as f64 / nodes.max(1) as f64,
            100.0 * full as f64 / nodes.max(1) as f64
        );
    }
    let gt = ds.ground_truth.as_ref().ok_or("no ground truth")?;
    let queries: Vec<&[f32]> = ds.queries.iter_rows().take(nq).collect();
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    let flat: Vec<f32> = queries.iter().flat_map(|q| q.iter().copied()).collect();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut batch = Vec::new();
    println!("| ef | rerank | recall@10 | QPS | batch recall@10 | batch QPS |");
    for &ef in &efs {
        let mut p = SearchParams::new().with("ef", ef);
        if let Some(r) = rerank {
            p = p.with("rerank", r);
        }
        let mut hits = 0;
        for (qi, q) in queries.iter().enumerate() {
            index.search(
                &storage,
                &SearchRequest::new(q, k, &p),
                &mut scratch,
                &mut out,
            )?;
            let truth = &gt.query_ids(qi).unwrap_or(&[])[..k];
            hits += out.iter().filter(|x| truth.contains(&x.slot)).count();
        }
        let passes: usize = std::env::var("QG_PASSES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let mut best = 0f64;
        for _ in 0..passes {
            let t = Instant::now();
            for q in &queries {
                index.search(
                    &storage,
                    &SearchRequest::new(q, k, &p),
                    &mut scratch,
                    &mut out,
                )?;
            }
            best = best.max(queries.len() as f64 / t.elapsed().as_secs_f64());
        }
        let mut best_batch = 0f64;
        for _ in 0..passes {
            let t = Instant::now();
            one.install(|| index.search_batch(&storage, &flat, k, &p, None, &mut batch))?;
            best_batch = best_batch.max(queries.len() as f64 / t.elapsed().as_secs_f64());
        }
        let batch_hits: usize = batch
            .iter()
            .enumerate()
            .map(|(qi, r)| {
                let truth = &gt.query_ids(qi).unwrap_or(&[])[..k];
                r.iter().filter(|x| truth.contains(&x.slot)).count()
            })
            .sum();
        println!(
            "| {ef} | {} | {:.4} | {best:.0} | {:.4} | {best_batch:.0} |",
            rerank.map_or("ef".into(), |r| r.to_string()),
            hits as f64 / (k * queries.len()) as f64,
            batch_hits as f64 / (k * queries.len()) as f64
        );
    }
    Ok(())
}
