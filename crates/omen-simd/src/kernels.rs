use crate::isa::{Isa, IsaError};
use crate::scalar;
use std::sync::OnceLock;

type OneFn = fn(&[f32], &[f32]) -> f32;
type ManyFn = fn(&[f32], &[f32], &mut [f32]);
type TileFn = fn(&[f32], &[f32], usize, &mut [f32], &mut Vec<f32>);
type RowsFn = fn(&[f32], &[&[f32]], &mut [f32]);

/// A table of distance kernels for one instruction set.
///
/// # Soundness
///
/// The SIMD kernels are `#[target_feature]` functions: calling one on a CPU
/// without that feature is undefined behaviour. They are reachable only through
/// the private safe wrappers stored in this table, and a table for an ISA is built
/// only by [`Kernels::for_isa`] *after* [`Isa::is_available`] confirmed the
/// feature at run time (its fields are private and there is no other
/// constructor). Holding a `Kernels` therefore proves the CPU supports its ISA,
/// which is what makes every method safe to call.
///
/// Obtain the process-wide choice with [`Kernels::best`] (cheap after the first
/// call) or force one with [`Kernels::for_isa`].
///
/// Lengths: one-to-one kernels use the first `min(a.len(), b.len())` elements.
/// One-to-many kernels treat `rows` as `out.len()` rows of `query.len()` floats and
/// write `out[i]`; rows missing from a short `rows` slice are left untouched, and
/// an empty query sets every `out[i]` to 0 (1 for cosine). Scattered-rows kernels
/// write `out[i]` for `i < min(rows.len(), out.len())`, row `i` over the first
/// `min(query.len(), rows[i].len())` elements, as the one-to-one kernels. Tile
/// kernels: see [`Kernels::l2_sq_tile`].
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    l2_sq: OneFn,
    dot: OneFn,
    cosine: OneFn,
    l2_sq_many: ManyFn,
    dot_many: ManyFn,
    cosine_many: ManyFn,
    l2_sq_rows: RowsFn,
    dot_rows: RowsFn,
    cosine_rows: RowsFn,
    l2_sq_tile: TileFn,
    dot_tile: TileFn,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

static BEST: OnceLock<Kernels> = OnceLock::new();

impl Kernels {
    /// The kernels chosen for this process: `OMEN_ISA` if set (falling back to the
    /// best available, with a warning on stderr, if it names an unavailable ISA),
    /// otherwise the best ISA the CPU supports. Chosen once and cached.
    pub fn best() -> &'static Kernels {
        BEST.get_or_init(|| {
            if let Ok(name) = std::env::var("OMEN_ISA") {
                match name.parse::<Isa>().and_then(Kernels::for_isa) {
                    Ok(k) => return k,
                    Err(e) => eprintln!("omen-simd: ignoring OMEN_ISA={name:?}: {e}"),
                }
            }
            Isa::PREFERENCE
                .iter()
                .find_map(|&isa| Kernels::for_isa(isa).ok())
                .unwrap_or_else(Kernels::scalar)
        })
    }

    /// The portable scalar kernels.
    pub fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            l2_sq: scalar::l2_sq,
            dot: scalar::dot,
            cosine: scalar::cosine,
            l2_sq_many: scalar::l2_sq_many,
            dot_many: scalar::dot_many,
            cosine_many: scalar::cosine_many,
            l2_sq_rows: scalar::l2_sq_rows,
            dot_rows: scalar::dot_rows,
            cosine_rows: scalar::cosine_rows,
            l2_sq_tile: |q, r, d, o, _| scalar::l2_sq_tile(q, r, d, o),
            dot_tile: |q, r, d, o, _| scalar::dot_tile(q, r, d, o),
        }
    }

    /// The kernels for `isa`, or an error if this CPU or build lacks it.
    pub fn for_isa(isa: Isa) -> Result<Kernels, IsaError> {
        if !isa.is_available() {
            return Err(IsaError::Unavailable(isa));
        }
        // Every arm below runs only after the availability check above: that order
        // is the soundness argument of the whole table (see the type's docs).
        match isa {
            Isa::Scalar => Ok(Kernels::scalar()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Ok(x86::avx2_table()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Ok(x86::avx512_table()),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Ok(arm::neon_table()),
            // The ISAs of the other architecture.
            other => Err(IsaError::Unavailable(other)),
        }
    }

    /// The instruction set these kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Squared Euclidean distance.
    #[inline]
    pub fn l2_sq(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.l2_sq)(a, b)
    }

    /// Dot product.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.dot)(a, b)
    }

    /// Cosine distance `1 - cos(a, b)`; 1.0 when either vector is zero.
    #[inline]
    pub fn cosine(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.cosine)(a, b)
    }

    /// Squared L2 from `query` to each row of `rows` (row width `query.len()`).
    #[inline]
    pub fn l2_sq_many(&self, query: &[f32], rows: &[f32], out: &mut [f32]) {
        (self.l2_sq_many)(query, rows, out)
    }

    /// Dot product of `query` with each row of `rows` (row width `query.len()`).
    #[inline]
    pub fn dot_many(&self, query: &[f32], rows: &[f32], out: &mut [f32]) {
        (self.dot_many)(query, rows, out)
    }

    /// Cosine distance from `query` to each row of `rows` (row width `query.len()`).
    #[inline]
    pub fn cosine_many(&self, query: &[f32], rows: &[f32], out: &mut [f32]) {
        (self.cosine_many)(query, rows, out)
    }

    /// Squared L2 from `query` to each of the scattered `rows` (any lengths; see
    /// the type's docs), into `out[i]`.
    ///
    /// For rows that do not lie side by side in memory (the candidates of a
    /// re-ranking pass): groups of four rows share the query's loads as the
    /// one-to-many kernel's do, and give the same numbers as
    /// [`Kernels::l2_sq_many`] on the same four rows stored contiguously. The
    /// caller gathers the row slices (and may prefetch the next ones meanwhile).
    #[inline]
    pub fn l2_sq_rows(&self, query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        (self.l2_sq_rows)(query, rows, out)
    }

    /// Dot product of `query` with each of the scattered `rows`, into `out[i]`
    /// (see [`Kernels::l2_sq_rows`]).
    #[inline]
    pub fn dot_rows(&self, query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        (self.dot_rows)(query, rows, out)
    }

    /// Cosine distance from `query` to each of the scattered `rows`, into
    /// `out[i]` (see [`Kernels::l2_sq_rows`]); the query's norm is computed once.
    #[inline]
    pub fn cosine_rows(&self, query: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        (self.cosine_rows)(query, rows, out)
    }

    /// Many-to-many squared L2 for a tile.
    ///
    /// Shape contract: `queries` and `rows` are row-major with `dim` floats per
    /// vector; with `nq = queries.len() / dim` and `nr = rows.len() / dim`, writes
    /// `out[i * nr + j] = |q_i - r_j|²` for every query `i` whose whole output line
    /// fits (`(i + 1) * nr <= out.len()`). Nothing else in `out` is touched, and
    /// `dim == 0` writes nothing.
    ///
    /// The sum is the exact `Σ (q - r)²` (subtract, then fused multiply-add), not
    /// the norm expansion `|q|² - 2 q·r + |r|²`, so it agrees with
    /// [`Kernels::l2_sq`] to rounding and is never negative.
    ///
    /// `scratch` is working memory: the SIMD kernels pack rows and queries into it
    /// (at most `(nr + 63 + nq + 7) * dim` floats), growing it on first use; pass
    /// the same vector to every call and the kernel does not allocate. Its
    /// contents on return are unspecified. For block sizes see the crate docs.
    #[inline]
    pub fn l2_sq_tile(
        &self,
        queries: &[f32],
        rows: &[f32],
        dim: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        (self.l2_sq_tile)(queries, rows, dim, out, scratch)
    }

    /// Many-to-many dot products for a tile: writes `out[i * nr + j] = q_i · r_j`,
    /// with the same shape, `scratch` and block-size rules as
    /// [`Kernels::l2_sq_tile`].
    #[inline]
    pub fn dot_tile(
        &self,
        queries: &[f32],
        rows: &[f32],
        dim: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        (self.dot_tile)(queries, rows, dim, out, scratch)
    }
}

/// Safe wrappers around the x86_64 kernels. Private: the only way to reach them is
/// a table from [`Kernels::for_isa`], built after the run-time feature check.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Kernels;
    use crate::isa::Isa;
    use crate::{avx2, avx512};

    /// Builds the AVX-512F table. Call only after `Isa::Avx512.is_available()`.
    pub(super) fn avx512_table() -> Kernels {
        Kernels {
            isa: Isa::Avx512,
            l2_sq: avx512_l2_sq,
            dot: avx512_dot,
            cosine: avx512_cosine,
            l2_sq_many: avx512_l2_sq_many,
            dot_many: avx512_dot_many,
            cosine_many: avx512_cosine_many,
            l2_sq_rows: avx512_l2_sq_rows,
            dot_rows: avx512_dot_rows,
            cosine_rows: avx512_cosine_rows,
            l2_sq_tile: avx512_l2_sq_tile,
            dot_tile: avx512_dot_tile,
        }
    }

    /// Builds the AVX2+FMA table. Call only after `Isa::Avx2.is_available()`.
    pub(super) fn avx2_table() -> Kernels {
        Kernels {
            isa: Isa::Avx2,
            l2_sq: avx2_l2_sq,
            dot: avx2_dot,
            cosine: avx2_cosine,
            l2_sq_many: avx2_l2_sq_many,
            dot_many: avx2_dot_many,
            cosine_many: avx2_cosine_many,
            l2_sq_rows: avx2_l2_sq_rows,
            dot_rows: avx2_dot_rows,
            cosine_rows: avx2_cosine_rows,
            l2_sq_tile: avx2_l2_sq_tile,
            dot_tile: avx2_dot_tile,
        }
    }

    // SAFETY (every wrapper below): these functions are stored only in the table
    // built by `avx512_table`/`avx2_table`, which `Kernels::for_isa` calls only
    // after confirming AVX-512F (resp. AVX2 and FMA) at run time; nothing else in
    // the crate calls them.
    fn avx512_l2_sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::reduce_pair::<true>(a, b) }
    }
    fn avx512_dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::reduce_pair::<false>(a, b) }
    }
    fn avx512_cosine(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::cosine(a, b) }
    }
    fn avx512_l2_sq_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::reduce_many::<true>(q, rows, out) }
    }
    fn avx512_dot_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::reduce_many::<false>(q, rows, out) }
    }
    fn avx512_cosine_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::cosine_many(q, rows, out) }
    }
    fn avx512_l2_sq_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::reduce_rows::<true>(q, rows, out) }
    }
    fn avx512_dot_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::reduce_rows::<false>(q, rows, out) }
    }
    fn avx512_cosine_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::cosine_rows(q, rows, out) }
    }
    fn avx512_l2_sq_tile(q: &[f32], r: &[f32], dim: usize, out: &mut [f32], s: &mut Vec<f32>) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::tile::<true, { avx512::MR_L2 }, { avx512::NV_L2 }>(q, r, dim, out, s) }
    }
    fn avx512_dot_tile(q: &[f32], r: &[f32], dim: usize, out: &mut [f32], s: &mut Vec<f32>) {
        // SAFETY: AVX-512F was checked before this table existed (see above).
        unsafe { avx512::tile::<false, { avx512::MR_DOT }, { avx512::NV_DOT }>(q, r, dim, out, s) }
    }

    fn avx2_l2_sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::reduce_pair::<true>(a, b) }
    }
    fn avx2_dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::reduce_pair::<false>(a, b) }
    }
    fn avx2_cosine(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::cosine(a, b) }
    }
    fn avx2_l2_sq_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::reduce_many::<true>(q, rows, out) }
    }
    fn avx2_dot_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::reduce_many::<false>(q, rows, out) }
    }
    fn avx2_cosine_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::cosine_many(q, rows, out) }
    }
    fn avx2_l2_sq_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::reduce_rows::<true>(q, rows, out) }
    }
    fn avx2_dot_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::reduce_rows::<false>(q, rows, out) }
    }
    fn avx2_cosine_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::cosine_rows(q, rows, out) }
    }
    fn avx2_l2_sq_tile(q: &[f32], r: &[f32], dim: usize, out: &mut [f32], s: &mut Vec<f32>) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::tile::<true, { avx2::MR_L2 }>(q, r, dim, out, s) }
    }
    fn avx2_dot_tile(q: &[f32], r: &[f32], dim: usize, out: &mut [f32], s: &mut Vec<f32>) {
        // SAFETY: AVX2 and FMA were checked before this table existed (see above).
        unsafe { avx2::tile::<false, { avx2::MR_DOT }>(q, r, dim, out, s) }
    }
}

/// Safe wrappers around the NEON kernels. Private: the only way to reach them is a
/// table from [`Kernels::for_isa`], built after the run-time feature check.
#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Kernels;
    use crate::isa::Isa;
    use crate::neon;

    /// Builds the NEON table. Call only after `Isa::Neon.is_available()`.
    pub(super) fn neon_table() -> Kernels {
        Kernels {
            isa: Isa::Neon,
            l2_sq,
            dot,
            cosine,
            l2_sq_many,
            dot_many,
            cosine_many,
            l2_sq_rows,
            dot_rows,
            cosine_rows,
            l2_sq_tile,
            dot_tile,
        }
    }

    fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::reduce_pair::<true>(a, b) }
    }
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::reduce_pair::<false>(a, b) }
    }
    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::cosine(a, b) }
    }
    fn l2_sq_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::reduce_many::<true>(q, rows, out) }
    }
    fn dot_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::reduce_many::<false>(q, rows, out) }
    }
    fn cosine_many(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::cosine_many(q, rows, out) }
    }
    fn l2_sq_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::reduce_rows::<true>(q, rows, out) }
    }
    fn dot_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::reduce_rows::<false>(q, rows, out) }
    }
    fn cosine_rows(q: &[f32], rows: &[&[f32]], out: &mut [f32]) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::cosine_rows(q, rows, out) }
    }
    // The table fixes the signature; NEON's simple tile needs no scratch.
    #[allow(clippy::ptr_arg)]
    fn l2_sq_tile(q: &[f32], r: &[f32], dim: usize, out: &mut [f32], _s: &mut Vec<f32>) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::tile::<true>(q, r, dim, out) }
    }
    // The table fixes the signature; NEON's simple tile needs no scratch.
    #[allow(clippy::ptr_arg)]
    fn dot_tile(q: &[f32], r: &[f32], dim: usize, out: &mut [f32], _s: &mut Vec<f32>) {
        // SAFETY: NEON was checked before this table existed (`neon_table`).
        unsafe { neon::tile::<false>(q, r, dim, out) }
    }
}
