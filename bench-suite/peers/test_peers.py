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
    assert "filter" not in report  # only a filtered run reports one
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


# ---------------------------------------------------------------------------
# Filtered search (--filter)

# (system, build params, search params generous enough for recall 0.9 at 1 %
# selectivity (IVF: every list probed), least recall): every system whose Python
# API filters. FAISS's IVF without the refine ranks by 4-bit PQ estimates alone.
FILTER_CASES = [
    ("faiss-flat", {}, {}, 0.99),
    ("faiss-hnsw", {"M": 16, "efConstruction": 100}, {"efSearch": 512}, 0.9),
    ("faiss-ivfflat", {"nlist": 32}, {"nprobe": 32}, 0.99),
    ("faiss-ivfpq", {"nlist": 32, "m": 25}, {"nprobe": 32, "k_factor": 20}, 0.9),
    ("faiss-ivfpqfs", {"nlist": 32, "m": 25}, {"nprobe": 32, "k_factor": 20}, 0.9),
    ("faiss-ivfpqfs", {"nlist": 32, "m": 25, "refine": False}, {"nprobe": 32}, 0.4),
    ("hnswlib", {"M": 16, "ef_construction": 100}, {"ef": 64}, 0.9),
    ("omen-flat", {}, {}, 0.99),
    ("omen-hnsw", {"m": 16, "ef_construction": 100}, {"ef": 128}, 0.9),
    ("omen-ivfpq", {"nlist": 32, "m": 25, "nbits": 4}, {"nprobe": 32, "rerank_factor": 20}, 0.9),
]
FILTER_IDS = [f"{s}{'' if b.get('refine', True) else '-norefine'}" for s, b, _, _ in FILTER_CASES]
UNSUPPORTED = ["usearch", "scann", "glass", "symqg", "svs-vamana"]
# Queries of the filtered tests: hnswlib calls Python per candidate, slowly.
NQF = 40


def _mask(selectivity: float, n: int = N, seed: int = 11) -> np.ndarray:
    """Exactly round(selectivity * n) rows allowed, chosen at random."""
    m = np.zeros(n, dtype=bool)
    m[np.random.default_rng(seed).choice(n, size=round(selectivity * n), replace=False)] = True
    return m


def _filtered_truth(base, queries, metric, mask, k=K) -> np.ndarray:
    if metric == "ip":
        score = queries @ base.T
    else:
        score = 2 * queries @ base.T - (base**2).sum(axis=1)[None, :]
    score[:, ~mask] = -np.inf
    return np.argsort(-score, axis=1)[:, :k]


_FILTERED: dict = {}


def _built_filtered(case: int):
    """An adapter per FILTER_CASES entry (l2), built as run() builds it, with the
    unfiltered batch ids of each of its CONFIGS sweep points (taken before any
    filter is set)."""
    if case not in _FILTERED:
        system, build_given, _, _ = FILTER_CASES[case]
        cls = op.SYSTEMS[system]
        build = op._check_keys(system, build_given, cls.build_keys)
        sweep = [op._check_keys(system, p, cls.sweep_keys) for p in CONFIGS[system][1]]
        if build.get("refine") is False:
            sweep = [{**p, "k_factor": 1} for p in sweep]
        base, queries = _data("l2")
        cls.check(build, sweep, K, N)
        adapter = cls(DIM, "l2", build)
        adapter.k = K
        adapter.train_size = N
        if adapter.needs_training():
            adapter.set_threads(1)
            adapter.train(base)
        adapter.add(base, 1)
        queries = adapter.prepare_queries(queries)[:NQF]
        unfiltered = []
        for p in sweep:
            adapter.set_search(p)
            unfiltered.append(op.as_ids(adapter.search_batch(queries, K, 2), NQF, K))
        _FILTERED[case] = (adapter, sweep, queries, unfiltered)
    return _FILTERED[case]


def _need_filter_case(case: int) -> None:
    system = FILTER_CASES[case][0]
    _need(system)
    if system in SLOW and os.environ.get("OMEN_PEERS_SLOW_TESTS") != "1":
        pytest.skip(f"{system}: slow to train (set OMEN_PEERS_SLOW_TESTS=1)")


def test_filter_support_is_declared() -> None:
    supported = {s for s, _, _, _ in FILTER_CASES}
    names = [n for n in op.SYSTEMS if not n.startswith("omen-")] + ["omen-flat", "omen-hnsw", "omen-ivfpq"]
    assert set(names) == supported | set(UNSUPPORTED)
    for name in names:
        cls = op.SYSTEMS[name]
        assert cls.supports_filter == (name in supported), name
        if not cls.supports_filter:
            assert cls.no_filter, name


@pytest.mark.parametrize("selectivity", [0.1, 0.01])
@pytest.mark.parametrize("case", range(len(FILTER_CASES)), ids=FILTER_IDS)
def test_filtered_search(case: int, selectivity: float) -> None:
    """Every returned id is allowed, k come back (at least k rows are allowed),
    recall against brute force over the allowed rows is high, and single and
    batch searches agree."""
    _need_filter_case(case)
    system, _, params, least = FILTER_CASES[case]
    adapter, sweep, queries, _ = _built_filtered(case)
    base, raw_queries = _data("l2")
    mask = _mask(selectivity)
    adapter.set_filter(mask)
    adapter.set_search(op._check_keys(system, params, adapter.sweep_keys))
    ids = op.as_ids(adapter.search_batch(queries, K, 2), NQF, K)
    assert (ids >= 0).all(), f"{system} {selectivity}: {(ids < 0).sum()} missing results"
    assert mask[ids].all(), f"{system} {selectivity}: a row outside the filter was returned"
    adapter.set_threads(1)
    single = np.stack(
        [np.asarray(adapter.search_one(queries[i : i + 1], K)).reshape(-1) for i in range(NQF)]
    )
    assert mask[single].all()
    agree = np.mean([len(set(a) & set(b)) / K for a, b in zip(single, ids)])
    assert agree >= 0.99, f"{system} {selectivity}: single/batch ids agree on {agree:.3f}"
    truth = _filtered_truth(base, raw_queries[:NQF], "l2", mask)
    recall = _recall(ids, truth)
    assert recall >= least, f"{system} {selectivity}: filtered recall@10 {recall:.3f} < {least}"
    assert adapter.filter_how()


@pytest.mark.parametrize("case", range(len(FILTER_CASES)), ids=FILTER_IDS)
def test_filter_keeps_sweep_params(case: int) -> None:
    """With every row allowed, each sweep point returns what it returns unfiltered:
    the sweep's efSearch / nprobe / k_factor (which FAISS's search parameters
    would otherwise reset) still apply under the filter. A filter allowing fewer
    than k rows returns those and pads with -1."""
    _need_filter_case(case)
    system = FILTER_CASES[case][0]
    adapter, sweep, queries, unfiltered = _built_filtered(case)
    adapter.set_filter(np.ones(N, dtype=bool))
    for p, want in zip(sweep, unfiltered):
        adapter.set_search(p)
        got = op.as_ids(adapter.search_batch(queries, K, 2), NQF, K)
        same = (got == want).mean()
        assert same >= 0.99, f"{system} {p}: all-rows filter changed {1 - same:.3f} of the ids"
    few = np.zeros(N, dtype=bool)
    few[[3, 1234, 4321]] = True
    adapter.set_filter(few)
    adapter.set_search(sweep[-1])
    for ids in (
        op.as_ids(adapter.search_batch(queries[:5], K, 2), 5, K),
        np.stack([np.asarray(adapter.search_one(queries[i : i + 1], K)).reshape(-1) for i in range(5)]),
    ):
        assert (ids[:, 3:] == -1).all(), f"{system}: {ids}"
        # An approximate index may miss one of the three (IVF: an unprobed list).
        assert all(set(row[:3]) <= {3, 1234, 4321, -1} for row in ids), f"{system}: {ids}"


def _filter_cli(system: str, tmp_path: Path, filter_bytes: bytes | None, n: int = 2000,
                build: dict | None = None, sweep: list | None = None):
    base, queries = _data("l2")
    _write_fbin(tmp_path / "b.fbin", base[:n])
    _write_fbin(tmp_path / "q.fbin", queries[:20])
    cmd = [sys.executable, str(HERE / "omen_peers.py"), "--system", system,
           "--base", str(tmp_path / "b.fbin"), "--queries", str(tmp_path / "q.fbin"),
           "--metric", "l2", "--k", str(K), "--threads", "2",
           "--build-params", json.dumps(build or {}), "--sweep", json.dumps(sweep or [{}]),
           "--warmup", "5", "--batch-runs", "1", "--ids-dir", str(tmp_path / "ids")]
    if filter_bytes is not None:
        (tmp_path / "mask.bin").write_bytes(filter_bytes)
        cmd += ["--filter", str(tmp_path / "mask.bin")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("system", UNSUPPORTED)
def test_unsupported_filter_exits_3(system: str, tmp_path: Path) -> None:
    """One `unsupported:` line on stderr, status 3, nothing on stdout, nothing
    built (the ids directory is never made). Decided from the adapter class alone,
    so it holds whether or not the library is installed."""
    proc = _filter_cli(system, tmp_path, _mask(0.1, 2000).astype(np.uint8).tobytes())
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    prefix = f"unsupported: {system} has no filtered search in its Python API ("
    assert lines[0].startswith(prefix) and lines[0].endswith(")"), lines[0]
    assert not (tmp_path / "ids").exists()


@pytest.mark.parametrize(
    "what, raw",
    [
        ("short", bytes(1999)),
        ("long", bytes(2001)),
        ("empty", b""),
        ("byte 2", bytes(500) + b"\x02" + bytes(1499)),
        ("byte 255", b"\x01" * 1999 + b"\xff"),
        ("text", b"1" * 2000),
    ],
)
def test_malformed_filter_is_an_input_error(what: str, raw: bytes, tmp_path: Path) -> None:
    proc = _filter_cli("faiss-flat", tmp_path, raw)
    assert proc.returncode == 2, f"{what}: {proc.stderr}"
    assert proc.stdout == ""
    assert "omen_peers: error: --filter" in proc.stderr, proc.stderr
    assert not (tmp_path / "ids").exists()  # refused before anything was built


def test_missing_filter_file_is_an_input_error(tmp_path: Path) -> None:
    base, queries = _data("l2")
    _write_fbin(tmp_path / "b.fbin", base[:100])
    _write_fbin(tmp_path / "q.fbin", queries[:5])
    proc = subprocess.run(
        [sys.executable, str(HERE / "omen_peers.py"), "--system", "omen-flat",
         "--base", str(tmp_path / "b.fbin"), "--queries", str(tmp_path / "q.fbin"),
         "--metric", "l2", "--k", str(K), "--threads", "1",
         "--filter", str(tmp_path / "nope.bin"), "--ids-dir", str(tmp_path / "ids")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "omen_peers: error: --filter" in proc.stderr, proc.stderr


def test_read_filter(tmp_path: Path) -> None:
    p = tmp_path / "m.bin"
    p.write_bytes(bytes([1, 0, 0, 1, 1]))
    m = op.read_filter(str(p), 5)
    assert m.dtype == bool and m.tolist() == [True, False, False, True, True]
    with pytest.raises(op.InputError, match="5 bytes, expected exactly 6"):
        op.read_filter(str(p), 6)
    p.write_bytes(bytes([1, 0, 7, 1, 3]))
    with pytest.raises(op.InputError, match=r"byte 2 is 7.*\(2 bytes are neither\)"):
        op.read_filter(str(p), 5)


@pytest.mark.parametrize(
    "system, build, sweep",
    [
        ("faiss-hnsw", {"M": 16, "efConstruction": 100}, [{"efSearch": 64}, {"efSearch": 256}]),
        ("faiss-ivfpqfs", {"nlist": 16, "m": 25}, [{"nprobe": 16, "k_factor": 20}]),
        ("hnswlib", {"M": 16, "ef_construction": 100}, [{"ef": 64}]),
        ("omen-hnsw", {"m": 16, "ef_construction": 100}, [{"ef": 64}, {"ef": 256}]),
    ],
)
def test_filtered_command_line(system: str, build: dict, sweep: list, tmp_path: Path) -> None:
    """A whole filtered run: the report's "filter" object, and every sweep point's
    ids file holds only allowed rows with high recall over them."""
    _need(system)
    mask = _mask(0.1, 2000)
    proc = _filter_cli(system, tmp_path, mask.astype(np.uint8).tobytes(), build=build, sweep=sweep)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    f = report["filter"]
    assert set(f) == {"allowed", "n", "how"}
    assert f["allowed"] == 200 and f["n"] == 2000
    assert isinstance(f["how"], str) and f["how"] and "\n" not in f["how"]
    base, queries = _data("l2")
    truth = _filtered_truth(base[:2000], queries[:20], "l2", mask)
    assert len(report["points"]) == len(sweep)
    for point in report["points"]:
        raw = Path(point["ids_file"]).read_bytes()
        nq, k = np.frombuffer(raw[:8], dtype="<u4")
        ids = np.frombuffer(raw[8:], dtype="<i4").reshape(nq, k)
        assert (nq, k) == (20, K)
        assert (ids >= 0).all() and mask[ids].all()
        assert point["single_batch_id_agreement"] >= 0.99
    assert _recall(ids, truth) > 0.9


# ---------------------------------------------------------------------------
# Runbooks (--runbook): insert, delete, replace and search through each library's
# own API, answered in tags.

RUNBOOK_CASES: dict[str, tuple[dict, dict]] = {
    "hnswlib": ({"M": 16, "ef_construction": 100}, {"ef": 128}),
    "faiss-ivfflat": ({"nlist": 16}, {"nprobe": 16}),
    "usearch": ({"M": 16, "efc": 100}, {"expansion_search": 128}),
    "omen-hnsw": ({"m": 16, "ef_construction": 100}, {"ef": 128}),
    "omen-ivfpq": ({"nlist": 16, "m": 25, "nbits": 4}, {"nprobe": 16, "rerank_factor": 10}),
}
RUNBOOK_STEPS = [
    {"step": 1, "op": "insert", "start": 0, "end": 2000},
    {"step": 2, "op": "search"},
    {"step": 3, "op": "delete", "start": 0, "end": 1000},
    {"step": 4, "op": "replace", "tags_start": 1000, "tags_end": 1200, "ids_start": 3000, "ids_end": 3200},
    {"step": 5, "op": "search"},
    {"step": 6, "op": "insert", "start": 0, "end": 500},
    {"step": 7, "op": "search"},
]


def _runbook_cli(system: str, tmp_path: Path, build: dict, point: dict, steps=RUNBOOK_STEPS):
    base, queries = _data("l2")
    _write_fbin(tmp_path / "b.fbin", base[:4000])
    _write_fbin(tmp_path / "q.fbin", queries[:30])
    (tmp_path / "rb.json").write_text(json.dumps({"steps": steps, "max_tags": 2000, "fresh": True}))
    cmd = [sys.executable, str(HERE / "omen_peers.py"), "--system", system,
           "--base", str(tmp_path / "b.fbin"), "--queries", str(tmp_path / "q.fbin"),
           "--metric", "l2", "--k", str(K), "--threads", "2", "--train-size", "1000",
           "--build-params", json.dumps(build), "--sweep", json.dumps([point]),
           "--batch-runs", "1", "--ids-dir", str(tmp_path / "ids"),
           "--runbook", str(tmp_path / "rb.json"), "--out", str(tmp_path / "out.json")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300), base[:4000], queries[:30]


def _read_ids(path: str) -> np.ndarray:
    raw = np.fromfile(path, dtype="<i4")
    return raw[2:].reshape(raw[0], raw[1])


@pytest.mark.parametrize("system", sorted(RUNBOOK_CASES))
def test_runbook_answers_in_live_tags(system: str, tmp_path: Path) -> None:
    _need(system)
    build, point = RUNBOOK_CASES[system]
    proc, base, queries = _runbook_cli(system, tmp_path, build, point)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "out.json").read_text())
    assert rep["schema"] == op.RUNBOOK_SCHEMA
    assert [s["op"] for s in rep["steps"]] == [s["op"] for s in RUNBOOK_STEPS]
    # The vector each live tag holds after every step, as the runbook says.
    tag_row = np.full(4000, -1)
    searches = iter(s for s in rep["steps"] if s["op"] == "search")
    for s in RUNBOOK_STEPS:
        if s["op"] == "insert":
            tag_row[s["start"]:s["end"]] = np.arange(s["start"], s["end"])
        elif s["op"] == "delete":
            tag_row[s["start"]:s["end"]] = -1
        elif s["op"] == "replace":
            tag_row[s["tags_start"]:s["tags_end"]] = np.arange(s["ids_start"], s["ids_end"])
        else:
            got = _read_ids(next(searches)["ids_file"])
            live = np.nonzero(tag_row >= 0)[0]
            # Every id returned is a live tag: deleted ones never come back.
            assert np.isin(got[got >= 0], live).all(), f"{system} step {s['step']}"
            truth = live[_truth(base[tag_row[live]], queries, "l2")]
            assert _recall(got, truth) >= 0.9, f"{system} step {s['step']}: {_recall(got, truth)}"
    fresh = rep["fresh"]
    assert fresh["rows"] == 1500
    got = _read_ids(fresh["ids_file"])
    live = np.nonzero(tag_row >= 0)[0]
    assert _recall(got, live[_truth(base[tag_row[live]], queries, "l2")]) >= 0.9


@pytest.mark.parametrize(
    "system, build, point",
    [
        ("faiss-hnsw", {"M": 16, "efConstruction": 100}, {"efSearch": 64}),
        ("faiss-ivfpqfs", {"nlist": 16, "m": 25}, {"nprobe": 16, "k_factor": 10}),
        ("scann", {"num_leaves": 20}, {"leaves_to_search": 5, "reorder": 50}),
    ],
)
def test_runbook_without_deletion_exits_3(system: str, build: dict, point: dict, tmp_path: Path) -> None:
    proc, _, _ = _runbook_cli(system, tmp_path, build, point)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unsupported: {system} "), proc.stderr
    assert not (tmp_path / "ids").exists()


def test_runbook_bad_step_is_an_input_error(tmp_path: Path) -> None:
    _need("hnswlib")
    steps = [{"step": 1, "op": "insert", "start": 0, "end": 9000}, {"step": 2, "op": "search"}]
    proc, _, _ = _runbook_cli("hnswlib", tmp_path, {"M": 16, "ef_construction": 100}, {"ef": 64}, steps)
    assert proc.returncode == 2, proc.stderr
    assert "runbook step 1: bad range start=0 end=9000 for 4000 rows" in proc.stderr
