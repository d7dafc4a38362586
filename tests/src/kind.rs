//! The conformance suite of an index *kind*: what every registered kind gets
//! checked for, whatever index it builds. A new kind runs it with one call
//! (see `docs/ADDING_AN_INDEX.md`):
//!
//! * its indexes pass the index suite ([`crate::index_suite`]);
//! * an unknown build key and an unknown search knob are refused by name;
//! * its saved state (when it saves one) loads back into an index that answers
//!   the same, and every truncation of it, and flipped bytes, are refused with
//!   `Corruption` naming the file (never a panic);
//! * a durable collection of the kind survives create, import, checkpoint,
//!   more writes in the log, reopen, search and verify, for every metric.

use crate::{clustered_rows, index_suite, METRICS};
use omen::{Collection, CollectionConfig, DurableOptions};
use omen_core::{
    Error, IndexKind, IndexSpec, Metric, Params, SearchParams, SearchRequest, SearchScratch,
    VectorStorage,
};
use omen_flat::FlatIndex;
use omen_storage::MemoryStorage;
use std::path::Path;

/// Runs every kind check against `kind` built with `params` (it must be
/// registered already, under its name).
pub fn kind_suite(kind: &'static dyn IndexKind, params: &Params) {
    let found = omen::registry::lookup(kind.name()).expect("the kind is registered");
    assert_eq!(found.name(), kind.name());
    kind_refuses_unknown_keys(kind, params);
    index_suite(&|dim, metric| kind.create(dim, metric, params).expect("create"));
    kind_saved_state_round_trips(kind, params);
    for metric in METRICS {
        kind_durable_round_trip(kind, params, metric);
    }
}

/// An unknown build key fails `create` naming the kind; an unknown knob fails
/// a search and `check_search_params`.
pub fn kind_refuses_unknown_keys(kind: &'static dyn IndexKind, params: &Params) {
    let bad = params.clone().with("no_such_key", 1);
    let e = match kind.create(8, Metric::L2, &bad) {
        Ok(_) => panic!("{}: an unknown build key was accepted", kind.name()),
        Err(e) => e,
    };
    assert!(
        matches!(&e, Error::InvalidParameter { .. }) && e.to_string().contains("no_such_key"),
        "{}: {e}",
        kind.name()
    );
    assert!(kind.check_build_keys(&bad).is_err());
    assert!(kind.check_build_keys(params).is_ok());
    let index = kind.create(8, Metric::L2, params).expect("create");
    let knob = SearchParams::new().with("no_such_knob", 1);
    assert!(index.check_search_params(&knob).is_err(), "{}", kind.name());
    assert!(index.check_search_params(&SearchParams::new()).is_ok());
    for spec in kind.search_params() {
        assert!(
            kind.check_search_keys(&Params::new().with(spec.name, 1))
                .is_ok(),
            "{}: its own knob {} refused",
            kind.name(),
            spec.name
        );
    }
}

/// Saved state loads back into an index answering the same; damaged bytes are
/// `Corruption` naming the file.
pub fn kind_saved_state_round_trips(kind: &'static dyn IndexKind, params: &Params) {
    let dim = 8;
    let rows = clustered_rows(201, 400, dim, false);
    let storage = MemoryStorage::new(dim).unwrap();
    let slots = storage.append_batch(&rows).unwrap();
    let index = kind.create(dim, Metric::L2, params).unwrap();
    index.add(&storage, slots).unwrap();
    index.remove(7).unwrap();
    let Some(bytes) = index.persist() else {
        assert!(
            kind.file_extension().is_none(),
            "{}: names a file extension but saves nothing",
            kind.name()
        );
        return;
    };
    assert!(
        kind.file_extension().is_some(),
        "{}: saves state but names no file extension",
        kind.name()
    );
    let file = Path::new("/saved/index.bin");
    let loaded = kind.load(&bytes, file).expect("load what persist saved");
    assert_eq!(loaded.len(), index.len());
    assert!(!loaded.contains(7) && loaded.contains(8));
    assert_eq!(loaded.build_params(), index.build_params());
    let queries = clustered_rows(202, 5, dim, false);
    let p = SearchParams::new();
    let (mut s, mut a, mut b) = (SearchScratch::new(), Vec::new(), Vec::new());
    for q in queries.chunks_exact(dim) {
        let req = SearchRequest::new(q, 5, &p);
        index.search(&storage, &req, &mut s, &mut a).unwrap();
        loaded.search(&storage, &req, &mut s, &mut b).unwrap();
        assert_eq!(
            a,
            b,
            "{}: the loaded index answers differently",
            kind.name()
        );
    }
    // Every truncation (sampled beyond 4 KiB) is refused, naming the file.
    let step = (bytes.len() / 4096).max(1);
    for len in (0..bytes.len()).step_by(step) {
        match kind.load(&bytes[..len], file) {
            Err(Error::Corruption { file: f, .. }) => assert_eq!(f, file),
            Err(e) => panic!("{}: truncated to {len}: {e}", kind.name()),
            Ok(_) => panic!("{}: truncated to {len} bytes loaded", kind.name()),
        }
    }
    // Flipped bytes: an error or an index, never a panic.
    let mut damaged = bytes.clone();
    for i in (0..bytes.len()).step_by((bytes.len() / 512).max(1)) {
        damaged[i] ^= 0x5a;
        if let Err(e) = kind.load(&damaged, file) {
            assert!(
                matches!(e, Error::Corruption { .. }),
                "{}: {e}",
                kind.name()
            );
        }
        damaged[i] = bytes[i];
    }
}

/// A durable collection of the kind: create, import, checkpoint, writes left
/// in the log, reopen (loading or rebuilding the index), search, verify.
pub fn kind_durable_round_trip(kind: &'static dyn IndexKind, params: &Params, metric: Metric) {
    let tmp = tempdir();
    let dir = tmp.join("c");
    let dim = 8;
    let rows = clustered_rows(301, 600, dim, false);
    let names: Vec<String> = (0..600).map(|i| format!("v{i}")).collect();
    let cfg = CollectionConfig::new(dim, metric).index(IndexSpec::new(kind, params.clone()));
    let expect_len;
    {
        let c = Collection::create(&dir, &cfg, DurableOptions::default()).unwrap();
        c.insert_batch(&names[..500], &rows[..500 * dim]).unwrap();
        c.delete("v3").unwrap();
        c.wait_indexed().unwrap();
        c.checkpoint().unwrap();
        c.insert_batch(&names[500..], &rows[500 * dim..]).unwrap();
        c.upsert("v4", &rows[..dim]).unwrap();
        expect_len = c.len();
        drop(c); // no close: the last writes stay in the log
    }
    let c = Collection::open(&dir, DurableOptions::default()).unwrap();
    assert_eq!(c.index_name(), kind.name());
    assert_eq!(c.len(), expect_len);
    assert!(c.recovery_info().unwrap().replayed_records >= 2);
    c.wait_indexed().unwrap();
    // Exhaustive search equals a flat scan of the live vectors.
    let flat = FlatIndex::new(dim, metric.index_metric()).unwrap();
    let exact = Collection::with_backends(
        dim,
        metric,
        Box::new(MemoryStorage::new(dim).unwrap()),
        Box::new(flat),
    )
    .unwrap();
    for (id, v) in c.live_entries() {
        exact.insert(&id, &v).unwrap();
    }
    let queries = clustered_rows(302, 10, dim, false);
    for q in queries.chunks_exact(dim) {
        let got = c.search_with(q, 5, &SearchParams::exhaustive()).unwrap();
        let want6 = exact.search(q, 6).unwrap();
        let want = &want6[..5];
        // Equal distances, and the same ids up to the order of exact ties (v4
        // is a copy of v0, at another slot in each collection).
        assert_eq!(got.len(), want.len(), "{} {metric}", kind.name());
        for (g, w) in got.iter().zip(want) {
            let tol = 1e-4 * w.1.abs().max(1.0);
            assert!(
                (g.1 - w.1).abs() <= tol,
                "{} {metric}: {got:?} vs {want:?}",
                kind.name()
            );
        }
        let ids = |h: &[omen::Hit]| {
            let mut v: Vec<String> = h.iter().map(|h| h.0.to_string()).collect();
            v.sort();
            v
        };
        if want6[4].1 != want6[5].1 {
            assert_eq!(ids(&got), ids(want), "{} {metric}", kind.name());
        }
    }
    assert!(c.get("v3").is_none());
    let mut v4 = rows[..dim].to_vec();
    if metric.normalizes() {
        omen_core::validate::normalize_into(&rows[..dim], &mut v4, 0).unwrap();
    }
    assert_eq!(c.get("v4").unwrap(), v4);
    let report = c.verify().unwrap();
    assert_eq!(report.live, expect_len);
    c.checkpoint().unwrap();
    c.close().unwrap();
    let c = Collection::open(&dir, DurableOptions::default().read_only(true)).unwrap();
    assert_eq!(c.len(), expect_len);
    assert_eq!(c.recovery_info().unwrap().replayed_records, 0);
    drop(c);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "omen-kind-suite-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
