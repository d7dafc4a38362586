//! The `omen` binary end to end: dataset generation, the db commands, and clear
//! one-line errors with a non-zero exit status.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Command, Output};
use std::sync::RwLock;

/// A child spawned by one test thread holds a copy of every open descriptor of
/// this process until it execs, including the `LOCK` of a collection another test
/// has open, which keeps that lock held for a moment after it is closed. Spawns
/// take this for reading; a test closing a collection it opened in-process takes
/// it for writing, so no child can hold on to the lock past the close.
static SPAWN: RwLock<()> = RwLock::new(());

fn omen(args: &[&str], cwd: &Path) -> Output {
    let child = {
        let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
        Command::new(env!("CARGO_BIN_EXE_omen"))
            .args(args)
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let o = omen(args, cwd);
    assert!(
        o.status.success(),
        "omen {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str], cwd: &Path, needle: &str) {
    let o = omen(args, cwd);
    assert!(!o.status.success(), "omen {args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(needle),
        "omen {args:?}: {err:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "omen {args:?} panicked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn db_commands_round_trip_and_refuse_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(
        &[
            "dataset",
            "gen",
            "ds",
            "--rows",
            "500",
            "--queries",
            "5",
            "--dim",
            "4",
            "-k",
            "10",
        ],
        d,
    );
    for index in ["flat", "hnsw", "ivfpq", "qg"] {
        let db = format!("db-{index}");
        let mut create = vec![
            "db", "create", &db, "--dim", "4", "--metric", "l2", "--index", index,
        ];
        if index == "ivfpq" {
            create.extend(["--nlist", "4", "--pq-m", "2"]);
        }
        if index == "qg" {
            // Trained at the import, so that searches walk the codes.
            create.extend(["-p", "train_at=16"]);
        }
        ok(&create, d);
        ok(&["db", "import", &db, "ds/base.fbin"], d);
        ok(
            &[
                "db",
                "insert",
                &db,
                "--id",
                "probe",
                "--vector",
                "100,100,100,-100",
            ],
            d,
        );
        assert_eq!(
            ok(&["db", "get", &db, "--id", "probe"], d).trim(),
            "100,100,100,-100"
        );
        // The probe is its own nearest neighbour, across a reopen.
        std::fs::write(d.join("q.fvecs"), {
            let mut b = 4u32.to_le_bytes().to_vec();
            for x in [100f32, 100.0, 100.0, -100.0] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b
        })
        .unwrap();
        let out = ok(
            &[
                "db",
                "search",
                &db,
                "--queries",
                "q.fvecs",
                "-k",
                "3",
                "--json",
            ],
            d,
        );
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(v["ids"][0], "probe", "{index}: {out}");
        assert_eq!(v["distances"][0], 0.0);
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&["db", "stats", &db, "--json"], d)).unwrap();
        assert_eq!(stats["len"], 501);
        ok(&["db", "verify", &db], d);
        ok(&["db", "delete", &db, "--id", "probe"], d);
        fails(&["db", "get", &db, "--id", "probe"], d, "unknown id");
        fails(&["db", "delete", &db, "--id", "probe"], d, "unknown id");
        fails(
            &["db", "insert", &db, "--id", "x", "--vector", "1,2"],
            d,
            "dimension mismatch",
        );
        fails(
            &["db", "insert", &db, "--id", "x", "--vector", "1,2,nan,4"],
            d,
            "non-finite",
        );
        fails(
            &["db", "insert", &db, "--id", "0", "--vector", "1,2,3,4"],
            d,
            "duplicate id",
        );
        fails(
            &["db", "search", &db, "--queries", "q.fvecs", "-k", "0"],
            d,
            "k",
        );
        fails(
            &["db", "create", &db, "--dim", "4", "--metric", "l2"],
            d,
            "already holds",
        );
        // The data survives a checkpoint; the log it covered is gone.
        let cp = ok(&["db", "checkpoint", &db], d);
        assert!(cp.starts_with("checkpoint "), "{cp}");
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&["db", "stats", &db, "--json"], d)).unwrap();
        assert_eq!(stats["len"], 500);
        assert_eq!(stats["replayed_records"], 0, "{stats}");
        assert_eq!(stats["storage"], "memory");
        assert!(stats["checkpoint_gen"].as_u64().unwrap() >= 2, "{stats}");
        assert_eq!(
            ok(&["db", "get", &db, "--id", "7"], d)
                .trim()
                .split(',')
                .count(),
            4
        );
        let out = ok(&["db", "verify", &db], d);
        assert!(out.starts_with("ok: 500 live ids, 501 rows,"), "{out}");
        // A damaged checkpoint file is a corruption error naming the file and
        // offset, with its own exit status.
        let seg = std::fs::read_dir(d.join(&db))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&seg, bytes).unwrap();
        let o = omen(&["db", "verify", &db], d);
        assert_eq!(o.status.code(), Some(3), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("corruption: "), "{err}");
        assert!(err.contains(".seg at byte"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
        fails(&["db", "get", &db, "--id", "7"], d, ".seg at byte");
    }
    fails(
        &["db", "create", "bad", "--dim", "4", "--metric", "manhattan"],
        d,
        "metric",
    );
    fails(
        &["db", "get", "nowhere", "--id", "1"],
        d,
        "not a collection",
    );
    fails(
        &[
            "db",
            "create",
            "bad2",
            "--dim",
            "4",
            "--metric",
            "l2",
            "--storage",
            "disk",
        ],
        d,
        "storage",
    );
    fails(&["dataset", "info", "missing"], d, "no dataset");
    #[cfg(feature = "bench")]
    fails(&["bench", "no-such-suite"], d, "neither a built-in suite");
    // Built without the harness: no `omen bench` at all.
    #[cfg(not(feature = "bench"))]
    {
        let o = omen(&["bench", "quick"], d);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("unrecognized subcommand"), "{err}");
    }
}

/// Writes `rows` 4-d vectors (row i = [i, i+1, i+2, i+3]) as .fvecs.
fn write_fvecs(path: &Path, rows: usize) {
    let mut b = Vec::new();
    for i in 0..rows {
        b.extend_from_slice(&4u32.to_le_bytes());
        for j in 0..4 {
            b.extend_from_slice(&((i + j) as f32).to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn db_durability_modes_ack_and_skip_existing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_fvecs(&d.join("v.fvecs"), 1050);
    for mode in ["per-write", "group", "none"] {
        let db = format!("db-{mode}");
        ok(&["db", "create", &db, "--dim", "4", "--metric", "l2"], d);
        let out = ok(
            &[
                "db",
                "import",
                &db,
                "v.fvecs",
                "--batch",
                "300",
                "--ack",
                "--durability",
                mode,
            ],
            d,
        );
        let acks: Vec<&str> = out.lines().filter(|l| l.starts_with("acked ")).collect();
        assert_eq!(
            acks,
            ["acked 299", "acked 599", "acked 899", "acked 1049"],
            "{out}"
        );
        assert!(
            out.lines().last().unwrap().starts_with("imported 1050 "),
            "{out}"
        );
        // Again: duplicates without --skip-existing, nothing written.
        fails(&["db", "import", &db, "v.fvecs"], d, "duplicate id");
        let out = ok(&["db", "import", &db, "v.fvecs", "--skip-existing"], d);
        assert!(
            out.contains("imported 0 vectors (1050 already present"),
            "{out}"
        );
        ok(
            &[
                "db",
                "insert",
                &db,
                "--id",
                "x",
                "--vector",
                "1,2,3,4",
                "--durability",
                mode,
            ],
            d,
        );
        ok(&["db", "delete", &db, "--id", "5", "--durability", mode], d);
        // Each import ended with a checkpoint (create's is 1, then one per
        // import); the two single writes after them were logged and replay at
        // the next open, which writes nothing (a read command).
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&["db", "stats", &db, "--json"], d)).unwrap();
        assert_eq!(stats["len"], 1050, "{stats}");
        assert_eq!(stats["replayed_records"], 2, "{stats}");
        assert_eq!(stats["checkpoint_gen"], 3, "{stats}");
        assert!(stats["log_bytes"].as_u64().unwrap() > 2 * 16, "{stats}");
        let again: serde_json::Value =
            serde_json::from_str(&ok(&["db", "stats", &db, "--json"], d)).unwrap();
        assert_eq!(again, stats, "a second read command saw another directory");
        assert_eq!(
            ok(&["db", "get", &db, "--id", "1049"], d).trim(),
            "1049,1050,1051,1052"
        );
        let out = ok(&["db", "verify", &db], d);
        assert!(out.starts_with("ok: 1050 live ids, 1051 rows,"), "{out}");
    }
    fails(
        &[
            "db",
            "insert",
            "db-group",
            "--id",
            "y",
            "--vector",
            "1,2,3,4",
            "--durability",
            "sometimes",
        ],
        d,
        "durability",
    );
    fails(
        &["db", "import", "db-group", "v.fvecs", "--batch", "0"],
        d,
        "batch",
    );
    // Small automatic checkpoints during an import.
    ok(
        &[
            "db",
            "create",
            "db-cp",
            "--dim",
            "4",
            "--metric",
            "l2",
            "--storage",
            "mmap",
            "--index",
            "hnsw",
        ],
        d,
    );
    ok(
        &[
            "db",
            "import",
            "db-cp",
            "v.fvecs",
            "--batch",
            "100",
            "--checkpoint-log-bytes",
            "4096",
        ],
        d,
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["db", "stats", "db-cp", "--json"], d)).unwrap();
    assert_eq!(stats["storage"], "mmap");
    assert_eq!(stats["index"], "hnsw");
    assert_eq!(stats["len"], 1050);
    assert!(stats["checkpoint_gen"].as_u64().unwrap() > 2, "{stats}");
    assert!(ok(&["db", "verify", "db-cp"], d).starts_with("ok: 1050 live ids,"));
}

#[test]
fn db_second_writer_is_refused_while_the_directory_is_held() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(&["db", "create", "db", "--dim", "4", "--metric", "l2"], d);
    write_fvecs(&d.join("v.fvecs"), 10);
    // This process holds the collection: no race with a child's start-up.
    let held = omen::Collection::open(&d.join("db"), omen::DurableOptions::default()).unwrap();
    fails(
        &["db", "insert", "db", "--id", "a", "--vector", "1,2,3,4"],
        d,
        "locked",
    );
    fails(&["db", "import", "db", "v.fvecs"], d, "locked");
    fails(&["db", "get", "db", "--id", "a"], d, "locked");
    held.insert("b", &[1.0, 2.0, 3.0, 4.0]).unwrap();
    {
        let _no_spawns = SPAWN.write().unwrap_or_else(|e| e.into_inner());
        held.close().unwrap();
    }
    ok(
        &["db", "insert", "db", "--id", "a", "--vector", "1,2,3,4"],
        d,
    );
    assert_eq!(ok(&["db", "get", "db", "--id", "b"], d).trim(), "1,2,3,4");

    // A read-only holder: read commands run beside it, writers are refused.
    let reader = omen::Collection::open(
        &d.join("db"),
        omen::DurableOptions::default().read_only(true),
    )
    .unwrap();
    assert_eq!(ok(&["db", "get", "db", "--id", "a"], d).trim(), "1,2,3,4");
    assert!(ok(&["db", "stats", "db"], d).contains('2'));
    fails(
        &["db", "insert", "db", "--id", "c", "--vector", "1,2,3,4"],
        d,
        "locked",
    );
    {
        let _no_spawns = SPAWN.write().unwrap_or_else(|e| e.into_inner());
        drop(reader);
    }
    ok(
        &["db", "insert", "db", "--id", "c", "--vector", "1,2,3,4"],
        d,
    );
}

/// `omen db search` answers through the batch path: the same lines whatever the
/// batch size and thread count, one line per query in order, exact (flat) results
/// equal to brute force, and `--timing` reporting load, open and search apart.
#[test]
fn db_search_batches_threads_and_timing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(
        &[
            "dataset",
            "gen",
            "ds",
            "--rows",
            "3000",
            "--queries",
            "57",
            "--dim",
            "8",
            "-k",
            "10",
        ],
        d,
    );
    for index in ["flat", "hnsw"] {
        let db = format!("db-{index}");
        ok(
            &[
                "db", "create", &db, "--dim", "8", "--metric", "l2", "--index", index,
            ],
            d,
        );
        // Indexed before the import returns: the answers below must not depend
        // on how far a background indexer got (the tail is scanned with another
        // kernel than the index's tiles, so distances could differ in the last
        // bits).
        let out = ok(&["db", "import", &db, "ds/base.fbin", "--wait-indexed"], d);
        assert!(out.contains("; indexed behind it by"), "{out}");
        let run = |extra: &[&str]| {
            let mut a = vec![
                "db",
                "search",
                &db,
                "--queries",
                "ds/queries.fbin",
                "-k",
                "10",
                "--json",
            ];
            if index == "hnsw" {
                a.extend(["--ef", "400"]);
            }
            a.extend_from_slice(extra);
            ok(&a, d)
        };
        let one = run(&["--batch", "1", "--threads", "1"]);
        let many = run(&["--batch", "10", "--threads", "2"]);
        let all = run(&[]);
        assert_eq!(one, many, "{index}");
        assert_eq!(one, all, "{index}");
        let lines: Vec<serde_json::Value> = one
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 57);
        for (i, v) in lines.iter().enumerate() {
            assert_eq!(v["query"], i);
            assert_eq!(v["ids"].as_array().unwrap().len(), 10);
            let ds: Vec<f64> = v["distances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert!(ds.windows(2).all(|w| w[0] <= w[1]), "{v}");
        }
        if index == "flat" {
            // Row ids are the row numbers of the imported file: compare with the
            // generated ground truth (ids of base rows, nearest first).
            let gt = std::fs::read(d.join("ds/groundtruth.ibin")).unwrap();
            let k = u32::from_le_bytes(gt[4..8].try_into().unwrap()) as usize;
            for (i, v) in lines.iter().enumerate() {
                let first =
                    i32::from_le_bytes(gt[8 + 4 * i * k..12 + 4 * i * k].try_into().unwrap());
                assert_eq!(v["ids"][0], first.to_string(), "query {i}");
            }
        }
        let o = omen(
            &[
                "db",
                "search",
                &db,
                "--queries",
                "ds/queries.fbin",
                "-k",
                "3",
                "--threads",
                "1",
                "--timing",
            ],
            d,
        );
        assert!(o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        let t: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
        assert_eq!(t["queries"], 57);
        assert_eq!(t["threads"], 1);
        for key in ["load_seconds", "open_seconds", "search_seconds", "qps"] {
            assert!(t[key].as_f64().unwrap() >= 0.0, "{key}: {t}");
        }
        fails(
            &[
                "db",
                "search",
                &db,
                "--queries",
                "ds/queries.fbin",
                "--threads",
                "0",
            ],
            d,
            "threads",
        );
        fails(
            &[
                "db",
                "search",
                &db,
                "--queries",
                "ds/queries.fbin",
                "--batch",
                "0",
            ],
            d,
            "batch",
        );
        if index == "hnsw" {
            fails(
                &[
                    "db",
                    "search",
                    &db,
                    "--queries",
                    "ds/base.fbin",
                    "--ef",
                    "0",
                ],
                d,
                "ef",
            );
        }
    }
}

/// `omen db get --json` prints one object with the id and the stored vector; an
/// unknown id is the same one-line error, with nothing on stdout, in both modes.
#[test]
fn db_get_json_prints_id_and_vector() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(&["db", "create", "db", "--dim", "4", "--metric", "l2"], d);
    let want = [0.1f32, -2.5, 3.0, 1e-3];
    for id in ["doc-1", "quote\"d"] {
        ok(
            &[
                "db",
                "insert",
                "db",
                "--id",
                id,
                "--vector",
                "0.1,-2.5,3,1e-3",
            ],
            d,
        );
        let out = ok(&["db", "get", "db", "--id", id, "--json"], d);
        assert_eq!(out.lines().count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 2, "{out}");
        assert_eq!(v["id"], id, "{out}");
        let got: Vec<f32> = v["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want, "{out}");
        // Each component as the shortest text of its f32, not widened to f64.
        assert!(out.contains("[0.1,-2.5,3.0,0.001]"), "{out}");
        // Without --json: the comma-separated line, as before.
        assert_eq!(
            ok(&["db", "get", "db", "--id", id], d),
            "0.1,-2.5,3,0.001\n"
        );
    }
    for json in [false, true] {
        let mut args = vec!["db", "get", "db", "--id", "nope"];
        if json {
            args.push("--json");
        }
        fails(&args, d, "unknown id");
        let o = omen(&args, d);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(o.stdout.is_empty(), "{o:?}");
    }
}

/// `omen db create` was refused for `dir`: it holds no collection (it was not
/// even created).
fn assert_nothing_created(dir: &Path) {
    assert!(!dir.join("MANIFEST").exists(), "{}", dir.display());
    assert!(!dir.exists(), "{} was created", dir.display());
}

/// `omen db create` refuses a parameter the chosen index does not take (it
/// would be ignored), naming the index and the keys it takes, and writes
/// nothing; the parameters it does take, given or defaulted, are kept by the
/// collection (shown by `db stats --json`).
#[test]
fn db_create_refuses_parameters_the_index_does_not_take() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ivfpq_takes =
        "(valid: nlist, m, nbits, train_size, nprobe, rerank_factor, seed, kmeans_iters)";
    let hnsw_takes =
        "(valid: m, ef_construction, ef_search, seed, keep_pruned, fill_layer0, repair_threshold)";
    let flat_takes = "(it takes none)";
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &[
                "--index",
                "ivfpq",
                "--pq-m",
                "2",
                "--ef-construction",
                "100",
            ],
            r#"ivfpq build parameters have no key "ef_construction""#,
            ivfpq_takes,
        ),
        (
            &["--index", "ivfpq", "--ef-search", "10"],
            r#"no key "ef_search""#,
            ivfpq_takes,
        ),
        (
            &["--index", "hnsw", "--nlist", "4"],
            r#"hnsw build parameters have no key "nlist""#,
            hnsw_takes,
        ),
        (
            &["--index", "hnsw", "--pq-m", "2"],
            r#"no key "pq_m""#,
            hnsw_takes,
        ),
        (
            &["--index", "hnsw", "--nbits", "8"],
            r#"no key "nbits""#,
            hnsw_takes,
        ),
        (
            &["--index", "hnsw", "--train-size", "100"],
            r#"no key "train_size""#,
            hnsw_takes,
        ),
        (
            &["--index", "hnsw", "--m", "8", "--nprobe", "3"],
            r#"no key "nprobe""#,
            hnsw_takes,
        ),
        (
            &[
                "--index",
                "hnsw",
                "--param",
                "ef-construction=9",
                "-p",
                "foo=1",
            ],
            r#"no key "foo""#,
            hnsw_takes,
        ),
        (
            &["--index", "flat", "--m", "16"],
            r#"flat build parameters have no key "m""#,
            flat_takes,
        ),
        // flat is the default index; every refused key is named.
        (
            &["--nprobe", "1", "--ef-search", "5"],
            r#"flat build parameters have no keys "ef_search", "nprobe""#,
            flat_takes,
        ),
        (
            &["--index", "ivfpq", "--nlist", "2", "--ef-construction", "9"],
            r#"no key "ef_construction""#,
            ivfpq_takes,
        ),
        (
            &["--index", "hnsw", "--m", "8", "--param", "m=9"],
            "m given both as a flag and as --param",
            "invalid parameter",
        ),
        (
            &["--index", "hnsw", "--param", "m"],
            r#""m": expected key=value"#,
            "invalid parameter",
        ),
        (
            &["--index", "diskann"],
            r#"unknown index kind "diskann"; registered: flat, hnsw, ivfpq, qg"#,
            "invalid parameter",
        ),
    ];
    for (i, (extra, refused, takes)) in cases.iter().enumerate() {
        let db = format!("db-{i}");
        let mut args = vec!["db", "create", &db, "--dim", "4", "--metric", "l2"];
        args.extend_from_slice(extra);
        fails(&args, d, refused);
        fails(&args, d, takes);
        fails(&args, d, "invalid parameter");
        assert_nothing_created(&d.join(&db));
    }
    // An empty directory made beforehand stays empty.
    std::fs::create_dir(d.join("empty")).unwrap();
    fails(
        &[
            "db", "create", "empty", "--dim", "4", "--metric", "l2", "--index", "ivfpq", "--m",
            "25",
        ],
        d,
        "25",
    );
    assert_eq!(std::fs::read_dir(d.join("empty")).unwrap().count(), 0);
    // The flags an index takes are accepted and kept; the rest take their defaults.
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec!["db", "create", name, "--dim", "4", "--metric", "l2"];
        args.extend_from_slice(extra);
        ok(&args, d)
    };
    let config = |db: &str| -> serde_json::Value {
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&["db", "stats", db, "--json"], d)).unwrap();
        assert!(!d.join(db).join("omen.json").exists());
        stats
    };
    create(
        "ivf",
        &[
            "--index",
            "ivfpq",
            "--nlist",
            "4",
            "--pq-m",
            "2",
            "--nbits",
            "8",
            "--train-size",
            "300",
            "--nprobe",
            "3",
        ],
    );
    let c = config("ivf");
    let p = &c["index_params"];
    assert_eq!(c["index"], "ivfpq", "{c}");
    assert_eq!(p["nlist"], 4, "{c}");
    assert_eq!(p["m"], 2, "{c}");
    assert_eq!(p["nbits"], 8, "{c}");
    assert_eq!(p["train_size"], 300, "{c}");
    assert_eq!(p["nprobe"], 3, "{c}");
    assert!(p.get("ef_search").is_none(), "{c}");
    create("ivf-defaults", &["--index", "ivfpq"]);
    let c = config("ivf-defaults");
    let p = &c["index_params"];
    assert_eq!(p["nlist"], 256, "{c}");
    assert_eq!(p["m"], 2, "{c}");
    assert_eq!(p["nbits"], 4, "{c}");
    assert_eq!(p["train_size"], 39 * 256, "{c}");
    create(
        "hnsw",
        &["--index", "hnsw", "--m", "8", "--ef-search", "50"],
    );
    let c = config("hnsw");
    let p = &c["index_params"];
    assert_eq!(p["m"], 8, "{c}");
    assert_eq!(p["ef_construction"], 200, "{c}");
    assert_eq!(p["ef_search"], 50, "{c}");
    assert!(p.get("nlist").is_none(), "{c}");
    create(
        "hnsw-param",
        &[
            "--index",
            "hnsw",
            "-p",
            "m=6",
            "--param",
            "keep-pruned=true",
        ],
    );
    let c = config("hnsw-param");
    assert_eq!(c["index_params"]["m"], 6, "{c}");
    assert_eq!(c["index_params"]["keep_pruned"], true, "{c}");
    create("hnsw-defaults", &["--index", "hnsw"]);
    let c = config("hnsw-defaults");
    assert_eq!(c["index_params"]["m"], 16, "{c}");
    assert_eq!(c["index_params"]["ef_construction"], 200, "{c}");
    ok(&["db", "create", "flat", "--dim", "4", "--metric", "l2"], d);
    let c = config("flat");
    assert_eq!(c["index"], "flat", "{c}");
    assert_eq!(c["index_params"], serde_json::json!({}), "{c}");
    // An unknown index is refused as before, whatever else is given.
    fails(
        &[
            "db", "create", "bad", "--dim", "4", "--metric", "l2", "--index", "lsh", "--m", "4",
        ],
        d,
        r#"invalid parameter index: unknown index kind "lsh"; registered: flat, hnsw, ivfpq, qg"#,
    );
    assert_nothing_created(&d.join("bad"));
}

/// `omen db search` refuses a search flag the collection's index does not take
/// (it would be ignored), naming what that index takes, and prints no results.
#[test]
fn db_search_refuses_parameters_the_index_does_not_take() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_fvecs(&d.join("v.fvecs"), 300);
    write_fvecs(&d.join("q.fvecs"), 3);
    for index in ["flat", "hnsw", "ivfpq", "qg"] {
        let mut create = vec![
            "db", "create", index, "--dim", "4", "--metric", "l2", "--index", index,
        ];
        if index == "ivfpq" {
            create.extend(["--nlist", "4", "--pq-m", "2", "--train-size", "256"]);
        }
        if index == "qg" {
            create.extend(["-p", "train_at=16"]);
        }
        ok(&create, d);
        ok(&["db", "import", index, "v.fvecs"], d);
    }
    let search = |db: &str, extra: &[&str]| {
        let mut a = vec!["db", "search", db, "--queries", "q.fvecs", "-k", "2"];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let refused: &[(&str, &[&str], &str)] = &[
        (
            "ivfpq",
            &["--ef", "64"],
            r#"ivfpq search parameters have no key "ef" (valid: nprobe, rerank_factor)"#,
        ),
        ("ivfpq", &["--nprobe", "2", "--ef", "64"], r#"no key "ef""#),
        (
            "hnsw",
            &["--nprobe", "2"],
            r#"hnsw search parameters have no key "nprobe" (valid: ef)"#,
        ),
        (
            "hnsw",
            &["--rerank", "5"],
            r#"no key "rerank_factor" (valid: ef)"#,
        ),
        (
            "hnsw",
            &["--ef", "64", "--nprobe", "2", "--rerank", "5"],
            r#"no keys "nprobe", "rerank_factor""#,
        ),
        ("hnsw", &["-p", "ef=0"], "ef: must be at least 1"),
        (
            "flat",
            &["--ef", "64"],
            r#"flat search parameters have no key "ef" (it takes none)"#,
        ),
        ("flat", &["--nprobe", "2"], "(it takes none)"),
        ("flat", &["--rerank", "5"], r#"no key "rerank_factor""#),
    ];
    for (db, extra, needle) in refused {
        let args = search(db, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, d, needle);
        assert!(omen(&args, d).stdout.is_empty(), "{args:?}");
    }
    // What each index takes is accepted: three result lines each.
    for (db, extra) in [
        ("flat", &[][..]),
        ("hnsw", &["--ef", "64"][..]),
        ("ivfpq", &["--nprobe", "2", "--rerank", "5"][..]),
        ("ivfpq", &["--param", "nprobe=2", "-p", "rerank=5"][..]),
    ] {
        let args = search(db, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&args, d);
        assert_eq!(out.lines().count(), 3, "{db}: {out}");
        assert!(out.starts_with("query 0: 0 (0.0000)"), "{db}: {out}");
    }
}

/// Without a terminal, `omen db import` writes exactly its lines (the `acked`
/// lines and the summary) to stdout and nothing to stderr: no progress bar.
#[test]
fn db_import_without_a_terminal_prints_no_progress() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_fvecs(&d.join("v.fvecs"), 1050);
    ok(&["db", "create", "db", "--dim", "4", "--metric", "l2"], d);
    let o = omen(
        &["db", "import", "db", "v.fvecs", "--batch", "300", "--ack"],
        d,
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        o.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.ends_with(" live\n") || out.ends_with("(searched exactly until indexed)\n"),
        "{out:?}"
    );
    assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["acked 299", "acked 599", "acked 899", "acked 1049"],
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[4].starts_with("imported 1050 vectors in "), "{out}");
    assert!(lines[4].contains(" vectors/s, durable ingest, "), "{out}");
    // How far the background indexer got by the end depends on the machine's
    // load: the line may add "; N rows saved unindexed (...)".
    assert!(lines[4].contains(", batches of 300); 1050 live"), "{out}");
}

/// On a terminal (a pseudo-terminal from util-linux `script`), `omen db import`
/// draws a progress bar on stderr; stdout, redirected to a file, holds the same
/// lines as without a terminal.
#[test]
fn db_import_on_a_terminal_draws_a_progress_bar_on_stderr() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let script_works = Command::new("script")
        .args(["-qec", "true", "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !script_works {
        eprintln!("skipped: util-linux `script` (for a pseudo-terminal) is not available");
        return;
    }
    write_fvecs(&d.join("v.fvecs"), 1050);
    ok(&["db", "create", "db", "--dim", "4", "--metric", "l2"], d);
    let cmd = format!(
        "{} db import db v.fvecs --batch 300 --ack > stdout.txt",
        env!("CARGO_BIN_EXE_omen")
    );
    let o = {
        let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(d)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert!(o.status.success(), "{o:?}");
    // What the terminal showed: stderr only.
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains("/1,050 rows"), "{tty:?}");
    assert!(
        !tty.contains("acked") && !tty.contains("imported"),
        "{tty:?}"
    );
    let out = std::fs::read_to_string(d.join("stdout.txt")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["acked 299", "acked 599", "acked 899", "acked 1049"],
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[4].starts_with("imported 1050 vectors in "), "{out}");
    assert!(!out.contains('\x1b'), "{out:?}");
}

/// Every file of `dir` (recursively) with its bytes, sorted.
fn dir_image(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// `stats`, `get`, `search` and `verify` write nothing to the directory, even
/// with a log tail to replay and rows left unindexed; `checkpoint
/// --wait-indexed` then saves the index work and empties the log.
#[test]
fn db_read_commands_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_fvecs(&d.join("v.fvecs"), 3000);
    write_fvecs(&d.join("q.fvecs"), 5);
    ok(
        &[
            "db", "create", "db", "--dim", "4", "--metric", "l2", "--index", "hnsw",
        ],
        d,
    );
    // The import's checkpoint holds the whole index: otherwise the next
    // writer's background indexer would index the rest, and its close would
    // checkpoint (log tail and all) or not depending on how far it got.
    ok(&["db", "import", "db", "v.fvecs", "--wait-indexed"], d);
    // A log tail: single writes after the import's checkpoint (each below the
    // close-checkpoint thresholds, so it stays in the log; its row is replayed
    // into storage unindexed by every open).
    ok(
        &["db", "insert", "db", "--id", "x", "--vector", "1,2,3,4"],
        d,
    );
    ok(&["db", "delete", "db", "--id", "7"], d);
    // And a torn record at its end, which a writer's open would cut off.
    let wal = std::fs::read_dir(d.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .unwrap();
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes.extend_from_slice(&[0x5A; 21]);
    std::fs::write(&wal, bytes).unwrap();
    let before = dir_image(&d.join("db"));
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["db", "stats", "db", "--json"], d)).unwrap();
    assert_eq!(stats["replayed_records"], 2, "{stats}");
    assert_eq!(stats["torn_log_bytes"], 21, "{stats}");
    assert_eq!(stats["len"], 3000, "{stats}");
    assert_eq!(ok(&["db", "get", "db", "--id", "x"], d).trim(), "1,2,3,4");
    let out = ok(&["db", "search", "db", "--queries", "q.fvecs", "--json"], d);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(!out.contains("\"7\""), "a deleted id was found: {out}");
    let out = ok(&["db", "verify", "db"], d);
    assert!(out.starts_with("ok: 3000 live ids, 3001 rows,"), "{out}");
    assert_eq!(
        dir_image(&d.join("db")),
        before,
        "a read command changed the directory"
    );
    // A writer command may write: checkpoint with the index work included.
    let out = ok(&["db", "checkpoint", "db", "--wait-indexed"], d);
    assert!(out.ends_with("bytes written, 0 rows unindexed\n"), "{out}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["db", "stats", "db", "--json"], d)).unwrap();
    assert_eq!(stats["replayed_records"], 0, "{stats}");
    assert_eq!(stats["unindexed_rows"], 0, "{stats}");
}

/// The default build reads ann-benchmarks HDF5 files that h5py wrote (the
/// committed fixtures of `datasets/tests/fixtures`, chunked with gzip and
/// shuffle): `dataset info`, `db import` of `train`, `db search` with
/// `FILE.hdf5:test`, and a clear error for a dataset the file does not hold.
#[test]
fn hdf5_files_written_by_h5py_import_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/tests/fixtures");
    let file = dir.path().join("chunked-gzip.hdf5");
    std::fs::copy(fixtures.join("chunked-gzip.hdf5"), &file).unwrap();
    let f = file.to_str().unwrap();
    let info = ok(&["dataset", "info", f], dir.path());
    assert!(
        info.contains("base 200 × 8, queries 20, metric l2, ground truth k = 10"),
        "{info}"
    );
    ok(
        &["db", "create", "c", "--dim", "8", "--metric", "l2"],
        dir.path(),
    );
    let out = ok(&["db", "import", "c", f], dir.path());
    assert!(out.contains("200 live"), "{out}");
    let test = format!("{f}:test");
    let out = ok(
        &["db", "search", "c", "--queries", &test, "-k", "1", "--json"],
        dir.path(),
    );
    assert_eq!(out.lines().count(), 20, "{out}");
    let missing = format!("{f}:nope");
    let o = omen(&["db", "import", "c", &missing], dir.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no dataset \"nope\""),
        "{err}"
    );
}

#[test]
fn bench_runbook_runs_and_refuses_bad_steps() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(
        &[
            "dataset",
            "gen",
            "ds",
            "--rows",
            "800",
            "--queries",
            "20",
            "--dim",
            "8",
            "-k",
            "10",
        ],
        d,
    );
    std::fs::write(
        d.join("sys.toml"),
        "name = \"x\"\ndataset = \"x\"\nthreads = [1]\nstorage = [\"memory\"]\npython = false\ndurable_ingest = false\n\
         [[indexes]]\nkind = \"flat\"\n\
         [[indexes]]\nkind = \"hnsw\"\nbuild = { m = 8, ef_construction = 64 }\nsweep = [{ ef = 64 }]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("churn.yaml"),
        "ds:\n  max_pts: 600\n  1: {operation: insert, start: 0, end: 500}\n  2: {operation: search}\n  3: {operation: delete, start: 100, end: 300}\n  4: {operation: replace, tags_start: 0, tags_end: 50, ids_start: 700, ids_end: 750}\n  5: {operation: search}\n",
    )
    .unwrap();
    let out = ok(
        &[
            "bench",
            "runbook",
            "churn.yaml",
            "--dataset",
            "ds",
            "--config",
            "sys.toml",
            "--no-peers",
            "--reports",
            "rep",
            "--data-dir",
            ".",
        ],
        d,
    );
    assert!(out.contains("omen-flat/memory"), "{out}");
    let report = d.join("rep/runbook-churn-ds");
    for f in [
        "report.md",
        "results.json",
        "recall-per-step.svg",
        "qps-per-step.svg",
    ] {
        assert!(report.join(f).is_file(), "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    let flat = &json["systems"][0];
    assert_eq!(flat["name"], "omen-flat/memory");
    assert_eq!(flat["mean_recall"], 1.0);
    assert_eq!(flat["stale"], 0);
    // --render-only rewrites the report from results.json.
    std::fs::remove_file(report.join("report.md")).unwrap();
    ok(
        &[
            "bench",
            "runbook",
            "churn.yaml",
            "--dataset",
            "ds",
            "--config",
            "sys.toml",
            "--reports",
            "rep",
            "--render-only",
        ],
        d,
    );
    assert!(report.join("report.md").is_file());

    // Bad input: one line naming the step and the problem (refused before anything
    // runs; the progress lines before it say only what was loaded).
    let cases = [
        ("ds:\n  1: {operation: insert, start: 0, end: 10}\n  2: {operation: insert, start: 9, end: 12}\n  3: {operation: search}\n", "step 2 (insert 9..12): tag 9 is live already"),
        ("ds:\n  1: {operation: insert, start: 0, end: 900}\n  2: {operation: search}\n", "step 1 (insert 0..900): rows 0..900 reach past the dataset's 800 rows"),
        ("ds:\n  1: {operation: insert, start: 0, end: 10}\n  2: {operation: delete, start: 10, end: 11}\n  3: {operation: search}\n", "step 2 (delete 10..11): tag 10 is not live"),
        ("ds:\n  max_pts: 5\n  1: {operation: insert, start: 0, end: 10}\n  2: {operation: search}\n", "step 1 (insert 0..10): max_pts 5 exceeded"),
        ("ds:\n  1: {operation: merge}\n", "step 1: unknown operation \"merge\""),
        ("ds:\n  1: {operation: search\n", "not YAML"),
    ];
    for (text, needle) in cases {
        std::fs::write(d.join("bad.yaml"), text).unwrap();
        let o = omen(
            &[
                "bench",
                "runbook",
                "bad.yaml",
                "--dataset",
                "ds",
                "--config",
                "sys.toml",
                "--no-peers",
                "--reports",
                "rep",
                "--data-dir",
                ".",
            ],
            d,
        );
        assert!(!o.status.success(), "{text}");
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.trim().lines().last().unwrap_or("");
        assert!(
            last.contains(needle) && last.contains("bad.yaml"),
            "{text}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!d.join("rep/runbook-bad-ds").exists());
    }
    fails(&["bench", "runbook", "churn.yaml"], d, "needs --dataset");
    fails(
        &["bench", "runbook", "--dataset", "ds"],
        d,
        "usage: omen bench runbook",
    );
}
