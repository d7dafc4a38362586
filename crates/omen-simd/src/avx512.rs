//! x86_64 AVX-512F kernels.
//!
//! Every entry point is an `unsafe fn` whose only precondition is that the running
//! CPU supports AVX-512F; slice bounds are handled inside. The safe wrappers in
//! `kernels.rs` are only reachable through a [`crate::Kernels`] built after that
//! run-time check.
//!
//! Tails use masked loads (`_mm512_maskz_loadu_ps`), which never touch the masked
//! lanes' memory, so no scalar epilogue is needed at any length.

use core::arch::x86_64::*;

use crate::pack::{pack_panels, packed_sizes, tile_shape};
use crate::scalar::{self, cosine_from_parts};

/// f32 lanes in one register.
const LANES: usize = 16;
/// Dot-product micro-tile: 8 queries × 2 registers (32 rows). Its 16
/// accumulators, 2 panel registers and a broadcast fit the 32 zmm registers; it
/// runs at the FMA peak on Zen4, and narrow panels keep large dimensions
/// L1-friendly.
pub(crate) const MR_DOT: usize = 8;
/// Registers per panel (panel width / 16) for the dot product.
pub(crate) const NV_DOT: usize = 2;
/// Squared-L2 micro-tile: 6 queries × 4 registers (64 rows). Each broadcast
/// feeds NV subtractions, and on Zen4 the broadcasts appear to compete with the
/// subtractions for the FP add pipes: 8 × 2 ran at 68 GFLOP/s, 6 × 4 at 79
/// (dim 50, 256 × 1024, `examples/tile_probe.rs`).
pub(crate) const MR_L2: usize = 6;
/// Registers per panel for squared L2.
pub(crate) const NV_L2: usize = 4;

/// The mask selecting the low `n` lanes, `n < 16`.
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    debug_assert!(n < LANES);
    ((1u32 << n) - 1) as __mmask16
}

/// One accumulation step: `acc + (x - y)²` for L2, `acc + x·y` for the dot product.
#[inline]
#[target_feature(enable = "avx512f")]
fn step<const L2: bool>(acc: __m512, x: __m512, y: __m512) -> __m512 {
    if L2 {
        let d = _mm512_sub_ps(x, y);
        _mm512_fmadd_ps(d, d, acc)
    } else {
        _mm512_fmadd_ps(x, y, acc)
    }
}

/// Below this length the one-to-one L2 and dot kernels hand over to the scalar
/// loop, which wins there: the vector loop's setup and horizontal sum cost more
/// than the few multiplies it saves (best-of-200 on the Zen4 dev box, via
/// `examples/pair_probe.rs`: at 4 and 8 components scalar
/// takes 2.2/2.7 ns to AVX-512's 2.8/3.0, at 16 3.7 to 3.3).
const PAIR_SCALAR_BELOW: usize = 12;
/// The same for cosine, whose scalar loop is slower (single accumulators): scalar
/// wins only at 4 components.
const COSINE_SCALAR_BELOW: usize = 8;
/// The same for one-to-many: scalar wins at 4 components per row, loses from 8.
const MANY_SCALAR_BELOW: usize = 8;

/// The four horizontal sums of `v`, as one 128-bit vector: a transpose-and-add
/// tree that shares its shuffles between the four registers, about a third of
/// the work of four separate reductions.
#[inline]
#[target_feature(enable = "avx512f")]
fn hsum4(v: [__m512; 4]) -> __m128 {
    // Write each register as four 128-bit blocks: a = [a0 a1 a2 a3], ...
    // [a0 a2 b0 b2] + [a1 a3 b1 b3] = [a01 a23 b01 b23], and the same for c, d.
    let ab = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(v[0], v[1]),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(v[0], v[1]),
    );
    let cd = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(v[2], v[3]),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(v[2], v[3]),
    );
    // [a01 b01 c01 d01] + [a23 b23 c23 d23]: block k now holds register k's sum
    // spread over its 4 lanes.
    let t = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd),
    );
    // Sum the 4 lanes within each block; lane 0 of block k ends with the total.
    let t = _mm512_add_ps(t, _mm512_permute_ps::<0b01_00_11_10>(t));
    let t = _mm512_add_ps(t, _mm512_permute_ps::<0b10_11_00_01>(t));
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, t))
}

/// Squared L2 (`L2 = true`) or dot product over the first `min(a.len(), b.len())`
/// elements.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
    // Four independent chains hide the 4-cycle FMA latency.
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 4 * LANES <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16k + 16 <= i + 64 <= n, so the 16 floats read are inside
            // both slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + k * LANES)),
                    _mm512_loadu_ps(pb.add(i + k * LANES)),
                )
            };
            *acc = step::<L2>(*acc, x, y);
        }
        i += 4 * LANES;
    }
    while i + LANES <= n {
        // SAFETY: i + 16 <= n.
        let (x, y) = unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
        acc[0] = step::<L2>(acc[0], x, y);
        i += LANES;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: only the n - i lanes selected by `m` are read, all inside both
        // slices; masked-off lanes are not accessed and cannot fault.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        acc[1] = step::<L2>(acc[1], x, y);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// Cosine distance over the first `min(a.len(), b.len())` elements.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    if n < COSINE_SCALAR_BELOW {
        return scalar::cosine(a, b);
    }
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut ab, mut aa, mut bb) = (
        [_mm512_setzero_ps(); 2],
        [_mm512_setzero_ps(); 2],
        [_mm512_setzero_ps(); 2],
    );
    let mut i = 0;
    while i + 2 * LANES <= n {
        for k in 0..2 {
            // SAFETY: i + 16k + 16 <= i + 32 <= n.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + k * LANES)),
                    _mm512_loadu_ps(pb.add(i + k * LANES)),
                )
            };
            ab[k] = _mm512_fmadd_ps(x, y, ab[k]);
            aa[k] = _mm512_fmadd_ps(x, x, aa[k]);
            bb[k] = _mm512_fmadd_ps(y, y, bb[k]);
        }
        i += 2 * LANES;
    }
    while i < n {
        // A full vector when 16 remain, else the masked tail; one loop body for both.
        let m = if n - i >= LANES {
            0xffff
        } else {
            tail_mask(n - i)
        };
        // SAFETY: the lanes selected by `m` are i..min(i + 16, n), inside both slices.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        ab[0] = _mm512_fmadd_ps(x, y, ab[0]);
        aa[0] = _mm512_fmadd_ps(x, x, aa[0]);
        bb[0] = _mm512_fmadd_ps(y, y, bb[0]);
        i += LANES;
    }
    cosine_from_parts(
        _mm512_reduce_add_ps(_mm512_add_ps(ab[0], ab[1])),
        _mm512_reduce_add_ps(_mm512_add_ps(aa[0], aa[1])),
        _mm512_reduce_add_ps(_mm512_add_ps(bb[0], bb[1])),
    )
}

/// `query` against each `query.len()`-wide row of `rows`, L2 or dot, into `out`.
/// Four rows at a time share each load of the query.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
    let (pq, pr) = (query.as_ptr(), rows.as_ptr());
    let tail = tail_mask(dim % LANES);
    let full = dim - dim % LANES;
    let mut j = 0;
    while j + 4 <= n {
        // For every load below: rows j..j+4 lie inside `rows` because
        // j + 4 <= n <= rows.len() / dim, offsets within a row are < dim, and the
        // masked tail reads only lanes full..dim.
        // SAFETY: j * dim <= rows.len() (see above).
        let r = unsafe { pr.add(j * dim) };
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < full {
            // SAFETY: see above; i + 16 <= full <= dim.
            let q = unsafe { _mm512_loadu_ps(pq.add(i)) };
            for (k, acc) in acc.iter_mut().enumerate() {
                // SAFETY: see above.
                let x = unsafe { _mm512_loadu_ps(r.add(k * dim + i)) };
                *acc = step::<L2>(*acc, q, x);
            }
            i += LANES;
        }
        if full < dim {
            // SAFETY: see above.
            let q = unsafe { _mm512_maskz_loadu_ps(tail, pq.add(full)) };
            for (k, acc) in acc.iter_mut().enumerate() {
                // SAFETY: see above.
                let x = unsafe { _mm512_maskz_loadu_ps(tail, r.add(k * dim + full)) };
                *acc = step::<L2>(*acc, q, x);
            }
        }
        let sums = hsum4(acc);
        // SAFETY: j + 4 <= n <= out.len(); an unaligned 4-float store.
        unsafe { _mm_storeu_ps(out.as_mut_ptr().add(j), sums) };
        j += 4;
    }
    for (o, r) in out[j..n].iter_mut().zip(rows[j * dim..].chunks_exact(dim)) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { reduce_pair::<L2>(query, r) };
    }
}

/// Cosine distance from `query` to each row of `rows`; the query norm is computed
/// once.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn cosine_many(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.fill(1.0);
        return;
    }
    // SAFETY: same CPU precondition as this function.
    let qq = unsafe { reduce_pair::<false>(query, query) };
    let (pq, pr) = (query.as_ptr(), rows.as_ptr());
    let n = out.len().min(rows.len() / dim);
    for (j, o) in out[..n].iter_mut().enumerate() {
        let z = _mm512_setzero_ps();
        let (mut ab, mut bb) = ([z; 2], [z; 2]);
        let mut i = 0;
        // Two chains per sum: one would be bound by the FMA latency.
        while i + 2 * LANES <= dim {
            for k in 0..2 {
                // SAFETY: row j < n lies inside `rows`, and i + 16k + 16 <= dim.
                let (q, x) = unsafe {
                    (
                        _mm512_loadu_ps(pq.add(i + k * LANES)),
                        _mm512_loadu_ps(pr.add(j * dim + i + k * LANES)),
                    )
                };
                ab[k] = _mm512_fmadd_ps(q, x, ab[k]);
                bb[k] = _mm512_fmadd_ps(x, x, bb[k]);
            }
            i += 2 * LANES;
        }
        while i < dim {
            let m = if dim - i >= LANES {
                0xffff
            } else {
                tail_mask(dim - i)
            };
            // SAFETY: row j < n lies inside `rows`; the lanes selected by `m` are
            // i..min(i + 16, dim) of the query and of that row.
            let (q, x) = unsafe {
                (
                    _mm512_maskz_loadu_ps(m, pq.add(i)),
                    _mm512_maskz_loadu_ps(m, pr.add(j * dim + i)),
                )
            };
            ab[0] = _mm512_fmadd_ps(q, x, ab[0]);
            bb[0] = _mm512_fmadd_ps(x, x, bb[0]);
            i += LANES;
        }
        *o = cosine_from_parts(
            _mm512_reduce_add_ps(_mm512_add_ps(ab[0], ab[1])),
            qq,
            _mm512_reduce_add_ps(_mm512_add_ps(bb[0], bb[1])),
        );
    }
}

/// Many-to-many tile, `out[i * nr + j]` = L2 or dot of query `i` and row `j`.
///
/// Rows are packed into panels of `NV` registers (`16 * NV` rows) and queries
/// into `MR`-query groups in `scratch` (grown once, then reused); the loop keeps
/// one panel hot in L1 while every query group streams past it.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile<const L2: bool, const MR: usize, const NV: usize>(
    queries: &[f32],
    rows: &[f32],
    dim: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let Some((nq, nr)) = tile_shape(queries, rows, dim, out) else {
        return;
    };
    let w = NV * LANES;
    let (panels_len, qpack_len) = packed_sizes(nq, nr, dim, MR, w);
    if scratch.len() < panels_len + qpack_len {
        scratch.resize(panels_len + qpack_len, 0.0);
    }
    let (panels, qpack) = scratch.split_at_mut(panels_len);
    pack_panels(rows, nr, dim, w, panels);
    pack_panels(queries, nq, dim, MR, qpack);
    let po = out.as_mut_ptr();
    for (p, panel) in panels.chunks_exact(w * dim).enumerate() {
        let cols = w.min(nr - p * w);
        for (g, qgroup) in qpack[..qpack_len].chunks_exact(MR * dim).enumerate() {
            let valid = MR.min(nq - g * MR);
            // SAFETY: CPU precondition as this function. The micro-tile writes
            // out[(g*MR + i) * nr + p*w + j] for i < valid, j < cols, the largest
            // being (nq - 1) * nr + nr - 1 < nq * nr <= out.len() (tile_shape).
            // The packed operands hold dim * w and dim * MR floats.
            unsafe {
                micro::<L2, MR, NV>(
                    qgroup.as_ptr(),
                    panel.as_ptr(),
                    dim,
                    po.add(g * MR * nr + p * w),
                    nr,
                    valid,
                    cols,
                )
            };
        }
    }
}

/// The register-blocked micro-kernel: `MR` queries × `16 * NV` rows, accumulated
/// entirely in registers over `dim`, then stored (masked for partial tiles).
///
/// # Safety
/// The CPU must support AVX-512F; `qp` must point to `MR * dim` readable floats,
/// `pp` to `16 * NV * dim`, and `out + i * ldo + j` must be writable for every
/// `i < valid`, `j < cols`, with `valid <= MR`, `cols <= 16 * NV`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn micro<const L2: bool, const MR: usize, const NV: usize>(
    qp: *const f32,
    pp: *const f32,
    dim: usize,
    out: *mut f32,
    ldo: usize,
    valid: usize,
    cols: usize,
) {
    let w = NV * LANES;
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for d in 0..dim {
        let mut p = [_mm512_setzero_ps(); NV];
        for (k, p) in p.iter_mut().enumerate() {
            // SAFETY: d < dim and k < NV, so d*w + 16k + 16 <= w*dim.
            *p = unsafe { _mm512_loadu_ps(pp.add(d * w + k * LANES)) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: d < dim and i < MR, so d*MR + i < MR*dim.
            let b = _mm512_set1_ps(unsafe { *qp.add(d * MR + i) });
            for (acc, &p) in acc.iter_mut().zip(&p) {
                *acc = step::<L2>(*acc, b, p);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate().take(valid) {
        for (k, acc) in acc.iter().enumerate() {
            let first = k * LANES;
            if first >= cols {
                break;
            }
            let m = if cols - first >= LANES {
                0xffff
            } else {
                tail_mask(cols - first)
            };
            // SAFETY: the mask selects columns first..min(first + 16, cols) of row
            // i < valid, writable by this function's contract; masked-off lanes are
            // not written, and the pointer is formed only when column `first`
            // exists.
            unsafe { _mm512_mask_storeu_ps(out.add(i * ldo + first), m, *acc) };
        }
    }
}
