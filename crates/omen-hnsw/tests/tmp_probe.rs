#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use omen_core::*;
use omen_hnsw::*;
use omen_storage::MemoryStorage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn mixture(n: usize, dim: usize, centers: usize, seed: u64, spread: f32) -> Vec<f32> {
    let idim = 16;
    let mut rng = StdRng::seed_from_u64(seed / 100);
    let cs: Vec<f32> = (0..centers * dim).map(|_| rng.gen_range(-spread..spread)).collect();
    let g = Normal::new(0.0f32, 1.0).unwrap();
    let proj: Vec<f32> = (0..centers * dim * idim).map(|_| g.sample(&mut rng)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * dim);
    let mut z = vec![0f32; idim];
    for _ in 0..n {
        let c = rng.gen_range(0..centers);
        z.iter_mut().for_each(|x| *x = g.sample(&mut rng));
        for d in 0..dim {
            let p = &proj[(c * dim + d) * idim..(c * dim + d + 1) * idim];
            out.push(cs[c * dim + d] + p.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + 0.1 * g.sample(&mut rng));
        }
    }
    out
}

#[test]
fn probe() {
    for (spread, par) in [(10.0f32, true), (3.0, true)] {
        let (n, dim) = (20000, 32);
        let rows = mixture(n, dim, 50, 303, spread);
        let storage = MemoryStorage::new(dim).unwrap();
        storage.append_batch(&rows).unwrap();
        let index = HnswIndex::new(dim, Metric::L2, HnswParams::default()).unwrap();
        let t = std::time::Instant::now();
        if par { index.add(&storage, 0..n as u32).unwrap(); } else {
            for s in (0..n as u32).step_by(200) { index.add(&storage, s..s+200).unwrap(); }
        }
        let bt = t.elapsed();
        let flat = omen_flat::FlatIndex::new(dim, Metric::L2).unwrap();
        flat.add(&storage, 0..n as u32).unwrap();
        let queries = mixture(200, dim, 50, 304, spread);
        let ex = SearchParams::exhaustive();
        for ef in [64usize, 256] {
            let p = SearchParams::new().with_ef(ef);
            let mut tot = 0.0; let mut selfhit = 0;
            let (mut sc, mut o1, mut o2) = (SearchScratch::new(), Vec::new(), Vec::new());
            for q in queries.chunks_exact(dim) {
                flat.search(&storage, &SearchRequest::new(q, 10, &ex), &mut sc, &mut o1).unwrap();
                index.search(&storage, &SearchRequest::new(q, 10, &p), &mut sc, &mut o2).unwrap();
                tot += o2.iter().filter(|g| o1.iter().any(|w| w.slot == g.slot)).count() as f64 / 10.0;
            }
            for s in 0..1000u32 {
                index.search(&storage, &SearchRequest::new(storage.get(s).unwrap(), 1, &p), &mut sc, &mut o2).unwrap();
                if o2[0].distance == 0.0 { selfhit += 1; }
            }
            println!("spread {spread} par {par} build {bt:?} ef {ef} recall {} self {selfhit}/1000 top {:?}", tot / 200.0, index.top_level());
        }
    }
}
