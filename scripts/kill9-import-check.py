#!/usr/bin/env python3
"""Outside check of durable ingest under kill -9, through the `omen` CLI only.

Issue 12's check: kill -9 every 0.05-4 s during 20 imports of 20,000 vectors into an
HNSW collection, then `omen db verify` and `omen db get` of sampled acknowledged ids.
Each import is `omen db import DIR FILE --ids IDS --ack --skip-existing` (group
commit), restarted after every kill until it exits 0 by itself. Reported per import:
its cycles, how long each restarted process lived and how many rows it acknowledged
(`acked <row>` lines on stdout). Fails (exit 1) if an acknowledged id is missing or
differs after the run, if verify fails, or if a restart that lived at least
--min-life seconds acknowledged nothing.

    scripts/kill9-import-check.py [--omen target/release/omen] [--imports 20]
        [--rows 20000] [--dim 64] [--seed 1] [--min-life 1.0] [--dir DIR]

Standard library only; the vectors are written as .fbin (u32 rows, u32 dim, f32s).
"""

import argparse
import array
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time


def write_fbin(path, rows, dim, rng):
    data = array.array("f", (rng.gauss(0.0, 1.0) for _ in range(rows * dim)))
    with open(path, "wb") as f:
        f.write(struct.pack("<II", rows, dim))
        data.tofile(f)
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--omen", default="target/release/omen")
    ap.add_argument("--imports", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-life", type=float, default=1.0)
    ap.add_argument("--kill-min", type=float, default=0.05)
    ap.add_argument("--kill-max", type=float, default=4.0)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--dir", default=None, help="work directory (default: a new temporary one, removed)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    work = args.dir or tempfile.mkdtemp(prefix="omen-kill9-")
    os.makedirs(work, exist_ok=True)
    col = os.path.join(work, "col")
    shutil.rmtree(col, ignore_errors=True)
    omen = os.path.abspath(args.omen)

    def run(*a, check=True):
        p = subprocess.run([omen, *a], capture_output=True, text=True)
        if check and p.returncode != 0:
            sys.exit(f"kill9-check: {' '.join(a)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    run("db", "create", col, "--dim", str(args.dim), "--metric", "l2", "--index", "hnsw")
    acked = {}  # id -> (file index, row)
    vectors = []
    failures = []
    summary = []
    for j in range(args.imports):
        fpath = os.path.join(work, f"part{j}.fbin")
        ipath = os.path.join(work, f"part{j}.ids")
        vectors.append(write_fbin(fpath, args.rows, args.dim, rng))
        with open(ipath, "w") as f:
            f.writelines(f"p{j}-{i}\n" for i in range(args.rows))
        cycles = []
        while True:
            life = rng.uniform(args.kill_min, args.kill_max)
            t0 = time.monotonic()
            p = subprocess.Popen(
                [omen, "db", "import", col, fpath, "--ids", ipath, "--ack", "--skip-existing",
                 "--durability", "group"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, err = p.communicate(timeout=life)
                killed = False
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                out, err = p.communicate()
                killed = True
            lived = time.monotonic() - t0
            rows = [int(line.split()[1]) for line in out.splitlines() if line.startswith("acked ")]
            # `acked <row>`: every row up to it is durable (batches in order).
            last = max(rows) if rows else -1
            for i in range(last + 1):
                acked.setdefault(f"p{j}-{i}", (j, i))
            cycles.append({"lived_s": round(lived, 3), "killed": killed, "acks": len(rows), "last_row": last})
            if not killed:
                if p.returncode != 0:
                    sys.exit(f"kill9-check: import {j} exited {p.returncode}: {err.strip()}")
                break
        restarts = cycles[1:]
        for c in restarts:
            if c["lived_s"] >= args.min_life and c["acks"] == 0:
                failures.append(f"import {j}: a restart lived {c['lived_s']} s and acknowledged nothing")
        summary.append({"import": j, "cycles": len(cycles), "per_cycle": cycles})
        print(f"import {j}: {len(cycles)} cycles, "
              + ", ".join(f"{c['lived_s']}s/{c['acks']} acks{'' if c['killed'] else ' (done)'}" for c in cycles),
              flush=True)

    v = run("db", "verify", col, check=False)
    if v.returncode != 0:
        failures.append(f"verify exited {v.returncode}: {v.stdout.strip()} {v.stderr.strip()}")
    sample = rng.sample(sorted(acked), min(args.samples, len(acked)))
    missing = 0
    for ident in sample:
        j, i = acked[ident]
        g = run("db", "get", col, "--id", ident, "--json", check=False)
        if g.returncode != 0:
            missing += 1
            failures.append(f"acknowledged id {ident} not found: {g.stderr.strip()}")
            continue
        # The JSON holds each f32 in its shortest round-trip form: compare as f32.
        got = array.array("f", json.loads(g.stdout)["vector"])
        want = vectors[j][i * args.dim:(i + 1) * args.dim]
        if got != want:
            failures.append(f"acknowledged id {ident} has another vector")
    kills = sum(c["killed"] for s in summary for c in s["per_cycle"])
    long_restarts = [c for s in summary for c in s["per_cycle"][1:] if c["lived_s"] >= args.min_life]
    print(json.dumps({
        "imports": args.imports, "rows_each": args.rows, "dim": args.dim, "kills": kills,
        "acknowledged_ids": len(acked), "sampled": len(sample), "missing": missing,
        "restarts_living_at_least_min_life": len(long_restarts),
        "of_which_acknowledged_rows": sum(c["acks"] > 0 for c in long_restarts),
        "restarts_total": sum(len(s["per_cycle"]) - 1 for s in summary),
        "restarts_that_acknowledged": sum(c["acks"] > 0 for s in summary for c in s["per_cycle"][1:]),
        "verify": v.stdout.strip(), "failures": failures,
    }, indent=1))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
