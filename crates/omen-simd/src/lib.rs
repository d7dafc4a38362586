//! f32 distance kernels for Omen.
//!
//! Three distances — squared L2, dot product and cosine distance — each one-to-one
//! (`a` against `b`), one-to-many (a query against a contiguous block of rows,
//! writing one distance per row) and against scattered rows (a slice of row
//! slices: [`Kernels::l2_sq_rows`] and friends, for re-ranking candidates that lie
//! anywhere in storage), plus the many-to-many tile kernels
//! ([`Kernels::l2_sq_tile`], [`Kernels::dot_tile`]) behind batched exact search.
//!
//! The scattered-rows kernels take four rows at a time through the same code as
//! the one-to-many kernels (one load of the query feeds four rows), so a row gets
//! the same number from both; at 50 dimensions they cost about a third of one
//! one-to-many call per row (`examples/pair_probe.rs`, AVX-512, rows in cache).
//!
//! # Dispatch
//!
//! Every kernel has a portable scalar implementation ([`scalar`], the reference
//! the others are tested against) and, where the CPU has them, x86_64 AVX2+FMA,
//! x86_64 AVX-512F and aarch64 NEON implementations. A [`Kernels`] value is a
//! table of plain function pointers for one ISA:
//!
//! * [`Kernels::best`] picks the table once, at first use, and caches it in a
//!   `OnceLock`: afterwards a call is one indirect call, with no feature test.
//! * The environment variable `OMEN_ISA=scalar|avx2|avx512|neon` (case-insensitive)
//!   forces the choice for the whole process, e.g.
//!   `OMEN_ISA=scalar cargo test` or `OMEN_ISA=avx2 omen-bench ...`. A name this
//!   CPU cannot run is reported on stderr and the best available ISA is used.
//! * [`Kernels::for_isa`] returns a specific table, or [`IsaError::Unavailable`]
//!   (never a panic) if the CPU or the build lacks it; tests and benches use it
//!   to run every available ISA side by side.
//! * The 4-bit fast scan ([`fastscan`], used by IVF-PQ lists and RaBitQ codes)
//!   follows the same choice, [`Isa::selected`], and asks for the further CPU
//!   feature it needs (AVX-512BW) through [`Feature::is_available`]: the workspace
//!   has one CPU detector and one `OMEN_ISA` parser, here.
//!
//! All entry points are safe. The SIMD code lives in private modules as
//! `#[target_feature]` `unsafe fn`s; the only way to reach them is through a table
//! that [`Kernels::for_isa`] builds *after* the run-time feature check, which is
//! the soundness argument written on [`Kernels`].
//!
//! Below a small dimension the vector loop's setup and horizontal sum cost more
//! than they save, so the SIMD one-to-one kernels hand over to the scalar loop
//! under 12 (AVX-512) or 16 (AVX2) components, cosine under 8, and one-to-many
//! under 8 (measured with `examples/pair_probe.rs`; thresholds as in qdrant).
//!
//! # Tile kernels
//!
//! Designed like a BLAS sgemm: the rows are packed into `scratch` as panels of
//! rows, dim-major inside a panel, and the queries into small groups. A
//! register-blocked micro-kernel keeps a whole queries × rows block of sums in
//! registers — AVX-512: 8 × 32 for the dot product, 6 × 64 for L2; AVX2: 6 × 16
//! — broadcasting one query component and fusing it with one panel column per
//! step, so no horizontal reduction is ever needed. L2 is the exact
//! `Σ (q - r)²`. One panel stays in L1 (up to a few hundred dimensions) while
//! every query group passes over it. Cutting large dimensions into L1-sized
//! slices (GEMM's k-blocking) was tried and measured no faster here, so the
//! kernel keeps one pass.
//!
//! Shape contract: `out[i * nr + j]` for query `i`, row `j`, with
//! `nq = queries.len() / dim`, `nr = rows.len() / dim`.
//!
//! Block sizes for callers (best-of-N on the 2-core Zen4 dev box, 50 dims, dot
//! product, AVX-512; `examples/tile_probe.rs`): 256 queries × 512–1024 rows runs
//! at about 95 GFLOP/s, near the core's FMA peak; 128 × 1024 at 88, 64 × 1024 at
//! 74 (packing costs `O((nq + nr) · dim)` per call, so small query blocks pay
//! more of it); 1024 × 4096 drops to about 45 once the 16 MiB output no longer
//! fits in cache. Recommended: 128–256 queries × 512–1024 rows, reusing one
//! `scratch` vector. On Zen4 AVX2 is close behind AVX-512 (512-bit FMAs issue
//! as two 256-bit halves): 94 against 97 GFLOP/s for the dot product, about 78
//! for both in L2.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod fastscan;
mod isa;
mod kernels;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(any(target_arch = "x86_64", test))]
mod pack;
pub mod scalar;

pub use isa::{Feature, Isa, IsaError};
pub use kernels::Kernels;

/// Asks the CPU to start loading every cache line `v` touches (a vector, a
/// neighbour list, a block of codes) that will be read soon. A hint: it never
/// faults, reads nothing architecturally and changes no result; a no-op off
/// x86_64.
#[inline(always)]
pub fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(v);
        if bytes == 0 {
            return;
        }
        let p = v.as_ptr().cast::<i8>();
        // From the line holding the first byte to the line holding the last.
        let mut line = p.wrapping_sub(p as usize & 63);
        let last = p.wrapping_add(bytes - 1);
        while line <= last {
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never
            // faults or reads memory architecturally, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
            line = line.wrapping_add(64);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
