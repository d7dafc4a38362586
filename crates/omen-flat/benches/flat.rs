//! Flat search throughput on a seeded synthetic 390,000 × 50 set (the GloVe-50
//! shape): one query at a time, and a batch of queries through the tiled path.
//!
//! `cargo bench -p omen-flat --bench flat`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use omen_core::{Metric, SearchParams, SearchRequest, SearchScratch, VectorIndex, VectorStorage};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 390_000;
const DIM: usize = 50;

fn unit_rows(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n * DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    for r in v.chunks_exact_mut(DIM) {
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let storage = MemoryStorage::new(DIM).unwrap();
    let slots = storage.append_batch(&unit_rows(&mut rng, N)).unwrap();
    let queries = unit_rows(&mut rng, 256);
    let params = SearchParams::new();
    for metric in [Metric::InnerProduct, Metric::L2] {
        let index = FlatIndex::new(DIM, metric).unwrap();
        index.add(&storage, slots.clone()).unwrap();

        let mut g = c.benchmark_group(format!("flat_{}", metric.name()));
        g.sample_size(10);
        g.throughput(Throughput::Bytes((N * DIM * 4) as u64));
        let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
        let mut qi = 0;
        g.bench_function("single_query_k10", |b| {
            b.iter(|| {
                let q = &queries[qi * DIM..(qi + 1) * DIM];
                qi = (qi + 1) % 256;
                let req = SearchRequest::new(q, 10, &params);
                index
                    .search(&storage, &req, &mut scratch, &mut out)
                    .unwrap();
            })
        });
        g.throughput(Throughput::Elements(256));
        let mut outs = Vec::new();
        g.bench_function("batch_256_queries_k10", |b| {
            b.iter(|| {
                index
                    .search_batch(&storage, &queries, 10, &params, None, &mut outs)
                    .unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
