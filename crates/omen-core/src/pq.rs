//! Product quantisation: a vector is cut into `m` sub-vectors of `dim / m`
//! components, and each is replaced by the index of its nearest centroid in a
//! per-sub-space codebook of `2^nbits` centroids (16 or 256).

use crate::kmeans::{kmeans, KMeansInit, KMeansParams};
use crate::simd::Kernels;
use crate::{Error, Result};
use rayon::prelude::*;

/// A trained product quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductQuantizer {
    dim: usize,
    m: usize,
    nbits: u32,
    /// `m × ksub × dsub` floats: sub-quantizer `j`'s centroid `c` starts at
    /// `(j * ksub + c) * dsub`.
    codebooks: Vec<f32>,
    /// One-component sub-spaces (`dsub = 1`), derived from the codebooks: per
    /// sub-quantizer, its centroids' indices in ascending order of value
    /// (`m × ksub`) and the midpoints between consecutive sorted values
    /// (`m × (ksub - 1)`). The nearest centroid to `x` is then the sorted one at
    /// position `#{midpoints < x}`: a branch-free count instead of a search.
    order: Vec<u8>,
    mids: Vec<f32>,
}

impl ProductQuantizer {
    /// Checks `dim`, `m` and `nbits` together.
    pub fn check_shape(dim: usize, m: usize, nbits: u32) -> Result<()> {
        if nbits != 4 && nbits != 8 {
            return Err(Error::invalid_param(
                "nbits",
                format!("must be 4 or 8, got {nbits}"),
            ));
        }
        if m == 0 {
            return Err(Error::invalid_param("m", "must be at least 1"));
        }
        if !dim.is_multiple_of(m) {
            return Err(Error::invalid_param(
                "m",
                format!("dimension {dim} is not divisible by m = {m}"),
            ));
        }
        if nbits == 4 && m > 256 {
            // The fast-scan accumulators are u16: 256 sub-quantizers × 255 must fit.
            return Err(Error::invalid_param(
                "m",
                "4-bit fast scan supports at most 256 sub-quantizers",
            ));
        }
        Ok(())
    }

    /// Trains the `m` codebooks on the rows of `data` (k-means per sub-space, in
    /// parallel over sub-spaces; each sub-space has its own seed derived from `seed`).
    pub fn train(
        kernels: &Kernels,
        data: &[f32],
        dim: usize,
        m: usize,
        nbits: u32,
        seed: u64,
        iters: usize,
    ) -> Result<Self> {
        Self::check_shape(dim, m, nbits)?;
        let n = crate::validate::check_rows(data, dim)?;
        let ksub = 1usize << nbits;
        if n < ksub {
            return Err(Error::invalid_param(
                "train_size",
                format!(
                    "a {nbits}-bit sub-quantizer needs at least {ksub} training vectors, got {n}"
                ),
            ));
        }
        let dsub = dim / m;
        let books: Result<Vec<Vec<f32>>> = (0..m)
            .into_par_iter()
            .map(|j| {
                let sub: Vec<f32> = data
                    .chunks_exact(dim)
                    .flat_map(|r| r[j * dsub..(j + 1) * dsub].iter().copied())
                    .collect();
                let mut p = KMeansParams::new(ksub);
                p.iters = iters;
                p.seed = seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(j as u64 + 1));
                p.init = KMeansInit::PlusPlus;
                Ok(kmeans(kernels, &sub, dsub, &p)?.centroids)
            })
            .collect();
        Ok(Self::assemble(dim, m, nbits, books?.concat()))
    }

    fn assemble(dim: usize, m: usize, nbits: u32, codebooks: Vec<f32>) -> Self {
        let ksub = 1usize << nbits;
        let (mut order, mut mids) = (Vec::new(), Vec::new());
        if dim == m {
            for book in codebooks.chunks_exact(ksub) {
                let mut idx: Vec<u8> = (0..ksub).map(|c| c as u8).collect();
                idx.sort_by(|&a, &b| {
                    book[a as usize]
                        .total_cmp(&book[b as usize])
                        .then(a.cmp(&b))
                });
                mids.extend(
                    idx.windows(2)
                        .map(|w| 0.5 * (book[w[0] as usize] + book[w[1] as usize])),
                );
                order.extend_from_slice(&idx);
            }
        }
        ProductQuantizer {
            dim,
            m,
            nbits,
            codebooks,
            order,
            mids,
        }
    }

    /// Rebuilds a quantizer from its parts (used by loading); checks the shape.
    pub fn from_parts(dim: usize, m: usize, nbits: u32, codebooks: Vec<f32>) -> Result<Self> {
        Self::check_shape(dim, m, nbits)?;
        if codebooks.len() != (1usize << nbits) * dim {
            return Err(Error::invalid_param("codebooks", "wrong number of floats"));
        }
        Ok(Self::assemble(dim, m, nbits, codebooks))
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of sub-quantizers.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Bits per sub-quantizer code (4 or 8).
    pub fn nbits(&self) -> u32 {
        self.nbits
    }

    /// Centroids per sub-quantizer.
    pub fn ksub(&self) -> usize {
        1 << self.nbits
    }

    /// Width of a sub-vector.
    pub fn dsub(&self) -> usize {
        self.dim / self.m
    }

    /// The codebooks, `m × ksub × dsub` floats.
    pub fn codebooks(&self) -> &[f32] {
        &self.codebooks
    }

    fn book(&self, j: usize) -> &[f32] {
        let w = self.ksub() * self.dsub();
        &self.codebooks[j * w..(j + 1) * w]
    }

    /// Encodes `x` (`dim` floats) into `codes` (`m` bytes, one code per byte).
    /// `scratch` receives `ksub` distances per sub-space.
    pub fn encode(&self, kernels: &Kernels, x: &[f32], codes: &mut [u8], scratch: &mut Vec<f32>) {
        let dsub = self.dsub();
        let ksub = self.ksub();
        if dsub == 1 && !self.order.is_empty() {
            for (j, code) in codes.iter_mut().enumerate().take(self.m) {
                let x = x[j];
                let mids = &self.mids[j * (ksub - 1)..(j + 1) * (ksub - 1)];
                let pos = mids.iter().map(|&t| (x > t) as usize).sum::<usize>();
                *code = self.order[j * ksub + pos];
            }
            return;
        }
        scratch.resize(ksub, 0.0);
        for (j, code) in codes.iter_mut().enumerate().take(self.m) {
            let xs = &x[j * dsub..(j + 1) * dsub];
            if dsub < 8 {
                // Short sub-vectors: an inline loop (which the compiler vectorises
                // across centroids) beats a kernel call per sub-space.
                for (d, c) in scratch.iter_mut().zip(self.book(j).chunks_exact(dsub)) {
                    *d = xs.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                }
            } else {
                kernels.l2_sq_many(xs, self.book(j), scratch);
            }
            *code = crate::kmeans::argmin(scratch).0 as u8;
        }
    }

    /// Writes the reconstruction of `codes` into `out` (`dim` floats).
    pub fn decode(&self, codes: &[u8], out: &mut [f32]) {
        let dsub = self.dsub();
        for (j, &c) in codes.iter().enumerate().take(self.m) {
            let c = c as usize;
            out[j * dsub..(j + 1) * dsub].copy_from_slice(&self.book(j)[c * dsub..(c + 1) * dsub]);
        }
    }

    /// Distance table for squared L2: `table[j * ksub + c] = |x_j - centroid_{j,c}|²`.
    pub fn l2_table(&self, kernels: &Kernels, x: &[f32], table: &mut [f32]) {
        let (dsub, ksub) = (self.dsub(), self.ksub());
        if dsub == 1 {
            // One component per sub-space: a kernel call per 16 or 256 products
            // costs more than the arithmetic; this loop vectorises instead.
            for ((t, book), &xj) in table
                .chunks_exact_mut(ksub)
                .zip(self.codebooks.chunks_exact(ksub))
                .zip(x)
            {
                for (o, &c) in t.iter_mut().zip(book) {
                    *o = (xj - c) * (xj - c);
                }
            }
            return;
        }
        for j in 0..self.m {
            kernels.l2_sq_many(
                &x[j * dsub..(j + 1) * dsub],
                self.book(j),
                &mut table[j * ksub..(j + 1) * ksub],
            );
        }
    }

    /// Table of negated inner products: `table[j * ksub + c] = -(x_j · centroid_{j,c})`,
    /// so that smaller is closer as for every distance table.
    pub fn neg_ip_table(&self, kernels: &Kernels, x: &[f32], table: &mut [f32]) {
        let (dsub, ksub) = (self.dsub(), self.ksub());
        if dsub == 1 {
            // One component per sub-space: a loop that vectorises beats a kernel
            // call per 16 or 256 products (as in `l2_table`).
            for ((t, book), &xj) in table
                .chunks_exact_mut(ksub)
                .zip(self.codebooks.chunks_exact(ksub))
                .zip(x)
            {
                for (o, &c) in t.iter_mut().zip(book) {
                    *o = -(xj * c);
                }
            }
            return;
        }
        for j in 0..self.m {
            let t = &mut table[j * ksub..(j + 1) * ksub];
            kernels.dot_many(&x[j * dsub..(j + 1) * dsub], self.book(j), t);
            t.iter_mut().for_each(|v| *v = -*v);
        }
    }

    /// The code-dependent part of the squared L2 estimate in the list of coarse
    /// centroid `c` (`dim` floats): `table[j * ksub + k] = |b_jk|² + 2 c_j·b_jk`
    /// for centroid `b_jk` of sub-quantizer `j`, so that for a vector coded
    /// `(k_0, …)` in that list, [`code_term`](Self::code_term) gives
    /// `|r̂|² + 2 c·r̂`, the part of `|q - c - r̂|² = |q - c|² - 2 q·r̂ + |r̂|² + 2 c·r̂`
    /// that does not depend on the query.
    ///
    /// Plain scalar arithmetic in a fixed order, whatever the CPU: the terms are
    /// computed when entries are added and again when an index is loaded, and
    /// must come out the same.
    pub fn list_terms_table(&self, c: &[f32], table: &mut [f32]) {
        let (dsub, ksub) = (self.dsub(), self.ksub());
        for (j, t) in table.chunks_exact_mut(ksub).enumerate().take(self.m) {
            let cj = &c[j * dsub..(j + 1) * dsub];
            for (o, b) in t.iter_mut().zip(self.book(j).chunks_exact(dsub)) {
                let (mut nn, mut cb) = (0f32, 0f32);
                for (&bv, &cv) in b.iter().zip(cj) {
                    nn += bv * bv;
                    cb += cv * bv;
                }
                *o = nn + 2.0 * cb;
            }
        }
    }

    /// `Σ_j table[j * ksub + codes[j]]`, summed in order of `j`, for a table from
    /// [`list_terms_table`](Self::list_terms_table).
    #[inline]
    pub fn code_term(&self, table: &[f32], codes: impl IntoIterator<Item = u8>) -> f32 {
        let ksub = self.ksub();
        table
            .chunks_exact(ksub)
            .zip(codes)
            .map(|(t, c)| t.get(c as usize).copied().unwrap_or(0.0))
            .fold(0.0, |acc, v| acc + v)
    }

    /// Bytes held by the codebooks.
    pub fn memory_bytes(&self) -> usize {
        self.codebooks.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }

    /// Relative MSE `E|x - x̂|² / E|x|²` on held-out Gaussian data.
    fn rel_mse(m: usize, nbits: u32) -> f64 {
        let dim = 32;
        let k = Kernels::best();
        let train = gaussian(4000, dim, 1);
        let test = gaussian(1000, dim, 2);
        let pq = ProductQuantizer::train(k, &train, dim, m, nbits, 7, 15).unwrap();
        let (mut codes, mut rec, mut s) = (vec![0u8; m], vec![0f32; dim], Vec::new());
        let (mut err, mut norm) = (0f64, 0f64);
        for x in test.chunks_exact(dim) {
            pq.encode(k, x, &mut codes, &mut s);
            pq.decode(&codes, &mut rec);
            err += k.l2_sq(x, &rec) as f64;
            norm += x.iter().map(|v| (v * v) as f64).sum::<f64>();
        }
        err / norm
    }

    #[test]
    fn reconstruction_error_within_bounds() {
        // Rate-distortion for a Gaussian source gives D = 2^(-2R) per component at
        // R bits per component; PQ with k-means on finite samples is within a small
        // factor of it. Bounds: R = 8/4 = 2 bits → 0.0625 ideal, < 0.16 asserted;
        // R = 4/4 = 1 bit → 0.25 ideal, < 0.42 asserted; R = 4/2 = 2 bits → < 0.16.
        let e8 = rel_mse(8, 8);
        assert!(e8 < 0.16, "m=8, nbits=8: relative MSE {e8}");
        let e4 = rel_mse(8, 4);
        assert!(e4 < 0.42, "m=8, nbits=4: relative MSE {e4}");
        let e4b = rel_mse(16, 4);
        assert!(e4b < 0.16 && e4b < e4, "m=16, nbits=4: relative MSE {e4b}");
        // More bits per code must help.
        assert!(e8 < e4);
    }

    #[test]
    fn tables_match_decoded_distances() {
        let dim = 16;
        let k = Kernels::best();
        let data = gaussian(600, dim, 3);
        let pq = ProductQuantizer::train(k, &data, dim, 4, 8, 1, 5).unwrap();
        let q = gaussian(1, dim, 4);
        let mut t = vec![0f32; 4 * 256];
        let mut ti = vec![0f32; 4 * 256];
        pq.l2_table(k, &q, &mut t);
        pq.neg_ip_table(k, &q, &mut ti);
        let (mut codes, mut rec, mut s) = (vec![0u8; 4], vec![0f32; dim], Vec::new());
        for x in data.chunks_exact(dim).take(20) {
            pq.encode(k, x, &mut codes, &mut s);
            pq.decode(&codes, &mut rec);
            let via_table: f32 = (0..4).map(|j| t[j * 256 + codes[j] as usize]).sum();
            let via_ip: f32 = (0..4).map(|j| ti[j * 256 + codes[j] as usize]).sum();
            assert!((via_table - k.l2_sq(&q, &rec)).abs() < 1e-3);
            assert!((via_ip + k.dot(&q, &rec)).abs() < 1e-3);
        }
    }

    #[test]
    fn list_terms_complete_the_l2_decomposition() {
        // |q - c - r̂|² = |q - c|² - 2 q·r̂ + term, with the query table -2 q·b.
        let k = Kernels::best();
        for (dim, m) in [(16, 4), (6, 6)] {
            let data = gaussian(600, dim, 21);
            let pq = ProductQuantizer::train(k, &data, dim, m, 4, 1, 5).unwrap();
            let c = gaussian(1, dim, 22);
            let q = gaussian(1, dim, 23);
            let mut tc = vec![0f32; m * 16];
            pq.list_terms_table(&c, &mut tc);
            let mut tq = vec![0f32; m * 16];
            pq.neg_ip_table(k, &q, &mut tq);
            let qc = k.l2_sq(&q, &c);
            let (mut codes, mut rec, mut s) = (vec![0u8; m], vec![0f32; dim], Vec::new());
            for x in data.chunks_exact(dim).take(30) {
                pq.encode(k, x, &mut codes, &mut s);
                pq.decode(&codes, &mut rec);
                let y: Vec<f32> = c.iter().zip(&rec).map(|(a, b)| a + b).collect();
                let want = k.l2_sq(&q, &y);
                let ip: f32 = (0..m).map(|j| tq[j * 16 + codes[j] as usize]).sum();
                let got = qc + 2.0 * ip + pq.code_term(&tc, codes.iter().copied());
                assert!((got - want).abs() < 1e-3 * want.max(1.0), "{got} vs {want}");
            }
        }
    }

    #[test]
    fn one_component_fast_path_finds_the_nearest_centroid() {
        let k = Kernels::best();
        for nbits in [4, 8] {
            let data = gaussian(2000, 6, 11);
            let pq = ProductQuantizer::train(k, &data, 6, 6, nbits, 2, 6).unwrap();
            assert!(!pq.order.is_empty());
            let (mut codes, mut s) = (vec![0u8; 6], Vec::new());
            for x in gaussian(300, 6, 12).chunks_exact(6) {
                pq.encode(k, x, &mut codes, &mut s);
                for j in 0..6 {
                    let book = &pq.codebooks()[j * pq.ksub()..(j + 1) * pq.ksub()];
                    let best = book
                        .iter()
                        .map(|c| (x[j] - c).abs())
                        .fold(f32::INFINITY, f32::min);
                    assert_eq!(
                        (x[j] - book[codes[j] as usize]).abs(),
                        best,
                        "nbits {nbits}, sub-space {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_shapes() {
        let k = Kernels::best();
        let data = gaussian(300, 8, 5);
        assert!(matches!(
            ProductQuantizer::train(k, &data, 8, 3, 8, 0, 2),
            Err(Error::InvalidParameter { name: "m", .. })
        ));
        assert!(matches!(
            ProductQuantizer::train(k, &data, 8, 2, 5, 0, 2),
            Err(Error::InvalidParameter { name: "nbits", .. })
        ));
        assert!(matches!(
            ProductQuantizer::train(k, &data[..8 * 100], 8, 2, 8, 0, 2),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(ProductQuantizer::train(k, &data[..8 * 100], 8, 2, 4, 0, 2).is_ok());
    }
}
