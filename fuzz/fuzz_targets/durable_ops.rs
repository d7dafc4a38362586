//! Arbitrary operation sequences against a durable collection on a simulated
//! disk (dimension 2, `Durability::PerWrite`) and a `BTreeMap` model, with
//! crashes: `CrashAndReopen(mode, budget)` arms a crash `budget` file-system
//! operations ahead; the following operations run until one fails, then the
//! disk's crash image (under the chosen `CrashMode`) is reopened and must hold
//! exactly the acknowledged writes, or those plus the one write that failed.
//! At the end a crash image of the final disk must hold every acknowledged write.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use omen::fs::{CrashMode, SimFs};
use omen::{Collection, CollectionConfig, Durability, DurableOptions, Error, Metric};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const MAX_OPS: usize = 64;

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Insert(u8, i8, i8),
    Upsert(u8, i8, i8),
    Delete(u8),
    Checkpoint,
    Sync,
    CrashAndReopen(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    hnsw: bool,
    /// Automatic checkpoints every `256 * (n + 1)` logged bytes (or never for 255).
    auto_checkpoint: u8,
    ops: Vec<Op>,
}

type Model = BTreeMap<String, Vec<f32>>;

fn key(k: u8) -> String {
    format!("k{}", k % 16)
}

fn state(c: &Collection) -> Model {
    c.live_entries().into_iter().collect()
}

/// The model after `op`, if `op` is a write that would succeed.
fn apply(model: &Model, op: &Op) -> Option<Model> {
    let mut m = model.clone();
    match op {
        Op::Insert(k, a, b) if !m.contains_key(&key(*k)) => {
            m.insert(key(*k), vec![f32::from(*a), f32::from(*b)]);
        }
        Op::Upsert(k, a, b) => {
            m.insert(key(*k), vec![f32::from(*a), f32::from(*b)]);
        }
        Op::Delete(k) if m.contains_key(&key(*k)) => {
            m.remove(&key(*k));
        }
        _ => return None,
    }
    Some(m)
}

fn run(c: &Collection, op: &Op) -> omen::Result<()> {
    match op {
        Op::Insert(k, a, b) => c.insert(&key(*k), &[f32::from(*a), f32::from(*b)]),
        Op::Upsert(k, a, b) => c.upsert(&key(*k), &[f32::from(*a), f32::from(*b)]),
        Op::Delete(k) => c.delete(&key(*k)),
        Op::Checkpoint => c.checkpoint().map(|_| ()),
        Op::Sync => c.sync(),
        Op::CrashAndReopen(..) => Ok(()),
    }
}

fn mode(m: u8) -> CrashMode {
    let all = CrashMode::all(u64::from(m));
    all[usize::from(m) % all.len()]
}

fuzz_target!(|input: Input| {
    let dir = Path::new("/db");
    let opts = |fs: &SimFs| {
        let every = match input.auto_checkpoint {
            255 => u64::MAX,
            n => 256 * (u64::from(n) + 1),
        };
        DurableOptions::default()
            .durability(Durability::PerWrite)
            .checkpoint_log_bytes(every)
            .fs(Arc::new(fs.clone()))
    };
    let index = if input.hnsw {
        omen::IndexSpec::from(omen_hnsw::HnswParams::default())
    } else {
        omen::IndexSpec::from(&omen::FLAT)
    };
    let cfg = CollectionConfig::new(2, Metric::L2).index(index);
    let mut fs = SimFs::new();
    let mut c = Collection::create(dir, &cfg, opts(&fs)).expect("create");
    let mut model = Model::new();
    // The armed crash's mode, while one is armed.
    let mut armed: Option<CrashMode> = None;
    for op in input.ops.iter().take(MAX_OPS) {
        if let Op::CrashAndReopen(m, budget) = op {
            if armed.is_none() {
                fs.crash_at(fs.op_count() + u64::from(*budget));
                armed = Some(mode(*m));
            }
            continue;
        }
        let next = apply(&model, op);
        match run(&c, op) {
            Ok(()) => {
                if let Some(m) = next {
                    model = m;
                } else {
                    assert!(
                        matches!(op, Op::Checkpoint | Op::Sync),
                        "{op:?} succeeded, the model refuses it"
                    );
                }
            }
            Err(e) if fs.crashed() => {
                let Some(crash) = armed.take() else {
                    panic!("crashed without a crash armed: {e}");
                };
                let image = fs.crash_image(crash);
                drop(c);
                c = Collection::open(dir, opts(&image))
                    .unwrap_or_else(|e| panic!("reopen after {crash:?} failed: {e}"));
                let got = state(&c);
                if got != model {
                    let with_failed = next.as_ref().is_some_and(|m| *m == got);
                    assert!(
                        with_failed,
                        "after {crash:?} during {op:?}: recovered {got:?}, acknowledged {model:?}"
                    );
                    model = got;
                }
                c.verify().expect("verify after recovery");
                fs = image;
            }
            Err(e) => {
                assert!(next.is_none(), "{op:?} failed ({e}), the model accepts it");
                assert!(
                    matches!(e, Error::DuplicateId { .. } | Error::UnknownId { .. }),
                    "{op:?}: unexpected error {e:?}"
                );
            }
        }
    }
    // Every acknowledged write survives a power cut now (the crash mark, if one
    // is still armed, never fired: no operation failed).
    let image = fs.crash_image(CrashMode::DropUnsynced);
    drop(c);
    let c = Collection::open(dir, opts(&image)).expect("final reopen");
    assert_eq!(state(&c), model, "final state");
    c.verify().expect("final verify");
});
