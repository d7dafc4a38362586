//! The report writer produces every artifact, with ratios between omen and peers.
use omen_bench::latency::Latency;
use omen_bench::model::*;
use omen_bench::recall::RecallSummary;

fn run(name: &str, family: &str, pts: &[(f64, f64)]) -> RunResult {
    RunResult {
        name: name.into(),
        family: family.into(),
        index: "hnsw".into(),
        build_threads: 1,
        build: BuildFigures {
            storage_append: Some(Phase::new("storage-only append", 1000, 0.001, 1)),
            index_build: Some(Phase::new("index build", 1000, 0.5, 1)),
            ..Default::default()
        },
        memory: MemoryFigures {
            index_bytes: Some(64_000),
            index_bytes_per_vector: Some(64.0),
            ..Default::default()
        },
        points: pts
            .iter()
            .map(|&(r, q)| SearchPoint {
                params: serde_json::json!({"ef": 10}),
                label: format!("r={r}"),
                qps_single: q,
                qps_batch: Some(q * 1.5),
                batch_threads: 2,
                latency: Latency::from_seconds(&[1.0 / q; 10]),
                recall: RecallSummary {
                    ks: vec![1, 10],
                    by_id: vec![r, r],
                    by_distance: vec![r, r],
                },
                distance_computations_per_query: Some(100.0),
                short_queries: None,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn writes_every_artifact_with_ratios() {
    let report = Report {
        run: "unit".into(),
        reproduce: "omen bench unit".into(),
        dataset: DatasetInfo {
            name: "toy".into(),
            n: 1000,
            nq: 10,
            dim: 4,
            metric: "l2".into(),
            checksum: "0".into(),
        },
        k: 10,
        runs: vec![
            run(
                "omen-hnsw",
                "omen",
                &[(0.9, 2000.0), (0.95, 1000.0), (0.99, 300.0)],
            ),
            run(
                "hnswlib",
                "peer",
                &[(0.9, 1000.0), (0.95, 500.0), (0.98, 200.0)],
            ),
        ],
        ..Default::default()
    };
    let dir = std::env::temp_dir().join(format!("omen-report-test-{}", std::process::id()));
    let md_path = omen_bench::report::write(&report, &dir).unwrap();
    let md = std::fs::read_to_string(md_path).unwrap();
    assert!(
        md.contains("| omen-hnsw | hnswlib | 2.00x | 2.00x | — |"),
        "{md}"
    );
    for f in [
        "results.json",
        "results.csv",
        "recall_qps.svg",
        "build.svg",
        "latency.svg",
        "memory.svg",
    ] {
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len > 200, "{f} is {len} bytes");
    }
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    // results.json holds the runs verbatim plus the derived summary.
    let mut summarized = report.clone();
    summarized.summarize();
    assert_eq!(back, summarized);
    assert_eq!(back.summary.len(), 2);
    let (omen, peer) = (&back.summary[0], &back.summary[1]);
    assert_eq!(omen.build_seconds, Some(0.5));
    assert_eq!(omen.total_bytes, Some(64_000));
    assert_eq!(omen.qps_at_recall["0.95"], Some(1000.0));
    assert_eq!(peer.qps_at_recall["0.99"], None);
    // Both ran the same (default) path: omen is first at 0.90 and 0.95, the peer
    // second, and only omen has a rank at 0.99.
    assert_eq!(omen.rank_at_recall["0.95"], Some(1));
    assert_eq!(peer.rank_at_recall["0.90"], Some(2));
    assert_eq!(peer.rank_at_recall["0.99"], None);
    assert!(
        md.contains("| 1 | omen-hnsw | 2,000 (1) | 1,000 (1) | 300 (1) |"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | hnswlib | 1,000 (2) | 500 (2) | — |"),
        "{md}"
    );
    // The recall axis is logit: the SVG labels 0.99 and 0.999 apart.
    let svg = std::fs::read_to_string(dir.join("recall_qps.svg")).unwrap();
    assert!(
        svg.contains("\n0.99\n") && svg.contains("\n0.999\n"),
        "no logit ticks"
    );
    for r in [0.5, 0.9, 0.99, 0.999] {
        let t = omen_bench::plot::logit(r);
        assert!((omen_bench::plot::expit(t) - r).abs() < 1e-12);
    }
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6);
    if std::env::var_os("OMEN_KEEP_TEST_REPORT").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn build_scaling_pairs_thread_counts_of_one_system() {
    let mut one = run("omen-hnsw [1t]", "omen", &[(0.9, 1000.0)]);
    one.build.index_build = Some(Phase::new("index build", 1000, 0.5, 1));
    let mut two = run("omen-hnsw [2t]", "omen", &[(0.9, 1000.0)]);
    two.build_threads = 2;
    two.build.index_build = Some(Phase::new("index build", 1000, 0.25, 2));
    // A 2-thread run of another system with no 1-thread partner gets no row.
    let mut lone = run("hnswlib [2t]", "peer", &[(0.9, 1000.0)]);
    lone.build_threads = 2;
    let report = Report {
        run: "unit".into(),
        k: 10,
        runs: vec![one, two, lone],
        ..Default::default()
    };
    let md = omen_bench::report::markdown(&report);
    assert!(md.contains("## Build scaling"), "{md}");
    assert!(
        md.contains("| omen-hnsw | 2 | 4,000 | 2,000 | 2.00x |"),
        "{md}"
    );
    assert!(!md.contains("| hnswlib | 2 |"), "{md}");
}
