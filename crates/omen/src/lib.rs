//! The Omen engine: a [`Collection`] of vectors named by string ids, over a
//! pluggable [`VectorStorage`] and [`VectorIndex`].
//!
//! ```
//! use omen::{CollectionConfig, Metric};
//!
//! let c = CollectionConfig::new(2, Metric::L2).build()?;
//! c.insert("a", &[0.0, 0.0])?;
//! c.insert_batch(&["b", "c"], &[1.0, 0.0, 5.0, 5.0])?;
//! let hits = c.search(&[0.9, 0.1], 2)?;
//! assert_eq!(&*hits[0].0, "b");
//! assert_eq!(&*hits[1].0, "a");
//! # Ok::<(), omen::Error>(())
//! ```
//!
//! [`CollectionConfig`] picks built-in backends by kind;
//! [`Collection::with_backends`] takes any boxed implementation of the traits.

mod collection;
mod config;
mod durable;
mod idmap;
mod indexer;
pub mod registry;
pub mod snapshot;

pub use collection::{isa, Collection, CollectionStats, Hit, WriteTicket, MAX_SQUARED_NORM};
pub use config::CollectionConfig;
pub use durable::{CheckpointInfo, Durability, DurableOptions, RecoveryInfo, VerifyReport};
pub use indexer::IndexingMode;
pub use omen_core::validate::{check_id, MAX_ID_LEN};
pub use omen_fs as fs;
pub use registry::StorageKind;

pub use omen_core::simd::Isa;
pub use omen_core::{
    Error, IndexKind, IndexSpec, IndexStats, Metric, ParamSpec, ParamValue, Params, Result,
    SearchParams, SlotId, VectorIndex, VectorStorage,
};
pub use omen_flat::FLAT;
pub use omen_hnsw::{HnswParams, HNSW};
pub use omen_ivfpq::{IvfPqParams, IVFPQ};
pub use omen_qg::{QgParams, QG};

#[cfg(test)]
#[cfg(not(loom))]
mod tests;

#[cfg(test)]
#[cfg(loom)]
mod loom_tests;
