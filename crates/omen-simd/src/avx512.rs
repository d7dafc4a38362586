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

/// The four sums (L2 or dot) of `query` with one group of four rows, each read
/// through its own pointer: one accumulator per row over whole registers, the
/// masked tail folded into it, then [`hsum4`]. The one-to-many and the
/// scattered-rows kernels share it, so a row gets the same number from both.
///
/// # Safety
/// The CPU must support AVX-512F; `query` and every `rows[k]` must point to at
/// least `dim` readable floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn group4<const L2: bool>(query: *const f32, rows: [*const f32; 4], dim: usize) -> __m128 {
    let tail = tail_mask(dim % LANES);
    let full = dim - dim % LANES;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= full <= dim, inside the query (caller's contract).
        let q = unsafe { _mm512_loadu_ps(query.add(i)) };
        for (acc, &r) in acc.iter_mut().zip(&rows) {
            // SAFETY: as above, inside each row.
            let x = unsafe { _mm512_loadu_ps(r.add(i)) };
            *acc = step::<L2>(*acc, q, x);
        }
        i += LANES;
    }
    if full < dim {
        // SAFETY: the mask selects lanes full..dim only, inside the query; masked-off
        // lanes are not accessed.
        let q = unsafe { _mm512_maskz_loadu_ps(tail, query.add(full)) };
        for (acc, &r) in acc.iter_mut().zip(&rows) {
            // SAFETY: as above, inside each row.
            let x = unsafe { _mm512_maskz_loadu_ps(tail, r.add(full)) };
            *acc = step::<L2>(*acc, q, x);
        }
    }
    hsum4(acc)
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
    let mut j = 0;
    while j + 4 <= n {
        let r = &rows[j * dim..(j + 4) * dim];
        let p = r.as_ptr();
        // SAFETY: `r` holds four whole rows of `dim` floats, the query `dim` floats;
        // the pointers formed are to the start of each row inside `r`.
        let sums = unsafe {
            group4::<L2>(
                query.as_ptr(),
                [p, p.add(dim), p.add(2 * dim), p.add(3 * dim)],
                dim,
            )
        };
        // SAFETY: j + 4 <= n <= out.len(); an unaligned 4-float store.
        unsafe { _mm_storeu_ps(out.as_mut_ptr().add(j), sums) };
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
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
            // SAFETY: every row of the group holds at least `dim` floats, as does
            // the query.
            let sums = unsafe {
                group4::<L2>(
                    query.as_ptr(),
                    [g[0].as_ptr(), g[1].as_ptr(), g[2].as_ptr(), g[3].as_ptr()],
                    dim,
                )
            };
            // SAFETY: `o` is 4 floats; an unaligned store.
            unsafe { _mm_storeu_ps(o.as_mut_ptr(), sums) };
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

/// Cosine distance of `query` (squared norm `qq`) and one row: the per-row body
/// of [`cosine_many`] and [`cosine_rows`].
///
/// # Safety
/// The CPU must support AVX-512F; `query` and `row` must point to at least `dim`
/// readable floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn cosine_row(query: *const f32, qq: f32, row: *const f32, dim: usize) -> f32 {
    let z = _mm512_setzero_ps();
    let (mut ab, mut bb) = ([z; 2], [z; 2]);
    let mut i = 0;
    // Two chains per sum: one would be bound by the FMA latency.
    while i + 2 * LANES <= dim {
        for k in 0..2 {
            // SAFETY: i + 16k + 16 <= dim, inside the query and the row.
            let (q, x) = unsafe {
                (
                    _mm512_loadu_ps(query.add(i + k * LANES)),
                    _mm512_loadu_ps(row.add(i + k * LANES)),
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
        // SAFETY: the lanes selected by `m` are i..min(i + 16, dim) of the query
        // and of the row.
        let (q, x) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, query.add(i)),
                _mm512_maskz_loadu_ps(m, row.add(i)),
            )
        };
        ab[0] = _mm512_fmadd_ps(q, x, ab[0]);
        bb[0] = _mm512_fmadd_ps(x, x, bb[0]);
        i += LANES;
    }
    cosine_from_parts(
        _mm512_reduce_add_ps(_mm512_add_ps(ab[0], ab[1])),
        qq,
        _mm512_reduce_add_ps(_mm512_add_ps(bb[0], bb[1])),
    )
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
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        // SAFETY: `r` and the query hold `dim` floats.
        *o = unsafe { cosine_row(query.as_ptr(), qq, r.as_ptr(), dim) };
    }
}

/// Cosine distance from `query` to each of the scattered `rows`, into `out[i]`
/// for `i < min(rows.len(), out.len())`; the query norm is computed once. A row
/// shorter than the query goes through [`cosine`] over its own length.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn cosine_rows(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    let dim = query.len();
    // SAFETY: same CPU precondition as this function.
    let qq = unsafe { reduce_pair::<false>(query, query) };
    for (o, r) in out.iter_mut().zip(rows) {
        *o = if dim == 0 {
            1.0
        } else if r.len() >= dim {
            // SAFETY: `r` holds at least `dim` floats, the query `dim`.
            unsafe { cosine_row(query.as_ptr(), qq, r.as_ptr(), dim) }
        } else {
            // SAFETY: same CPU precondition as this function.
            unsafe { cosine(query, r) }
        };
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
