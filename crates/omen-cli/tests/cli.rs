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
    for index in ["flat", "hnsw", "ivfpq"] {
        let db = format!("db-{index}");
        let mut create = vec![
            "db", "create", &db, "--dim", "4", "--metric", "l2", "--index", index,
        ];
        if index == "ivfpq" {
            create.extend(["--nlist", "4", "--pq-m", "2"]);
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
    fails(&["bench", "no-such-suite"], d, "neither a built-in suite");
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
        // Every write was logged and replays at the next open.
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&["db", "stats", &db, "--json"], d)).unwrap();
        assert_eq!(stats["len"], 1050, "{stats}");
        assert_eq!(stats["replayed_records"], 6, "{stats}");
        assert_eq!(stats["checkpoint_gen"], 1, "{stats}");
        assert!(stats["log_bytes"].as_u64().unwrap() > 1050 * 16, "{stats}");
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
        ok(&["db", "import", &db, "ds/base.fbin"], d);
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
                "--ef",
                "400",
            ];
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
