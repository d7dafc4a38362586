use crate::isa::{Isa, IsaError};
use crate::scalar;
use std::sync::OnceLock;

type OneFn = fn(&[f32], &[f32]) -> f32;
type ManyFn = fn(&[f32], &[f32], &mut [f32]);
type TileFn = fn(&[f32], &[f32], usize, &mut [f32], &mut Vec<f32>);

/// A table of distance kernels for one instruction set.
///
/// A `Kernels` value exists only for an ISA the running CPU supports (the
/// constructors check), which is the argument that makes every method safe to call.
/// Obtain the process-wide choice with [`Kernels::best`] (cheap after the first
/// call) or force one with [`Kernels::for_isa`].
///
/// Lengths: one-to-one kernels use the first `min(a.len(), b.len())` elements.
/// One-to-many kernels treat `rows` as `out.len()` rows of `query.len()` floats and
/// write `out[i]`; rows missing from a short `rows` slice are left untouched.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    l2_sq: OneFn,
    dot: OneFn,
    cosine: OneFn,
    l2_sq_many: ManyFn,
    dot_many: ManyFn,
    cosine_many: ManyFn,
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
            l2_sq_tile: |q, r, d, o, _| scalar::l2_sq_tile(q, r, d, o),
            dot_tile: |q, r, d, o, _| scalar::dot_tile(q, r, d, o),
        }
    }

    /// The kernels for `isa`, or an error if this CPU or build lacks it.
    pub fn for_isa(isa: Isa) -> Result<Kernels, IsaError> {
        if !isa.is_available() {
            return Err(IsaError::Unavailable(isa));
        }
        match isa {
            Isa::Scalar => Ok(Kernels::scalar()),
            // SIMD tables are filled in by the arch modules; until one exists for an
            // ISA it is reported unavailable rather than silently aliased to scalar.
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

    /// Many-to-many squared L2 for a tile: with `nq = queries.len() / dim` and
    /// `nr = rows.len() / dim`, writes `out[i * nr + j] = |q_i - r_j|²`.
    /// `scratch` is reusable working memory (the rows may be repacked into it).
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

    /// Many-to-many dot products for a tile: writes `out[i * nr + j] = q_i · r_j`.
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
