//! Arbitrary bytes into `HnswIndex::from_bytes`: never a panic; every error is
//! `Corruption` with an offset inside the input; a graph that loads re-serialises
//! to a graph that loads again, and searching and inserting on it (over a storage
//! with one row per node) does not panic either.
//!
//! Under `cfg(fuzzing)` the loader skips its CRC check, so the fuzzer reaches the
//! structural validation behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omen_core::{Error, SearchParams, SearchRequest, SearchScratch, SlotId, VectorIndex, VectorStorage};
use omen_hnsw::HnswIndex;
use std::path::Path;

#[path = "common/rows.rs"]
mod rows;
use rows::Rows;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("fuzz.hnsw");
    match HnswIndex::from_bytes(data, file) {
        Ok(index) => {
            let again = index.to_bytes();
            let reloaded = HnswIndex::from_bytes(&again, file).expect("re-serialised graph loads");
            assert_eq!(reloaded.len(), index.len());
            let dim = index.dim();
            let nodes = (again.len() - 76) / 2 + 1;
            if dim <= 16 && nodes <= 4096 {
                let rows = Rows {
                    dim,
                    data: (0..(nodes + 1) * dim)
                        .map(|i| (i % 7) as f32 - 3.0)
                        .collect(),
                };
                let p = SearchParams::new().with("ef", 4);
                let q = vec![0.5f32; dim];
                let (mut scratch, mut out) = (SearchScratch::new(), Vec::new());
                let _ = index.search(
                    &rows,
                    &SearchRequest::new(&q, 3, &p),
                    &mut scratch,
                    &mut out,
                );
                let top = rows.len() as SlotId;
                let _ = index.add(&rows, top - 1..top);
                let _ = index.search(
                    &rows,
                    &SearchRequest::new(&q, 3, &p),
                    &mut scratch,
                    &mut out,
                );
            }
        }
        Err(Error::Corruption { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
