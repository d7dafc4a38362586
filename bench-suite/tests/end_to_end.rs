//! A small end-to-end run of the harness: a synthetic dataset directory, every omen
//! index, a report with its plots, and recall figures that must make sense.

use omen_bench::bench::{run, BenchOptions};
use omen_bench::config::{BenchConfig, IndexEntry, Sweep};
use omen_bench::recall::RecallKind;
use omen_core::{Metric, ParamValue, Params};
use omen_datasets::{Distribution, SyntheticSpec};

/// A seeded 16-d Gaussian mixture (20 clusters, L2) saved as a dataset
/// directory `dir/name`, with ground truth.
#[allow(clippy::unwrap_used)] // a test helper
fn mixture_dataset(
    dir: &std::path::Path,
    name: &str,
    rows: usize,
    queries: usize,
    seed: u64,
) -> std::path::PathBuf {
    let spec = SyntheticSpec {
        name: name.into(),
        rows,
        queries,
        dim: 16,
        distribution: Distribution::GaussianMixture {
            clusters: 20,
            spread: 0.3,
        },
        seed,
        normalize: false,
        metric: Metric::L2,
    };
    let ds_dir = dir.join(name);
    spec.generate()
        .unwrap()
        .save(&ds_dir, Some("test"))
        .unwrap();
    ds_dir
}

#[test]
fn small_run_writes_a_report_with_exact_flat_recall() {
    let tmp = tempfile::tempdir().unwrap();
    let ds_dir = mixture_dataset(tmp.path(), "tiny", 3000, 50, 7);
    let cfg = BenchConfig {
        name: "e2e".into(),
        dataset: ds_dir.to_string_lossy().into_owned(),
        k: 10,
        threads: vec![2],
        storage: vec!["memory".into(), "mmap".into()],
        indexes: vec![
            IndexEntry::new("flat", Params::new()),
            IndexEntry::new(
                "hnsw",
                Params::new().with("m", 8).with("ef_construction", 64),
            )
            .with_label("M=8,efc=64")
            .with_sweep(Sweep::Points(vec![
                Params::new().with("ef", 16),
                Params::new().with("ef", 64),
            ])),
            IndexEntry::new(
                "ivfpq",
                Params::new()
                    .with("nlist", 16)
                    .with("m", 8)
                    .with("nbits", 4)
                    .with("train_size", 2000),
            )
            .with_sweep(Sweep::Grid(vec![
                (
                    "nprobe".into(),
                    vec![ParamValue::from(2), ParamValue::from(16)],
                ),
                ("rerank".into(), vec![ParamValue::from(10)]),
            ])),
        ],
        peers: vec![],
        single_query_seconds: 1.0,
        max_queries: 0,
        durable_ingest: true,
        durability: None,
        batch_threads: Some(1),
        python: false,
        cli: false,
        peers_optional: false,
        filter_selectivities: vec![],
        filter_seed: 7,
    };
    let opts = BenchOptions {
        data_dir: tmp.path().to_path_buf(),
        reports_dir: tmp.path().join("reports"),
        venv: tmp.path().join("no-venv"),
        peers: false,
        reproduce: "cargo test -p omen-bench --test end_to_end".into(),
    };
    let mut log = Vec::new();
    let (report, md) = run(&cfg, &opts, &mut |m| log.push(m.to_string())).unwrap();
    assert!(md.exists());
    // Every index over memory, then over mmap.
    assert_eq!(report.runs.len(), 6);
    for r in &report.runs {
        assert_eq!(r.path, "native", "{}", r.name);
        assert!(r.points.iter().all(|p| p.batch_threads == 1), "{}", r.name);
        let d = r.build.durable_ingest.as_ref().unwrap();
        assert_eq!(d.vectors, 3000, "{}", r.name);
        assert!(
            d.what
                .starts_with("durable ingest (group-commit(256, 0ns))")
                && d.what.contains("includes the index build"),
            "{}",
            d.what
        );
        // At least the vectors themselves are on disk.
        let disk = r.memory.on_disk_bytes.unwrap();
        assert!(disk >= 3000 * 16 * 4, "{}: {disk}", r.name);
    }
    assert_eq!(report.runs[3].storage.as_deref(), Some("mmap"));
    // Names, labels and parameters come from the entries, by the kinds' names.
    let names: Vec<&str> = report.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "omen-flat/memory",
            "omen-hnsw(M=8,efc=64)/memory",
            "omen-ivfpq(nlist=16,m=8,nbits=4,train_size=2000)/memory",
            "omen-flat/mmap",
            "omen-hnsw(M=8,efc=64)/mmap",
            "omen-ivfpq(nlist=16,m=8,nbits=4,train_size=2000)/mmap",
        ]
    );
    assert_eq!(report.runs[0].points[0].label, "exact");
    assert_eq!(
        report.runs[1].build_params,
        serde_json::json!({"m": 8, "ef_construction": 64})
    );
    let labels: Vec<&str> = report.runs[2]
        .points
        .iter()
        .map(|p| p.label.as_str())
        .collect();
    assert_eq!(labels, ["nprobe=2,rerank=10", "nprobe=16,rerank=10"]);
    assert_eq!(
        report.runs[2].points[0].params,
        serde_json::json!({"nprobe": 2, "rerank_factor": 10})
    );
    let mmap_flat = &report.runs[3];
    assert!(mmap_flat
        .points
        .iter()
        .all(|p| p.recall.at(RecallKind::ById, 10) == Some(1.0)));
    // Scratch directories are removed.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("reports"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".omen-scratch"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let flat = &report.runs[0];
    for p in &flat.points {
        assert_eq!(
            p.recall.at(RecallKind::ById, 10),
            Some(1.0),
            "flat recall by id"
        );
        assert_eq!(
            p.recall.at(RecallKind::ByDistance, 10),
            Some(1.0),
            "flat recall by distance"
        );
    }
    let build = flat.build.index_build.as_ref().unwrap();
    assert_eq!(build.vectors, 3000);
    assert!(flat
        .build
        .storage_append
        .as_ref()
        .unwrap()
        .what
        .contains("storage-only"));
    let hnsw = &report.runs[1];
    let best = hnsw
        .points
        .iter()
        .filter_map(|p| p.recall.at(RecallKind::ById, 10))
        .fold(0.0, f64::max);
    assert!(best >= 0.9, "hnsw best recall@10 {best}");
    let ivf = &report.runs[2];
    assert!(
        ivf.build.index_train.is_some(),
        "IVF-PQ training is its own phase"
    );
    let best = ivf
        .points
        .iter()
        .filter_map(|p| p.recall.at(RecallKind::ById, 10))
        .fold(0.0, f64::max);
    assert!(best >= 0.9, "ivfpq best recall@10 {best}");
    for f in [
        "results.json",
        "results.csv",
        "report.md",
        "recall_qps.svg",
        "build.svg",
        "latency.svg",
        "memory.svg",
    ] {
        assert!(tmp.path().join("reports/e2e").join(f).exists(), "{f}");
    }
    assert!(log.iter().any(|m| m.contains("index build")));

    // A parameter value the kind refuses stops the run before anything is
    // measured, naming the parameter.
    let mut bad = cfg.clone();
    bad.name = "e2e-bad".into();
    bad.indexes[1].build.set("m", 1);
    let mut log = Vec::new();
    let err = run(&bad, &opts, &mut |m| log.push(m.to_string()))
        .unwrap_err()
        .to_string();
    assert!(err.contains('m'), "{err}");
    assert!(!log.iter().any(|m| m.contains("storage append")), "{log:?}");
    let mut bad = cfg.clone();
    bad.indexes[1].sweep = Sweep::Points(vec![Params::new().with("ef", 0)]);
    let err = run(&bad, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("ef=0"), "{err}");
}

/// A suite that runs systems through the Python adapter is refused up front, in
/// one line naming the install command, when their environment is missing or
/// lacks a package; nothing is silently dropped.
#[test]
fn a_missing_peer_environment_is_refused_with_the_install_command() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = omen_bench::config::BenchConfig::named("quick").unwrap();
    cfg.peers_optional = false;
    cfg.peers = vec![omen_bench::config::PeerSpec {
        system: "scann".into(),
        build: Default::default(),
        sweep: vec![],
    }];
    let opts = BenchOptions {
        data_dir: tmp.path().to_path_buf(),
        reports_dir: tmp.path().join("reports"),
        venv: tmp.path().join("no-venv"),
        peers: true,
        reproduce: String::new(),
    };
    let err = run(&cfg, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("scripts/setup-peers.sh"), "{err}");
    assert!(err.contains("--no-peers"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !tmp.path().join("reports/quick").exists(),
        "nothing measured"
    );
    // omen's own Python path needs the environment as well.
    cfg.peers.clear();
    cfg.python = true;
    let err = run(&cfg, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("scripts/setup-peers.sh"), "{err}");
    // A system the adapter does not know is an error, not a skip.
    cfg.python = false;
    cfg.peers = vec![omen_bench::config::PeerSpec {
        system: "annoy".into(),
        build: Default::default(),
        sweep: vec![],
    }];
    let err = run(&cfg, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("annoy"), "{err}");
}

/// The filtered suite end to end on a small set, natively: one report per
/// selectivity and an overview; every omen index returns k results whenever k
/// rows pass, reaches recall@10 0.95 at every selectivity (its best point), and
/// the selective filters are answered by an exact scan of the matching rows.
#[test]
fn filtered_suite_returns_k_and_high_recall_at_every_selectivity() {
    let tmp = tempfile::tempdir().unwrap();
    let ds_dir = mixture_dataset(tmp.path(), "tinyf", 8000, 40, 9);
    let cfg: BenchConfig = toml::from_str(&format!(
        r#"
name = "filtered-e2e"
dataset = "{}"
k = 10
threads = [2]
batch_threads = 1
single_query_seconds = 0.5
durable_ingest = false
python = false
cli = false
filter_selectivities = [0.5, 0.1, 0.01, 0.002]

[[indexes]]
kind = "flat"

[[indexes]]
kind = "hnsw"
build = {{ m = 12, ef_construction = 100 }}
sweep = {{ ef = [32, 256] }}

[[indexes]]
kind = "ivfpq"
build = {{ nlist = 32, m = 8, nbits = 4, train_size = 4000 }}
sweep = {{ nprobe = [4, 32], rerank = [10] }}
"#,
        ds_dir.display()
    ))
    .unwrap();
    let opts = BenchOptions {
        data_dir: tmp.path().to_path_buf(),
        reports_dir: tmp.path().join("reports"),
        venv: tmp.path().join("no-venv"),
        peers: false,
        reproduce: "cargo test -p omen-bench --test end_to_end".into(),
    };
    let (overview, md) = omen_bench::filtered::run(&cfg, &opts, &mut |_| {}).unwrap();
    assert!(md.exists());
    assert_eq!(overview.levels.len(), 4);
    for l in &overview.levels {
        assert!(tmp
            .path()
            .join("reports/filtered-e2e")
            .join(&l.dir)
            .join("report.md")
            .exists());
        assert_eq!(l.systems.len(), 3);
        for s in &l.systems {
            let what = format!("{} at {}", s.name, l.filter.selectivity);
            assert_eq!(s.short_queries_max, Some(0), "{what}");
            assert!(
                s.summary.best_recall.unwrap() >= 0.95,
                "{what}: {:?}",
                s.summary.best_recall
            );
        }
        // 1 % and 0.2 % of 8,000 rows (80, 16): the matching rows scanned exactly.
        if l.filter.selectivity <= 0.01 {
            for s in &l.systems[1..] {
                let path = s.omen_path.as_deref().unwrap();
                assert!(path.starts_with("exact scan"), "{}: {path}", s.name);
            }
        }
    }
    assert_eq!(overview.levels[3].filter.allowed, 16);
}
