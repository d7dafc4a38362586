//! k-means clustering, shared by the coarse quantizer and the product quantizer.
//!
//! Lloyd's algorithm with
//! * k-means++ or seeded random initialisation ([`KMeansInit`]);
//! * assignment through the tiled many-to-many kernel (`l2_sq_tile`), in parallel
//!   over fixed blocks of points with rayon;
//! * centroid sums accumulated in f64 per fixed block and reduced in block order, so
//!   the result depends on the seed only, not on the number of threads or on how
//!   rayon schedules the blocks;
//! * FAISS-style splitting of empty clusters: an empty cluster takes a copy of the
//!   largest cluster's centroid, and the two are pushed apart by a relative
//!   perturbation of `1 ± 1/1024` per component (at least 1/1024 of the centroid's
//!   RMS, so that zero components move too);
//! * training on a random sample of at most [`KMeansParams::max_sample`] points.
//!
//! Everything random comes from one `ChaCha8Rng` seeded with [`KMeansParams::seed`].

use crate::simd::Kernels;
use crate::{Error, Result};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Points per assignment tile. The tile kernel packs both operands on every call, so
/// a tile must be tall enough for the repacking of the `k` centroids to be small
/// next to the `TILE × k × dim` arithmetic.
const TILE: usize = 256;

/// Points per parallel block. Fixed (not derived from the thread count) so that the
/// f64 partial sums, and hence the centroids, are the same on every machine.
const BLOCK: usize = 4096;

/// Relative perturbation applied when an empty cluster is split off a large one.
const SPLIT_EPS: f32 = 1.0 / 1024.0;

/// How the first centroids are chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KMeansInit {
    /// `k` distinct points drawn uniformly at random (FAISS's choice; cheap).
    Random,
    /// k-means++ (D² sampling): better starting points, `O(n·k·dim)` extra work.
    PlusPlus,
}

/// Parameters of one k-means run.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansParams {
    /// Number of clusters.
    pub k: usize,
    /// Lloyd iterations after initialisation.
    pub iters: usize,
    /// Seed of the ChaCha8 generator behind sampling, initialisation and splitting.
    pub seed: u64,
    /// Train on at most this many points, drawn at random without replacement
    /// (all points when there are fewer).
    pub max_sample: usize,
    /// Initialisation.
    pub init: KMeansInit,
    /// Renormalise centroids to unit length after each update (spherical k-means,
    /// for unit vectors compared by inner product).
    pub spherical: bool,
}

impl KMeansParams {
    /// `k` clusters, 20 iterations, seed 0, sample of up to `256 · k` points, random
    /// initialisation, not spherical.
    pub fn new(k: usize) -> Self {
        KMeansParams {
            k,
            iters: 20,
            seed: 0,
            max_sample: k.saturating_mul(256),
            init: KMeansInit::Random,
            spherical: false,
        }
    }
}

/// The result of a k-means run.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    /// Width of a centroid.
    pub dim: usize,
    /// Row-major centroids, `k × dim`.
    pub centroids: Vec<f32>,
    /// Sum of squared distances of the training sample to its centroids after the
    /// last assignment.
    pub objective: f64,
}

impl KMeans {
    /// Number of centroids.
    pub fn k(&self) -> usize {
        self.centroids.len() / self.dim.max(1)
    }
}

/// Clusters the `data.len() / dim` rows of `data` into `params.k` clusters.
///
/// Errors: `DimensionMismatch` when `data` is not a whole number of rows;
/// `InvalidParameter` when `k` or `dim` is 0, or there are fewer rows than `k`;
/// `NonFinite` for a NaN or infinite component.
pub fn kmeans(
    kernels: &Kernels,
    data: &[f32],
    dim: usize,
    params: &KMeansParams,
) -> Result<KMeans> {
    let n = crate::validate::check_rows(data, dim)?;
    let k = params.k;
    if k == 0 {
        return Err(Error::invalid_param(
            "k",
            "k-means needs at least one cluster",
        ));
    }
    if n < k {
        return Err(Error::invalid_param(
            "k",
            format!("k-means with {k} clusters needs at least {k} training vectors, got {n}"),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

    // Sample (sorted, for locality of the copy).
    let sample_rows: Vec<f32>;
    let points: &[f32] = if n > params.max_sample.max(k) {
        let mut idx = sample(&mut rng, n, params.max_sample.max(k)).into_vec();
        idx.sort_unstable();
        sample_rows = idx
            .iter()
            .flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        &sample_rows
    } else {
        data
    };
    let n = points.len() / dim;

    let mut centroids = match params.init {
        KMeansInit::Random => {
            let idx = sample(&mut rng, n, k).into_vec();
            idx.iter()
                .flat_map(|&i| points[i * dim..(i + 1) * dim].iter().copied())
                .collect::<Vec<f32>>()
        }
        KMeansInit::PlusPlus => plus_plus(kernels, points, dim, k, &mut rng),
    };
    if params.spherical {
        normalise_rows(&mut centroids, dim);
    }

    let mut labels = vec![0u32; n];
    let mut dists = vec![0f32; n];
    for _ in 0..params.iters {
        assign(kernels, &centroids, dim, points, &mut labels, &mut dists);
        update(points, dim, k, &labels, &mut centroids, &mut rng);
        if params.spherical {
            normalise_rows(&mut centroids, dim);
        }
    }
    assign(kernels, &centroids, dim, points, &mut labels, &mut dists);
    let objective = dists.iter().map(|&d| d as f64).sum();
    Ok(KMeans {
        dim,
        centroids,
        objective,
    })
}

/// k-means++ seeding: each next centroid is a point drawn with probability
/// proportional to its squared distance to the closest centroid chosen so far.
fn plus_plus(
    kernels: &Kernels,
    points: &[f32],
    dim: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let n = points.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.gen_range(0..n);
    centroids.extend_from_slice(&points[first * dim..(first + 1) * dim]);
    let mut best = vec![f32::INFINITY; n];
    let mut d = vec![0f32; n];
    for c in 1..k {
        let last = &centroids[(c - 1) * dim..c * dim];
        kernels.l2_sq_many(last, points, &mut d);
        for (b, &x) in best.iter_mut().zip(&d) {
            *b = b.min(x);
        }
        let total: f64 = best.iter().map(|&x| x as f64).sum();
        let pick = if total > 0.0 {
            let mut target = rng.gen::<f64>() * total;
            let mut chosen = n - 1;
            for (i, &x) in best.iter().enumerate() {
                target -= x as f64;
                if target < 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            // Every point coincides with a centroid: any choice is as good.
            rng.gen_range(0..n)
        };
        centroids.extend_from_slice(&points[pick * dim..(pick + 1) * dim]);
    }
    centroids
}

/// Writes, for each row of `points`, the index of its nearest centroid (squared L2,
/// lowest index on ties) and that distance.
pub fn assign(
    kernels: &Kernels,
    centroids: &[f32],
    dim: usize,
    points: &[f32],
    labels: &mut [u32],
    dists: &mut [f32],
) {
    let k = centroids.len() / dim.max(1);
    if k == 0 || dim == 0 {
        return;
    }
    points
        .par_chunks(TILE * dim)
        .zip(labels.par_chunks_mut(TILE))
        .zip(dists.par_chunks_mut(TILE))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(tile, scratch): &mut (Vec<f32>, Vec<f32>), ((rows, lab), dis)| {
                let nq = rows.len() / dim;
                tile.resize(nq * k, 0.0);
                kernels.l2_sq_tile(rows, centroids, dim, tile, scratch);
                for i in 0..nq {
                    let (j, d) = argmin(&tile[i * k..(i + 1) * k]);
                    lab[i] = j as u32;
                    dis[i] = d;
                }
            },
        );
}

/// The index and value of the smallest element (the first on ties; NaN never wins;
/// `(0, +inf)` when nothing is smaller than +inf). A plain scan: after the first
/// few elements the branch is almost always predicted, which measured faster than
/// a lane-parallel select at the baseline x86_64 target.
#[inline]
pub fn argmin(d: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (j, &x) in d.iter().enumerate() {
        if x < best.1 {
            best = (j, x);
        }
    }
    best
}

/// The index and value of the largest element (the first on ties; NaN never wins).
#[inline]
pub fn argmax(d: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (j, &x) in d.iter().enumerate() {
        if x > best.1 {
            best = (j, x);
        }
    }
    best
}

/// Recomputes centroids as the means of their points, then splits empty clusters.
fn update(
    points: &[f32],
    dim: usize,
    k: usize,
    labels: &[u32],
    centroids: &mut [f32],
    rng: &mut ChaCha8Rng,
) {
    let partials: Vec<(Vec<f64>, Vec<u64>)> = points
        .par_chunks(BLOCK * dim)
        .zip(labels.par_chunks(BLOCK))
        .map(|(rows, lab)| {
            let mut sums = vec![0f64; k * dim];
            let mut counts = vec![0u64; k];
            for (row, &l) in rows.chunks_exact(dim).zip(lab) {
                let l = l as usize;
                counts[l] += 1;
                for (s, &x) in sums[l * dim..(l + 1) * dim].iter_mut().zip(row) {
                    *s += x as f64;
                }
            }
            (sums, counts)
        })
        .collect();
    // Fixed-order reduction: the floating-point result does not depend on scheduling.
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0u64; k];
    for (s, c) in &partials {
        for (a, b) in sums.iter_mut().zip(s) {
            *a += b;
        }
        for (a, b) in counts.iter_mut().zip(c) {
            *a += b;
        }
    }
    for c in 0..k {
        if counts[c] > 0 {
            let inv = 1.0 / counts[c] as f64;
            for (dst, &s) in centroids[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&sums[c * dim..(c + 1) * dim])
            {
                *dst = (s * inv) as f32;
            }
        }
    }
    split_empty(centroids, dim, &mut counts, rng);
}

/// FAISS-style handling of empty clusters: each one takes over half of the largest
/// cluster, with the two centroids pushed apart symmetrically.
fn split_empty(centroids: &mut [f32], dim: usize, counts: &mut [u64], rng: &mut ChaCha8Rng) {
    let k = counts.len();
    for ci in 0..k {
        if counts[ci] != 0 {
            continue;
        }
        let mut cj = 0;
        for (j, &c) in counts.iter().enumerate() {
            if c > counts[cj] {
                cj = j;
            }
        }
        if counts[cj] <= 1 {
            // Nothing left to split: every non-empty cluster holds one point.
            return;
        }
        // A random sign pattern keeps repeated splits of one cluster apart. The
        // step is relative (FAISS's 1 ± eps) but never below eps times the
        // centroid's RMS (or eps itself), so zero components move too.
        let flip = rng.gen::<bool>();
        let row = &centroids[cj * dim..(cj + 1) * dim];
        let rms = (row.iter().map(|x| x * x).sum::<f32>() / dim.max(1) as f32).sqrt();
        let floor = if rms > 0.0 {
            SPLIT_EPS * rms
        } else {
            SPLIT_EPS
        };
        for d in 0..dim {
            let x = centroids[cj * dim + d];
            let step = (SPLIT_EPS * x.abs()).max(floor);
            let sign = if (d % 2 == 0) ^ flip { 1.0 } else { -1.0 };
            centroids[ci * dim + d] = x + sign * step;
            centroids[cj * dim + d] = x - sign * step;
        }
        counts[ci] = counts[cj] / 2;
        counts[cj] -= counts[ci];
    }
}

fn normalise_rows(rows: &mut [f32], dim: usize) {
    for r in rows.chunks_exact_mut(dim) {
        let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    fn blobs(n_per: usize, centres: &[[f32; 2]], seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0f32, 0.05).unwrap();
        let mut v = Vec::new();
        for _ in 0..n_per {
            for c in centres {
                v.push(c[0] + noise.sample(&mut rng));
                v.push(c[1] + noise.sample(&mut rng));
            }
        }
        v
    }

    #[test]
    fn finds_well_separated_blobs() {
        let centres = [[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]];
        let data = blobs(200, &centres, 1);
        for init in [KMeansInit::Random, KMeansInit::PlusPlus] {
            let mut p = KMeansParams::new(4);
            p.init = init;
            p.seed = 3;
            let km = kmeans(Kernels::best(), &data, 2, &p).unwrap();
            for c in &centres {
                let best = km
                    .centroids
                    .chunks_exact(2)
                    .map(|x| (x[0] - c[0]).powi(2) + (x[1] - c[1]).powi(2))
                    .fold(f32::INFINITY, f32::min);
                assert!(best < 0.01, "{init:?}: centre {c:?} missed by {best}");
            }
            // 800 points of variance 2 × 0.05².
            assert!(
                km.objective < 800.0 * 2.0 * 0.0025 * 1.5,
                "objective {}",
                km.objective
            );
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_seed_matters() {
        let data = blobs(300, &[[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]], 9);
        let mut p = KMeansParams::new(16);
        p.seed = 42;
        p.max_sample = 500;
        let a = kmeans(Kernels::best(), &data, 2, &p).unwrap();
        // A different thread pool size must not change anything.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| kmeans(Kernels::best(), &data, 2, &p).unwrap());
        assert_eq!(a, b);
        p.seed = 43;
        let c = kmeans(Kernels::best(), &data, 2, &p).unwrap();
        assert_ne!(a.centroids, c.centroids);
    }

    #[test]
    fn splits_empty_clusters() {
        // Two distinct points, many duplicates, 4 clusters: starting from duplicate
        // centroids, some clusters are empty and must be split, not left at NaN.
        let mut data = [0.0f32, 0.0].repeat(50);
        data.extend([1.0f32, 1.0].repeat(50));
        let mut p = KMeansParams::new(4);
        p.seed = 5;
        let km = kmeans(Kernels::best(), &data, 2, &p).unwrap();
        assert!(km.centroids.iter().all(|x| x.is_finite()));
        assert!(km.objective < 1e-3);
        let mut counts = [0u64, 3];
        let mut cents = vec![1.0f32, 2.0, 0.0, 0.0];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        split_empty(&mut cents, 2, &mut counts, &mut rng);
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert!(counts[0] >= 1 && counts[1] >= 1);
        assert_ne!(cents[0..2], cents[2..4]);
    }

    proptest::proptest! {
        #[test]
        fn argmin_argmax_match_a_sequential_scan(v in proptest::collection::vec(proptest::prop_oneof![-4i8..4, proptest::strategy::Just(100)], 0..70)) {
            let d: Vec<f32> = v.iter().map(|&x| if x == 100 { f32::NAN } else { x as f32 }).collect();
            let mut lo = (0usize, f32::INFINITY);
            let mut hi = (0usize, f32::NEG_INFINITY);
            for (i, &x) in d.iter().enumerate() {
                if x < lo.1 { lo = (i, x); }
                if x > hi.1 { hi = (i, x); }
            }
            proptest::prop_assert_eq!(argmin(&d), lo);
            proptest::prop_assert_eq!(argmax(&d), hi);
        }
    }

    #[test]
    fn bad_input() {
        let k = Kernels::best();
        assert!(matches!(
            kmeans(k, &[1.0, 2.0], 2, &KMeansParams::new(2)),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            kmeans(k, &[1.0, 2.0, 3.0], 2, &KMeansParams::new(1)),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            kmeans(k, &[1.0, f32::NAN], 2, &KMeansParams::new(1)),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            kmeans(k, &[1.0, 2.0], 2, &KMeansParams::new(0)),
            Err(Error::InvalidParameter { .. })
        ));
    }
}
