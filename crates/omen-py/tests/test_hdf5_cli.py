"""ann-benchmarks HDF5 files written by h5py, read by the `omen` CLI's default
build (issue 15): `omen dataset info` and `omen db import` / `db search` on fresh
files made here with `datasets/scripts/make_hdf5_fixtures.py`, every layout
ann-benchmarks files come in. The CLI is `$OMEN_EXE` or `target/release/omen`
(CI's release test step builds it)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import h5py  # noqa: E402  (scripts/setup-python.sh installs it)

ROOT = pathlib.Path(__file__).resolve().parents[3]
OMEN = pathlib.Path(os.environ.get("OMEN_EXE", ROOT / "target" / "release" / "omen"))

spec = importlib.util.spec_from_file_location(
    "make_hdf5_fixtures", ROOT / "datasets" / "scripts" / "make_hdf5_fixtures.py"
)
fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixtures)


def omen(*args: str) -> str:
    assert OMEN.exists(), f"{OMEN} not built (cargo build --release -p omen-cli, or set OMEN_EXE)"
    p = subprocess.run([str(OMEN), *args], capture_output=True, text=True)
    assert p.returncode == 0, f"omen {' '.join(args)}: {p.stderr}"
    return p.stdout


@pytest.mark.parametrize(
    "layout,metric",
    [("contiguous", "euclidean"), ("chunked-gzip", "euclidean"), ("latest", "angular")],
)
def test_cli_reads_h5py_files(tmp_path, layout, metric):
    path = tmp_path / f"{layout}.hdf5"
    train, test = fixtures.write(str(path), layout, metric=metric, seed=23, n=300, nq=25, dim=12)
    with h5py.File(path) as f:
        neighbors = f["neighbors"][:]

    info = omen("dataset", "info", str(path))
    want_metric = "l2" if metric == "euclidean" else "cosine"
    assert f"base 300 × 12, queries 25, metric {want_metric}, ground truth k = 10" in info, info

    coll = tmp_path / "coll"
    omen("db", "create", "--dim", "12", "--metric", want_metric, "--index", "flat", str(coll))
    out = omen("db", "import", str(coll), str(path))
    assert "300 live" in out, out
    # The stored vectors are h5py's: bit for bit under L2; unit length under
    # cosine, which stores vectors normalised.
    got = np.asarray(json.loads(omen("db", "get", str(coll), "--id", "17", "--json"))["vector"],
                     dtype=np.float32)
    if want_metric == "l2":
        assert np.array_equal(got, train[17])
    else:
        assert np.allclose(got, train[17] / np.linalg.norm(train[17]), rtol=1e-5, atol=1e-6)

    # Exact search over the imported rows, with the file's own queries, finds the
    # neighbours numpy computed when the file was written.
    lines = omen("db", "search", str(coll), "--queries", f"{path}:test", "-k", "10", "--json")
    results = [json.loads(line) for line in lines.splitlines()]
    assert len(results) == 25
    hits = sum(
        len(set(map(int, r["ids"])) & set(neighbors[r["query"]].tolist())) for r in results
    )
    assert hits / (25 * 10) >= 0.99, hits


def test_cli_names_what_is_wrong(tmp_path):
    path = tmp_path / "a.hdf5"
    fixtures.write(str(path), "contiguous")
    coll = tmp_path / "coll"
    omen("db", "create", "--dim", "8", "--metric", "l2", str(coll))
    p = subprocess.run(
        [str(OMEN), "db", "import", str(coll), f"{path}:nope"], capture_output=True, text=True
    )
    assert p.returncode != 0
    assert 'no dataset "nope"' in p.stderr and "train" in p.stderr, p.stderr
    damaged = tmp_path / "damaged.hdf5"
    damaged.write_bytes(path.read_bytes()[:3000])
    p = subprocess.run([str(OMEN), "dataset", "info", str(damaged)], capture_output=True, text=True)
    assert p.returncode != 0 and str(damaged) in p.stderr, p.stderr
