//! HNSW graph index for Omen (Malkov & Yashunin 2018).
