//! IVF-PQ index for Omen: k-means, product quantisation with 4-bit fast scan, exact re-ranking.
