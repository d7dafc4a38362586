//! `omen bench runbook` end to end on a small synthetic dataset: every omen
//! index over both storages follows the runbook, exact search keeps recall 1 at
//! every step (so the harness's tags, live sets and ground truth agree), no
//! system returns a deleted id, the graph and the lists stay close to a fresh
//! build after deleting and reinserting half the rows, and a bad runbook is
//! refused before anything is measured or written.
#![allow(clippy::unwrap_used)] // tests

use omen_bench::bench::BenchOptions;
use omen_bench::config::{BenchConfig, IndexEntry, Sweep};
use omen_core::{Metric, Params};
use omen_datasets::{Distribution, SyntheticSpec};
use std::path::{Path, PathBuf};

fn dataset(dir: &Path) -> PathBuf {
    let spec = SyntheticSpec {
        name: "rb".into(),
        rows: 4000,
        queries: 60,
        dim: 16,
        distribution: Distribution::GaussianMixture {
            clusters: 20,
            spread: 0.3,
        },
        seed: 11,
        normalize: false,
        metric: Metric::L2,
    };
    let ds = dir.join("rb");
    spec.generate().unwrap().save(&ds, Some("test")).unwrap();
    ds
}

fn config(ds: &Path) -> BenchConfig {
    let mut cfg = BenchConfig::named("runbook").unwrap();
    cfg.name = "rb-test".into();
    cfg.dataset = ds.to_string_lossy().into_owned();
    cfg.peers.clear();
    cfg.python = false;
    cfg.indexes = vec![
        IndexEntry::new("flat", Params::new()),
        IndexEntry::new(
            "hnsw",
            Params::new().with("m", 12).with("ef_construction", 100),
        )
        .with_sweep(Sweep::Points(vec![Params::new().with("ef", 64)])),
        IndexEntry::new(
            "ivfpq",
            Params::new()
                .with("nlist", 16)
                .with("m", 8)
                .with("nbits", 4)
                .with("train_size", 1000),
        )
        .with_sweep(Sweep::Points(vec![Params::new()
            .with("nprobe", 16)
            .with("rerank", 10)])),
    ];
    cfg
}

fn opts(tmp: &Path) -> BenchOptions {
    BenchOptions {
        data_dir: tmp.to_path_buf(),
        reports_dir: tmp.join("reports"),
        venv: tmp.join("no-venv"),
        peers: false,
        reproduce: "cargo test -p omen-bench --test runbook".into(),
    }
}

const CHURN: &str = "rb:
  max_pts: 3000
  1: {operation: insert, start: 0, end: 2000}
  2: {operation: search}
  3: {operation: delete, start: 0, end: 1000}
  4: {operation: search}
  5: {operation: replace, tags_start: 1000, tags_end: 1200, ids_start: 3000, ids_end: 3200}
  6: {operation: search}
  7: {operation: insert, start: 0, end: 500}
  8: {operation: search}
";

#[test]
fn every_omen_index_follows_a_runbook_with_exact_flat_recall() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path());
    let rb = tmp.path().join("churn.yaml");
    std::fs::write(&rb, CHURN).unwrap();
    let cfg = config(&ds);
    let (report, md) =
        omen_bench::streaming::run(&cfg, &rb, &opts(tmp.path()), &mut |_| {}).unwrap();
    assert!(md.exists());
    let dir = md.parent().unwrap();
    for f in ["results.json", "recall-per-step.svg", "qps-per-step.svg"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let back: omen_bench::streaming::RunbookReport =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(back, report);
    assert_eq!(report.runbook.searches, 4);
    assert_eq!(report.runbook.final_live, 1500);
    assert_eq!(report.systems.len(), 6, "three indexes over two storages");
    for s in &report.systems {
        let live: Vec<usize> = s.steps.iter().map(|x| x.live).collect();
        assert_eq!(
            live,
            [2000, 2000, 1000, 1000, 1000, 1000, 1500, 1500],
            "{}",
            s.name
        );
        assert_eq!(s.stale, 0, "{}: returned deleted ids", s.name);
        let fresh = s.fresh.as_ref().unwrap();
        assert_eq!(fresh.rows, 1500);
        if s.index == "flat" {
            for st in s.steps.iter().filter(|x| x.op == "search") {
                assert_eq!(st.recall, Some(1.0), "{} step {}", s.name, st.step);
            }
            assert_eq!(fresh.recall, 1.0);
        } else {
            assert!(s.mean_recall > 0.9, "{}: {}", s.name, s.mean_recall);
        }
        let ops: Vec<&str> = s.ops.iter().map(|o| o.op.as_str()).collect();
        for op in ["insert", "search", "delete", "replace"] {
            assert!(ops.contains(&op), "{}: {ops:?}", s.name);
        }
        assert!(s.memory_bytes.unwrap() > 0);
    }
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("| omen-flat/memory | native | 1.0000 |"),
        "{md}"
    );
}

#[test]
fn deleting_and_reinserting_half_stays_near_a_fresh_build() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path());
    let mut text = String::from(
        "rb:\n  1: {operation: insert, start: 0, end: 3000}\n  2: {operation: search}\n",
    );
    let mut n = 3;
    for a in (0..3000).step_by(300) {
        text += &format!(
            "  {n}: {{operation: delete, start: {a}, end: {}}}\n",
            a + 150
        );
        n += 1;
    }
    text += &format!("  {n}: {{operation: search}}\n");
    n += 1;
    for a in (0..3000).step_by(300) {
        text += &format!(
            "  {n}: {{operation: insert, start: {a}, end: {}}}\n",
            a + 150
        );
        n += 1;
    }
    text += &format!("  {n}: {{operation: search}}\n");
    let rb = tmp.path().join("half.yaml");
    std::fs::write(&rb, text).unwrap();
    let (report, _) =
        omen_bench::streaming::run(&config(&ds), &rb, &opts(tmp.path()), &mut |_| {}).unwrap();
    for s in &report.systems {
        let fresh = s.fresh.as_ref().unwrap();
        assert_eq!(fresh.rows, 3000);
        assert!(
            (s.mean_recall - fresh.recall).abs() <= 0.01,
            "{}: mean {} fresh {}",
            s.name,
            s.mean_recall,
            fresh.recall
        );
        assert_eq!(s.stale, 0, "{}", s.name);
    }
}

#[test]
fn a_bad_runbook_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path());
    let cases = [
        ("rb:\n  1: {operation: insert, start: 0, end: 10}\n  2: {operation: insert, start: 5, end: 6}\n  3: {operation: search}\n", "step 2 (insert 5..6): tag 5 is live already"),
        ("rb:\n  1: {operation: insert, start: 3990, end: 4010}\n  2: {operation: search}\n", "step 1 (insert 3990..4010): rows 3990..4010 reach past the dataset's 4000 rows"),
        ("rb:\n  max_pts: 5\n  1: {operation: insert, start: 0, end: 10}\n  2: {operation: search}\n", "max_pts 5 exceeded"),
        ("rb:\n  1: {operation: delete, start: 0, end: 10}\n  2: {operation: search}\n", "step 1 (delete 0..10): tag 0 is not live"),
        ("rb:\n  1: {operation: compact}\n", "step 1: unknown operation \"compact\""),
        ("rb: [1, 2\n", "not YAML"),
    ];
    for (text, want) in cases {
        let rb = tmp.path().join("bad.yaml");
        std::fs::write(&rb, text).unwrap();
        let err = omen_bench::streaming::run(&config(&ds), &rb, &opts(tmp.path()), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(
            !tmp.path().join("reports").join("rb-test").exists(),
            "nothing is written for a refused runbook"
        );
    }
    // A runbook suite takes one search point per index.
    let mut cfg = config(&ds);
    cfg.indexes[1].sweep = Sweep::Points(vec![
        Params::new().with("ef", 16),
        Params::new().with("ef", 32),
    ]);
    let rb = tmp.path().join("ok.yaml");
    std::fs::write(&rb, CHURN).unwrap();
    let err = omen_bench::streaming::run(&cfg, &rb, &opts(tmp.path()), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one search point"), "{err}");
}

#[test]
fn peers_without_their_environment_are_listed_as_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path());
    let rb = tmp.path().join("churn.yaml");
    std::fs::write(&rb, CHURN).unwrap();
    let mut cfg = config(&ds);
    cfg.indexes.truncate(1);
    cfg.peers = BenchConfig::named("runbook").unwrap().peers;
    assert!(cfg.peers_optional);
    let mut o = opts(tmp.path());
    o.peers = true;
    let (report, md) = omen_bench::streaming::run(&cfg, &rb, &o, &mut |_| {}).unwrap();
    assert_eq!(report.skipped.len(), cfg.peers.len());
    for s in &report.skipped {
        assert!(s.reason.starts_with("no peer environment at "), "{s:?}");
    }
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("- hnswlib: no peer environment at "), "{md}");
}
