//! Datasets for Omen.
