//! Smoke tests of the durable collection; the crash, fault and corruption suites
//! live in `tests/tests/durability_*.rs`.

use super::*;
use crate::{CollectionConfig, IndexKind};
use omen_fs::{CrashMode, SimFs};

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
            IndexKind::Flat,
            IndexKind::Hnsw(omen_hnsw::HnswParams::default()),
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
                assert_eq!(c.search(&[5.0, 6.0], 1).unwrap()[0].0, "c");
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
        .index(IndexKind::Hnsw(omen_hnsw::HnswParams::default()))
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
    c.close().unwrap();
    let c = Collection::open(&dir, DurableOptions::default()).unwrap();
    assert_eq!(c.len(), 300);
    assert_eq!(c.storage_name(), "mmap");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(c.get(&format!("id{i}")).as_ref(), Some(w));
    }
    assert_eq!(c.recovery_info().unwrap().replayed_records, 100);
}
