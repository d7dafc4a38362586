"""Filtered search through `omen.Index` (the `filter=` keyword of search and
search_batch, an array or an `omen.Filter`): results against numpy brute force
over the allowed rows at selectivities 50 %, 10 % and 1 %, for every index
kind, and the masks it must refuse without searching."""

from __future__ import annotations

import numpy as np
import pytest

import omen

N, NQ, DIM, K = 2000, 50, 16, 10

# kind -> (build parameters, generous search parameters)
KINDS = {
    "flat": ({}, {}),
    "hnsw": ({"m": 16, "ef_construction": 100}, {"ef": 200}),
    "ivfpq": ({"nlist": 16, "m": 8, "nbits": 4, "train_size": 1000}, {"nprobe": 16, "rerank_factor": 50}),
}
SELECTIVITIES = [0.5, 0.1, 0.01]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    base = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = rng.standard_normal((NQ, DIM)).astype(np.float32)
    return base, queries


_BUILT: dict = {}


def built(kind: str, metric: str, base: np.ndarray) -> omen.Index:
    key = (kind, metric)
    if key not in _BUILT:
        build, _ = KINDS[kind]
        ix = omen.Index(kind, DIM, metric, **build)
        if not ix.is_trained:
            ix.train(base[:1000])
        ix.add(base, threads=2)
        assert len(ix) == N
        _BUILT[key] = ix
    return _BUILT[key]


def mask_of(selectivity: float, seed: int = 3) -> np.ndarray:
    """Exactly round(selectivity * N) rows allowed, chosen at random."""
    rng = np.random.default_rng(seed)
    m = np.zeros(N, dtype=bool)
    m[rng.choice(N, size=round(selectivity * N), replace=False)] = True
    return m


def brute_filtered(base, queries, mask, k, metric):
    """The k nearest allowed rows of each query (ids, distances); fewer columns
    when fewer than k rows are allowed."""
    b = base.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "l2":
        d = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    else:
        d = 1.0 - q @ b.T
    d[:, ~mask] = np.inf
    take = min(k, int(mask.sum()))
    ids = np.argsort(d, axis=1, kind="stable")[:, :take]
    return ids, np.take_along_axis(d, ids, axis=1)


@pytest.mark.parametrize("selectivity", SELECTIVITIES)
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_filtered_search_matches_brute_force(data, kind, metric, selectivity):
    base, queries = data
    ix = built(kind, metric, base)
    _, knobs = KINDS[kind]
    mask = mask_of(selectivity)
    allowed = int(mask.sum())
    assert allowed >= K
    want_ids, want_d = brute_filtered(base, queries, mask, K, metric)
    ids, d = ix.search_batch(queries, K, threads=2, filter=mask, **knobs)
    assert ids.shape == (NQ, K) and d.shape == (NQ, K)
    # Every returned id is allowed, and k come back whenever k rows are allowed.
    assert (ids >= 0).all(), f"{kind}/{metric}/{selectivity}: missing hits {(ids < 0).sum()}"
    assert mask[ids].all(), f"{kind}/{metric}/{selectivity}: a disallowed row was returned"
    assert np.isfinite(d).all()
    if kind == "flat":
        np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-4)
        assert (ids == want_ids).mean() > 0.99  # exact ties may swap
    else:
        recall = np.mean([len(set(g) & set(w)) / K for g, w in zip(ids, want_ids)])
        assert recall >= 0.9, f"{kind}/{metric}/{selectivity}: recall@10 {recall:.3f}"
    # A prebuilt omen.Filter answers as the array does.
    f_ids, f_d = ix.search_batch(queries, K, threads=2, filter=omen.Filter(mask), **knobs)
    np.testing.assert_array_equal(f_ids, ids)
    # One query at a time answers as the batch does.
    for i in range(5):
        one_ids, one_d = ix.search(queries[i], K, filter=mask, **knobs)
        assert mask[one_ids].all()
        np.testing.assert_array_equal(one_ids, ids[i])
        np.testing.assert_allclose(one_d, d[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fewer_allowed_than_k_and_none_allowed(data, kind):
    base, queries = data
    ix = built(kind, "l2", base)
    _, knobs = KINDS[kind]
    # Three rows allowed: exactly those three, nearest first, then -1 / inf.
    mask = np.zeros(N, dtype=bool)
    mask[[5, 700, 1999]] = True
    want_ids, want_d = brute_filtered(base, queries, mask, K, "l2")
    ids, d = ix.search_batch(queries, K, filter=mask, **knobs)
    np.testing.assert_array_equal(ids[:, :3], want_ids)
    np.testing.assert_allclose(d[:, :3], want_d, rtol=1e-4, atol=1e-4)
    assert (ids[:, 3:] == -1).all() and np.isinf(d[:, 3:]).all()
    one_ids, one_d = ix.search(queries[0], K, filter=mask, **knobs)
    np.testing.assert_array_equal(one_ids, ids[0])
    # Nothing allowed: no hits, not an error.
    none = np.zeros(N, dtype=bool)
    ids, d = ix.search_batch(queries, K, filter=none, **knobs)
    assert (ids == -1).all() and np.isinf(d).all()
    one_ids, one_d = ix.search(queries[0], K, filter=none, **knobs)
    assert (one_ids == -1).all() and np.isinf(one_d).all()


def test_mask_forms_accepted(data):
    base, queries = data
    ix = built("flat", "l2", base)
    mask = mask_of(0.1)
    want, _ = ix.search_batch(queries, K, filter=mask)
    # uint8, any nonzero byte allowing its row.
    u8 = mask.astype(np.uint8) * np.uint8(7)
    np.testing.assert_array_equal(ix.search_batch(queries, K, filter=u8)[0], want)
    # Strided (non-contiguous) masks are read as they are.
    wide = np.zeros(2 * N, dtype=bool)
    wide[::2] = mask
    strided = wide[::2]
    assert not strided.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(ix.search_batch(queries, K, filter=strided)[0], want)
    np.testing.assert_array_equal(ix.search(queries[0], K, filter=strided)[0], want[0])
    # filter=None and every row allowed are the unfiltered search.
    plain, _ = ix.search_batch(queries, K)
    np.testing.assert_array_equal(ix.search_batch(queries, K, filter=None)[0], plain)
    np.testing.assert_array_equal(ix.search_batch(queries, K, filter=np.ones(N, dtype=bool))[0], plain)
    # The knobs still reach the index next to a filter (and `filter` is not one).
    hn = built("hnsw", "l2", base)
    hn.search(queries[0], K, filter=mask, ef=64)
    with pytest.raises(ValueError, match='no key "nprobe"'):
        hn.search(queries[0], K, filter=mask, nprobe=4)


@pytest.mark.parametrize("call", ["search", "search_batch"])
def test_bad_masks_refused(data, call):
    base, queries = data
    ix = built("hnsw", "l2", base)
    good = mask_of(0.5)

    def run(f):
        if call == "search":
            return ix.search(queries[0], K, filter=f, ef=64)
        return ix.search_batch(queries, K, filter=f, ef=64)

    with pytest.raises(TypeError, match="filter: .*dtype float64"):
        run(good.astype(np.float64))
    with pytest.raises(TypeError, match="filter: .*dtype int64"):
        run(good.astype(np.int64))
    with pytest.raises(TypeError, match="filter: .*dtype int8"):
        run(good.astype(np.int8))
    with pytest.raises(TypeError, match="filter: .*dtype uint16"):
        run(good.astype(np.uint16))
    with pytest.raises(TypeError, match="filter: .*got list"):
        run(good.tolist())
    with pytest.raises(TypeError, match="filter: .*got int"):
        run(1)
    with pytest.raises(ValueError, match=r"filter: .*shape \[2, 1000\]"):
        run(good.reshape(2, N // 2))
    with pytest.raises(ValueError, match=r"filter: .*shape \[\]"):
        run(np.array(True))
    with pytest.raises(ValueError, match="filter: 1999 entries for an index of 2000 rows"):
        run(good[:-1])
    with pytest.raises(ValueError, match="filter: 2001 entries for an index of 2000 rows"):
        run(np.append(good, True))
    # The other checks still come first and still hold.
    with pytest.raises(ValueError, match="k: must be at least 1"):
        ix.search(queries[0], 0, filter=good)
    with pytest.raises(ValueError, match="dimension mismatch"):
        ix.search(queries[0, :8], K, filter=good)
    # Nothing was changed: the index answers as before.
    assert len(ix) == N
    ids, _ = ix.search_batch(queries, K, filter=good, ef=64)
    assert good[ids].all()


def test_filter_on_an_empty_index():
    ix = omen.Index("hnsw", 4, "l2")
    ids, d = ix.search(np.zeros(4, dtype=np.float32), 3, filter=np.zeros(0, dtype=bool))
    assert (ids == -1).all() and np.isinf(d).all()
    with pytest.raises(ValueError, match="1 entries for an index of 0 rows"):
        ix.search(np.zeros(4, dtype=np.float32), 3, filter=np.ones(1, dtype=bool))


def test_prebuilt_filter(data):
    base, queries = data
    ix = built("hnsw", "ip", base)
    mask = mask_of(0.1)
    f = omen.Filter(mask)
    assert len(f) == N and f.allowed == int(mask.sum())
    assert repr(f) == f"omen.Filter(len={N}, allowed={int(mask.sum())})"
    want, _ = ix.search_batch(queries, K, filter=mask, ef=100)
    # The Filter holds its own copy: changing the array afterwards changes nothing.
    copy = mask.copy()
    g = omen.Filter(copy)
    copy[:] = False
    np.testing.assert_array_equal(ix.search_batch(queries, K, filter=g, ef=100)[0], want)
    np.testing.assert_array_equal(ix.search(queries[3], K, filter=g, ef=100)[0], want[3])
    assert omen.Filter(np.array([0, 3, 0, 255], dtype=np.uint8)).allowed == 2
    assert omen.Filter(np.zeros(0, dtype=bool)).allowed == 0
    # The Filter's length must still match the index.
    with pytest.raises(ValueError, match="filter: 1000 entries for an index of 2000 rows"):
        ix.search(queries[0], K, filter=omen.Filter(mask[:1000]))
    with pytest.raises(ValueError, match="filter: 1000 entries for an index of 2000 rows"):
        ix.search_batch(queries, K, filter=omen.Filter(mask[:1000]))
    # Filter refuses what search refuses (whatever the length).
    with pytest.raises(TypeError, match="dtype float32"):
        omen.Filter(mask.astype(np.float32))
    with pytest.raises(TypeError, match="got list"):
        omen.Filter([True, False])
    with pytest.raises(ValueError, match="shape"):
        omen.Filter(np.ones((2, 2), dtype=bool))


def test_every_row_position_and_byte_value():
    """The mask is packed eight bytes at a time: each row position of a length
    that is no multiple of 8 or 64, and each nonzero byte value, allows exactly
    its row."""
    n = 131
    rng = np.random.default_rng(5)
    ix = omen.Index("flat", 2, "l2")
    ix.add(rng.standard_normal((n, 2)).astype(np.float32))
    q = np.zeros(2, dtype=np.float32)
    for i in range(n):
        one = np.zeros(n, dtype=np.uint8)
        one[i] = 1 + (i * 37) % 255  # 1..255
        for f in (one, omen.Filter(one), one.astype(bool)):
            ids, _ = ix.search(q, 3, filter=f)
            assert list(ids) == [i, -1, -1], (i, one[i])
    assert omen.Filter(np.arange(256, dtype=np.uint8)).allowed == 255
    big = rng.integers(0, 4, size=1_000_003).astype(np.uint8)
    assert omen.Filter(big).allowed == int(np.count_nonzero(big))
    assert omen.Filter(big[::3]).allowed == int(np.count_nonzero(big[::3]))
