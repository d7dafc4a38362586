//! Searches an HNSW index in-process (one query per call, one thread) over a
//! dataset, for profiling the walk. `HNSW_INDEX=FILE` keeps the built index
//! between runs (an `.hnsw` file as a checkpoint writes it, e.g. a collection's
//! `index-*.hnsw` whose rows are the dataset's base in order).
//!
//! ```text
//! cargo run --release -p omen-bench --example hnsw_search -- glove-50-angular 2000 16,32,64
//! ```

use omen_core::{SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
use omen_hnsw::{HnswIndex, HnswParams};
use omen_storage::MemoryStorage;
use std::error::Error;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "glove-50-angular".into());
    let nq: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let efs: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "64".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let k = 10;
    let ds = omen_datasets::load_named(&name, &omen_datasets::default_data_dir(), k)?;
    let dim = ds.base.dim();
    let storage = MemoryStorage::new(dim)?;
    storage.append_batch(ds.base.data())?;
    let n = storage.len();
    let cache = std::env::var("HNSW_INDEX")
        .ok()
        .map(std::path::PathBuf::from);
    let index = match cache.as_ref().filter(|p| p.exists()) {
        Some(p) => HnswIndex::from_bytes(&std::fs::read(p)?, p)?,
        None => {
            let index = HnswIndex::new(dim, ds.metric, HnswParams::new())?;
            let t = Instant::now();
            index.add(&storage, 0..n as u32)?;
            eprintln!("built in {:.1} s", t.elapsed().as_secs_f64());
            if let Some(p) = &cache {
                std::fs::write(p, index.to_bytes())?;
            }
            index
        }
    };
    let gt = ds.ground_truth.as_ref().ok_or("no ground truth")?;
    let queries: Vec<&[f32]> = ds.queries.iter_rows().take(nq).collect();
    let mut scratch = SearchScratch::new();
    let mut out = Vec::new();
    let passes: usize = std::env::var("HNSW_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("| ef | recall@10 | QPS (best of {passes}) |");
    for &ef in &efs {
        let p = SearchParams::new().with("ef", ef);
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
        println!(
            "| {ef} | {:.4} | {best:.0} |",
            hits as f64 / (k * queries.len()) as f64
        );
    }
    Ok(())
}
