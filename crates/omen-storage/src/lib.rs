//! Storage backends for Omen.
//!
//! Both are one chunked-rows core (`chunked.rs`: the bucket geometry, the writer
//! mutex, the published length and the argument that readers may hold rows while
//! a writer appends) over a different backing:
//!
//! * [`MemoryStorage`]: heap buckets. Appends go through `&self` (writers are
//!   serialised by a mutex), readers are lock-free, and growth never moves a
//!   stored vector, so a search may hold `&[f32]` rows while another thread
//!   appends.
//! * [`MmapStorage`]: chunk files in one directory, created, synced and mapped
//!   through an [`omen_fs::FileSystem`] (the real one, or the simulated disk of
//!   the crash tests), so that reopening maps the files instead of reading them
//!   through. Not built under `cfg(loom)` (it does file I/O).

mod buckets;
mod chunked;
mod memory;
#[cfg(not(loom))]
mod mmap;

pub use memory::{MemoryStorage, DEFAULT_CHUNK_ROWS};

/// The mmap storage's name ([`MmapStorage::NAME`](crate::MmapStorage)), here so
/// that the loom build, which has no mmap storage, can still name the kind.
pub const MMAP_STORAGE_NAME: &str = "mmap";
#[cfg(not(loom))]
pub use mmap::{MmapStorage, DEFAULT_MMAP_CHUNK_ROWS, MMAP_HEADER_BYTES};
