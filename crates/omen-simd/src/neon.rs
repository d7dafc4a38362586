//! aarch64 NEON (Advanced SIMD) kernels.
//!
//! Deliberately simple: four 4-lane accumulators per one-to-one kernel and scalar
//! tails; one-to-many and tile kernels loop over the one-to-one kernel. NEON is
//! mandatory on aarch64, but the entry points still take the CPU-feature
//! precondition so that every ISA follows the same pattern.
//!
//! Every entry point is an `unsafe fn` whose only precondition is that the running
//! CPU supports NEON; slice bounds are handled inside.

use core::arch::aarch64::*;

use crate::scalar::cosine_from_parts;

/// f32 lanes in one register.
const LANES: usize = 4;

/// One accumulation step: `acc + (x - y)²` for L2, `acc + x·y` for the dot product.
#[inline]
#[target_feature(enable = "neon")]
fn step<const L2: bool>(acc: float32x4_t, x: float32x4_t, y: float32x4_t) -> float32x4_t {
    if L2 {
        let d = vsubq_f32(x, y);
        // vfmaq_f32(a, b, c) = a + b * c.
        vfmaq_f32(acc, d, d)
    } else {
        vfmaq_f32(acc, x, y)
    }
}

/// Squared L2 (`L2 = true`) or dot product over the first `min(a.len(), b.len())`
/// elements.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn reduce_pair<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 4 * LANES <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4k + 4 <= i + 16 <= n, inside both slices.
            let (x, y) = unsafe {
                (
                    vld1q_f32(pa.add(i + k * LANES)),
                    vld1q_f32(pb.add(i + k * LANES)),
                )
            };
            *acc = step::<L2>(*acc, x, y);
        }
        i += 4 * LANES;
    }
    while i + LANES <= n {
        // SAFETY: i + 4 <= n.
        let (x, y) = unsafe { (vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        acc[0] = step::<L2>(acc[0], x, y);
        i += LANES;
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut s = vaddvq_f32(s);
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        s += if L2 { (x - y) * (x - y) } else { x * y };
    }
    s
}

/// Cosine distance over the first `min(a.len(), b.len())` elements.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut ab, mut aa, mut bb) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: i + 4 <= n, inside both slices.
        let (x, y) = unsafe { (vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        ab = vfmaq_f32(ab, x, y);
        aa = vfmaq_f32(aa, x, x);
        bb = vfmaq_f32(bb, y, y);
        i += LANES;
    }
    let (mut sab, mut saa, mut sbb) = (vaddvq_f32(ab), vaddvq_f32(aa), vaddvq_f32(bb));
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    cosine_from_parts(sab, saa, sbb)
}

/// `query` against each `query.len()`-wide row of `rows`, L2 or dot, into `out`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn reduce_many<const L2: bool>(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.fill(0.0);
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { reduce_pair::<L2>(query, r) };
    }
}

/// Cosine distance from `query` to each row of `rows`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn cosine_many(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.fill(1.0);
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { cosine(query, r) };
    }
}

/// `query` against each of the scattered `rows`, L2 or dot, into `out[i]` for
/// `i < min(rows.len(), out.len())`, each over `min(query.len(), row.len())`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn reduce_rows<const L2: bool>(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { reduce_pair::<L2>(query, r) };
    }
}

/// Cosine distance from `query` to each of the scattered `rows` (see
/// [`reduce_rows`]).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn cosine_rows(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows) {
        // SAFETY: same CPU precondition as this function.
        *o = unsafe { cosine(query, r) };
    }
}

/// Many-to-many tile, `out[i * nr + j]` = L2 or dot of query `i` and row `j`, with
/// the same length rules as the scalar tile kernel.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn tile<const L2: bool>(
    queries: &[f32],
    rows: &[f32],
    dim: usize,
    out: &mut [f32],
) {
    if dim == 0 {
        return;
    }
    let nr = rows.len() / dim;
    if nr == 0 {
        return;
    }
    for (q, line) in queries.chunks_exact(dim).zip(out.chunks_exact_mut(nr)) {
        // SAFETY: same CPU precondition as this function.
        unsafe { reduce_many::<L2>(q, rows, line) };
    }
}
