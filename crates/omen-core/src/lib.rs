//! The shared vocabulary of Omen.
//!
//! * [`Metric`] and the distance convention every index uses;
//! * [`Neighbor`], [`TopK`] (a bounded heap) and [`SlotId`], the internal `u32`
//!   slot number that is distinct from a collection's external string id;
//! * [`SearchParams`] and [`SearchRequest`];
//! * [`IndexKind`], what an index crate registers, with its [`Params`];
//! * one error type, [`Error`];
//! * [`rabitq`], one-bit codes of rotated residuals with their distance
//!   estimator and error bound, scanned by the 4-bit fast-scan kernel;
//! * [`codec`], the byte reader and writer, checksum and metric codes every
//!   on-disk format uses;
//! * the two traits every backend plugs into: [`VectorStorage`] (where vector bytes
//!   live) and [`VectorIndex`] (how neighbours are found).

pub mod codec;
mod error;
mod index;
mod keyvalue;
mod kind;
pub mod kmeans;
mod metric;
mod neighbor;
mod params;
pub mod pq;
pub mod rabitq;
mod scratch;
mod storage;
pub mod sync;
pub mod validate;

pub use error::{Error, Result};
pub use index::{add_slots, search_each, IndexStats, SearchStats, VectorIndex};
pub use keyvalue::{ParamSpec, ParamValue, Params};
pub use kind::{IndexKind, IndexSpec};
pub use metric::Metric;
pub use neighbor::{Neighbor, TopK};
pub use params::{bitmap_slots, SearchParams, SearchRequest, SlotBitmap, SlotFilter};
pub use scratch::{SearchScratch, VisitedSet};
pub use storage::{StorageBlocks, VectorStorage};

/// The kernel crate, re-exported so that downstream crates name one version.
pub use omen_simd as simd;

/// One step of SplitMix64: advances `state` and returns the next 64 random bits.
/// The seeded, dependency-free generator the indexes and harness use where a
/// sample must be reproducible (level draws, selectivity samples, row samples).
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Internal slot number of a stored vector: dense, assigned in append order,
/// never reused. Distinct from the external string id a collection exposes.
pub type SlotId = u32;

/// The largest number of slots one storage can hold.
pub const MAX_SLOTS: usize = u32::MAX as usize;
