//! Smoke tests of the durable collection; the crash, fault and corruption suites
//! live in `tests/tests/durability_*.rs`.

use crate::{Collection, CollectionConfig, Durability, DurableOptions, Error, Metric, StorageKind};
use omen_fs::{CrashMode, SimFs};
use std::path::Path;
use std::sync::Arc;

fn sim_opts(fs: &SimFs, d: Durability) -> DurableOptions {
    DurableOptions::default()
        .durability(d)
        .fs(Arc::new(fs.clone()))
}

#[test]
fn writes_survive_reopen_and_checkpoint_on_sim_fs() {
    for d in [
        Durability::PerWrite,
        Durability::default(),
        Durability::None,
    ] {
        for index in [
            omen_core::IndexSpec::from(&crate::FLAT),
            omen_hnsw::HnswParams::default().into(),
        ] {
            let fs = SimFs::new();
            let dir = Path::new("/db");
            let cfg = CollectionConfig::new(2, Metric::L2).index(index.clone());
            let c = Collection::create(dir, &cfg, sim_opts(&fs, d)).unwrap();
            c.insert("a", &[1.0, 2.0]).unwrap();
            c.insert_batch(&["b", "c"], &[3.0, 4.0, 5.0, 6.0]).unwrap();
            c.checkpoint().unwrap();
            c.upsert("a", &[7.0, 8.0]).unwrap();
            c.delete("b").unwrap();
            c.sync().unwrap();
            // Locked while open.
            assert!(matches!(
                Collection::open(dir, sim_opts(&fs, d)),
                Err(Error::Locked { .. })
            ));
            drop(c);
            let image = fs.crash_image(CrashMode::DropUnsynced);
            for _ in 0..3 {
                let c = Collection::open(dir, sim_opts(&image, d)).unwrap();
                assert_eq!(c.get("a"), Some(vec![7.0, 8.0]), "{d:?}");
                assert!(!c.contains("b"));
                assert_eq!(c.get("c"), Some(vec![5.0, 6.0]));
                assert_eq!(c.len(), 2);
                assert_eq!(c.search(&[5.0, 6.0], 1).unwrap()[0].0, "c".into());
            }
            let c = Collection::open(dir, sim_opts(&image, d)).unwrap();
            c.checkpoint().unwrap();
            c.insert("d", &[0.0, 0.0]).unwrap();
            drop(c);
            let c = Collection::open(dir, sim_opts(&image, d)).unwrap();
            assert_eq!(c.len(), 3);
            assert_eq!(c.recovery_info().unwrap().replayed_records, 1);
        }
    }
}

#[test]
fn real_fs_mmap_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(3, Metric::Cosine)
        .index(omen_hnsw::HnswParams::default())
        .storage(StorageKind::Mmap);
    let c = Collection::create(&dir, &cfg, DurableOptions::default()).unwrap();
    for i in 0..200 {
        c.insert(&format!("id{i}"), &[1.0 + i as f32, 2.0, 3.0])
            .unwrap();
    }
    c.checkpoint().unwrap();
    for i in 200..300 {
        c.insert(&format!("id{i}"), &[1.0 + i as f32, 2.0, 3.0])
            .unwrap();
    }
    let want: Vec<_> = (0..300)
        .map(|i| c.get(&format!("id{i}")).unwrap())
        .collect();
    // Dropped, not closed: `close` would checkpoint, and this test replays.
    drop(c);
    let c = Collection::open(&dir, DurableOptions::default()).unwrap();
    assert_eq!(c.len(), 300);
    assert_eq!(c.storage_name(), "mmap");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(c.get(&format!("id{i}")).as_ref(), Some(w));
    }
    assert_eq!(c.recovery_info().unwrap().replayed_records, 100);
}

/// Searches run while inserts and checkpoints proceed; every acknowledged id is
/// found afterwards and after reopening, and a search never sees an id without
/// its vector.
#[test]
fn searches_inserts_and_checkpoints_run_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let cfg = CollectionConfig::new(4, Metric::L2).index(omen_hnsw::HnswParams::default());
    let opts = DurableOptions::default().checkpoint_log_bytes(8 << 10);
    let c = Collection::create(&dir, &cfg, opts.clone()).unwrap();
    let vec_of = |t: usize, i: usize| [t as f32, i as f32, (i % 7) as f32, 1.0];
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let c = &c;
                s.spawn(move || {
                    for i in 0..300 {
                        c.insert(&format!("t{t}-{i}"), &vec_of(t, i)).unwrap();
                    }
                })
            })
            .collect();
        let cp = s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                c.checkpoint().unwrap();
                n += 1;
            }
            n
        });
        let searcher = s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for (id, _) in c.search(&[1.0, 5.0, 5.0, 1.0], 5).unwrap() {
                    // A reported id always has its vector.
                    assert!(c.get(&id).is_some() || !c.contains(&id));
                }
                n += 1;
            }
            n
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(cp.join().unwrap() > 0);
        assert!(searcher.join().unwrap() > 0);
    });
    assert_eq!(c.len(), 600);
    c.verify().unwrap();
    drop(c);
    let c = Collection::open(&dir, opts).unwrap();
    assert_eq!(c.len(), 600);
    for t in 0..2 {
        for i in 0..300 {
            assert_eq!(c.get(&format!("t{t}-{i}")), Some(vec_of(t, i).to_vec()));
        }
    }
    c.verify().unwrap();
}

/// Read-only opens share the directory; a writer excludes them and they exclude
/// a writer (`Locked`, one line naming the directory).
#[test]
fn read_only_opens_share_the_directory_and_exclude_a_writer() {
    let fs = SimFs::new();
    let dir = Path::new("/db");
    let cfg = CollectionConfig::new(2, Metric::L2);
    let opts = || sim_opts(&fs, Durability::default());
    let c = Collection::create(dir, &cfg, opts()).unwrap();
    c.insert("a", &[1.0, 2.0]).unwrap();
    // A writer holds it: a reader is refused.
    assert!(matches!(
        Collection::open(dir, opts().read_only(true)),
        Err(Error::Locked { .. })
    ));
    c.close().unwrap();
    let r1 = Collection::open(dir, opts().read_only(true)).unwrap();
    let r2 = Collection::open(dir, opts().read_only(true)).unwrap();
    assert_eq!(r1.get("a"), Some(vec![1.0, 2.0]));
    assert_eq!(r2.search(&[1.0, 2.0], 1).unwrap()[0].0, "a".into());
    let e = Collection::open(dir, opts()).err().unwrap();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("/db is locked"), "{e}");
    drop(r1);
    // One reader is still there.
    assert!(matches!(
        Collection::open(dir, opts()),
        Err(Error::Locked { .. })
    ));
    drop(r2);
    let w = Collection::open(dir, opts()).unwrap();
    w.insert("b", &[3.0, 4.0]).unwrap();
}
