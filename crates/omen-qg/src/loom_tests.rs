//! Loom model of the node-block publication. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p omen-qg --lib`.
//!
//! A writer publishes a node's block (and grows the block array, which moves it)
//! under the layer's write lock while a reader walks: the reader sees each block
//! either not built yet (zeros) or whole, every lane's codes from the same update,
//! never half of one. (The ids are the graph's lists; the changed-mark protocol
//! that tells the walk whether a block still codes its list is modelled in the
//! HNSW crate, `loom_a_clear_changed_mark_means_the_list_read_is_the_one_coded`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use loom::thread;
use omen_core::sync::Arc;

/// A 2-d quantizer with 2 sub-quantizers (centroid `c` of each is `c`).
fn tiny_layer() -> Layer {
    let books: Vec<f32> = (0..2).flat_map(|_| (0..16).map(|c| c as f32)).collect();
    Layer::new(ProductQuantizer::from_parts(2, 2, 4, books).unwrap())
}

/// Reads block `u` and checks it is whole: every lane's codes agree across the
/// two sub-quantizers (a lane coding node `v` holds `v + 1` in both; an empty
/// lane holds zeros), and returns the lanes coding a node other than 0.
fn check_block(layer: &Layer, u: SlotId) -> Option<usize> {
    let b = layer.blocks.bytes(u)?;
    let mut lanes = 0;
    for lane in 0..DEGREE {
        let c0 = fastscan::get_code(b, lane, 0);
        let c1 = fastscan::get_code(b, lane, 1);
        assert_eq!(c0, c1, "lane {lane} of block {u}: a torn block");
        if c0 != 0 {
            lanes += 1;
        }
    }
    Some(lanes)
}

#[test]
fn loom_blocks_are_published_whole() {
    loom::model(|| {
        let layer = Arc::new(RwLock::new(Some(tiny_layer())));
        {
            let mut g = write(&layer);
            let l = g.as_mut().unwrap();
            for v in 0..3u32 {
                l.set_code(v, &[(v + 1) as u8; 2]);
            }
            let mut b = Vec::new();
            l.make_block(&[1], &mut b);
            l.apply(Update {
                codes: Vec::new(),
                blocks: vec![(0, b)],
                slots: 1,
            });
        }
        let w = {
            let layer = layer.clone();
            thread::spawn(move || {
                // New slot 2 coded, then node 0's list rebuilt to [1, 2] and the
                // array grown to 3 blocks (2 unbuilt), in two updates, as `absorb`.
                let (b0, b2) = {
                    let g = read(&layer);
                    let l = g.as_ref().unwrap();
                    let (mut b0, mut b2) = (Vec::new(), Vec::new());
                    l.make_block(&[1, 2], &mut b0);
                    l.make_block(&[0], &mut b2);
                    (b0, b2)
                };
                write(&layer).as_mut().unwrap().apply(Update {
                    codes: Vec::new(),
                    blocks: vec![(0, b0)],
                    slots: 3,
                });
                write(&layer).as_mut().unwrap().apply(Update {
                    codes: Vec::new(),
                    blocks: vec![(2, b2)],
                    slots: 3,
                });
            })
        };
        let g = read(&layer);
        let l = g.as_ref().unwrap();
        let lanes = check_block(l, 0).expect("block 0 exists");
        assert!(lanes == 1 || lanes == 2, "{lanes}");
        // Block 2 is absent, zeros (not built yet) or whole; block 1 is zeros.
        assert!(check_block(l, 2).is_none_or(|n| n <= 1));
        assert!(check_block(l, 1).is_none_or(|n| n == 0));
        drop(g);
        w.join().unwrap();
        let g = read(&layer);
        let l = g.as_ref().unwrap();
        assert_eq!(check_block(l, 0), Some(2));
        assert_eq!(check_block(l, 2), Some(1));
    });
}
