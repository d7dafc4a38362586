//! The Omen engine.
