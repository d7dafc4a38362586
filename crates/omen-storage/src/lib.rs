//! Storage backends for Omen.
//!
//! * [`MemoryStorage`]: a chunked in-memory arena. Appends go through `&self`
//!   (writers are serialised by a mutex), readers are lock-free, and growth never
//!   moves a stored vector, so a search may hold `&[f32]` rows while another thread
//!   appends.
//! * [`MmapStorage`]: the same geometry and publication protocol over
//!   memory-mapped chunk files in one directory, so that reopening maps the files
//!   instead of reading them through. Not built under `cfg(loom)` (it does file
//!   I/O).

mod buckets;
mod memory;
#[cfg(not(loom))]
mod mmap;

pub use memory::{MemoryStorage, DEFAULT_CHUNK_ROWS};
#[cfg(not(loom))]
pub use mmap::{MmapStorage, DEFAULT_MMAP_CHUNK_ROWS, MMAP_HEADER_BYTES};
