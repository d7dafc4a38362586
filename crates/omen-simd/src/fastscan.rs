//! 4-bit PQ "fast scan" (after FAISS's `pq4_fast_scan`).
//!
//! # Layout
//! Codes are stored in blocks of [`BLOCK`] = 32 vectors. With `mp = m` rounded up
//! to an even number, a block is `mp × 16` bytes: for sub-quantizer `j`, 16 bytes
//! whose byte `i` holds the code of vector `i` in its low nibble and the code of
//! vector `i + 16` in its high nibble. Padding sub-quantizers and padding vectors
//! (past the end of a list) have code 0. Memory per vector is `m / 2` bytes, as
//! FAISS's.
//!
//! # Scan
//! The per-query distance table (16 floats per sub-quantizer) is quantised to u8
//! with one scale and a per-sub-quantizer bias ([`quantize_lut`]). A block's 32
//! approximate distances are then sums of `mp` table lookups, which SIMD does 16 or
//! 32 lanes at a time with byte shuffles (`pshufb`: AVX2 `_mm256_shuffle_epi8`, two
//! sub-quantizers per register; AVX-512BW `_mm512_shuffle_epi8`, four). Sums are kept
//! in u16 lanes with FAISS's trick: adding the shuffled bytes as u16 accumulates
//! `even + 256·odd`, adding them shifted right by 8 accumulates `odd`; the even sums
//! are recovered as `lo - (hi << 8)` (all modulo 2¹⁶). Since `mp ≤ 256`, every true
//! sum is at most `256 × 255 < 2¹⁶`, so the modular arithmetic is exact and the SIMD
//! kernels return exactly what [`scan_block_scalar`] returns.
//!
//! # Filtering
//! [`Scanner::scan_filter`] goes on from the sums, still in registers, to the
//! estimated distances `(offset + sum · inv) + term` (the term optional, one float
//! per vector) and a bit mask of those at most a threshold, so that the caller
//! touches only the vectors that pass instead of testing 32 sums one by one. The
//! arithmetic is IEEE single precision without fused multiply-add in every
//! implementation, so all of them return the same bits.

#[cfg(target_arch = "x86_64")]
use crate::Feature;
use crate::Isa;

/// Vectors per code block.
pub const BLOCK: usize = 32;

/// `m` rounded up to even (the layout works on pairs of sub-quantizers).
#[inline]
pub fn padded_m(m: usize) -> usize {
    m + (m & 1)
}

/// Bytes of one block for `m` sub-quantizers.
#[inline]
pub fn block_bytes(m: usize) -> usize {
    padded_m(m) * 16
}

/// Writes the `m` codes (each < 16) of vector `i` (0..32) into `block`.
#[inline]
pub fn set_codes(block: &mut [u8], i: usize, codes: &[u8]) {
    let (byte, shift) = (i & 15, if i < 16 { 0 } else { 4 });
    for (j, &c) in codes.iter().enumerate() {
        let b = &mut block[j * 16 + byte];
        *b = (*b & !(0x0f << shift)) | ((c & 0x0f) << shift);
    }
}

/// The code of sub-quantizer `j` for vector `i` (0..32) of `block`.
#[inline]
pub fn get_code(block: &[u8], i: usize, j: usize) -> u8 {
    let b = block[j * 16 + (i & 15)];
    if i < 16 {
        b & 0x0f
    } else {
        b >> 4
    }
}

/// Quantises a float table of `m × 16` entries into `lut` (`padded_m(m) × 16`
/// bytes; the padding row is zero). Returns `(scale, bias)`: an approximate distance
/// is `bias + sum / scale` where `sum` adds one byte per sub-quantizer.
pub fn quantize_lut(table: &[f32], m: usize, lut: &mut Vec<u8>) -> (f32, f32) {
    lut.clear();
    lut.resize(block_bytes(m), 0);
    // Per-row minima (m <= 256 by the fast-scan contract; longer tables are cut).
    let m = m.min(256);
    let mut lows = [0f32; 256];
    let mut bias = 0f32;
    let mut span = 0f32;
    // Whole 16-entry rows as arrays, so that the loops below vectorise.
    let (rows, _) = table.as_chunks::<16>();
    let (dsts, _) = lut.as_chunks_mut::<16>();
    for (row, low) in rows.iter().take(m).zip(lows.iter_mut()) {
        // Compare-and-select (not `f32::min`, whose NaN rule blocks vectorising).
        let (mut lo, mut hi) = (row[0], row[0]);
        for &v in &row[1..] {
            lo = if v < lo { v } else { lo };
            hi = if v > hi { v } else { hi };
        }
        *low = lo;
        bias += lo;
        span = if hi - lo > span { hi - lo } else { span };
    }
    let scale = if span > 0.0 && span.is_finite() {
        255.0 / span
    } else {
        1.0
    };
    for ((row, dst), &lo) in rows.iter().zip(dsts).zip(&lows[..m]) {
        // Round half up: `t = x + 0.5` truncated. `f32::round` is a libm call at
        // the baseline x86_64 target, and a saturating `as` conversion does not
        // vectorise there, so the truncation is done in float arithmetic: adding
        // 2^23 rounds `t` (clamped to 0..=255, NaN to 0, as `as u8` would) to the
        // nearest integer, exactly; one less where that rounded up. (Equality
        // with `as u8` is tested below.)
        for (d, &v) in dst.iter_mut().zip(row) {
            let t = (v - lo) * scale + 0.5;
            let t = if t >= 0.0 {
                if t >= 255.0 {
                    255.0
                } else {
                    t
                }
            } else {
                0.0
            };
            let r = (t + 8_388_608.0) - 8_388_608.0;
            let r = if r > t { r - 1.0 } else { r };
            // 0 <= r <= 255 is an integer: the low mantissa bits of r + 2^23.
            *d = ((r + 8_388_608.0).to_bits() & 0xff) as u8;
        }
    }
    (scale, bias)
}

/// The sums [`binary_lut`] returns beside the byte table.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct BinaryLut {
    /// Table units per unit of the query: a table entry is `(sum - low) · scale`,
    /// rounded.
    pub scale: f32,
    /// The sum over groups of each group's least entry (the sum of the query's
    /// negative components): a code's true sum is `bias + scanned / scale`.
    pub bias: f32,
    /// `Σ q_i`.
    pub sum: f32,
    /// `Σ q_i²`.
    pub norm_sq: f32,
}

/// The byte table for scanning one-bit codes (four dimensions per nibble, bit `j`
/// of nibble `g` standing for dimension `4g + j`) against `q`: entry `nib` of group
/// `g` is the sum of `q[4g + j]` over the bits `j` set in `nib`, less the group's
/// least entry, times one `scale` for the whole table, rounded half up. Writes
/// `q.len() / 4` rows of 16 bytes into `lut` (the layout [`Scanner::scan_block`]
/// reads with `m = q.len() / 4`).
///
/// A group's least entry is the sum of its negative components and its greatest
/// the sum of its positive ones, so, unlike [`quantize_lut`], nothing scans the
/// entries to find the range. [`Scanner::binary_lut`] is the same with the
/// instruction set's vectors and returns the same bytes and sums, bit for bit: the
/// order of every floating-point operation is fixed here for that. Sums over the
/// whole query (`sum`, `norm_sq`, `bias`) are kept in 16 lanes (lane `l` takes
/// components `l, l + 16, …`) and folded in halves (8, 4, 2, 1); a group's sums
/// run over its four components in order.
///
/// # Panics
/// If `q.len()` is not a multiple of 16 or over 1,024, or `lut` is shorter than
/// `q.len() * 4`.
pub fn binary_lut(q: &[f32], lut: &mut [u8]) -> BinaryLut {
    binary_lut_body(q, lut)
}

/// `-x` where `x < 0`, else 0 (NaN gives 0).
#[inline(always)]
fn neg_part(x: f32) -> f32 {
    if x < 0.0 {
        -x
    } else {
        0.0
    }
}

/// Folds 16 lane sums in halves, as the SIMD kernels do.
#[inline(always)]
fn fold16(p: &[f32; 16]) -> f32 {
    let mut r = *p;
    for width in [8, 4, 2, 1] {
        for l in 0..width {
            r[l] += r[l + width];
        }
    }
    r[0]
}

#[inline(always)]
fn binary_lut_body(q: &[f32], lut: &mut [u8]) -> BinaryLut {
    assert!(
        q.len() % 16 == 0 && q.len() <= 1024 && lut.len() >= q.len() * 4,
        "binary_lut: wrong lengths"
    );
    let (mut ps, mut pn2, mut pneg) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let (chunks, _) = q.as_chunks::<16>();
    for c in chunks {
        for l in 0..16 {
            ps[l] += c[l];
            pn2[l] += c[l] * c[l];
            pneg[l] += neg_part(c[l]);
        }
    }
    let (quads, _) = q.as_chunks::<4>();
    let mut span = 0f32;
    for quad in quads {
        let abs = ((quad[0].abs() + quad[1].abs()) + quad[2].abs()) + quad[3].abs();
        span = if abs > span { abs } else { span };
    }
    let scale = if span > 0.0 && span.is_finite() {
        255.0 / span
    } else {
        1.0
    };
    let (rows, _) = lut.as_chunks_mut::<16>();
    for (quad, row) in quads.iter().zip(rows) {
        // Entry `nib` less the least is `neg + Σ_j bit_j(nib) q_j`, in [0, abs].
        let neg = ((neg_part(quad[0]) + neg_part(quad[1])) + neg_part(quad[2])) + neg_part(quad[3]);
        let mut v = [neg * scale + 0.5; 16];
        for (j, &x) in quad.iter().enumerate() {
            let xs = x * scale;
            for (nib, e) in v.iter_mut().enumerate() {
                if nib >> j & 1 == 1 {
                    *e += xs;
                }
            }
        }
        // In [0.5, 255.5] up to rounding; `as` saturates (and takes NaN to 0).
        for (d, &e) in row.iter_mut().zip(&v) {
            *d = e as u8;
        }
    }
    BinaryLut {
        scale,
        bias: -fold16(&pneg),
        sum: fold16(&ps),
        norm_sq: fold16(&pn2),
    }
}

/// Reference scan: `out[i] = Σ_j lut[j * 16 + code(i, j)]` for the 32 vectors of
/// `block`.
pub fn scan_block_scalar(block: &[u8], lut: &[u8], m: usize, out: &mut [u16; BLOCK]) {
    let mp = padded_m(m);
    *out = [0; BLOCK];
    for j in 0..mp {
        let codes = &block[j * 16..(j + 1) * 16];
        let t = &lut[j * 16..(j + 1) * 16];
        for i in 0..16 {
            let b = codes[i];
            out[i] = out[i].wrapping_add(t[(b & 15) as usize] as u16);
            out[i + 16] = out[i + 16].wrapping_add(t[(b >> 4) as usize] as u16);
        }
    }
}

/// Reference of [`Scanner::scan_filter`]: scans `block`, writes
/// `est[i] = (offset + sum_i as f32 * inv) + terms[i]` (no term when `terms` is
/// `None`) for the 32 vectors, and returns the mask of those with
/// `est[i] <= thr`.
#[allow(clippy::too_many_arguments)]
pub fn scan_filter_scalar(
    block: &[u8],
    lut: &[u8],
    m: usize,
    offset: f32,
    inv: f32,
    terms: Option<&[f32; BLOCK]>,
    thr: f32,
    est: &mut [f32; BLOCK],
) -> u32 {
    let mut sums = [0u16; BLOCK];
    scan_block_scalar(block, lut, m, &mut sums);
    finish_filter(&sums, offset, inv, terms, thr, est)
}

/// The float part of [`scan_filter_scalar`], from the sums.
fn finish_filter(
    sums: &[u16; BLOCK],
    offset: f32,
    inv: f32,
    terms: Option<&[f32; BLOCK]>,
    thr: f32,
    est: &mut [f32; BLOCK],
) -> u32 {
    let mut mask = 0u32;
    for (i, (e, &s)) in est.iter_mut().zip(sums).enumerate() {
        let mut d = offset + s as f32 * inv;
        if let Some(t) = terms {
            d += t[i];
        }
        *e = d;
        mask |= ((d <= thr) as u32) << i;
    }
    mask
}

/// Which implementation of the block scan runs. Only constructed for an instruction
/// set the CPU has, which is what makes the SIMD calls sound.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Scanner {
    kind: Kind,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Scanner {
    /// The portable scanner.
    pub fn scalar() -> Scanner {
        Scanner { kind: Kind::Scalar }
    }

    /// The AVX2 scanner, if the CPU has AVX2 (checked by `omen-simd`, the one CPU
    /// detector of the workspace).
    pub fn avx2() -> Option<Scanner> {
        #[cfg(target_arch = "x86_64")]
        if Feature::Avx2.is_available() {
            return Some(Scanner { kind: Kind::Avx2 });
        }
        None
    }

    /// The AVX-512BW scanner, if the CPU has AVX-512BW (and AVX-512F, AVX2).
    pub fn avx512() -> Option<Scanner> {
        #[cfg(target_arch = "x86_64")]
        if Feature::Avx512Bw.is_available()
            && Feature::Avx512F.is_available()
            && Feature::Avx2.is_available()
        {
            return Some(Scanner { kind: Kind::Avx512 });
        }
        None
    }

    /// The scanner for the process's instruction set, [`Isa::selected`] (the
    /// distance kernels' choice: `OMEN_ISA` if set, else the best the CPU has):
    /// AVX-512 takes the AVX-512BW scanner where the CPU has it, AVX2 the AVX2 one,
    /// and anything else (`OMEN_ISA=scalar`, NEON) the portable one.
    pub fn best() -> Scanner {
        static BEST: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Scanner::for_isa(Isa::selected()))
    }

    /// The best scanner that stays within `isa`.
    pub fn for_isa(isa: Isa) -> Scanner {
        let best = match isa {
            Isa::Avx512 => Scanner::avx512().or_else(Scanner::avx2),
            Isa::Avx2 => Scanner::avx2(),
            _ => None,
        };
        best.unwrap_or_else(Scanner::scalar)
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512bw",
        }
    }

    /// Scans one block: same contract and result as [`scan_block_scalar`].
    ///
    /// # Panics
    /// If `block` or `lut` is shorter than [`block_bytes`]`(m)` or `m > 256`.
    #[inline]
    pub fn scan_block(&self, block: &[u8], lut: &[u8], m: usize, out: &mut [u16; BLOCK]) {
        let need = block_bytes(m);
        assert!(
            block.len() >= need && lut.len() >= need && m <= 256,
            "fast-scan block or table too short"
        );
        match self.kind {
            Kind::Scalar => scan_block_scalar(block, lut, m, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx2` is only constructed after detecting AVX2, and the
            // lengths were checked above.
            Kind::Avx2 => unsafe { x86::scan_avx2(block, lut, padded_m(m), out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx512` is only constructed after detecting AVX-512BW and
            // AVX2, and the lengths were checked above.
            Kind::Avx512 => unsafe { x86::scan_avx512(block, lut, padded_m(m), out) },
        }
    }
}

impl Scanner {
    /// [`binary_lut`] compiled for this scanner's instruction set (the same Rust,
    /// vectorised by the compiler for AVX2 or AVX-512): the same bytes and sums.
    ///
    /// # Panics
    /// As [`binary_lut`].
    #[inline]
    pub fn binary_lut(&self, q: &[f32], lut: &mut [u8]) -> BinaryLut {
        match self.kind {
            Kind::Scalar => binary_lut(q, lut),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx2` is only constructed after detecting AVX2; the body
            // is safe Rust, and the attribute only lets the compiler use AVX2.
            Kind::Avx2 => unsafe { x86::binary_lut_avx2(q, lut) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx512` is only constructed after detecting AVX-512F,
            // AVX-512BW and AVX2; the body is safe Rust.
            Kind::Avx512 => unsafe { x86::binary_lut_avx512(q, lut) },
        }
    }
}

/// The float parameters of [`Scanner::scan_filter`].
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Filter<'a> {
    offset: f32,
    inv: f32,
    terms: Option<&'a [f32; BLOCK]>,
    thr: f32,
}

impl Scanner {
    /// Scans one block and filters it: writes the estimated distances
    /// `est[i] = (offset + sum_i as f32 * inv) + terms[i]` (no term when `terms` is
    /// `None`) of its 32 vectors and returns the mask of those with
    /// `est[i] <= thr` (bit `i` for vector `i`, padding vectors included: the
    /// caller masks them off). Same contract and result, bit for bit, as
    /// [`scan_filter_scalar`].
    ///
    /// # Panics
    /// If `block` or `lut` is shorter than [`block_bytes`]`(m)` or `m > 256`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn scan_filter(
        &self,
        block: &[u8],
        lut: &[u8],
        m: usize,
        offset: f32,
        inv: f32,
        terms: Option<&[f32; BLOCK]>,
        thr: f32,
        est: &mut [f32; BLOCK],
    ) -> u32 {
        let need = block_bytes(m);
        assert!(
            block.len() >= need && lut.len() >= need && m <= 256,
            "fast-scan block or table too short"
        );
        #[cfg(target_arch = "x86_64")]
        let f = Filter {
            offset,
            inv,
            terms,
            thr,
        };
        match self.kind {
            Kind::Scalar => scan_filter_scalar(block, lut, m, offset, inv, terms, thr, est),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx2` is only constructed after detecting AVX2, and the
            // lengths were checked above.
            Kind::Avx2 => unsafe { x86::filter_avx2(block, lut, padded_m(m), &f, est) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx512` is only constructed after detecting AVX-512BW,
            // AVX-512F and AVX2, and the lengths were checked above.
            Kind::Avx512 => unsafe { x86::filter_avx512(block, lut, padded_m(m), &f, est) },
        }
    }
}

/// The most queries [`Scanner::scan_filter_multi`] scans a block for at once.
pub const MULTI: usize = 4;

/// One query's part of [`Scanner::scan_filter_multi`]: its quantised table and the
/// float parameters of its estimates (those of [`Scanner::scan_filter`]).
#[derive(Copy, Clone, Debug)]
pub struct QueryLut<'a> {
    /// `block_bytes(m)` bytes, from [`quantize_lut`].
    pub lut: &'a [u8],
    /// Added to every estimate (the list's coarse term and the table's bias).
    pub offset: f32,
    /// The reciprocal of the table's scale.
    pub inv: f32,
    /// Estimates above this are not in the mask.
    pub thr: f32,
}

impl Scanner {
    /// Scans one block for `Q` (1..=[`MULTI`]) queries at once: for each query `q`,
    /// exactly what `scan_filter(block, qs[q].lut, m, qs[q].offset, qs[q].inv,
    /// terms, qs[q].thr, &mut est[q])` writes and returns. The block's codes are
    /// loaded and split into nibbles once for all of them (the list-major scan of
    /// a batch, where several queries probe the same list).
    ///
    /// # Panics
    /// If `block` or a table is shorter than [`block_bytes`]`(m)`, `m > 256`, or
    /// `Q` is 0 or above [`MULTI`].
    #[inline]
    pub fn scan_filter_multi<const Q: usize>(
        &self,
        block: &[u8],
        qs: &[QueryLut<'_>; Q],
        m: usize,
        terms: Option<&[f32; BLOCK]>,
        est: &mut [[f32; BLOCK]; Q],
    ) -> [u32; Q] {
        let need = block_bytes(m);
        assert!(
            (1..=MULTI).contains(&Q)
                && block.len() >= need
                && m <= 256
                && qs.iter().all(|q| q.lut.len() >= need),
            "fast-scan block or table too short"
        );
        match self.kind {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kind::Avx512` is only constructed after detecting AVX-512BW,
            // AVX-512F and AVX2, and the lengths and `Q` were checked above.
            Kind::Avx512 => unsafe { x86::filter_multi_avx512(block, qs, padded_m(m), terms, est) },
            _ => std::array::from_fn(|q| {
                let ql = &qs[q];
                self.scan_filter(
                    block,
                    ql.lut,
                    m,
                    ql.offset,
                    ql.inv,
                    terms,
                    ql.thr,
                    &mut est[q],
                )
            }),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// [`super::binary_lut`] with AVX2 enabled for the compiler.
    #[target_feature(enable = "avx2")]
    pub(super) fn binary_lut_avx2(q: &[f32], lut: &mut [u8]) -> super::BinaryLut {
        super::binary_lut_body(q, lut)
    }

    use super::{BinaryLut, Filter, BLOCK};
    use std::arch::x86_64::*;

    /// Folds 16 lanes in halves (8, 4, 2, 1), as [`super::fold16`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fold16_512(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let r8 = _mm256_add_ps(lo, hi);
        let r4 = _mm_add_ps(_mm256_castps256_ps128(r8), _mm256_extractf128_ps::<1>(r8));
        let r2 = _mm_add_ps(r4, _mm_movehl_ps(r4, r4));
        let r1 = _mm_add_ss(r2, _mm_shuffle_ps::<1>(r2, r2));
        _mm_cvtss_f32(r1)
    }

    /// In element 0 of each 128-bit lane, `((v0 + v1) + v2) + v3` of that lane
    /// (the other elements are partial sums the caller ignores).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn seq4(v: __m512) -> __m512 {
        let s = _mm512_add_ps(v, _mm512_permute_ps::<1>(v));
        let s = _mm512_add_ps(s, _mm512_permute_ps::<2>(v));
        _mm512_add_ps(s, _mm512_permute_ps::<3>(v))
    }

    /// [`super::binary_lut`] in AVX-512: the same operations in the same order per
    /// lane, so the same bytes and sums (tested against it).
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    pub(super) fn binary_lut_avx512(q: &[f32], lut: &mut [u8]) -> BinaryLut {
        assert!(
            q.len() % 16 == 0 && q.len() <= 1024 && lut.len() >= q.len() * 4,
            "binary_lut: wrong lengths"
        );
        let zero = _mm512_setzero_ps();
        let (mut ps, mut pn2, mut pneg, mut span) = (zero, zero, zero, zero);
        // Each group's sum of negative parts, for the second pass.
        let mut negs = [0f32; 256];
        let gather = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        let (chunks, _) = q.as_chunks::<16>();
        for (k, c) in chunks.iter().enumerate() {
            // SAFETY: `c` is 16 floats; the load has no alignment requirement.
            let x = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            ps = _mm512_add_ps(ps, x);
            pn2 = _mm512_add_ps(pn2, _mm512_mul_ps(x, x));
            // max(0 - x, 0): -x below zero, 0 otherwise and for NaN (max returns
            // its second operand when either is NaN), as `neg_part`.
            let nx = _mm512_max_ps(_mm512_sub_ps(zero, x), zero);
            pneg = _mm512_add_ps(pneg, nx);
            let abs = seq4(_mm512_abs_ps(x));
            // Element 0 of each lane is a group's sum; a NaN one leaves `span` as
            // it was, as the scalar comparison does.
            span = _mm512_mask_max_ps(span, 0x1111, abs, span);
            // The four groups' sums to the low quarter (a permute: a compressing
            // store is microcoded and slow on some CPUs), then stored.
            let g = _mm512_permutexvar_ps(gather, seq4(nx));
            negs[4 * k..4 * k + 4].copy_from_slice(&{
                let mut t = [0f32; 4];
                // SAFETY: `t` is four floats; the store has no alignment requirement.
                unsafe { _mm_storeu_ps(t.as_mut_ptr(), _mm512_castps512_ps128(g)) };
                t
            });
        }
        let span = _mm512_reduce_max_ps(span);
        let scale = if span > 0.0 && span.is_finite() {
            255.0 / span
        } else {
            1.0
        };
        let (quads, _) = q.as_chunks::<4>();
        let (rows, _) = lut.as_chunks_mut::<16>();
        let top = _mm512_set1_ps(255.0);
        for ((quad, row), &neg) in quads.iter().zip(rows).zip(&negs) {
            let mut v = _mm512_set1_ps(neg * scale + 0.5);
            // Lane `nib` takes `q_j · scale` where bit j of nib is set.
            for (&x, mask) in quad.iter().zip([0xAAAAu16, 0xCCCC, 0xF0F0, 0xFF00]) {
                v = _mm512_mask_add_ps(v, mask, v, _mm512_set1_ps(x * scale));
            }
            // `as u8`: at most 255 (min keeps a NaN, as its second operand), truncated,
            // negatives and NaN (the conversion's indefinite value) to 0.
            let i = _mm512_cvttps_epi32(_mm512_min_ps(top, v));
            let b = _mm512_cvtusepi32_epi8(_mm512_max_epi32(i, _mm512_setzero_si512()));
            // SAFETY: `row` is 16 bytes; the store has no alignment requirement.
            unsafe { _mm_storeu_si128(row.as_mut_ptr().cast(), b) };
        }
        BinaryLut {
            scale,
            bias: -fold16_512(pneg),
            sum: fold16_512(ps),
            norm_sq: fold16_512(pn2),
        }
    }

    /// The block's 32 sums as four registers of 8 u16, in vector order (0..8,
    /// 8..16, 16..24, 24..32), from the even/odd-split accumulators: `a` holds
    /// vectors 0..16 and `b` vectors 16..32, each as (lo, hi) pairs summed over both
    /// 128-bit lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sums8(a_lo: __m256i, a_hi: __m256i, b_lo: __m256i, b_hi: __m256i) -> [__m128i; 4] {
        let a_even = _mm256_sub_epi16(a_lo, _mm256_slli_epi16(a_hi, 8));
        let b_even = _mm256_sub_epi16(b_lo, _mm256_slli_epi16(b_hi, 8));
        macro_rules! fold {
            ($v:expr) => {
                _mm_add_epi16(_mm256_castsi256_si128($v), _mm256_extracti128_si256($v, 1))
            };
        }
        let (ae, ao, be, bo) = (fold!(a_even), fold!(a_hi), fold!(b_even), fold!(b_hi));
        [
            _mm_unpacklo_epi16(ae, ao),
            _mm_unpackhi_epi16(ae, ao),
            _mm_unpacklo_epi16(be, bo),
            _mm_unpackhi_epi16(be, bo),
        ]
    }

    /// Writes the 32 sums.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_sums(g: [__m128i; 4], out: &mut [u16; BLOCK]) {
        let p = out.as_mut_ptr() as *mut __m128i;
        for (k, g) in g.into_iter().enumerate() {
            // SAFETY: `out` is 32 u16 = 4 × 16 bytes, k < 4; unaligned stores.
            unsafe { _mm_storeu_si128(p.add(k), g) };
        }
    }

    /// Accumulates one block, two sub-quantizers per 256-bit register; returns the
    /// (a_lo, a_hi, b_lo, b_hi) accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2; `block` and `lut` must hold at least `mp * 16`
    /// bytes; `mp` must be even and at most 256.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn accumulate_avx2(block: &[u8], lut: &[u8], mp: usize) -> [__m256i; 4] {
        let mask = _mm256_set1_epi8(0x0f);
        let (mut a_lo, mut a_hi, mut b_lo, mut b_hi) = (
            _mm256_setzero_si256(),
            _mm256_setzero_si256(),
            _mm256_setzero_si256(),
            _mm256_setzero_si256(),
        );
        for p in 0..mp / 2 {
            // SAFETY: `p * 32 + 32 <= mp * 16 <= len` for both slices (caller's contract).
            let (c, l) = unsafe {
                (
                    _mm256_loadu_si256(block.as_ptr().add(p * 32) as *const __m256i),
                    _mm256_loadu_si256(lut.as_ptr().add(p * 32) as *const __m256i),
                )
            };
            let clo = _mm256_and_si256(c, mask);
            let chi = _mm256_and_si256(_mm256_srli_epi16(c, 4), mask);
            let rlo = _mm256_shuffle_epi8(l, clo);
            let rhi = _mm256_shuffle_epi8(l, chi);
            a_lo = _mm256_add_epi16(a_lo, rlo);
            a_hi = _mm256_add_epi16(a_hi, _mm256_srli_epi16(rlo, 8));
            b_lo = _mm256_add_epi16(b_lo, rhi);
            b_hi = _mm256_add_epi16(b_hi, _mm256_srli_epi16(rhi, 8));
        }
        [a_lo, a_hi, b_lo, b_hi]
    }

    /// AVX2 block scan.
    ///
    /// # Safety
    /// As [`accumulate_avx2`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn scan_avx2(block: &[u8], lut: &[u8], mp: usize, out: &mut [u16; BLOCK]) {
        // SAFETY: the caller's contract is this function's.
        let [a_lo, a_hi, b_lo, b_hi] = unsafe { accumulate_avx2(block, lut, mp) };
        store_sums(sums8(a_lo, a_hi, b_lo, b_hi), out);
    }

    /// AVX2 block scan and filter (see `Scanner::scan_filter`).
    ///
    /// # Safety
    /// As [`accumulate_avx2`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn filter_avx2(
        block: &[u8],
        lut: &[u8],
        mp: usize,
        f: &Filter<'_>,
        est: &mut [f32; BLOCK],
    ) -> u32 {
        // SAFETY: the caller's contract is this function's.
        let [a_lo, a_hi, b_lo, b_hi] = unsafe { accumulate_avx2(block, lut, mp) };
        let g = sums8(a_lo, a_hi, b_lo, b_hi);
        let (off, inv, thr) = (
            _mm256_set1_ps(f.offset),
            _mm256_set1_ps(f.inv),
            _mm256_set1_ps(f.thr),
        );
        let mut mask = 0u32;
        for (k, g) in g.into_iter().enumerate() {
            let s = _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(g));
            let mut d = _mm256_add_ps(off, _mm256_mul_ps(s, inv));
            if let Some(t) = f.terms {
                // SAFETY: `t` holds 32 floats and k < 4; an unaligned load.
                d = _mm256_add_ps(d, unsafe { _mm256_loadu_ps(t.as_ptr().add(8 * k)) });
            }
            // SAFETY: `est` holds 32 floats and k < 4; an unaligned store.
            unsafe { _mm256_storeu_ps(est.as_mut_ptr().add(8 * k), d) };
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(d, thr)) as u32;
            mask |= hit << (8 * k);
        }
        mask
    }

    /// Accumulates one block, four sub-quantizers per 512-bit register (a remaining
    /// pair goes through 256-bit registers); returns the accumulators folded to
    /// 256 bits, as [`accumulate_avx2`]'s.
    ///
    /// # Safety
    /// The CPU must support AVX-512BW and AVX2; `block` and `lut` must hold at least
    /// `mp * 16` bytes; `mp` must be even and at most 256.
    #[inline]
    #[target_feature(enable = "avx512bw,avx2")]
    unsafe fn accumulate_avx512(block: &[u8], lut: &[u8], mp: usize) -> [__m256i; 4] {
        let mask = _mm512_set1_epi8(0x0f);
        let (mut a_lo, mut a_hi, mut b_lo, mut b_hi) = (
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
        );
        let quads = mp / 4;
        for p in 0..quads {
            // SAFETY: `p * 64 + 64 <= mp * 16 <= len` for both slices.
            let (c, l) = unsafe {
                (
                    _mm512_loadu_si512(block.as_ptr().add(p * 64) as *const _),
                    _mm512_loadu_si512(lut.as_ptr().add(p * 64) as *const _),
                )
            };
            let clo = _mm512_and_si512(c, mask);
            let chi = _mm512_and_si512(_mm512_srli_epi16(c, 4), mask);
            let rlo = _mm512_shuffle_epi8(l, clo);
            let rhi = _mm512_shuffle_epi8(l, chi);
            a_lo = _mm512_add_epi16(a_lo, rlo);
            a_hi = _mm512_add_epi16(a_hi, _mm512_srli_epi16(rlo, 8));
            b_lo = _mm512_add_epi16(b_lo, rhi);
            b_hi = _mm512_add_epi16(b_hi, _mm512_srli_epi16(rhi, 8));
        }
        macro_rules! half {
            ($v:expr) => {
                _mm256_add_epi16(_mm512_castsi512_si256($v), _mm512_extracti64x4_epi64($v, 1))
            };
        }
        let (mut a_lo2, mut a_hi2, mut b_lo2, mut b_hi2) =
            (half!(a_lo), half!(a_hi), half!(b_lo), half!(b_hi));
        if !mp.is_multiple_of(4) {
            let mask = _mm256_set1_epi8(0x0f);
            let off = quads * 64;
            // SAFETY: `mp % 4 == 2`, so `off + 32 == mp * 16 <= len`.
            let (c, l) = unsafe {
                (
                    _mm256_loadu_si256(block.as_ptr().add(off) as *const __m256i),
                    _mm256_loadu_si256(lut.as_ptr().add(off) as *const __m256i),
                )
            };
            let rlo = _mm256_shuffle_epi8(l, _mm256_and_si256(c, mask));
            let rhi = _mm256_shuffle_epi8(l, _mm256_and_si256(_mm256_srli_epi16(c, 4), mask));
            a_lo2 = _mm256_add_epi16(a_lo2, rlo);
            a_hi2 = _mm256_add_epi16(a_hi2, _mm256_srli_epi16(rlo, 8));
            b_lo2 = _mm256_add_epi16(b_lo2, rhi);
            b_hi2 = _mm256_add_epi16(b_hi2, _mm256_srli_epi16(rhi, 8));
        }
        [a_lo2, a_hi2, b_lo2, b_hi2]
    }

    /// AVX-512BW block scan.
    ///
    /// # Safety
    /// As [`accumulate_avx512`].
    #[target_feature(enable = "avx512bw,avx2")]
    pub unsafe fn scan_avx512(block: &[u8], lut: &[u8], mp: usize, out: &mut [u16; BLOCK]) {
        // SAFETY: the caller's contract is this function's.
        let [a_lo, a_hi, b_lo, b_hi] = unsafe { accumulate_avx512(block, lut, mp) };
        store_sums(sums8(a_lo, a_hi, b_lo, b_hi), out);
    }

    /// AVX-512 block scan and filter (see `Scanner::scan_filter`): 16 estimates
    /// per register.
    ///
    /// # Safety
    /// As [`accumulate_avx512`], and the CPU must support AVX-512F.
    #[target_feature(enable = "avx512bw,avx512f,avx2")]
    pub unsafe fn filter_avx512(
        block: &[u8],
        lut: &[u8],
        mp: usize,
        f: &Filter<'_>,
        est: &mut [f32; BLOCK],
    ) -> u32 {
        // SAFETY: the caller's contract is this function's.
        let [a_lo, a_hi, b_lo, b_hi] = unsafe { accumulate_avx512(block, lut, mp) };
        finish_avx512(
            sums8(a_lo, a_hi, b_lo, b_hi),
            f.offset,
            f.inv,
            f.terms,
            f.thr,
            est,
        )
    }

    /// The float part of the AVX-512 filter, from the 32 sums.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX2.
    #[inline]
    #[target_feature(enable = "avx512f,avx2")]
    fn finish_avx512(
        [g0, g1, g2, g3]: [__m128i; 4],
        offset: f32,
        inv: f32,
        terms: Option<&[f32; BLOCK]>,
        thr: f32,
        est: &mut [f32; BLOCK],
    ) -> u32 {
        let (off, inv, thr) = (
            _mm512_set1_ps(offset),
            _mm512_set1_ps(inv),
            _mm512_set1_ps(thr),
        );
        let mut mask = 0u32;
        for (k, (lo, hi)) in [(g0, g1), (g2, g3)].into_iter().enumerate() {
            let g = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
            let s = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(g));
            let mut d = _mm512_add_ps(off, _mm512_mul_ps(s, inv));
            if let Some(t) = terms {
                // SAFETY: `t` holds 32 floats and k < 2; an unaligned load.
                d = _mm512_add_ps(d, unsafe { _mm512_loadu_ps(t.as_ptr().add(16 * k)) });
            }
            // SAFETY: `est` holds 32 floats and k < 2; an unaligned store.
            unsafe { _mm512_storeu_ps(est.as_mut_ptr().add(16 * k), d) };
            let hit = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(d, thr) as u32;
            mask |= hit << (16 * k);
        }
        mask
    }

    /// AVX-512 scan and filter of one block for `Q` queries: the codes of each
    /// quad of sub-quantizers are loaded and split once, then looked up in each
    /// query's table (see `Scanner::scan_filter_multi`).
    ///
    /// # Safety
    /// The CPU must support AVX-512BW, AVX-512F and AVX2; `block` and every table
    /// must hold at least `mp * 16` bytes; `mp` must be even and at most 256.
    #[target_feature(enable = "avx512bw,avx512f,avx2")]
    pub unsafe fn filter_multi_avx512<const Q: usize>(
        block: &[u8],
        qs: &[super::QueryLut<'_>; Q],
        mp: usize,
        terms: Option<&[f32; BLOCK]>,
        est: &mut [[f32; BLOCK]; Q],
    ) -> [u32; Q] {
        let mask = _mm512_set1_epi8(0x0f);
        let mut acc = [[_mm512_setzero_si512(); 4]; Q];
        let quads = mp / 4;
        for p in 0..quads {
            // SAFETY: `p * 64 + 64 <= mp * 16 <= block.len()`.
            let c = unsafe { _mm512_loadu_si512(block.as_ptr().add(p * 64) as *const _) };
            let clo = _mm512_and_si512(c, mask);
            let chi = _mm512_and_si512(_mm512_srli_epi16(c, 4), mask);
            for (a, q) in acc.iter_mut().zip(qs) {
                // SAFETY: as for the block, every table holds `mp * 16` bytes.
                let l = unsafe { _mm512_loadu_si512(q.lut.as_ptr().add(p * 64) as *const _) };
                let rlo = _mm512_shuffle_epi8(l, clo);
                let rhi = _mm512_shuffle_epi8(l, chi);
                a[0] = _mm512_add_epi16(a[0], rlo);
                a[1] = _mm512_add_epi16(a[1], _mm512_srli_epi16(rlo, 8));
                a[2] = _mm512_add_epi16(a[2], rhi);
                a[3] = _mm512_add_epi16(a[3], _mm512_srli_epi16(rhi, 8));
            }
        }
        macro_rules! half {
            ($v:expr) => {
                _mm256_add_epi16(_mm512_castsi512_si256($v), _mm512_extracti64x4_epi64($v, 1))
            };
        }
        let mut acc2: [[__m256i; 4]; Q] = std::array::from_fn(|q| acc[q].map(|v| half!(v)));
        if !mp.is_multiple_of(4) {
            let mask = _mm256_set1_epi8(0x0f);
            let off = quads * 64;
            // SAFETY: `mp % 4 == 2`, so `off + 32 == mp * 16 <= block.len()`.
            let c = unsafe { _mm256_loadu_si256(block.as_ptr().add(off) as *const __m256i) };
            let clo = _mm256_and_si256(c, mask);
            let chi = _mm256_and_si256(_mm256_srli_epi16(c, 4), mask);
            for (a, q) in acc2.iter_mut().zip(qs) {
                // SAFETY: as for the block.
                let l = unsafe { _mm256_loadu_si256(q.lut.as_ptr().add(off) as *const __m256i) };
                let rlo = _mm256_shuffle_epi8(l, clo);
                let rhi = _mm256_shuffle_epi8(l, chi);
                a[0] = _mm256_add_epi16(a[0], rlo);
                a[1] = _mm256_add_epi16(a[1], _mm256_srli_epi16(rlo, 8));
                a[2] = _mm256_add_epi16(a[2], rhi);
                a[3] = _mm256_add_epi16(a[3], _mm256_srli_epi16(rhi, 8));
            }
        }
        let mut masks = [0u32; Q];
        for (((a, q), e), m) in acc2
            .iter()
            .zip(qs)
            .zip(est.iter_mut())
            .zip(masks.iter_mut())
        {
            *m = finish_avx512(
                sums8(a[0], a[1], a[2], a[3]),
                q.offset,
                q.inv,
                terms,
                q.thr,
                e,
            );
        }
        masks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scanners() -> Vec<Scanner> {
        [Some(Scanner::scalar()), Scanner::avx2(), Scanner::avx512()]
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn best_follows_the_kernels_isa() {
        assert_eq!(Scanner::best(), Scanner::for_isa(Isa::selected()));
        assert_eq!(Scanner::for_isa(Isa::Scalar), Scanner::scalar());
        let forced = std::env::var("OMEN_ISA").unwrap_or_default();
        if forced.trim().eq_ignore_ascii_case("scalar") {
            assert_eq!(Scanner::best(), Scanner::scalar());
        }
        if let Some(avx2) = Scanner::avx2() {
            assert_eq!(Scanner::for_isa(Isa::Avx2), avx2);
        }
    }

    proptest! {
        #[test]
        fn simd_equals_scalar_exactly(m in 1usize..=256, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let n = block_bytes(m);
            let mut block: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            // Padding sub-quantizer codes are zero by the layout's contract.
            if m % 2 == 1 { block[m * 16..].fill(0); }
            // Bias the table towards 255 now and then to exercise the u16 carries.
            let hot = rng.gen::<bool>();
            let mut lut: Vec<u8> = (0..n).map(|_| if hot { 255 - rng.gen_range(0..4) } else { rng.gen() }).collect();
            if m % 2 == 1 { lut[m * 16..].fill(0); }
            let mut want = [0u16; BLOCK];
            scan_block_scalar(&block, &lut, m, &mut want);
            // The scalar reference against the definition, in u32.
            for i in 0..BLOCK {
                let s: u32 = (0..m).map(|j| lut[j * 16 + get_code(&block, i, j) as usize] as u32).sum();
                prop_assert_eq!(want[i] as u32, s);
            }
            for s in scanners() {
                let mut got = [0u16; BLOCK];
                s.scan_block(&block, &lut, m, &mut got);
                prop_assert_eq!(got, want, "{}", s.name());
            }
        }
    }

    proptest! {
        #[test]
        fn filter_equals_scalar_exactly(
            m in 1usize..=64,
            seed in any::<u64>(),
            offset in -50.0f32..50.0,
            inv in 1e-4f32..2.0,
            with_terms in any::<bool>(),
            cut in 0usize..=32,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let n = block_bytes(m);
            let mut block: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let mut lut: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            if m % 2 == 1 {
                block[m * 16..].fill(0);
                lut[m * 16..].fill(0);
            }
            let terms: [f32; BLOCK] = std::array::from_fn(|_| rng.gen_range(-30.0f32..30.0));
            let terms = with_terms.then_some(&terms);
            // The definition, from the sums.
            let mut sums = [0u16; BLOCK];
            scan_block_scalar(&block, &lut, m, &mut sums);
            let want_est: Vec<f32> = (0..BLOCK)
                .map(|i| {
                    let d = offset + sums[i] as f32 * inv;
                    terms.map_or(d, |t| d + t[i])
                })
                .collect();
            // A threshold at one of the estimates (ties must pass), or infinite.
            let mut sorted = want_est.clone();
            sorted.sort_by(f32::total_cmp);
            let thr = sorted.get(cut).copied().unwrap_or(f32::INFINITY);
            let want_mask = (0..BLOCK).fold(0u32, |m, i| m | (((want_est[i] <= thr) as u32) << i));
            let mut est = [f32::NAN; BLOCK];
            prop_assert_eq!(scan_filter_scalar(&block, &lut, m, offset, inv, terms, thr, &mut est), want_mask);
            prop_assert_eq!(est.map(f32::to_bits).to_vec(), want_est.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            for s in scanners() {
                let mut got = [f32::NAN; BLOCK];
                let mask = s.scan_filter(&block, &lut, m, offset, inv, terms, thr, &mut got);
                prop_assert_eq!(mask, want_mask, "{}", s.name());
                prop_assert_eq!(got.map(f32::to_bits), est.map(f32::to_bits), "{}", s.name());
            }
        }
    }

    /// `scan_filter_multi` for 1 to 4 queries against `scan_filter` for each.
    fn check_multi<const Q: usize>(
        rng: &mut rand_chacha::ChaCha8Rng,
        m: usize,
        with_terms: bool,
    ) -> Result<(), TestCaseError> {
        use rand::Rng;
        let n = block_bytes(m);
        let mut block: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        if m % 2 == 1 {
            block[m * 16..].fill(0);
        }
        let luts: Vec<Vec<u8>> = (0..Q)
            .map(|_| {
                let mut l: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                if m % 2 == 1 {
                    l[m * 16..].fill(0);
                }
                l
            })
            .collect();
        let terms: [f32; BLOCK] = std::array::from_fn(|_| rng.gen_range(-30.0f32..30.0));
        let terms = with_terms.then_some(&terms);
        let qs: [QueryLut<'_>; Q] = std::array::from_fn(|q| QueryLut {
            lut: &luts[q],
            offset: rng.gen_range(-50.0f32..50.0),
            inv: rng.gen_range(1e-4f32..2.0),
            thr: if rng.gen_bool(0.2) {
                f32::INFINITY
            } else {
                rng.gen_range(-20.0f32..400.0)
            },
        });
        for s in scanners() {
            let mut est = [[f32::NAN; BLOCK]; Q];
            let masks = s.scan_filter_multi(&block, &qs, m, terms, &mut est);
            for q in 0..Q {
                let mut want = [f32::NAN; BLOCK];
                let ql = &qs[q];
                let mask = scan_filter_scalar(
                    &block, ql.lut, m, ql.offset, ql.inv, terms, ql.thr, &mut want,
                );
                prop_assert_eq!(masks[q], mask, "{} query {} of {}", s.name(), q, Q);
                prop_assert_eq!(
                    est[q].map(f32::to_bits),
                    want.map(f32::to_bits),
                    "{} query {}",
                    s.name(),
                    q
                );
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn multi_query_filter_equals_one_query_at_a_time(
            m in 1usize..=80,
            seed in any::<u64>(),
            with_terms in any::<bool>(),
        ) {
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            check_multi::<1>(&mut rng, m, with_terms)?;
            check_multi::<2>(&mut rng, m, with_terms)?;
            check_multi::<3>(&mut rng, m, with_terms)?;
            check_multi::<4>(&mut rng, m, with_terms)?;
        }
    }

    proptest! {
        #[test]
        fn lut_rounds_half_up_and_saturates_as_the_plain_conversion(
            m in 1usize..8,
            vals in proptest::collection::vec(prop_oneof![
                -1e3f32..1e3,
                (0u32..64).prop_map(|x| x as f32 * 0.5),
                Just(f32::INFINITY),
                Just(f32::NAN),
            ], 8 * 16),
        ) {
            let table = &vals[..m * 16];
            let mut lut = Vec::new();
            let (scale, _) = quantize_lut(table, m, &mut lut);
            for (j, row) in table.chunks_exact(16).enumerate() {
                let lo = row.iter().skip(1).fold(row[0], |lo, &v| if v < lo { v } else { lo });
                for (i, &v) in row.iter().enumerate() {
                    let want = ((v - lo) * scale + 0.5) as u8;
                    prop_assert_eq!(lut[j * 16 + i], want, "row {} entry {}: {}", j, i, v);
                }
            }
        }
    }

    proptest! {
        /// Every ISA's binary table is the scalar one, bit for bit, the odd values
        /// (NaN, infinities, signed zeros, huge and tiny) included; and the scalar
        /// one is the definition: entries within half a step of the rounded subset
        /// sums, the sums within float rounding of f64 ones.
        #[test]
        fn binary_lut_equals_scalar_and_the_definition(
            groups in 1usize..=16,
            seed in any::<u64>(),
            odd in 0u8..4,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let d = groups * 64;
            let mut q: Vec<f32> = (0..d).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e30, -1e-30];
            for _ in 0..odd {
                let i = rng.gen_range(0..d);
                q[i] = specials[rng.gen_range(0..specials.len())];
            }
            let mut want = vec![0u8; d * 4];
            let w = binary_lut(&q, &mut want);
            for s in scanners() {
                let mut got = vec![0u8; d * 4];
                let g = s.binary_lut(&q, &mut got);
                prop_assert_eq!(&got, &want, "{}", s.name());
                // Bit for bit, except that every NaN is one NaN: x86 gives the sign
                // of whichever NaN operand comes first, and the SIMD sums add in
                // another order than the scalar loop (a NaN query is refused above
                // this layer; the kernels only have to agree that it is NaN).
                let canon = |x: f32| if x.is_nan() { f32::NAN.to_bits() } else { x.to_bits() };
                prop_assert_eq!(canon(g.scale), canon(w.scale), "{} scale", s.name());
                prop_assert_eq!(canon(g.bias), canon(w.bias), "{} bias", s.name());
                prop_assert_eq!(canon(g.sum), canon(w.sum), "{} sum", s.name());
                prop_assert_eq!(canon(g.norm_sq), canon(w.norm_sq), "{} norm_sq", s.name());
            }
            if odd == 0 {
                let (sum, n2): (f64, f64) = q.iter().fold((0.0, 0.0), |(a, b), &x| (a + x as f64, b + (x as f64).powi(2)));
                prop_assert!((w.sum as f64 - sum).abs() < 1e-3, "{} {}", w.sum, sum);
                prop_assert!((w.norm_sq as f64 - n2).abs() < 1e-3 * n2.max(1.0));
                let mut bias = 0f64;
                for (g, quad) in q.chunks_exact(4).enumerate() {
                    let lo: f64 = quad.iter().map(|&x| (x as f64).min(0.0)).sum();
                    bias += lo;
                    for nib in 0..16 {
                        let e: f64 = (0..4).filter(|j| nib >> j & 1 == 1).map(|j| quad[j] as f64).sum();
                        let t = (e - lo) * w.scale as f64;
                        prop_assert!(t <= 255.5 + 1e-3 && (want[g * 16 + nib] as f64 - t).abs() <= 0.5 + 1e-3,
                            "group {} nib {}: {} vs {}", g, nib, want[g * 16 + nib], t);
                    }
                }
                prop_assert!((w.bias as f64 - bias).abs() < 1e-3, "{} {}", w.bias, bias);
            }
        }
    }

    #[test]
    fn binary_lut_scans_to_the_subset_sum() {
        // A code's scanned sum, through the table, is its subset sum of the query
        // within one half step per group.
        let d = 64;
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.61).sin()).collect();
        let mut lut = vec![0u8; d * 4];
        let t = binary_lut(&q, &mut lut);
        let m = d / 4;
        let mut block = vec![0u8; block_bytes(m)];
        let codes: Vec<Vec<u8>> = (0..BLOCK)
            .map(|i| (0..m).map(|j| ((i * 5 + j * 11) % 16) as u8).collect())
            .collect();
        for (i, c) in codes.iter().enumerate() {
            set_codes(&mut block, i, c);
        }
        for s in scanners() {
            let mut sums = [0u16; BLOCK];
            s.scan_block(&block, &lut, m, &mut sums);
            for (i, c) in codes.iter().enumerate() {
                let mut exact = 0f32;
                for (g, &nib) in c.iter().enumerate() {
                    for j in (0..4).filter(|j| nib >> j & 1 == 1) {
                        exact += q[4 * g + j];
                    }
                }
                let approx = t.bias + sums[i] as f32 / t.scale;
                assert!(
                    (exact - approx).abs() <= m as f32 * 0.5 / t.scale + 1e-4,
                    "{}: {exact} vs {approx}",
                    s.name()
                );
            }
        }
    }

    #[test]
    fn codes_round_trip_and_lut_quantisation() {
        let m = 5;
        let mut block = vec![0u8; block_bytes(m)];
        for i in 0..BLOCK {
            let codes: Vec<u8> = (0..m).map(|j| ((i * 7 + j * 3) % 16) as u8).collect();
            set_codes(&mut block, i, &codes);
        }
        for i in 0..BLOCK {
            for j in 0..m {
                assert_eq!(get_code(&block, i, j) as usize, (i * 7 + j * 3) % 16);
            }
        }
        let table: Vec<f32> = (0..m * 16).map(|x| (x as f32 * 0.37).sin() * 3.0).collect();
        let mut lut = Vec::new();
        let (scale, bias) = quantize_lut(&table, m, &mut lut);
        let mut sums = [0u16; BLOCK];
        scan_block_scalar(&block, &lut, m, &mut sums);
        for i in 0..BLOCK {
            let exact: f32 = (0..m)
                .map(|j| table[j * 16 + get_code(&block, i, j) as usize])
                .sum();
            let approx = bias + sums[i] as f32 / scale;
            // Each entry is rounded by at most half a step.
            assert!(
                (exact - approx).abs() <= m as f32 * 0.5 / scale + 1e-4,
                "{exact} vs {approx}"
            );
        }
    }
}
