//! loom models of the collection's write protocol against a concurrent search:
//! the id map, the index and the storage are updated in an order that never lets
//! a search report a dead id, an id twice, or miss a live one.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p omen --lib -- loom`

use crate::{Collection, CollectionConfig, Metric};
use loom::sync::Arc;

fn two_points() -> Arc<Collection> {
    let c = CollectionConfig::new(2, Metric::L2).build().unwrap();
    c.insert("a", &[0.0, 0.0]).unwrap();
    c.insert("b", &[3.0, 0.0]).unwrap();
    Arc::new(c)
}

#[test]
fn loom_upsert_racing_search_sees_exactly_one_version() {
    loom::model(|| {
        let c = two_points();
        let writer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || c.upsert("a", &[1.0, 0.0]).unwrap())
        };
        let hits = c.search(&[0.0, 0.0], 2).unwrap();
        // "a" is at 0 (old) or 1 (new), never both and never missing.
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert_eq!(hits[0].0, "a", "{hits:?}");
        assert!(hits[0].1 == 0.0 || hits[0].1 == 1.0, "{hits:?}");
        assert_eq!(hits[1], ("b".to_string(), 9.0));
        writer.join().unwrap();
        assert_eq!(
            c.search(&[0.0, 0.0], 1).unwrap(),
            vec![("a".to_string(), 1.0)]
        );
    });
}

#[test]
fn loom_delete_and_insert_racing_search() {
    loom::model(|| {
        let c = two_points();
        let writer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || {
                c.delete("a").unwrap();
                c.insert("c", &[0.5, 0.0]).unwrap();
            })
        };
        let hits = c.search(&[0.0, 0.0], 3).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
        // Any linearisation point: before the delete, between, after the insert.
        assert!(
            ids == ["a", "b"] || ids == ["b"] || ids == ["c", "b"],
            "{hits:?}"
        );
        writer.join().unwrap();
        assert_eq!(c.len(), 2);
    });
}

#[test]
fn loom_batch_insert_racing_search() {
    loom::model(|| {
        let c = Arc::new(CollectionConfig::new(2, Metric::L2).build().unwrap());
        c.insert("a", &[3.0, 0.0]).unwrap();
        let writer = {
            let c = Arc::clone(&c);
            loom::thread::spawn(move || c.insert_batch(&["x", "y"], &[0.0, 0.0, 0.5, 0.0]).unwrap())
        };
        // While the batch is in the index but not yet current, its two slots are
        // the nearest hits and must be skipped by asking the index for more.
        let hits = c.search(&[0.0, 0.0], 1).unwrap();
        assert!(
            hits == [("a".to_string(), 9.0)] || hits == [("x".to_string(), 0.0)],
            "{hits:?}"
        );
        writer.join().unwrap();
        assert_eq!(c.search(&[0.0, 0.0], 1).unwrap()[0].0, "x");
    });
}
