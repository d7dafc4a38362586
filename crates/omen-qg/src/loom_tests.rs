//! Loom model of the node-block publication. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p omen-qg --lib`.
//!
//! A writer publishes a node's block (and grows the block array, which moves it)
//! under the layer's write lock while a reader walks: the reader sees each block
//! either unbuilt (`None`, expanded from the graph instead) or whole, its lane ids
//! and its codes from the same update, never half of one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use loom::thread;
use omen_core::sync::Arc;

/// A 2-d quantizer with 2 sub-quantizers (centroid `c` of each is `c`).
fn tiny_layer() -> Layer {
    let books: Vec<f32> = (0..2).flat_map(|_| (0..16).map(|c| c as f32)).collect();
    Layer::new(ProductQuantizer::from_parts(2, 2, 4, books).unwrap())
}

/// Reads block `u` and checks it is whole: every filled lane's code is the one
/// its id was coded with (`id % 16` in both sub-quantizers).
fn check_block(layer: &Layer, u: SlotId) -> Option<usize> {
    let b = layer.blocks.get(u)?;
    let cb = fastscan::block_bytes(2);
    let mut lanes = 0;
    for lane in 0..DEGREE {
        let v = lane_id(b, lane);
        if v == NO_NODE {
            break;
        }
        lanes += 1;
        for j in 0..2 {
            let code = fastscan::get_code(&b[4 * DEGREE..4 * DEGREE + cb], lane, j);
            assert_eq!(
                code as u32,
                v % 16,
                "lane {lane} of block {u}: a torn block"
            );
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
                l.set_code(v, &[(v % 16) as u8; 2]);
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
        let lanes = check_block(l, 0).expect("block 0 was built before the writer ran");
        assert!(lanes == 1 || lanes == 2, "{lanes}");
        // Block 2 is unbuilt or whole; block 1 is never built.
        assert!(check_block(l, 2).is_none_or(|n| n == 1));
        assert!(l.blocks.get(1).is_none());
        drop(g);
        w.join().unwrap();
        let g = read(&layer);
        let l = g.as_ref().unwrap();
        assert_eq!(check_block(l, 0), Some(2));
        assert_eq!(check_block(l, 2), Some(1));
    });
}
