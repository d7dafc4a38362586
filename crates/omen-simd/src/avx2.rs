//! x86_64 AVX2 + FMA kernels.
//!
//! Every entry point is an `unsafe fn` whose only precondition is that the running
//! CPU supports AVX2 and FMA; slice bounds are handled inside. The safe wrappers
//! in `kernels.rs` are only reachable through a [`crate::Kernels`] built after that
//! run-time check.
//!
//! Tails shorter than a register (at most 7 floats) are finished in scalar code:
//! AVX2's masked loads are slow on AMD cores and gain nothing at that length.

use core::arch::x86_64::*;

use crate::pack::{pack_panels, packed_sizes, tile_shape};
use crate::scalar::{self, cosine_from_parts};

/// f32 lanes in one register.
const LANES: usize = 8;
/// Rows per packed panel: two registers wide.
const NR: usize = 2 * LANES;
/// Queries per micro-tile for the dot product: 6 × 2 accumulators + 2 panel
/// registers + a broadcast = 15 of the 16 ymm registers (BLIS's Haswell shape).
pub(crate) const MR_DOT: usize = 6;
/// Queries per micro-tile for squared L2, which needs a temporary per step.
pub(crate) const MR_L2: usize = 6;

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
    _mm_cvtss_f32(s)
}

/// One accumulation step: `acc + (x - y)²` for L2, `acc + x·y` for the dot product.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn step<const L2: bool>(acc: __m256, x: __m256, y: __m256) -> __m256 {
    if L2 {
        let d = _mm256_sub_ps(x, y);
        _mm256_fmadd_ps(d, d, acc)
    } else {
        _mm256_fmadd_ps(x, y, acc)
    }
}

/// The scalar counterpart of [`step`] for tails.
#[inline(always)]
fn step1<const L2: bool>(x: f32, y: f32) -> f32 {
    if L2 {
        (x - y) * (x - y)
    } else {
        x * y
    }
}

/// Below this length the one-to-one L2 and dot kernels hand over to the scalar
/// loop, which wins there: the vector loop's setup and horizontal sum cost more
/// than the few multiplies it saves (best-of-200 on the Zen4 dev box, via
/// `examples/pair_probe.rs`: at 4 and 12 components scalar
/// takes 2.2/3.0 ns to AVX2's 3.5/3.8, at 16 3.7 to 3.3).
const PAIR_SCALAR_BELOW: usize = 16;
/// The same for cosine, whose scalar loop is slower (single accumulators): scalar
/// wins only at 4 components.
const COSINE_SCALAR_BELOW: usize = 8;
/// The same for one-to-many: scalar wins at 4 components per row, loses from 8.
const MANY_SCALAR_BELOW: usize = 8;

/// Squared L2 (`L2 = true`) or dot product over the first `min(a.len(), b.len())`
/// elements.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn reduce_pair<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    if n < PAIR_SCALAR_BELOW {
        return if L2 {
            scalar::l2_sq(a, b)
        } else {
            scalar::dot(a, b)
        };
    }
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four independent chains hide the FMA latency.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 4 * LANES <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= i + 32 <= n, inside both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + k * LANES)),
                    _mm256_loadu_ps(pb.add(i + k * LANES)),
                )
            };
            *acc = step::<L2>(*acc, x, y);
        }
        i += 4 * LANES;
    }
    while i + LANES <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = step::<L2>(acc[0], x, y);
        i += LANES;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(s);
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        s += step1::<L2>(*x, *y);
    }
    s
}

/// Cosine distance over the first `min(a.len(), b.len())` elements.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    if n < COSINE_SCALAR_BELOW {
        return scalar::cosine(a, b);
    }
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let z = _mm256_setzero_ps();
    let (mut ab, mut aa, mut bb) = ([z; 2], [z; 2], [z; 2]);
    let mut i = 0;
    while i + 2 * LANES <= n {
        for k in 0..2 {
            // SAFETY: i + 8k + 8 <= i + 16 <= n.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + k * LANES)),
                    _mm256_loadu_ps(pb.add(i + k * LANES)),
                )
            };
            ab[k] = _mm256_fmadd_ps(x, y, ab[k]);
            aa[k] = _mm256_fmadd_ps(x, x, aa[k]);
            bb[k] = _mm256_fmadd_ps(y, y, bb[k]);
        }
        i += 2 * LANES;
    }
    if i + LANES <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        ab[0] = _mm256_fmadd_ps(x, y, ab[0]);
        aa[0] = _mm256_fmadd_ps(x, x, aa[0]);
        bb[0] = _mm256_fmadd_ps(y, y, bb[0]);
        i += LANES;
    }
    let mut sab = hsum(_mm256_add_ps(ab[0], ab[1]));
    let mut saa = hsum(_mm256_add_ps(aa[0], aa[1]));
    let mut sbb = hsum(_mm256_add_ps(bb[0], bb[1]));
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    cosine_from_parts(sab, saa, sbb)
}

/// The four sums (L2 or dot) of `query` with one group of four rows: one
/// accumulator per row over whole registers, a horizontal sum, then the scalar
/// tail. The one-to-many and the scattered-rows kernels share it, so a row gets
/// the same number from both.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every row must hold at least
/// `query.len()` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn group4<const L2: bool>(query: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    let dim = query.len();
    let full = dim - dim % LANES;
    let pq = query.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        // SAFETY: i + 8 <= full <= dim = query.len().
        let q = unsafe { _mm256_loadu_ps(pq.add(i)) };
        for (acc, r) in acc.iter_mut().zip(&rows) {
            // SAFETY: i + 8 <= dim <= r.len() (caller's contract).
            let x = unsafe { _mm256_loadu_ps(r.as_ptr().add(i)) };
            *acc = step::<L2>(*acc, q, x);
        }
        i += LANES;
    }
    let mut sums = [0.0f32; 4];
    for ((s, acc), r) in sums.iter_mut().zip(acc).zip(&rows) {
        *s = hsum(acc);
        for (x, y) in query[full..].iter().zip(&r[full..dim]) {
            *s += step1::<L2>(*x, *y);
        }
    }
    sums
}

/// `query` against each `query.len()`-wide row of `rows`, L2 or dot, into `out`.
/// Four rows at a time share each load of the query.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn reduce_many<const L2: bool>(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim < MANY_SCALAR_BELOW {
        // Also the dim-0 rule: the scalar kernels fill the whole output.
        return if L2 {
            scalar::l2_sq_many(query, rows, out)
        } else {
            scalar::dot_many(query, rows, out)
        };
    }
    let n = out.len().min(rows.len() / dim);
    let mut j = 0;
    while j + 4 <= n {
        let r = &rows[j * dim..(j + 4) * dim];
        let g = [
            &r[..dim],
            &r[dim..2 * dim],
            &r[2 * dim..3 * dim],
            &r[3 * dim..],
        ];
        // SAFETY: same CPU precondition as this function; each of the four rows
        // holds `dim` floats.
        let sums = unsafe { group4::<L2>(query, g) };
        out[j..j + 4].copy_from_slice(&sums);
        j += 4;
    }
    for (o, r) in out[j..n].iter_mut().zip(rows[j * dim..].chunks_exact(dim)) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { reduce_pair::<L2>(query, r) };
    }
}

/// `query` against each of the scattered `rows`, L2 or dot, into `out[i]` for
/// `i < min(rows.len(), out.len())`. Groups of four rows at least `query.len()`
/// long go through [`group4`], as in [`reduce_many`] (so a group gives bit for
/// bit what the one-to-many kernel gives for the same four rows side by side);
/// the rest through [`reduce_pair`], over `min(query.len(), row.len())`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn reduce_rows<const L2: bool>(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    let dim = query.len();
    if dim < MANY_SCALAR_BELOW {
        return if L2 {
            scalar::l2_sq_rows(query, rows, out)
        } else {
            scalar::dot_rows(query, rows, out)
        };
    }
    let n = out.len().min(rows.len());
    let (rows, out) = (&rows[..n], &mut out[..n]);
    let mut groups = rows.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(4);
    for (g, o) in (&mut groups).zip(&mut outs) {
        if g.iter().all(|r| r.len() >= dim) {
            // SAFETY: same CPU precondition as this function; every row of the
            // group holds at least `dim` floats.
            let sums = unsafe { group4::<L2>(query, [g[0], g[1], g[2], g[3]]) };
            o.copy_from_slice(&sums);
        } else {
            for (o, r) in o.iter_mut().zip(g) {
                // SAFETY: same CPU precondition as this function.
                *o = unsafe { reduce_pair::<L2>(query, r) };
            }
        }
    }
    for (o, r) in outs.into_remainder().iter_mut().zip(groups.remainder()) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { reduce_pair::<L2>(query, r) };
    }
}

/// Cosine distance of `query` (squared norm `qq`) and one row at least as long:
/// the per-row body of [`cosine_many`] and [`cosine_rows`].
///
/// # Safety
/// The CPU must support AVX2 and FMA; `r.len() >= query.len()`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn cosine_row(query: &[f32], qq: f32, r: &[f32]) -> f32 {
    let dim = query.len();
    let full = dim - dim % LANES;
    let (pq, pr) = (query.as_ptr(), r.as_ptr());
    let (mut ab, mut bb) = ([_mm256_setzero_ps(); 2], [_mm256_setzero_ps(); 2]);
    let mut i = 0;
    // Two chains per sum: one would be bound by the FMA latency.
    while i + 2 * LANES <= full {
        for k in 0..2 {
            // SAFETY: i + 8k + 8 <= full <= dim <= r.len().
            let (q, x) = unsafe {
                (
                    _mm256_loadu_ps(pq.add(i + k * LANES)),
                    _mm256_loadu_ps(pr.add(i + k * LANES)),
                )
            };
            ab[k] = _mm256_fmadd_ps(q, x, ab[k]);
            bb[k] = _mm256_fmadd_ps(x, x, bb[k]);
        }
        i += 2 * LANES;
    }
    if i < full {
        // SAFETY: i + 8 <= full <= dim <= r.len().
        let (q, x) = unsafe { (_mm256_loadu_ps(pq.add(i)), _mm256_loadu_ps(pr.add(i))) };
        ab[0] = _mm256_fmadd_ps(q, x, ab[0]);
        bb[0] = _mm256_fmadd_ps(x, x, bb[0]);
    }
    let mut sab = hsum(_mm256_add_ps(ab[0], ab[1]));
    let mut sbb = hsum(_mm256_add_ps(bb[0], bb[1]));
    for (x, y) in query[full..].iter().zip(&r[full..dim]) {
        sab += x * y;
        sbb += y * y;
    }
    cosine_from_parts(sab, qq, sbb)
}

/// Cosine distance from `query` to each row of `rows`; the query norm is computed
/// once.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn cosine_many(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.fill(1.0);
        return;
    }
    // SAFETY: same CPU precondition as this function.
    let qq = unsafe { reduce_pair::<false>(query, query) };
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        // SAFETY: same CPU precondition; `r` holds `dim` floats.
        *o = unsafe { cosine_row(query, qq, r) };
    }
}

/// Cosine distance from `query` to each of the scattered `rows`, into `out[i]`
/// for `i < min(rows.len(), out.len())`; the query norm is computed once. A row
/// shorter than the query goes through [`cosine`] over its own length.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn cosine_rows(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    let dim = query.len();
    // SAFETY: same CPU precondition as this function.
    let qq = unsafe { reduce_pair::<false>(query, query) };
    for (o, r) in out.iter_mut().zip(rows) {
        *o = if dim == 0 {
            1.0
        } else if r.len() >= dim {
            // SAFETY: same CPU precondition; `r` is at least as long as the query.
            unsafe { cosine_row(query, qq, r) }
        } else {
            // SAFETY: same CPU precondition as this function.
            unsafe { cosine(query, r) }
        };
    }
}

/// Many-to-many tile, `out[i * nr + j]` = L2 or dot of query `i` and row `j`.
///
/// Rows are packed into 16-row panels and queries into `MR`-query groups in
/// `scratch` (grown once, then reused); one panel stays hot in L1 while every
/// query group streams past it.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile<const L2: bool, const MR: usize>(
    queries: &[f32],
    rows: &[f32],
    dim: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let Some((nq, nr)) = tile_shape(queries, rows, dim, out) else {
        return;
    };
    let (panels_len, qpack_len) = packed_sizes(nq, nr, dim, MR, NR);
    if scratch.len() < panels_len + qpack_len {
        scratch.resize(panels_len + qpack_len, 0.0);
    }
    let (panels, qpack) = scratch.split_at_mut(panels_len);
    pack_panels(rows, nr, dim, NR, panels);
    pack_panels(queries, nq, dim, MR, qpack);
    let po = out.as_mut_ptr();
    for (p, panel) in panels.chunks_exact(NR * dim).enumerate() {
        let cols = NR.min(nr - p * NR);
        for (g, qgroup) in qpack[..qpack_len].chunks_exact(MR * dim).enumerate() {
            let valid = MR.min(nq - g * MR);
            // SAFETY: CPU precondition as this function. The micro-tile writes
            // out[(g*MR + i) * nr + p*NR + j] for i < valid, j < cols, the largest
            // being (nq - 1) * nr + nr - 1 < nq * nr <= out.len() (tile_shape).
            // The packed operands hold dim * NR and dim * MR floats.
            unsafe {
                micro::<L2, MR>(
                    qgroup.as_ptr(),
                    panel.as_ptr(),
                    dim,
                    po.add(g * MR * nr + p * NR),
                    nr,
                    valid,
                    cols,
                )
            };
        }
    }
}

/// The register-blocked micro-kernel: `MR` queries × 16 rows accumulated in
/// registers over `dim`, then stored (through a buffer for partial tiles).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `qp` must point to `MR * dim` readable
/// floats, `pp` to `NR * dim`, and `out + i * ldo + j` must be writable for every
/// `i < valid`, `j < cols`, with `valid <= MR`, `cols <= NR`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro<const L2: bool, const MR: usize>(
    qp: *const f32,
    pp: *const f32,
    dim: usize,
    out: *mut f32,
    ldo: usize,
    valid: usize,
    cols: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for d in 0..dim {
        // SAFETY: d < dim, so d*NR + 16 <= NR*dim and d*MR + MR <= MR*dim.
        let (p0, p1) = unsafe {
            (
                _mm256_loadu_ps(pp.add(d * NR)),
                _mm256_loadu_ps(pp.add(d * NR + LANES)),
            )
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let b = _mm256_set1_ps(unsafe { *qp.add(d * MR + i) });
            acc[0] = step::<L2>(acc[0], b, p0);
            acc[1] = step::<L2>(acc[1], b, p1);
        }
    }
    for (i, acc) in acc.iter().enumerate().take(valid) {
        if cols == NR {
            // SAFETY: columns 0..16 of row i < valid are writable by contract.
            unsafe {
                _mm256_storeu_ps(out.add(i * ldo), acc[0]);
                _mm256_storeu_ps(out.add(i * ldo + LANES), acc[1]);
            }
        } else {
            let mut buf = [0.0f32; NR];
            // SAFETY: `buf` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(buf.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(buf.as_mut_ptr().add(LANES), acc[1]);
            }
            // SAFETY: columns 0..cols of row i < valid are writable by contract,
            // and `buf` holds cols <= 16 floats; the two do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), out.add(i * ldo), cols) };
        }
    }
}
