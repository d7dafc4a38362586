//! Storage backends for Omen.
//!
//! * [`MemoryStorage`]: a chunked in-memory arena. Appends go through `&self`
//!   (writers are serialised by a mutex), readers are lock-free, and growth never
//!   moves a stored vector, so a search may hold `&[f32]` rows while another thread
//!   appends.

mod memory;

pub use memory::{MemoryStorage, DEFAULT_CHUNK_ROWS};
