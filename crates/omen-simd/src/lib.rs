//! f32 distance kernels for Omen.
//!
//! Three distances — squared L2, dot product and cosine distance — each one-to-one
//! (`a` against `b`) and one-to-many (a query against a contiguous block of rows,
//! writing one distance per row), plus a tiled many-to-many kernel used by batched
//! exact search.
//!
//! Every kernel has a portable scalar implementation and, where the CPU has them,
//! x86_64 AVX2+FMA, x86_64 AVX-512F and aarch64 NEON implementations. The best
//! available set is chosen once, at first use of [`Kernels::best`], and cached; the
//! environment variable `OMEN_ISA=scalar|avx2|avx512|neon` forces a choice for the
//! whole process, and [`Kernels::for_isa`] returns a specific available set so that
//! tests and benchmarks can force one.
//!
//! All entry points are safe: a [`Kernels`] value can only be obtained for an ISA
//! the running CPU supports, which is what makes calling the `#[target_feature]`
//! functions behind it sound.

mod isa;
mod kernels;
pub mod scalar;

pub use isa::{Isa, IsaError};
pub use kernels::Kernels;
