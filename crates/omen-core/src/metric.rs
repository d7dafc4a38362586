use crate::error::{Error, Result};
use omen_simd::Kernels;
use std::fmt;
use std::str::FromStr;

/// How distance between two vectors is measured. Smaller is always closer.
///
/// | metric | distance |
/// |---|---|
/// | `L2` | squared Euclidean distance `|a - b|²` |
/// | `InnerProduct` | `1 - a·b` (hnswlib's convention) |
/// | `Cosine` | `1 - a·b / (|a||b|)` |
///
/// A collection with the cosine metric normalises vectors on insert and queries on
/// search, so its indexes compute `1 - a·b` on unit vectors: the same number as
/// cosine distance, at the cost of a dot product.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Metric {
    /// Squared Euclidean distance.
    L2,
    /// Inner product, as distance `1 - a·b`.
    InnerProduct,
    /// Cosine distance, `1 - cos(a, b)`.
    Cosine,
}

impl Metric {
    /// Short name: `l2`, `ip` or `cosine`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }

    /// Distance between two vectors of equal length under this metric.
    #[inline]
    pub fn distance(self, k: &Kernels, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => k.l2_sq(a, b),
            Metric::InnerProduct => 1.0 - k.dot(a, b),
            Metric::Cosine => k.cosine(a, b),
        }
    }

    /// Distance from `query` to each `query.len()`-wide row of `rows`, into `out`.
    #[inline]
    pub fn distance_many(self, k: &Kernels, query: &[f32], rows: &[f32], out: &mut [f32]) {
        match self {
            Metric::L2 => k.l2_sq_many(query, rows, out),
            Metric::InnerProduct => {
                k.dot_many(query, rows, out);
                out.iter_mut().for_each(|d| *d = 1.0 - *d);
            }
            Metric::Cosine => k.cosine_many(query, rows, out),
        }
    }

    /// Whether stored vectors and queries are unit-normalised before indexing, so
    /// that the index may treat this metric as `InnerProduct`.
    pub fn normalizes(self) -> bool {
        matches!(self, Metric::Cosine)
    }

    /// The metric an index computes for a collection of this metric: a cosine
    /// collection stores unit vectors, so `1 - a·b` is already the cosine distance
    /// and its index computes inner products (no norms per pair). The one place
    /// this rule is written.
    pub fn index_metric(self) -> Metric {
        if self.normalizes() {
            Metric::InnerProduct
        } else {
            self
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Ok(Metric::L2),
            "ip" | "inner_product" | "dot" => Ok(Metric::InnerProduct),
            "cosine" | "angular" => Ok(Metric::Cosine),
            other => Err(Error::invalid_param(
                "metric",
                format!("{other:?} is not one of l2, ip, cosine"),
            )),
        }
    }
}
