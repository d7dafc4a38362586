"""Tests of the `omen` Python package: results against numpy brute force, the
durable collection's round trip, and the bad input it must refuse without
changing anything."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import omen


def brute(base: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    b = base.astype(np.float64)
    qq = q.astype(np.float64)
    if metric == "l2":
        d = ((qq[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    elif metric == "ip":
        d = 1.0 - qq @ b.T
    else:
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        qn = qq / np.linalg.norm(qq, axis=1, keepdims=True)
        d = 1.0 - qn @ bn.T
    return np.argsort(d, axis=1, kind="stable")[:, :k], np.sort(d, axis=1)[:, :k]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    return base, queries


# ---------------------------------------------------------------------------
# omen.Index


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_flat_index_is_exact(data, metric):
    base, queries = data
    ix = omen.Index("flat", 16, metric)
    labels = ix.add(base)
    assert labels == range(0, 2000)
    assert len(ix) == 2000
    want_ids, want_d = brute(base, queries, 10, metric)
    got_ids, got_d = ix.search_batch(queries, 10, threads=1)
    assert got_ids.shape == (50, 10) and got_ids.dtype == np.int64
    assert got_d.shape == (50, 10) and got_d.dtype == np.float32
    np.testing.assert_allclose(got_d, want_d, rtol=1e-4, atol=1e-4)
    assert (got_ids == want_ids).mean() > 0.99  # exact ties may swap
    for i in range(5):
        ids, d = ix.search(queries[i], 10)
        assert ids.shape == (10,)
        np.testing.assert_array_equal(ids, got_ids[i])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_hnsw_recall(data, metric):
    base, queries = data
    ix = omen.Index("hnsw", 16, metric, m=16, ef_construction=100)
    ix.add(base, threads=2)
    want, _ = brute(base, queries, 10, metric)
    got, _ = ix.search_batch(queries, 10, threads=2, ef=200)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall > 0.95, recall
    single = np.stack([ix.search(q, 10, ef=200)[0] for q in queries])
    np.testing.assert_array_equal(single, got)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_qg_trains_and_walks_codes(data, metric):
    base, queries = data
    ix = omen.Index("qg", 16, metric, train_at=1000)
    assert not ix.is_trained
    ix.add(base[:500])
    assert not ix.is_trained
    ix.add(base[500:], threads=2)
    assert ix.is_trained
    want, _ = brute(base, queries, 10, metric)
    got, _ = ix.search_batch(queries, 10, threads=2, ef=200)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall > 0.95, recall
    single = np.stack([ix.search(q, 10, ef=200)[0] for q in queries])
    np.testing.assert_array_equal(single, got)
    with pytest.raises(ValueError, match="rerank"):
        ix.search(queries[0], 10, rerank=0)
    with pytest.raises(ValueError, match="nprobe"):
        ix.search(queries[0], 10, nprobe=4)
    with pytest.raises(ValueError, match="pq_m"):
        omen.Index("qg", 16, metric, pq_m=5)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivfpq_train_add_search(data, metric):
    base, queries = data
    ix = omen.Index("ivfpq", 16, metric, nlist=16, m=8, nbits=4, train_size=1000)
    assert not ix.is_trained
    ix.train(base[:1000])
    assert ix.is_trained
    ix.add(base)
    want, _ = brute(base, queries, 10, metric)
    got, _ = ix.search_batch(queries, 10, nprobe=16, rerank_factor=50)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall > 0.95, recall
    assert ix.memory_bytes() > 0 and ix.storage_bytes() >= 2000 * 16 * 4


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq", "qg"])
def test_index_remove(data, kind):
    base, queries = data
    params = {"nlist": 8, "m": 8, "nbits": 4} if kind == "ivfpq" else ({"train_at": 500} if kind == "qg" else {})
    ix = omen.Index(kind, 16, "l2", **params)
    if not ix.is_trained:
        ix.train(base)
    ix.add(base)
    gone = np.arange(0, 2000, 2)
    ix.remove(gone)
    assert len(ix) == 1000
    knobs = {"nprobe": 8, "rerank_factor": 10} if kind == "ivfpq" else ({"ef": 128} if kind in ("hnsw", "qg") else {})
    ids, _ = ix.search_batch(queries, 10, **knobs)
    assert (ids % 2 == 1).all(), "a removed label came back"
    truth = 1 + 2 * brute(base[1::2], queries, 10, "l2")[0]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    assert recall >= (1.0 if kind == "flat" else 0.9), recall
    # Labels are never reused: a new row gets the next label.
    assert ix.add(base[:1]) == range(2000, 2001)
    # Bad labels change nothing: never added, removed already, given twice.
    for bad in ([5000], [0], [1, 1], [-1], [3, 0]):
        with pytest.raises(KeyError):
            ix.remove(bad)
    assert len(ix) == 1001
    assert 3 in ix.search(base[3], 1, **knobs)[0]


def test_index_pads_missing_results():
    ix = omen.Index("flat", 2, "l2")
    ix.add(np.array([[0, 0], [1, 1]], dtype=np.float32))
    ids, d = ix.search(np.zeros(2, dtype=np.float32), 5)
    assert list(ids) == [0, 1, -1, -1, -1]
    assert np.isinf(d[2:]).all()


def test_index_converts_real_dtypes_and_non_contiguous(data):
    base, queries = data
    ix = omen.Index("flat", 16, "l2")
    ix.add(base.astype(np.float64))  # converted to float32, as hnswlib does
    wide = np.zeros((50, 32), dtype=np.float32)
    wide[:, ::2] = queries
    strided = wide[:, ::2]
    assert not strided.flags["C_CONTIGUOUS"]
    a, _ = ix.search_batch(strided, 5)
    b, _ = ix.search_batch(queries, 5)
    np.testing.assert_array_equal(a, b)
    ints = np.arange(16, dtype=np.int32)
    ix.search(ints, 1)
    ix.search(list(map(float, range(16))), 1)  # a list is converted too


def test_index_bad_input_changes_nothing(data):
    base, _ = data
    ix = omen.Index("hnsw", 16, "l2")
    ix.add(base[:100])
    with pytest.raises(TypeError, match="real numbers"):
        ix.add(base[:10].astype(np.complex64))
    with pytest.raises(TypeError):
        ix.add(np.array([["a"] * 16], dtype=object))
    with pytest.raises(TypeError):
        ix.add(np.array([["a"] * 16]))
    with pytest.raises(ValueError, match="dimension mismatch"):
        ix.add(np.zeros((3, 15), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        ix.add(np.zeros((3, 16, 1), dtype=np.float32))
    bad = base[:10].copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite value NaN at row 7, component 3"):
        ix.add(bad)
    bad[7, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        ix.add(bad)
    assert len(ix) == 100
    q = base[0]
    with pytest.raises(ValueError, match="k: must be at least 1"):
        ix.search(q, 0)
    with pytest.raises(ValueError, match="k: must be at least 1"):
        ix.search_batch(base[:2], 0)
    with pytest.raises(ValueError, match="non-finite"):
        ix.search(np.full(16, np.nan, dtype=np.float32), 1)
    with pytest.raises(ValueError, match="one vector"):
        ix.search(base[:2], 1)
    with pytest.raises(ValueError, match='hnsw search parameters have no key "nprobe" \\(valid: ef\\)'):
        ix.search(q, 1, nprobe=3)
    with pytest.raises(ValueError, match="ef: must be at least 1"):
        ix.search(q, 1, ef=0)
    with pytest.raises(TypeError):
        ix.search(q, 1, ef="wide")
    with pytest.raises(ValueError, match="ef: expected an integer"):
        ix.search(q, 1, ef=True)
    with pytest.raises(ValueError, match="threads"):
        ix.search_batch(base[:2], 1, threads=0)
    assert len(ix) == 100


def test_index_bad_construction():
    with pytest.raises(ValueError, match="unknown index kind"):
        omen.Index("annoy", 4)
    with pytest.raises(ValueError, match="metric"):
        omen.Index("flat", 4, "hamming")
    with pytest.raises(ValueError, match='hnsw build parameters have no key "nlist"'):
        omen.Index("hnsw", 4, nlist=3)
    with pytest.raises(ValueError, match="dim"):
        omen.Index("flat", 0)
    with pytest.raises(ValueError):
        omen.Index("ivfpq", 10, m=3)  # 3 does not divide 10
    with pytest.raises(ValueError, match="no training step"):
        omen.Index("flat", 4).train(np.zeros((4, 4), dtype=np.float32))


def test_index_search_releases_the_gil(data):
    base, queries = data
    ix = omen.Index("flat", 16, "l2")
    ix.add(base)
    want, _ = ix.search_batch(queries, 10, threads=1)
    out = {}

    def worker(i):
        out[i] = ix.search_batch(queries, 10, threads=1)[0]

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(out[i], want)


# ---------------------------------------------------------------------------
# omen.Collection


def test_collection_round_trip(tmp_path, data):
    base, queries = data
    d = tmp_path / "c"
    ids = [f"doc-{i}" for i in range(500)]
    with omen.Collection.create(d, dim=16, metric="l2", index="hnsw", m=8, ef_construction=64) as c:
        assert c.index == "hnsw" and c.dim == 16 and c.metric == "l2"
        c.insert_batch(ids, base[:500])
        c.upsert("doc-1", base[600])
        c.delete("doc-2")
        c.insert("extra", base[700])
        assert len(c) == 500
        assert "doc-2" not in c and "extra" in c
        np.testing.assert_array_equal(c.get("doc-1"), base[600])
        assert c.get("doc-2") is None
        hits = c.search(base[600], 3, ef=64)
        assert hits[0][0] == "doc-1" and hits[0][1] == pytest.approx(0.0, abs=1e-5)
        # The indexer runs behind the writes: wait for it so the checkpoint saves
        # every row indexed (without the wait it may save any number unindexed,
        # which is correct but would make the count below a race).
        c.wait_indexed()
        assert c.stats()["unindexed_rows"] == 0
        info = c.checkpoint()
        assert info["live"] == 500
        c.insert("after-checkpoint", base[800])
    assert c.closed
    with omen.Collection.open(d) as c:
        assert len(c) == 501
        st = c.stats()
        assert st["len"] == 501 and st["index"] == "hnsw" and st["replayed_records"] == 1
        assert st["index_params"]["m"] == 8 and st["index_params"]["ef_construction"] == 64
        np.testing.assert_array_equal(c.get("after-checkpoint"), base[800])
        np.testing.assert_array_equal(c.get("doc-1"), base[600])
        # Only the replayed row can wait for the background indexer (searched
        # exactly meanwhile); once indexed, single and batch answers compare exactly.
        assert 0 <= st["unindexed_rows"] <= 1 and st["indexing"].startswith("background")
        c.wait_indexed()
        assert c.stats()["unindexed_rows"] == 0
        batch = c.search_batch(queries, 10, threads=2, ef=128)
        assert len(batch) == 50 and all(len(h) == 10 for h in batch)
        for q, hits in zip(queries[:5], batch[:5]):
            assert c.search(q, 10, ef=128) == hits
        live = {f"doc-{i}" for i in range(500) if i != 2} | {"extra", "after-checkpoint"}
        assert all(h[0] in live for hits in batch for h in hits)


def test_collection_exact_against_brute_force(tmp_path, data):
    base, queries = data
    with omen.Collection.create(tmp_path / "f", dim=16, metric="cosine") as c:
        c.insert_batch([str(i) for i in range(len(base))], base)
        want, want_d = brute(base, queries, 5, "cosine")
        got = c.search_batch(queries, 5)
        for g, w, wd in zip(got, want, want_d):
            assert [int(i) for i, _ in g][:3] == list(w)[:3]
            np.testing.assert_allclose([x for _, x in g], wd, atol=1e-4)


def test_collection_bad_input_changes_nothing(tmp_path, data):
    base, _ = data
    with omen.Collection.create(tmp_path / "b", dim=16, metric="l2", index="ivfpq", nlist=4, m=8, train_size=100) as c:
        c.insert_batch(["a", "b"], base[:2])
        with pytest.raises(ValueError, match="3 ids for 2 rows"):
            c.insert_batch(["x", "y", "z"], base[2:4])
        with pytest.raises(TypeError):
            c.insert_batch("xy", base[2:4])
        with pytest.raises(TypeError):
            c.insert_batch([1, 2], base[2:4])
        with pytest.raises(ValueError, match="duplicate id"):
            c.insert_batch(["c", "a"], base[2:4])
        with pytest.raises(ValueError, match="invalid id: empty"):
            c.insert("", base[5])
        with pytest.raises(ValueError, match="invalid id"):
            c.insert("x" * 100_000, base[5])
        bad = base[2:4].copy()
        bad[1, 0] = np.inf
        with pytest.raises(ValueError, match="non-finite"):
            c.insert_batch(["c", "d"], bad)
        with pytest.raises(TypeError):
            c.insert_batch(["c", "d"], base[2:4].astype(np.complex128))
        with pytest.raises(ValueError, match="dimension mismatch"):
            c.insert("c", base[2, :8])
        with pytest.raises(KeyError):
            c.delete("nope")
        with pytest.raises(ValueError, match="k: must be at least 1"):
            c.search(base[0], 0)
        with pytest.raises(ValueError, match='ivfpq search parameters have no key "ef"'):
            c.search(base[0], 1, ef=10)
        assert len(c) == 2 and "c" not in c
    with pytest.raises(ValueError, match="closed"):
        c.search(base[0], 1)
    with pytest.raises(ValueError, match="closed"):
        c.insert("late", base[0])
    with pytest.raises(ValueError, match="closed"):
        len(c)
    c.close()  # closing twice is fine


def test_collection_refuses_bad_creation(tmp_path):
    with pytest.raises(ValueError, match="unknown storage"):
        omen.Collection.create(tmp_path / "s", dim=4, storage="disk")
    with pytest.raises(ValueError, match="unknown durability"):
        omen.Collection.create(tmp_path / "s", dim=4, durability="maybe")
    with pytest.raises(ValueError, match='flat build parameters have no key "m"'):
        omen.Collection.create(tmp_path / "s", dim=4, m=3)
    assert not (tmp_path / "s" / "MANIFEST").exists()
    omen.Collection.create(tmp_path / "s", dim=4).close()
    with pytest.raises(ValueError, match="already holds a collection"):
        omen.Collection.create(tmp_path / "s", dim=4)


def test_collection_locked_and_missing(tmp_path):
    c = omen.Collection.create(tmp_path / "l", dim=4)
    try:
        with pytest.raises(OSError, match="locked"):
            omen.Collection.open(tmp_path / "l")
    finally:
        c.close()
    with pytest.raises(OSError):
        omen.Collection.open(tmp_path / "missing")


def test_collection_corruption_names_file_and_offset(tmp_path, data):
    base, _ = data
    d = tmp_path / "x"
    with omen.Collection.create(d, dim=16, durability="per-write") as c:
        c.insert_batch([str(i) for i in range(100)], base[:100])
        c.checkpoint()
    seg = [p for p in os.listdir(d) if p.startswith("vectors-")]
    assert seg, os.listdir(d)
    path = d / seg[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(omen.CorruptionError, match=r"corruption in .*vectors-.* at byte \d+") as e:
        omen.Collection.open(d)
    assert isinstance(e.value, OSError)


def test_kinds_lists_the_registry():
    ks = {k["name"]: k for k in omen.kinds()}
    assert {"flat", "hnsw", "ivfpq", "qg"} <= set(ks)
    assert set(ks["qg"]["search"]) == {"ef", "rerank"} and "pq_m" in ks["qg"]["build"]
    assert "ef_construction" in ks["hnsw"]["build"] and set(ks["hnsw"]["search"]) == {"ef"}
    assert set(ks["ivfpq"]["search"]) == {"nprobe", "rerank_factor"}
    assert ks["flat"]["build"] == {} and ks["flat"]["search"] == {}
    # Every listed key is accepted by the kind (here: HNSW's build keys).
    omen.Index("hnsw", 4, m=4, ef_construction=8, ef_search=8, seed=1, keep_pruned=True, repair_threshold=0.5)
