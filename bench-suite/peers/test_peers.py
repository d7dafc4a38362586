"""Tests of the peer adapter `omen_peers.py` on small random data (seconds each).

Run with the interpreter of `.venv-peers` (scripts/setup-peers.sh installs pytest):

    .venv-peers/bin/python -m pytest bench-suite/peers/test_peers.py -q

A system whose library does not import is skipped, not failed; `--list-available`
is what reports it missing.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import omen_peers as op  # noqa: E402

N, NQ, DIM, K = 5000, 100, 50, 10

# (build params, sweep): the last sweep point is the one that must reach recall 0.9.
CONFIGS: dict[str, tuple[dict, list[dict]]] = {
    "faiss-flat": ({}, [{}]),
    "faiss-hnsw": ({"M": 16, "efConstruction": 100}, [{"efSearch": 16}, {"efSearch": 128}]),
    "faiss-ivfflat": ({"nlist": 32}, [{"nprobe": 2}, {"nprobe": 24}]),
    "faiss-ivfpq": (
        {"nlist": 32, "m": 25},
        [{"nprobe": 2, "k_factor": 2}, {"nprobe": 24, "k_factor": 10}],
    ),
    "faiss-ivfpqfs": (
        {"nlist": 32, "m": 25},
        [{"nprobe": 2, "k_factor": 2}, {"nprobe": 24, "k_factor": 10}],
    ),
    "hnswlib": ({"M": 16, "ef_construction": 100}, [{"ef": 16}, {"ef": 128}]),
    "usearch": ({"M": 16, "efc": 100}, [{"expansion_search": 16}, {"expansion_search": 128}]),
    "scann": (
        {"num_leaves": 50},
        [{"leaves_to_search": 5, "reorder": 50}, {"leaves_to_search": 40, "reorder": 200}],
    ),
    "glass": ({"R": 32, "L": 100}, [{"ef": 16}, {"ef": 200}]),
    "symqg": ({"degree": 32, "ef_construction": 100}, [{"ef": 16}, {"ef": 200}]),
    "svs-vamana": (
        {"graph_max_degree": 32, "window_size": 64},
        [{"search_window_size": 16}, {"search_window_size": 200}],
    ),
    # Omen itself through its Python package, on the same path.
    "omen-flat": ({}, [{}]),
    "omen-hnsw": ({"m": 16, "ef_construction": 100}, [{"ef": 16}, {"ef": 128}]),
    "omen-ivfpq": (
        {"nlist": 32, "m": 25, "nbits": 4},
        [{"nprobe": 2, "rerank_factor": 2}, {"nprobe": 24, "rerank_factor": 10}],
    ),
}

# FAISS's IVF{n},PQ{m}x8 from index_factory trains polysemous codes as well (about
# 40 s even on 2,000 vectors here): it runs only with OMEN_PEERS_SLOW_TESTS=1.
SLOW = {"faiss-ivfpq"}

# Parameter sets each system must refuse with InputError before building.
BAD: dict[str, list[tuple[dict, list[dict]]]] = {
    "scann": [
        ({"num_leaves": 50}, [{"leaves_to_search": 51, "reorder": 100}]),  # > num_leaves
        ({"num_leaves": 50}, [{"leaves_to_search": 5, "reorder": 5}]),  # reorder < k
        ({"num_leaves": 50}, [{"leaves_to_search": 5}]),  # reorder missing
        # spherical must be a bool
        ({"num_leaves": 50, "spherical": 1}, [{"leaves_to_search": 5, "reorder": 50}]),
        ({"num_leaves": 0}, [{"leaves_to_search": 5, "reorder": 50}]),
    ],
    "glass": [
        ({"R": 32, "L": 100}, [{"ef": 5}]),  # ef < k
        ({"R": 32, "L": 100}, [{"ef": 14}]),  # ef < 1.5 k: single widens it, batch does not
        ({"R": 32}, [{"ef": 50}]),  # L missing
        ({"R": 32, "L": 100, "quant": 8}, [{"ef": 50}]),  # unknown key
    ],
    "symqg": [
        ({"degree": 48, "ef_construction": 100}, [{"ef": 50}]),  # not a multiple of 32
        ({"degree": 32, "ef_construction": 100, "quantization_bits": 3}, [{"ef": 50}]),
        ({"degree": 32, "ef_construction": 100}, [{"ef": 5}]),  # ef < k
        ({"degree": 32, "ef_construction": 100}, [{"ef": -1}]),
    ],
    # omen's kinds take their keys from the registry (the rest default).
    "omen-hnsw": [
        ({"m": 16, "nlist": 4}, [{"ef": 50}]),  # not an HNSW build parameter
        ({"m": 16, "ef_construction": 100}, [{"nprobe": 4}]),  # not an HNSW knob
        ({"m": 16, "ef_construction": 100}, [{"ef": 0}]),
        ({"m": 1}, [{"ef": 50}]),  # out of range
    ],
    "omen-ivfpq": [
        ({"nlist": 32, "m": 25, "nbits": 4}, [{"ef": 64}]),  # not an IVF parameter
        ({"nlist": 32, "m": 7}, [{"nprobe": 4}]),  # 7 does not divide the dimension
    ],
    "omen-annoy": [({}, [{}])],  # no such kind
    "svs-vamana": [
        ({"graph_max_degree": 32, "window_size": 64}, [{"search_window_size": 5}]),  # < k
        ({"graph_max_degree": 32}, [{"search_window_size": 50}]),  # window_size missing
        ({"graph_max_degree": 32, "window_size": 64, "alpha": 1}, [{"search_window_size": 50}]),
    ],
}


def _available(system: str) -> bool:
    try:
        importlib.import_module(op.SYSTEMS[system].module)
    except Exception:  # noqa: BLE001  (any import failure means "not available")
        return False
    return True


def _need(system: str) -> None:
    if not _available(system):
        pytest.skip(f"{system}: {op.SYSTEMS[system].library} does not import")


def _data(metric: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = rng.standard_normal((NQ, DIM)).astype(np.float32)
    if metric == "ip":
        # As the harness's angular sets: unit vectors, similarity = dot product.
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return base, queries


def _truth(base: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    if metric == "ip":
        score = queries @ base.T
    else:
        score = 2 * queries @ base.T - (base**2).sum(axis=1)[None, :]
    return np.argsort(-score, axis=1)[:, :K]


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth)]))


def _write_fbin(path: Path, data: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.array(data.shape, dtype="<u4").tobytes())
        f.write(np.ascontiguousarray(data, dtype="<f4").tobytes())


_BUILT: dict = {}


def _built(system: str, metric: str):
    """One adapter per (system, metric), built as run() builds it, shared by tests."""
    key = (system, metric)
    if key not in _BUILT:
        cls = op.SYSTEMS[system]
        build_given, sweep_given = CONFIGS[system]
        build = op._check_keys(system, build_given, cls.build_keys)
        sweep = [op._check_keys(system, p, cls.sweep_keys) for p in sweep_given]
        base, queries = _data(metric)
        cls.check(build, sweep, K, N)
        adapter = cls(DIM, metric, build)
        adapter.k = K
        adapter.train_size = N
        # One build thread: OpenMP spinning makes small builds slow on a busy
        # two-core machine. Batch searches below use two.
        if adapter.needs_training():
            adapter.set_threads(1)
            adapter.train(base)
        adapter.add(base, 1)
        truth = _truth(base, queries, metric)
        _BUILT[key] = (adapter, sweep, adapter.prepare_queries(queries), truth)
    return _BUILT[key]


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("system", sorted(CONFIGS))
def test_recall_and_single_batch_agree(system: str, metric: str) -> None:
    _need(system)
    if system in SLOW and os.environ.get("OMEN_PEERS_SLOW_TESTS") != "1":
        pytest.skip(f"{system}: slow to train (set OMEN_PEERS_SLOW_TESTS=1)")
    adapter, sweep, queries, truth = _built(system, metric)
    recalls = []
    for params in sweep:
        adapter.set_search(params)
        batch = adapter.search_batch(queries, K, 2)
        ids = op.as_ids(batch, NQ, K)
        assert ids.dtype.kind == "i"
        assert ids.min() >= -1 and ids.max() < N
        adapter.set_threads(1)
        single = np.stack(
            [np.asarray(adapter.search_one(queries[i : i + 1], K)).reshape(-1) for i in range(NQ)]
        )
        assert single.shape == (NQ, K)
        agree = np.mean([len(set(a) & set(b)) / K for a, b in zip(single, ids)])
        assert agree >= 0.99, f"{system}/{metric} {params}: single/batch ids agree on {agree:.3f}"
        recalls.append(_recall(ids, truth))
    assert recalls[-1] > 0.9, f"{system}/{metric}: recall@10 {recalls} (last must exceed 0.9)"
    assert recalls[-1] >= recalls[0] - 0.02, f"{system}/{metric}: recall fell: {recalls}"
    # The report's fields.
    assert isinstance(adapter.description(), str) and adapter.description()
    assert adapter.version()
    mem = adapter.memory()
    assert mem["index_bytes"] > 0 and mem["index_bytes_method"]


@pytest.mark.parametrize("system", sorted(BAD))
def test_bad_params_refused(system: str) -> None:
    _need(system)
    cls = op.SYSTEMS[system]
    for build_given, sweep_given in BAD[system]:
        with pytest.raises(op.InputError):
            build = op._check_keys(system, build_given, cls.build_keys)
            sweep = [op._check_keys(system, p, cls.sweep_keys) for p in sweep_given]
            cls.check(build, sweep, K, N)
            cls(DIM, "l2", build)


@pytest.mark.parametrize("system", sorted(BAD))
def test_bad_params_exit_2_before_building(system: str, tmp_path: Path) -> None:
    """Through the command line: refused with status 2, nothing written to stdout."""
    _need(system)
    base, queries = _data("l2")
    _write_fbin(tmp_path / "b.fbin", base[:500])
    _write_fbin(tmp_path / "q.fbin", queries[:5])
    build, sweep = BAD[system][0]
    proc = subprocess.run(
        [sys.executable, str(HERE / "omen_peers.py"), "--system", system,
         "--base", str(tmp_path / "b.fbin"), "--queries", str(tmp_path / "q.fbin"),
         "--metric", "l2", "--k", str(K), "--threads", "1",
         "--build-params", json.dumps(build), "--sweep", json.dumps(sweep),
         "--ids-dir", str(tmp_path / "ids")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "omen_peers: error:" in proc.stderr


@pytest.mark.parametrize("system", ["scann", "glass", "symqg", "svs-vamana"])
def test_command_line_report_is_clean_json(system: str, tmp_path: Path) -> None:
    """A whole run on 2,000 vectors: the JSON on stdout parses (glass prints its
    progress on the C stdout, which the adapter sends to stderr) and the ids file
    has the promised layout."""
    _need(system)
    base, queries = _data("ip")
    _write_fbin(tmp_path / "b.fbin", base[:2000])
    _write_fbin(tmp_path / "q.fbin", queries[:20])
    build, sweep = CONFIGS[system]
    if system == "scann":
        build = {"num_leaves": 10}
        sweep = [{"leaves_to_search": 10, "reorder": 100}]
    proc = subprocess.run(
        [sys.executable, str(HERE / "omen_peers.py"), "--system", system,
         "--base", str(tmp_path / "b.fbin"), "--queries", str(tmp_path / "q.fbin"),
         "--metric", "ip", "--k", str(K), "--threads", "2",
         "--build-params", json.dumps(build), "--sweep", json.dumps(sweep[-1:]),
         "--warmup", "5", "--batch-runs", "1", "--train-size", "1000",
         "--ids-dir", str(tmp_path / "ids")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == op.SCHEMA and report["system"] == system
    assert report["dataset"]["n"] == 2000 and report["dataset"]["dim"] == DIM
    (point,) = report["points"]
    assert point["single_batch_id_agreement"] >= 0.99
    raw = Path(point["ids_file"]).read_bytes()
    nq, k = np.frombuffer(raw[:8], dtype="<u4")
    ids = np.frombuffer(raw[8:], dtype="<i4").reshape(nq, k)
    assert (nq, k) == (20, K)
    assert ids.min() >= -1 and ids.max() < 2000
    truth = _truth(base[:2000], queries[:20], "ip")
    assert _recall(ids, truth) > 0.9


def test_list_available_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / "omen_peers.py"), "--list-available"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    # omen's kinds are one entry, `omen-*` (their classes are made on first use).
    fixed = {n for n in op.SYSTEMS if not n.startswith("omen-")} | {op.OMEN_ANY}
    assert set(listing) == fixed
    for name, entry in listing.items():
        assert set(entry) == {"available", "package", "install", "error"}, name
        assert isinstance(entry["available"], bool)
        assert entry["package"] == op.SYSTEMS[name].library
        assert entry["install"] == "bash scripts/setup-peers.sh"
        assert (entry["error"] is None) == entry["available"]
        assert entry["available"] == _available(name), name
    # --check is the same flag.
    again = subprocess.run(
        [sys.executable, str(HERE / "omen_peers.py"), "--check"],
        capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and json.loads(again.stdout).keys() == listing.keys()


def test_list_available_reports_a_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing(op.Adapter):
        library = "no-such-package"
        module = "no_such_module_for_omen_peers"

    monkeypatch.setitem(op.SYSTEMS, "missing", Missing)
    entry = op.list_available()["missing"]
    assert entry["available"] is False
    assert entry["package"] == "no-such-package"
    assert "No module named" in entry["error"]


def test_fixed_ids() -> None:
    # An unsigned "none" sentinel becomes -1; short rows are padded with -1.
    raw = np.array([[3, 2**32 - 1, 1]], dtype=np.uint32)
    assert op._fixed_ids(raw, 1, 4, 10).tolist() == [[3, -1, 1, -1]]
    raw = np.array([[5, 2**64 - 1]], dtype=np.uint64)
    assert op._fixed_ids(raw, 1, 2, 10).tolist() == [[5, -1]]
    # n < k: the columns past n are "no result" whatever the library filled in.
    raw = np.array([[1, 0, 0, 0]], dtype=np.int32)
    assert op._fixed_ids(raw, 1, 4, 2).tolist() == [[1, 0, -1, -1]]
    # The single-query fast path leaves valid ids alone and fixes the rest.
    ok = np.array([4, 3, 2], dtype=np.uint32)
    assert op._one_ids(ok, 3, 10) is ok
    assert op._one_ids(np.array([4, 2**32 - 1, 2], dtype=np.uint32), 3, 10).tolist() == [4, -1, 2]
    with pytest.raises(RuntimeError):
        op._fixed_ids(np.zeros((2, 5), dtype=np.int64), 2, 4, 10)


def test_symqg_padding_keeps_distances() -> None:
    _need("symqg")
    build = {"degree": 32, "ef_construction": 100, "quantization_bits": 0}
    adapter = op.SYSTEMS["symqg"](DIM, "l2", build)
    x = np.random.default_rng(1).standard_normal((3, DIM)).astype(np.float32)
    p = adapter.prepare_queries(x)
    assert p.shape == (3, 64) and p.dtype == np.float32 and p.flags.c_contiguous
    assert np.array_equal(p[:, :DIM], x) and not p[:, DIM:].any()
