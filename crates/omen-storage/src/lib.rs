//! Storage backends for Omen.
