//! Portable scalar reference kernels.
//!
//! These are the reference every SIMD implementation is tested against. They use
//! four independent accumulators so that the compiler can pipeline them, but no
//! explicit SIMD.

/// Squared Euclidean distance over the first `min(a.len(), b.len())` elements.
pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..4 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let d = x - y;
        s += d * d;
    }
    s
}

/// Dot product over the first `min(a.len(), b.len())` elements.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// Returns `(a·b, a·a, b·b)` in one pass.
pub fn dot_and_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for i in 0..n {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
    }
    (ab, aa, bb)
}

/// Cosine distance `1 - a·b / (|a| |b|)`; defined as 1.0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (ab, aa, bb) = dot_and_norms(a, b);
    cosine_from_parts(ab, aa, bb)
}

/// Combines a dot product and two squared norms into a cosine distance.
#[inline]
pub fn cosine_from_parts(ab: f32, aa: f32, bb: f32) -> f32 {
    let denom = (aa * bb).sqrt();
    if denom > 0.0 {
        1.0 - ab / denom
    } else {
        1.0
    }
}

/// Squared L2 from `query` to each `dim`-wide row of `rows`, written to `out[i]`.
pub fn l2_sq_many(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = l2_sq(query, r);
    }
}

/// Dot product of `query` with each `dim`-wide row of `rows`, written to `out[i]`.
pub fn dot_many(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = dot(query, r);
    }
}

/// Cosine distance from `query` to each `dim`-wide row of `rows`, written to `out[i]`.
pub fn cosine_many(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 1.0);
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = cosine(query, r);
    }
}

/// Squared L2 from `query` to each of the scattered `rows`, written to `out[i]`
/// for `i < min(rows.len(), out.len())`; each over the first
/// `min(query.len(), rows[i].len())` elements, as [`l2_sq`].
pub fn l2_sq_rows(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows) {
        *o = l2_sq(query, r);
    }
}

/// Dot product of `query` with each of the scattered `rows` (see [`l2_sq_rows`]).
pub fn dot_rows(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows) {
        *o = dot(query, r);
    }
}

/// Cosine distance from `query` to each of the scattered `rows` (see
/// [`l2_sq_rows`]).
pub fn cosine_rows(query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows) {
        *o = cosine(query, r);
    }
}

/// Tiled many-to-many dot products: `out[i * nr + j] = queries[i] · rows[j]`, where
/// `nq = queries.len() / dim` and `nr = rows.len() / dim`.
pub fn dot_tile(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    tile(queries, rows, dim, out, dot)
}

/// Tiled many-to-many squared L2: `out[i * nr + j] = |queries[i] - rows[j]|²`.
pub fn l2_sq_tile(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    tile(queries, rows, dim, out, l2_sq)
}

fn tile(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32], f: fn(&[f32], &[f32]) -> f32) {
    if dim == 0 {
        return;
    }
    let nr = rows.len() / dim;
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        let Some(line) = out.get_mut(qi * nr..(qi + 1) * nr) else {
            return;
        };
        for (o, r) in line.iter_mut().zip(rows.chunks_exact(dim)) {
            *o = f(q, r);
        }
    }
}
