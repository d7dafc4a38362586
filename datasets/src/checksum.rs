//! Dataset checksums for reports and ground-truth caches.
//!
//! CRC-32 (crc32fast, hardware-accelerated where the CPU allows) over a canonical
//! encoding: for each matrix its row count and dimension as `u64` little-endian,
//! then its elements as little-endian `f32`. The encoding, not the in-memory
//! layout, is hashed, so the value is the same on every platform. CRC-32 detects
//! accidental change (a different split, a regenerated file, a truncated copy); it
//! is not meant to resist a deliberate collision.

use crate::matrix::Vectors;

/// Incremental checksum over one or more matrices.
#[derive(Clone, Default)]
pub struct Checksum {
    hasher: crc32fast::Hasher,
}

impl Checksum {
    /// An empty checksum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a matrix (its shape, then its values).
    pub fn update(&mut self, v: &Vectors) -> &mut Self {
        self.hasher.update(&(v.rows() as u64).to_le_bytes());
        self.hasher.update(&(v.dim() as u64).to_le_bytes());
        let mut buf = [0u8; 4096];
        for chunk in v.data().chunks(buf.len() / 4) {
            for (b, x) in buf.chunks_exact_mut(4).zip(chunk) {
                b.copy_from_slice(&x.to_le_bytes());
            }
            self.hasher.update(&buf[..chunk.len() * 4]);
        }
        self
    }

    /// The value, as `crc32:xxxxxxxx`.
    pub fn finish(&self) -> String {
        format!("crc32:{:08x}", self.hasher.clone().finalize())
    }
}

/// The checksum of one matrix, as `crc32:xxxxxxxx`.
pub fn checksum_vectors(v: &Vectors) -> String {
    Checksum::new().update(v).finish()
}

/// The checksum of a file's bytes, as `crc32:xxxxxxxx`.
pub fn checksum_bytes(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(bytes))
}
