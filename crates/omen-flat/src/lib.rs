//! Exact (flat) index.
