//! Builds a collection on seeded synthetic data, searches it and reports what ran.
//!
//! ```sh
//! cargo run --release -p omen --example demo            # 20,000 × 64, L2
//! cargo run --release -p omen --example demo -- 50000 128 cosine
//! ```
//!
//! Data: a Gaussian mixture (32 centres drawn from N(0, 1) per component, points at
//! a centre plus N(0, 0.35²) noise), seeded, so runs are comparable. Queries are
//! fresh draws from the same mixture. Recall@10 is computed against a brute-force
//! scan written here in f64, by id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omen::{CollectionConfig, Metric, SearchParams, StorageKind, VectorIndex, VectorStorage};
use omen_core::{SearchRequest, SearchScratch};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::time::Instant;

const CENTRES: usize = 32;
const QUERIES: usize = 500;
const K: usize = 10;
const BATCH: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(Ok(20_000), |s| s.parse())?;
    let dim: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let metric: Metric = args.get(2).map_or(Ok(Metric::L2), |s| s.parse())?;

    let mut rng = StdRng::seed_from_u64(42);
    let unit = Normal::new(0.0f32, 1.0)?;
    let noise = Normal::new(0.0f32, 0.35)?;
    let centres: Vec<f32> = (0..CENTRES * dim).map(|_| unit.sample(&mut rng)).collect();
    let draw = |count: usize, rng: &mut StdRng| -> Vec<f32> {
        let mut out = Vec::with_capacity(count * dim);
        for _ in 0..count {
            let c = rng.gen_range(0..CENTRES);
            out.extend(
                centres[c * dim..(c + 1) * dim]
                    .iter()
                    .map(|&x| x + noise.sample(rng)),
            );
        }
        out
    };
    let data = draw(n, &mut rng);
    let queries = draw(QUERIES, &mut rng);
    let ids: Vec<String> = (0..n).map(|i| format!("doc-{i}")).collect();

    let collection = CollectionConfig::new(dim, metric)
        .index(&omen::FLAT)
        .storage(StorageKind::Memory)
        .build()?;
    println!(
        "omen demo: {n} vectors × {dim} dims, metric {metric}, index {}, storage {}, kernels {}",
        collection.index_name(),
        collection.storage_name(),
        collection.isa()
    );

    // Timed: validation, id map updates, storage append and index add, in batches.
    let t = Instant::now();
    for (chunk_ids, rows) in ids.chunks(BATCH).zip(data.chunks(BATCH * dim)) {
        collection.insert_batch(chunk_ids, rows)?;
    }
    let insert_s = t.elapsed().as_secs_f64();
    println!(
        "insert (storage+index insert, flat index; validation and id map included; batches of {BATCH}, 1 thread): {:.0} vectors/s ({:.1} ms total)",
        n as f64 / insert_s,
        insert_s * 1e3
    );

    // Single-query searches, one thread, after an untimed warm-up pass.
    for q in queries.chunks_exact(dim).take(50) {
        collection.search(q, K)?;
    }
    let t = Instant::now();
    let mut results = Vec::with_capacity(QUERIES);
    for q in queries.chunks_exact(dim) {
        results.push(collection.search(q, K)?);
    }
    let single_s = t.elapsed().as_secs_f64();
    println!(
        "search, 1 thread, k={K}: {:.0} QPS ({:.3} ms mean latency over {QUERIES} queries)",
        QUERIES as f64 / single_s,
        single_s * 1e3 / QUERIES as f64
    );

    // The batched path, parallel over queries with rayon.
    let t = Instant::now();
    let batch = collection.search_batch(&queries, K)?;
    let batch_s = t.elapsed().as_secs_f64();
    println!(
        "search_batch, {} rayon threads, k={K}: {:.0} QPS",
        rayon::current_num_threads(),
        QUERIES as f64 / batch_s
    );

    // Ground truth: brute force over what the collection stores (normalised under
    // cosine), in f64, independent of the kernels.
    let stored: Vec<Vec<f32>> = ids.iter().map(|id| collection.get(id).unwrap()).collect();
    let mut hits = 0usize;
    let mut batch_hits = 0usize;
    let mut qn = Vec::new();
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        qn.clear();
        qn.extend_from_slice(q);
        if metric == Metric::Cosine {
            let norm = q.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            qn.iter_mut()
                .for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
        let mut scored: Vec<(f64, usize)> = stored
            .iter()
            .enumerate()
            .map(|(i, v)| (distance(metric, &qn, v), i))
            .collect();
        scored.select_nth_unstable_by(K - 1, |a, b| a.0.total_cmp(&b.0));
        let truth: Vec<&str> = scored[..K].iter().map(|&(_, i)| ids[i].as_str()).collect();
        hits += results[qi]
            .iter()
            .filter(|(id, _)| truth.contains(&&**id))
            .count();
        batch_hits += batch[qi]
            .iter()
            .filter(|(id, _)| truth.contains(&&**id))
            .count();
    }
    println!(
        "recall@{K} against brute force: {:.4} (search), {:.4} (search_batch)",
        hits as f64 / (QUERIES * K) as f64,
        batch_hits as f64 / (QUERIES * K) as f64
    );

    // The same searches straight on a FlatIndex over a MemoryStorage holding the
    // same stored vectors: what the collection's id mapping and pooling cost.
    let storage = MemoryStorage::new(dim)?;
    let flat_rows: Vec<f32> = stored.concat();
    let slots = storage.append_batch(&flat_rows)?;
    let index = FlatIndex::new(dim, metric)?;
    index.add(&storage, slots)?;
    let prepared: Vec<Vec<f32>> = queries
        .chunks_exact(dim)
        .map(|q| {
            let mut v = Vec::new();
            if metric == Metric::Cosine {
                omen_core::validate::normalize_into(q, &mut v, 0)?;
            } else {
                v.extend_from_slice(q);
            }
            Ok(v)
        })
        .collect::<Result<_, omen::Error>>()?;
    let params = SearchParams::default();
    let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
    for q in prepared.iter().take(50) {
        index.search(
            &storage,
            &SearchRequest::new(q, K, &params),
            &mut scratch,
            &mut out,
        )?;
    }
    let t = Instant::now();
    for q in &prepared {
        index.search(
            &storage,
            &SearchRequest::new(q, K, &params),
            &mut scratch,
            &mut out,
        )?;
    }
    let raw_s = t.elapsed().as_secs_f64();
    println!(
        "index only (FlatIndex::search on the same rows, no ids), 1 thread, k={K}: {:.0} QPS",
        QUERIES as f64 / raw_s
    );

    let first = &results[0];
    println!("query 0 nearest: {:?}", &first[..first.len().min(3)]);
    let st = collection.stats();
    println!(
        "stats: {} live, {} storage slots, {} tombstones; memory: storage {:.1} MiB, index {:.1} KiB, id map {:.1} KiB",
        st.len,
        st.storage_slots,
        st.tombstones,
        st.storage_memory_bytes as f64 / (1 << 20) as f64,
        st.index_memory_bytes as f64 / 1024.0,
        st.id_map_memory_bytes as f64 / 1024.0
    );
    Ok(())
}

fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    let dot = || {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum::<f64>()
    };
    match metric {
        Metric::L2 => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum(),
        // Both sides are unit vectors under cosine.
        _ => 1.0 - dot(),
    }
}
