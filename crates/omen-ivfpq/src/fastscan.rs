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
    for (j, row) in table.chunks_exact(16).take(m).enumerate() {
        // Compare-and-select (not `f32::min`, whose NaN rule blocks vectorising).
        let (mut lo, mut hi) = (row[0], row[0]);
        for &v in &row[1..] {
            lo = if v < lo { v } else { lo };
            hi = if v > hi { v } else { hi };
        }
        lows[j] = lo;
        bias += lo;
        span = if hi - lo > span { hi - lo } else { span };
    }
    let scale = if span > 0.0 && span.is_finite() {
        255.0 / span
    } else {
        1.0
    };
    for ((row, dst), &lo) in table
        .chunks_exact(16)
        .zip(lut.chunks_exact_mut(16))
        .zip(&lows[..m])
    {
        for (d, &v) in dst.iter_mut().zip(row) {
            // Round half up by hand: `f32::round` is a libm call at the baseline
            // x86_64 target, and this runs for every probed list. The value is
            // non-negative; `as u8` saturates (and maps NaN to 0).
            *d = ((v - lo) * scale + 0.5) as u8;
        }
    }
    (scale, bias)
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

    /// The AVX2 scanner, if the CPU has AVX2.
    pub fn avx2() -> Option<Scanner> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Scanner { kind: Kind::Avx2 });
        }
        None
    }

    /// The AVX-512BW scanner, if the CPU has AVX-512BW (and AVX2).
    pub fn avx512() -> Option<Scanner> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx2")
        {
            return Some(Scanner { kind: Kind::Avx512 });
        }
        None
    }

    /// The best scanner for this CPU; `OMEN_ISA=scalar` forces the portable one
    /// (`OMEN_ISA=avx2` stops at AVX2).
    pub fn best() -> Scanner {
        static BEST: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("OMEN_ISA")
                .unwrap_or_default()
                .to_ascii_lowercase();
            match forced.as_str() {
                "scalar" => Scanner::scalar(),
                "avx2" => Scanner::avx2().unwrap_or_else(Scanner::scalar),
                _ => Scanner::avx512()
                    .or_else(Scanner::avx2)
                    .unwrap_or_else(Scanner::scalar),
            }
        })
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// Writes the 32 sums of a block from the even/odd-split u16 accumulators: `a`
    /// holds vectors 0..16 and `b` vectors 16..32, each as (lo, hi) pairs summed over
    /// both 128-bit lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn finish(
        a_lo: __m256i,
        a_hi: __m256i,
        b_lo: __m256i,
        b_hi: __m256i,
        out: &mut [u16; BLOCK],
    ) {
        let a_even = _mm256_sub_epi16(a_lo, _mm256_slli_epi16(a_hi, 8));
        let b_even = _mm256_sub_epi16(b_lo, _mm256_slli_epi16(b_hi, 8));
        macro_rules! fold {
            ($v:expr) => {
                _mm_add_epi16(_mm256_castsi256_si128($v), _mm256_extracti128_si256($v, 1))
            };
        }
        let (ae, ao, be, bo) = (fold!(a_even), fold!(a_hi), fold!(b_even), fold!(b_hi));
        let p = out.as_mut_ptr() as *mut __m128i;
        // SAFETY: `out` is 32 u16 = 4 × 16 bytes; unaligned stores.
        unsafe {
            _mm_storeu_si128(p, _mm_unpacklo_epi16(ae, ao));
            _mm_storeu_si128(p.add(1), _mm_unpackhi_epi16(ae, ao));
            _mm_storeu_si128(p.add(2), _mm_unpacklo_epi16(be, bo));
            _mm_storeu_si128(p.add(3), _mm_unpackhi_epi16(be, bo));
        }
    }

    /// AVX2 block scan, two sub-quantizers per 256-bit register.
    ///
    /// # Safety
    /// The CPU must support AVX2; `block` and `lut` must hold at least `mp * 16`
    /// bytes; `mp` must be even and at most 256.
    #[target_feature(enable = "avx2")]
    pub unsafe fn scan_avx2(block: &[u8], lut: &[u8], mp: usize, out: &mut [u16; BLOCK]) {
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
        // SAFETY: AVX2 is enabled in this function.
        unsafe { finish(a_lo, a_hi, b_lo, b_hi, out) }
    }

    /// AVX-512BW block scan, four sub-quantizers per 512-bit register (a remaining
    /// pair goes through 256-bit registers).
    ///
    /// # Safety
    /// The CPU must support AVX-512BW and AVX2; `block` and `lut` must hold at least
    /// `mp * 16` bytes; `mp` must be even and at most 256.
    #[target_feature(enable = "avx512bw,avx2")]
    pub unsafe fn scan_avx512(block: &[u8], lut: &[u8], mp: usize, out: &mut [u16; BLOCK]) {
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
        // SAFETY: AVX2 is enabled in this function.
        unsafe { finish(a_lo2, a_hi2, b_lo2, b_hi2, out) }
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
