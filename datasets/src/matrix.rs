//! Row-major matrices of vectors and ground-truth tables.

use omen_core::{Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for i32 {}
    impl Sealed for u8 {}
}

/// An element type the file formats store: `f32`, `i32` or `u8`, little-endian.
pub trait Element: sealed::Sealed + Copy + Default + PartialEq + Send + Sync + 'static {
    /// Bytes per element on disk.
    const SIZE: usize;
    /// Decodes one element from exactly `SIZE` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the little-endian encoding.
    fn push_le(self, out: &mut Vec<u8>);
    /// Whether the value is acceptable in a vector file (finite, for floats).
    fn is_valid(self) -> bool;
    /// The value as `f32` (for error messages and conversions).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const SIZE: usize = 4;
    #[inline]
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline]
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    #[inline]
    fn is_valid(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for i32 {
    const SIZE: usize = 4;
    #[inline]
    fn from_le(b: &[u8]) -> Self {
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline]
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    #[inline]
    fn is_valid(self) -> bool {
        true
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl Element for u8 {
    const SIZE: usize = 1;
    #[inline]
    fn from_le(b: &[u8]) -> Self {
        b[0]
    }
    #[inline]
    fn push_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
    #[inline]
    fn is_valid(self) -> bool {
        true
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// A row-major matrix: `rows` vectors of `dim` elements each.
///
/// Invariant: `data.len() == rows * dim` and `dim >= 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<T> {
    rows: usize,
    dim: usize,
    data: Vec<T>,
}

/// Float vectors, the type every reader of base and query files returns.
pub type Vectors = Matrix<f32>;

impl<T: Copy> Matrix<T> {
    /// A matrix over `data`, which must hold a whole number of `dim`-wide rows.
    pub fn new(dim: usize, data: Vec<T>) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid_param("dim", "must be at least 1"));
        }
        if !data.len().is_multiple_of(dim) {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: data.len() % dim,
            });
        }
        Ok(Matrix {
            rows: data.len() / dim,
            dim,
            data,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// All elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Takes the elements out, row-major.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Row `i`; `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[T]> {
        (i < self.rows).then(|| &self.data[i * self.dim..(i + 1) * self.dim])
    }

    /// Iterates the rows.
    pub fn iter_rows(&self) -> std::slice::ChunksExact<'_, T> {
        self.data.chunks_exact(self.dim)
    }

    /// A new matrix of the rows at `indices`, in that order. Errors with
    /// `InvalidParameter` if an index is out of range.
    pub fn select_rows(&self, indices: &[usize]) -> Result<Self> {
        let mut data = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            let r = self.row(i).ok_or_else(|| {
                Error::invalid_param("indices", format!("row {i} of {}", self.rows))
            })?;
            data.extend_from_slice(r);
        }
        Ok(Matrix {
            rows: indices.len(),
            dim: self.dim,
            data,
        })
    }

    /// Mutable elements (the shape cannot change).
    pub(crate) fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Built by the readers, which have checked the sizes already.
    pub(crate) fn from_parts(rows: usize, dim: usize, data: Vec<T>) -> Self {
        debug_assert_eq!(rows * dim, data.len());
        Matrix { rows, dim, data }
    }
}

impl Matrix<u8> {
    /// The same vectors as `f32` (bvecs/u8bin datasets are searched as floats).
    pub fn to_f32(&self) -> Vectors {
        Matrix::from_parts(
            self.rows,
            self.dim,
            self.data.iter().map(|&b| f32::from(b)).collect(),
        )
    }
}

impl Vectors {
    /// Checks that every component is finite; the error names the row.
    pub fn check_finite(&self) -> Result<()> {
        for (i, r) in self.iter_rows().enumerate() {
            omen_core::validate::check_finite(r, i)?;
        }
        Ok(())
    }

    /// L2-normalises every row in place. A zero row is `ZeroVector` (and the matrix
    /// is left unchanged).
    pub fn normalize(&mut self) -> Result<()> {
        // Check first so that an error leaves the matrix untouched.
        for (i, r) in self.iter_rows().enumerate() {
            if r.iter().all(|&x| x == 0.0) {
                return Err(Error::ZeroVector { row: i });
            }
        }
        let mut tmp = Vec::with_capacity(self.dim);
        let mut out = Vec::with_capacity(self.data.len());
        for (i, r) in self.iter_rows().enumerate() {
            omen_core::validate::normalize_into(r, &mut tmp, i)?;
            out.extend_from_slice(&tmp);
        }
        self.data = out;
        Ok(())
    }
}

/// Exact nearest neighbours of every query: `k` ids and distances per query,
/// closest first, row-major.
///
/// Invariant: `ids.len() == distances.len() == queries * k` and `k >= 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruth {
    k: usize,
    ids: Vec<u32>,
    distances: Vec<f32>,
}

impl GroundTruth {
    /// A ground truth table; `ids` and `distances` hold `k` entries per query.
    pub fn new(k: usize, ids: Vec<u32>, distances: Vec<f32>) -> Result<Self> {
        if k == 0 {
            return Err(Error::invalid_param("k", "must be at least 1"));
        }
        if !ids.len().is_multiple_of(k) || ids.len() != distances.len() {
            return Err(Error::invalid_param(
                "ground_truth",
                format!(
                    "{} ids and {} distances are not a whole number of rows of {k}",
                    ids.len(),
                    distances.len()
                ),
            ));
        }
        Ok(GroundTruth { k, ids, distances })
    }

    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of queries.
    pub fn queries(&self) -> usize {
        self.ids.len() / self.k
    }

    /// All ids, `k` per query.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// All distances, `k` per query.
    pub fn distances(&self) -> &[f32] {
        &self.distances
    }

    /// The ids of query `q`; `None` past the end.
    pub fn query_ids(&self, q: usize) -> Option<&[u32]> {
        self.ids.get(q * self.k..(q + 1) * self.k)
    }

    /// The distances of query `q`; `None` past the end.
    pub fn query_distances(&self, q: usize) -> Option<&[f32]> {
        self.distances.get(q * self.k..(q + 1) * self.k)
    }

    /// The first `k` neighbours of every query (`k` no larger than [`k`](Self::k)).
    pub fn truncate(&self, k: usize) -> Result<GroundTruth> {
        if k == 0 || k > self.k {
            return Err(Error::invalid_param(
                "k",
                format!("must be in 1..={}, got {k}", self.k),
            ));
        }
        let mut ids = Vec::with_capacity(self.queries() * k);
        let mut distances = Vec::with_capacity(self.queries() * k);
        for q in 0..self.queries() {
            ids.extend_from_slice(&self.ids[q * self.k..q * self.k + k]);
            distances.extend_from_slice(&self.distances[q * self.k..q * self.k + k]);
        }
        Ok(GroundTruth { k, ids, distances })
    }

    /// Takes the ids and distances out.
    pub fn into_parts(self) -> (usize, Vec<u32>, Vec<f32>) {
        (self.k, self.ids, self.distances)
    }
}

/// Neighbour ids read from a ground-truth file (`.ivecs`, or big-ann-benchmarks'
/// binary ground truth), with distances when the file holds them. A
/// [`Dataset`](crate::Dataset) turns it into a [`GroundTruth`], computing missing
/// distances from the vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct NeighborTable {
    /// Neighbours per query.
    pub k: usize,
    /// `k` ids per query, closest first.
    pub ids: Vec<u32>,
    /// `k` distances per query, when the file had them.
    pub distances: Option<Vec<f32>>,
    /// Where the ids lie in their file, to name the offset of a bad one later.
    pub(crate) source: Option<IdSource>,
}

/// Where id `i` of a table was read: `first + (i / k) * row_stride + (i % k) * 4`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IdSource {
    pub file: std::path::PathBuf,
    pub first: u64,
    pub row_stride: u64,
}

impl NeighborTable {
    /// Number of queries.
    pub fn queries(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// The file and byte offset id `i` was read from, when known.
    pub(crate) fn id_location(&self, i: usize) -> (std::path::PathBuf, u64) {
        match &self.source {
            Some(s) => {
                let k = self.k.max(1) as u64;
                let i = i as u64;
                (
                    s.file.clone(),
                    s.first + (i / k) * s.row_stride + (i % k) * 4,
                )
            }
            None => (std::path::PathBuf::from("<memory>"), 0),
        }
    }
}
