//! Seeded synthetic vectors: uniform, Gaussian, and a Gaussian mixture.
//!
//! Every generator draws from [`ChaCha8Rng`], whose output is specified bit for bit
//! and independent of the platform, seeded with [`SeedableRng::seed_from_u64`].
//! Each role takes its own ChaCha stream of the same seed (mixture centres on
//! stream 0, base vectors on stream 1, queries on stream 2), so changing the number
//! of base rows does not change the queries. Values are sampled with rand_distr
//! (`Uniform`, `Normal`); the tests pin a checksum of the output so that a change
//! of either crate's sampling algorithm is noticed rather than silently producing a
//! different dataset under the same name.

use crate::matrix::{Matrix, Vectors};
use crate::Dataset;
use omen_core::{Error, Metric, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal, Uniform};

/// The ChaCha stream of each role.
const STREAM_CENTERS: u64 = 0;
const STREAM_BASE: u64 = 1;
const STREAM_QUERIES: u64 = 2;

/// How synthetic vectors are drawn.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Distribution {
    /// Each component uniform in `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound (exclusive), greater than `low`.
        high: f32,
    },
    /// Each component normal with this mean and standard deviation.
    Gaussian {
        /// Mean.
        mean: f32,
        /// Standard deviation, positive.
        std_dev: f32,
    },
    /// `clusters` centres uniform in `[-1, 1)^dim`; each vector is a uniformly
    /// chosen centre plus Gaussian noise of standard deviation `spread` per
    /// component. Base and queries share the centres.
    GaussianMixture {
        /// Number of centres, at least 1.
        clusters: usize,
        /// Per-component noise standard deviation, positive.
        spread: f32,
    },
}

impl Distribution {
    fn validate(&self) -> Result<()> {
        let ok = match *self {
            Distribution::Uniform { low, high } => {
                low.is_finite() && high.is_finite() && low < high
            }
            Distribution::Gaussian { mean, std_dev } => {
                mean.is_finite() && std_dev.is_finite() && std_dev > 0.0
            }
            Distribution::GaussianMixture { clusters, spread } => {
                clusters >= 1 && spread.is_finite() && spread > 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid_param(
                "distribution",
                format!("{self:?} has out-of-range parameters"),
            ))
        }
    }
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

fn mixture_centers(seed: u64, clusters: usize, dim: usize) -> Vec<f32> {
    let mut r = rng(seed, STREAM_CENTERS);
    let u = Uniform::new(-1.0f32, 1.0f32);
    (0..clusters * dim).map(|_| u.sample(&mut r)).collect()
}

fn generate_stream(
    rows: usize,
    dim: usize,
    dist: &Distribution,
    seed: u64,
    stream: u64,
    normalize: bool,
) -> Result<Vectors> {
    if dim == 0 {
        return Err(Error::invalid_param("dim", "must be at least 1"));
    }
    dist.validate()?;
    let len = rows
        .checked_mul(dim)
        .ok_or_else(|| Error::invalid_param("rows", "rows × dim overflows"))?;
    let mut r = rng(seed, stream);
    let mut data = Vec::with_capacity(len);
    match *dist {
        Distribution::Uniform { low, high } => {
            let u = Uniform::new(low, high);
            data.extend((0..len).map(|_| u.sample(&mut r)));
        }
        Distribution::Gaussian { mean, std_dev } => {
            let n = Normal::new(mean, std_dev)
                .map_err(|e| Error::invalid_param("distribution", e.to_string()))?;
            data.extend((0..len).map(|_| n.sample(&mut r)));
        }
        Distribution::GaussianMixture { clusters, spread } => {
            let centers = mixture_centers(seed, clusters, dim);
            let n = Normal::new(0.0f32, spread)
                .map_err(|e| Error::invalid_param("distribution", e.to_string()))?;
            // A u32 range keeps the draw identical on 32- and 64-bit targets.
            let clusters = u32::try_from(clusters)
                .map_err(|_| Error::invalid_param("clusters", "more than u32::MAX"))?;
            for _ in 0..rows {
                let c = r.gen_range(0..clusters) as usize;
                let center = &centers[c * dim..(c + 1) * dim];
                data.extend(center.iter().map(|&x| x + n.sample(&mut r)));
            }
        }
    }
    let mut m = Matrix::new(dim, data)?;
    // A sample can overflow only with absurd parameters (e.g. std_dev near f32::MAX).
    m.check_finite()?;
    if normalize {
        m.normalize()?;
    }
    Ok(m)
}

/// `rows` vectors of width `dim` drawn from `dist` with `seed` (the base stream).
/// With `normalize`, every vector is scaled to unit length.
pub fn generate(
    rows: usize,
    dim: usize,
    dist: &Distribution,
    seed: u64,
    normalize: bool,
) -> Result<Vectors> {
    generate_stream(rows, dim, dist, seed, STREAM_BASE, normalize)
}

/// A synthetic dataset's recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Name for reports.
    pub name: String,
    /// Base vectors.
    pub rows: usize,
    /// Queries.
    pub queries: usize,
    /// Width.
    pub dim: usize,
    /// How vectors are drawn.
    pub distribution: Distribution,
    /// Seed (base, queries and centres each use their own stream of it).
    pub seed: u64,
    /// Scale every vector to unit length.
    pub normalize: bool,
    /// The metric the dataset is searched with.
    pub metric: Metric,
}

/// Name of the embedded default dataset.
pub const SYNTHETIC_DEFAULT: &str = "synthetic-default";

impl SyntheticSpec {
    /// The embedded default: `synthetic-default`, 100,000 base vectors and 1,000
    /// queries of width 64 from a mixture of 100 Gaussian clusters (centres
    /// uniform in `[-1, 1)^64`, per-component spread 0.25), seed 42, not
    /// normalised, L2 metric.
    ///
    /// Why this size: clustered data is where approximate indexes differ (uniform
    /// data in 64 dimensions has almost no neighbourhood structure), 100,000 × 64
    /// (25.6 MB) builds every index within a couple of minutes on two cores (HNSW
    /// at M = 16, ef_construction = 200 inserts a few thousand vectors per second
    /// per core), and its exact top-100 takes about a second with the flat index.
    pub fn default_spec() -> Self {
        SyntheticSpec {
            name: SYNTHETIC_DEFAULT.to_string(),
            rows: 100_000,
            queries: 1_000,
            dim: 64,
            distribution: Distribution::GaussianMixture {
                clusters: 100,
                spread: 0.25,
            },
            seed: 42,
            normalize: false,
            metric: Metric::L2,
        }
    }

    /// Draws the base and the queries (no ground truth; see
    /// [`Dataset::with_ground_truth`]).
    pub fn generate(&self) -> Result<Dataset> {
        let base = generate_stream(
            self.rows,
            self.dim,
            &self.distribution,
            self.seed,
            STREAM_BASE,
            self.normalize,
        )?;
        let queries = generate_stream(
            self.queries,
            self.dim,
            &self.distribution,
            self.seed,
            STREAM_QUERIES,
            self.normalize,
        )?;
        Dataset::new(self.name.clone(), self.metric, base, queries, None)
    }
}

/// Name of the SIFT-shaped synthetic set of the headline suites.
pub const SYNTHETIC_1M_128: &str = "synthetic-1m-128";

impl SyntheticSpec {
    /// `synthetic-1m-128`: 1,000,000 base vectors and 10,000 queries of width 128
    /// (SIFT's shape) from a mixture of 1,000 Gaussian clusters (centres uniform
    /// in `[-1, 1)^128`, spread 0.25), seed 128, not normalised, L2. Generated on
    /// first use into the data directory (512 MB), ground truth cached there.
    pub fn synthetic_1m_128() -> Self {
        SyntheticSpec {
            name: SYNTHETIC_1M_128.to_string(),
            rows: 1_000_000,
            queries: 10_000,
            dim: 128,
            distribution: Distribution::GaussianMixture {
                clusters: 1_000,
                spread: 0.25,
            },
            seed: 128,
            normalize: false,
            metric: Metric::L2,
        }
    }
}

/// The embedded default dataset ([`SyntheticSpec::default_spec`]), without ground
/// truth.
pub fn synthetic_default() -> Result<Dataset> {
    SyntheticSpec::default_spec().generate()
}

/// A seeded uniformly random permutation of `0..n` (Fisher–Yates over
/// [`ChaCha8Rng`], drawing `u32` ranges so the result is the same on every
/// platform). Used to split GloVe into base and queries.
pub fn permutation(n: usize, seed: u64) -> Result<Vec<usize>> {
    if n > u32::MAX as usize {
        return Err(Error::invalid_param("n", "more than u32::MAX"));
    }
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = r.gen_range(0..=i as u32) as usize;
        p.swap(i, j);
    }
    Ok(p)
}
