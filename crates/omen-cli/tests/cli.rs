//! The `omen` binary end to end: dataset generation, the db commands, and clear
//! one-line errors with a non-zero exit status.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Command, Output};

fn omen(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omen"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
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
        // A damaged snapshot is a corruption error naming the file and offset.
        let snap = d.join(&db).join("snapshot.omen");
        let mut bytes = std::fs::read(&snap).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&snap, bytes).unwrap();
        fails(&["db", "verify", &db], d, "snapshot.omen at byte");
    }
    fails(
        &["db", "create", "bad", "--dim", "4", "--metric", "manhattan"],
        d,
        "metric",
    );
    fails(&["dataset", "info", "missing"], d, "no dataset");
    fails(&["bench", "no-such-suite"], d, "neither a built-in suite");
}
