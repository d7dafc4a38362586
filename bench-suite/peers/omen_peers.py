#!/usr/bin/env python3
"""Peer adapter for the Omen benchmark harness.

Builds one peer index (FAISS, hnswlib, USearch, ScaNN, glass, SymphonyQG or Intel SVS)
over a base set, runs a parameter sweep of searches over a query set and reports, as
one JSON document, what it measured: build time (train and add separately),
single-query QPS and latency percentiles (one query per call, one thread: the
ann-benchmarks convention), batch QPS (all queries in one call, on the given
threads), index memory and peak RSS.

The returned ids of every sweep point are written to a binary file
(u32 LE nq, u32 LE k, then int32 ids row-major, -1 for "no result") so that the
harness computes recall itself; this script never reports recall.

Run with the interpreter of `.venv-peers` (see scripts/setup-peers.sh):

    .venv-peers/bin/python bench-suite/peers/omen_peers.py \
        --system hnswlib --base base.fbin --queries q.fbin --metric ip --k 10 \
        --threads 2 --build-params '{"M": 16, "ef_construction": 200}' \
        --sweep '[{"ef": 64}, {"ef": 128}]' --ids-dir /tmp/ids --out result.json

`--filter PATH` restricts every timed search (single and batch, every sweep point)
to the rows a mask allows: a file of exactly n bytes (n = rows of --base), byte i
1 if row i may be returned and 0 if not. The report then holds
"filter": {"allowed", "n", "how"}, "how" saying how the system applies it. A system
whose Python API has no filtered search exits with status 3 and one stderr line,
`unsupported: <system> has no filtered search in its Python API (<what was checked>)`,
before anything is built.

Errors are reported on stderr with exit status 2 (bad input) or 1 (a library
failure); nothing falls back silently.

`--list-available` (alias `--check`) needs no other argument: it prints a JSON object
mapping every system name to {"available", "package", "install", "error"}, found by
importing each system's module (in a child process, so that a crashing import cannot
take the listing down), and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

SCHEMA = "omen-peers/1"


class InputError(Exception):
    """Bad arguments or input files: exit status 2."""


class Unsupported(Exception):
    """The system cannot do what was asked (filtered search): exit status 3, with
    the message as the one `unsupported:` line on stderr."""


# ---------------------------------------------------------------------------
# Input / output files


def read_fbin(path: str) -> np.ndarray:
    """Reads a big-ann-benchmarks .fbin file (u32 n, u32 dim, f32 rows)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise InputError(f"{path}: {e}") from e
    if size < 8:
        raise InputError(f"{path}: {size} bytes, too short for an .fbin header")
    header = np.fromfile(p, dtype="<u4", count=2)
    n, dim = int(header[0]), int(header[1])
    if dim == 0:
        raise InputError(f"{path}: dimension 0")
    expected = 8 + 4 * n * dim
    if size != expected:
        raise InputError(
            f"{path}: header says {n} x {dim} (= {expected} bytes) but the file has {size}"
        )
    data = np.fromfile(p, dtype="<f4", offset=8, count=n * dim).reshape(n, dim)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        bad = int(np.argwhere(~np.isfinite(data))[0][0])
        raise InputError(f"{path}: row {bad} holds NaN or infinity")
    return data


def read_filter(path: str, n: int) -> np.ndarray:
    """Reads a row filter: exactly `n` bytes, byte i 1 if base row i may be returned
    and 0 if not. Returns it as a bool array of length n."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise InputError(f"--filter {path}: {e}") from e
    if size != n:
        raise InputError(
            f"--filter {path}: {size} bytes, expected exactly {n} (one byte per row of --base)"
        )
    raw = np.fromfile(p, dtype=np.uint8, count=n)
    bad = np.flatnonzero(raw > 1)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"--filter {path}: byte {i} is {int(raw[i])}; each byte must be 0 (row excluded) "
            f"or 1 (row allowed) ({bad.size} bytes are neither)"
        )
    return raw.astype(bool)


def write_ids(path: Path, ids: np.ndarray) -> None:
    """Writes u32 nq, u32 k, then int32 ids row-major (-1 = missing)."""
    nq, k = ids.shape
    if ids.size and (ids.max() > np.iinfo(np.int32).max or ids.min() < -1):
        raise RuntimeError(f"ids out of int32 range writing {path}")
    with open(path, "wb") as f:
        f.write(np.array([nq, k], dtype="<u4").tobytes())
        f.write(np.ascontiguousarray(ids, dtype="<i4").tobytes())


# ---------------------------------------------------------------------------
# Systems: each adapter builds, sets sweep parameters and searches.


_MAY_BE_ZERO = {"random_seed", "quantization_bits"}


def _check_keys(what: str, given: dict, allowed: dict) -> dict:
    """Rejects unknown keys and fills defaults (None in `allowed` = required).
    `allowed` None: the system checks its own keys (omen's index kinds)."""
    if allowed is None:
        return dict(given)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(f"{what}: unknown parameter(s) {unknown}; known: {sorted(allowed)}")
    out = {}
    for key, default in allowed.items():
        if key in given:
            value = given[key]
        elif default is None:
            raise InputError(f"{what}: missing required parameter '{key}'")
        else:
            value = default
        if isinstance(default, bool) or isinstance(value, bool):
            if not isinstance(value, bool):
                raise InputError(f"{what}: '{key}' must be true or false, got {value!r}")
        elif not isinstance(value, int) or value < (0 if key in _MAY_BE_ZERO else 1):
            raise InputError(f"{what}: '{key}' must be a positive integer, got {value!r}")
        out[key] = value
    return out


class Adapter:
    """Interface every system implements."""

    library = ""
    # The module whose import decides availability (--list-available).
    module = ""
    build_keys: dict = {}
    sweep_keys: dict = {}
    # Set by run() after construction (before add): the k searched for and the
    # training-sample size (min(--train-size, n)) for systems that train inside add.
    k: int = 10
    train_size: int = 100_000
    # Filtered search (--filter): whether set_filter is implemented; where it is
    # not, `no_filter` says what of the library's Python API was checked (the
    # `unsupported:` line).
    supports_filter: bool = False
    no_filter: str = ""
    # Runbooks (--runbook): whether the rb_* methods are implemented (deletion
    # through the library's own API); where not, `no_runbook` says why.
    supports_runbook: bool = False
    no_runbook: str = "the adapter drives no deletion for it"

    def __init__(self, dim: int, metric: str, build: dict):
        self.dim = dim
        self.metric = metric
        self.build_params = build

    @classmethod
    def unsupported_filter(cls, system: str) -> str:
        """The `unsupported:` line's text for a system without filtered search."""
        try:
            version = f"{cls.library} {metadata.version(cls.library)}"
        except metadata.PackageNotFoundError:
            version = cls.library
        return f"{system} has no filtered search in its Python API ({version}: {cls.no_filter})"

    def set_filter(self, mask: np.ndarray) -> None:
        """Restricts every later search_one/search_batch to the rows where the
        bool array `mask` (one entry per base row) is true; called once, after
        add and before any search."""
        raise RuntimeError(f"{type(self).__name__} has no filtered search")

    def filter_how(self) -> str:
        """One line for the report: how this system applies the filter."""
        raise NotImplementedError

    @classmethod
    def runbook_unsupported(cls, system: str, build: dict) -> str | None:
        """Why this system (with these build parameters) cannot run a runbook,
        or None when it can."""
        if cls.supports_runbook:
            return None
        try:
            version = f"{cls.library} {metadata.version(cls.library)}"
        except metadata.PackageNotFoundError:
            version = cls.library
        return f"{system} cannot delete through its Python API ({version}: {cls.no_runbook})"

    def rb_start(self, max_tags: int) -> None:
        """Called once before the first runbook operation: `max_tags` distinct
        tags will ever be inserted."""

    def rb_insert(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        """Inserts the rows of `data` under the int64 `tags` (none of them live;
        some may have been deleted before)."""
        raise NotImplementedError

    def rb_delete(self, tags: np.ndarray) -> None:
        """Deletes the live `tags`: never returned again."""
        raise NotImplementedError

    def rb_replace(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        """Gives the live `tags` the vectors of `data`; by default a delete and
        an insert."""
        self.rb_delete(tags)
        self.rb_insert(tags, data, threads)

    def rb_how(self) -> str:
        """One line for the report: the library calls behind insert, delete and
        replace."""
        raise NotImplementedError

    @classmethod
    def check(cls, build: dict, sweep: list[dict], k: int, n: int) -> None:
        """Refuses (InputError) parameter combinations the library would silently
        clamp or mishandle; runs before the build. `build`/`sweep` are checked dicts."""

    def description(self) -> str:
        raise NotImplementedError

    def needs_training(self) -> bool:
        return False

    def train(self, sample: np.ndarray) -> None:
        raise RuntimeError(f"{type(self).__name__} has no training step")

    def add(self, data: np.ndarray, threads: int) -> None:
        raise NotImplementedError

    def set_search(self, params: dict) -> None:
        raise NotImplementedError

    def effective_params(self, params: dict) -> dict:
        """The sweep parameters that actually apply (for the report)."""
        return params

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        """The query array the searches get, made once before any timing (the
        identity except where a library needs, say, zero-padded dimensions)."""
        return queries

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        """One query (a 1-row array) on the current single thread: returns its ids."""
        raise NotImplementedError

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        raise NotImplementedError

    def set_threads(self, threads: int) -> None:
        """Sets the thread count of calls that do not take one as an argument."""

    def memory(self) -> dict:
        raise NotImplementedError

    def version(self) -> str:
        return metadata.version(self.library)


class FaissAdapter(Adapter):
    library = "faiss-cpu"
    module = "faiss"
    supports_filter = True

    def __init__(self, dim: int, metric: str, build: dict):
        super().__init__(dim, metric, build)
        import faiss

        self.faiss = faiss
        self.metric_type = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        self.index = None
        # Filtered search: the packed mask, its selector and the SearchParameters
        # that carry it. Parameters given to search replace the index's own fields,
        # so they also carry efSearch / nprobe / k_factor, copied from the index
        # (where set_search puts the sweep's values) and rebuilt by every
        # set_search. Every object the parameters point to is kept alive here.
        self.bitmap = None
        self.selector = None
        self.search_params = None

    def set_filter(self, mask: np.ndarray) -> None:
        self.bitmap = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
        self.selector = self.faiss.IDSelectorBitmap(len(mask), self.faiss.swig_ptr(self.bitmap))
        self._refresh_params()

    def _refresh_params(self) -> None:
        if self.selector is not None:
            self.search_params = self.make_search_params(self.selector)

    def make_search_params(self, sel):
        """faiss.SearchParameters* carrying `sel` and the index's current search
        fields."""
        return self.faiss.SearchParameters(sel=sel)

    def set_threads(self, threads: int) -> None:
        self.faiss.omp_set_num_threads(threads)

    def add(self, data: np.ndarray, threads: int) -> None:
        self.set_threads(threads)
        self.index.add(data)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q, k, params=self.search_params)[1]

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        self.set_threads(threads)
        return self.index.search(qs, k, params=self.search_params)[1]

    def memory(self) -> dict:
        blob = self.faiss.serialize_index(self.index)
        return {"index_bytes": int(blob.nbytes), "index_bytes_method": "faiss.serialize_index"}


class FaissFlat(FaissAdapter):
    build_keys: dict = {}
    sweep_keys: dict = {}
    no_runbook = (
        "IndexFlat has remove_ids but no add_with_ids, and remove_ids renumbers the rows "
        "after the removed ones; an IndexIDMap around it would be another system"
    )

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        f = self.faiss
        self.index = f.IndexFlatIP(dim) if metric == "ip" else f.IndexFlatL2(dim)

    def description(self) -> str:
        return "IndexFlatIP" if self.metric == "ip" else "IndexFlatL2"

    def set_search(self, params: dict) -> None:
        self._refresh_params()

    def filter_how(self) -> str:
        return (
            'faiss.IDSelectorBitmap(n, np.packbits(mask, bitorder="little")) passed as '
            "index.search(..., params=faiss.SearchParameters(sel=...)): the exhaustive scan "
            "skips rows the bitmap excludes"
        )


class FaissHnsw(FaissAdapter):
    build_keys = {"M": None, "efConstruction": None}
    sweep_keys = {"efSearch": None}
    no_runbook = "IndexHNSWFlat.remove_ids and add_with_ids raise 'not implemented for this type of index'"

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        self.index = self.faiss.IndexHNSWFlat(dim, build["M"], self.metric_type)
        self.index.hnsw.efConstruction = build["efConstruction"]

    def description(self) -> str:
        b = self.build_params
        return f"IndexHNSWFlat(M={b['M']}, efConstruction={b['efConstruction']})"

    def set_search(self, params: dict) -> None:
        self.index.hnsw.efSearch = params["efSearch"]
        self._refresh_params()

    def make_search_params(self, sel):
        return self.faiss.SearchParametersHNSW(sel=sel, efSearch=self.index.hnsw.efSearch)

    def filter_how(self) -> str:
        return (
            'faiss.IDSelectorBitmap(n, np.packbits(mask, bitorder="little")) passed as '
            "index.search(..., params=faiss.SearchParametersHNSW(sel=..., efSearch=<sweep>)): "
            "the graph walk expands excluded nodes too and keeps only selected ones as results"
        )


class FaissIvf(FaissAdapter):
    """IVF indexes made by index_factory, optionally wrapped in IndexRefineFlat."""

    def factory_string(self) -> str:
        raise NotImplementedError

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        f = self.faiss
        self.base = f.index_factory(dim, self.factory_string(), self.metric_type)
        self.ivf = f.extract_index_ivf(self.base)
        self.refine = build.get("refine", False)
        self.index = f.IndexRefineFlat(self.base) if self.refine else self.base

    def description(self) -> str:
        s = f'index_factory("{self.factory_string()}")'
        return f"IndexRefineFlat({s})" if self.refine else s

    def needs_training(self) -> bool:
        return True

    def train(self, sample: np.ndarray) -> None:
        self.index.train(sample)

    def effective_params(self, params: dict) -> dict:
        if self.refine:
            return params
        return {k: v for k, v in params.items() if k != "k_factor"}

    def set_search(self, params: dict) -> None:
        if params["nprobe"] > self.ivf.nlist:
            raise InputError(f"nprobe {params['nprobe']} exceeds nlist {self.ivf.nlist}")
        self.ivf.nprobe = params["nprobe"]
        if self.refine:
            self.index.k_factor = float(params["k_factor"])
        elif "k_factor" in params and params["k_factor"] != 1:
            raise InputError("k_factor needs refine = true")
        self._refresh_params()

    def make_search_params(self, sel):
        f = self.faiss
        # Parameters given to search replace the index's fields: nprobe (and
        # k_factor under the refine) must be passed again, or FAISS's defaults
        # (nprobe 1, k_factor 1) would apply.
        ivf = f.SearchParametersIVF(sel=sel, nprobe=self.ivf.nprobe)
        if not self.refine:
            return ivf
        # IndexRefineFlat hands base_index_params to the IVF index, which returns
        # only selected candidates; the refine re-ranks those exactly.
        self.base_params = ivf
        return f.IndexRefineSearchParameters(k_factor=self.index.k_factor, base_index_params=ivf)

    supports_runbook = True

    @classmethod
    def runbook_unsupported(cls, system: str, build: dict) -> str | None:
        if build.get("refine", False):
            return (
                f"{system} with refine = true cannot run a runbook: faiss-cpu "
                f"{metadata.version('faiss-cpu')} IndexRefineFlat.add_with_ids and remove_ids "
                "raise 'not implemented for this type of index' (run it with refine = false)"
            )
        return None

    def rb_insert(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        self.set_threads(threads)
        self.index.add_with_ids(data, np.ascontiguousarray(tags, dtype=np.int64))

    def rb_delete(self, tags: np.ndarray) -> None:
        want = np.ascontiguousarray(tags, dtype=np.int64)
        removed = self.index.remove_ids(want)
        if removed != len(want):
            raise RuntimeError(f"remove_ids removed {removed} of {len(want)} live ids")

    def rb_how(self) -> str:
        return (
            "insert: index.add_with_ids(rows, tags); delete: index.remove_ids(tags) (an "
            "IDSelectorBatch; the inverted lists are compacted in place); replace: remove_ids "
            "then add_with_ids; trained once, on a seeded sample of the first insert's rows"
        )

    def filter_how(self) -> str:
        ivf = "faiss.SearchParametersIVF(sel=..., nprobe=<sweep>)"
        how = (
            f'faiss.IDSelectorBitmap(n, np.packbits(mask, bitorder="little")) in {ivf}, '
        )
        if self.refine:
            how += (
                "passed as index.search(..., params=faiss.IndexRefineSearchParameters("
                "k_factor=<sweep>, base_index_params=<that>)): the IVF scan of the probed "
                "lists skips excluded rows and the exact refine re-ranks the selected candidates"
            )
        else:
            how += "passed as index.search(..., params=<that>): the scan of the probed lists skips excluded rows"
        return how


class FaissIvfFlat(FaissIvf):
    build_keys = {"nlist": None}
    sweep_keys = {"nprobe": None}

    def factory_string(self) -> str:
        return f"IVF{self.build_params['nlist']},Flat"


class FaissIvfPq(FaissIvf):
    build_keys = {"nlist": None, "m": None, "refine": True}
    sweep_keys = {"nprobe": None, "k_factor": 1}

    def factory_string(self) -> str:
        b = self.build_params
        if self.dim % b["m"] != 0:
            raise InputError(f"PQ m = {b['m']} must divide the dimension {self.dim}")
        return f"IVF{b['nlist']},PQ{b['m']}x8"


class FaissIvfPqFs(FaissIvf):
    build_keys = {"nlist": None, "m": None, "refine": True}
    sweep_keys = {"nprobe": None, "k_factor": 1}

    def factory_string(self) -> str:
        b = self.build_params
        if self.dim % b["m"] != 0:
            raise InputError(f"PQ m = {b['m']} must divide the dimension {self.dim}")
        return f"IVF{b['nlist']},PQ{b['m']}x4fs"


class Hnswlib(Adapter):
    library = "hnswlib"
    module = "hnswlib"
    build_keys = {"M": None, "ef_construction": None, "random_seed": 100}
    sweep_keys = {"ef": None}
    supports_filter = True
    filter_fn = None
    # Rows the filter allows (None: no filter). hnswlib raises rather than return
    # fewer than k, so a filter allowing fewer than k rows asks for that many.
    allowed = None

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        import hnswlib

        self.index = hnswlib.Index(space="ip" if metric == "ip" else "l2", dim=dim)

    def description(self) -> str:
        b = self.build_params
        space = "ip" if self.metric == "ip" else "l2"
        return f"hnswlib.Index(space={space}, M={b['M']}, ef_construction={b['ef_construction']})"

    def add(self, data: np.ndarray, threads: int) -> None:
        b = self.build_params
        self.index.init_index(
            max_elements=len(data),
            M=b["M"],
            ef_construction=b["ef_construction"],
            random_seed=b["random_seed"],
        )
        self.index.add_items(data, np.arange(len(data)), num_threads=threads)

    def set_search(self, params: dict) -> None:
        self.index.set_ef(params["ef"])

    supports_runbook = True

    def rb_start(self, max_tags: int) -> None:
        b = self.build_params
        # Every tag the runbook ever inserts gets its own element: a deleted
        # element keeps its place (hnswlib's mark_deleted), and re-inserting its
        # tag un-marks and updates it in place.
        self.index.init_index(
            max_elements=max(1, max_tags),
            M=b["M"],
            ef_construction=b["ef_construction"],
            random_seed=b["random_seed"],
        )

    def rb_insert(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        self.index.add_items(data, np.asarray(tags, dtype=np.int64), num_threads=threads)

    def rb_delete(self, tags: np.ndarray) -> None:
        for t in np.asarray(tags).tolist():
            self.index.mark_deleted(t)

    def rb_replace(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        # add_items with a live label updates its vector and repairs its links.
        self.rb_insert(tags, data, threads)

    def rb_how(self) -> str:
        return (
            "init_index(max_elements = the runbook's distinct tags); insert: add_items(rows, "
            "tags) (a previously deleted tag is un-marked and updated in place); delete: "
            "mark_deleted(tag) per tag; replace: add_items with the live tags (hnswlib's update)"
        )

    def set_filter(self, mask: np.ndarray) -> None:
        # hnswlib's own filtered search calls a Python callable per candidate;
        # indexing a list is about twice as fast as indexing the numpy array.
        allowed = np.asarray(mask, dtype=bool).tolist()
        self.filter_fn = lambda label: allowed[label]
        self.allowed = int(np.count_nonzero(mask))

    def filter_how(self) -> str:
        return (
            "hnswlib knn_query(q, k, num_threads, filter=lambda label: allowed[label]) over "
            "the mask as a Python list: hnswlib calls back into Python (taking the GIL) for "
            "each candidate it considers, so the callback's cost is in every timing and "
            "batch searches on several threads contend for the GIL; the walk continues "
            "until ef allowed rows are found"
        )

    def _knn(self, q: np.ndarray, k: int, threads: int) -> np.ndarray:
        if self.allowed is None or self.allowed >= k:
            return self.index.knn_query(q, k=k, num_threads=threads, filter=self.filter_fn)[0]
        out = np.full((len(q), k), -1, dtype=np.int64)
        if self.allowed > 0:
            ids = self.index.knn_query(q, k=self.allowed, num_threads=threads, filter=self.filter_fn)[0]
            out[:, : self.allowed] = ids
        return out

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._knn(q, k, 1)

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        return self._knn(qs, k, threads)

    def memory(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="omen-peers-") as d:
            path = os.path.join(d, "index.bin")
            self.index.save_index(path)
            size = os.path.getsize(path)
        return {"index_bytes": int(size), "index_bytes_method": "hnswlib save_index file size"}


class Usearch(Adapter):
    library = "usearch"
    module = "usearch.index"
    build_keys = {"M": None, "efc": None}
    sweep_keys = {"expansion_search": None}
    no_filter = (
        "Index.search(vectors, count, radius, *, threads, exact, log, progress, dtype) and the "
        "compiled Index.search_many(queries, count, exact, threads, progress, dtype) take no "
        "filter or predicate; the compiled Index has no other search method"
    )

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        from usearch.index import Index

        self.index = Index(
            ndim=dim,
            metric="ip" if metric == "ip" else "l2sq",
            dtype="f32",
            connectivity=build["M"],
            expansion_add=build["efc"],
        )

    def description(self) -> str:
        b = self.build_params
        m = "ip" if self.metric == "ip" else "l2sq"
        return (
            f"usearch.Index(metric={m}, dtype=f32, connectivity={b['M']}, "
            f"expansion_add={b['efc']}) [{self.index.hardware_acceleration}]"
        )

    def add(self, data: np.ndarray, threads: int) -> None:
        self.index.add(np.arange(len(data), dtype=np.uint64), data, threads=threads)

    def set_search(self, params: dict) -> None:
        self.index.expansion_search = params["expansion_search"]

    supports_runbook = True

    def rb_insert(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        self.index.add(np.asarray(tags, dtype=np.uint64), data, threads=threads)

    def rb_delete(self, tags: np.ndarray) -> None:
        want = np.asarray(tags, dtype=np.uint64)
        removed = self.index.remove(want)
        if int(removed) != len(want):
            raise RuntimeError(f"Index.remove removed {removed} of {len(want)} live keys")

    def rb_how(self) -> str:
        return "insert: Index.add(tags, rows, threads); delete: Index.remove(tags); replace: remove then add"

    @staticmethod
    def _ids(keys: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, k)
        mask = np.arange(k)[None, :] >= np.asarray(counts).reshape(-1, 1)
        keys[mask] = -1
        return keys

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        m = self.index.search(q[0], k, threads=1)
        keys = np.full(k, -1, dtype=np.int64)
        keys[: len(m.keys)] = m.keys
        return keys

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        m = self.index.search(qs, k, threads=threads)
        return self._ids(m.keys, m.counts, k)

    def memory(self) -> dict:
        # The serialized length is the figure comparable with the other peers';
        # memory_usage also counts the arenas USearch reserves ahead of need.
        return {
            "index_bytes": int(self.index.serialized_length),
            "index_bytes_method": "usearch Index.serialized_length",
            "usearch_memory_usage_bytes": int(self.index.memory_usage),
        }


def _fixed_ids(raw: Any, rows: int, k: int, n: int) -> np.ndarray:
    """A library's ids as an (rows, k) int64 array: short rows padded with -1, and
    -1 for anything that is not a valid row id (unsigned "none" sentinels) and for
    columns at or past n (some libraries fill those with 0 when n < k)."""
    ids = np.asarray(raw)
    if ids.ndim == 1:
        ids = ids.reshape(1, -1)
    if ids.shape[0] != rows or ids.shape[1] > k:
        raise RuntimeError(f"search returned shape {ids.shape}, expected ({rows}, <= {k})")
    if ids.dtype.kind not in "iu":
        raise RuntimeError(f"search returned ids of dtype {ids.dtype}")
    # Compared before any cast: an unsigned "none" sentinel (2**32-1, 2**64-1)
    # must not wrap to a small or negative id unnoticed.
    bad = ids >= n
    if ids.dtype.kind == "i":
        bad |= ids < 0
    out = np.full((rows, k), -1, dtype=np.int64)
    out[:, : ids.shape[1]] = np.where(bad, -1, ids.astype(np.int64))
    if n < k:
        out[:, n:] = -1
    return out


def _one_ids(raw: np.ndarray, k: int, n: int) -> np.ndarray:
    """_fixed_ids for one query's 1-D ids, with a fast path (under a microsecond,
    inside the timed single-query call) when they need no fixing."""
    if raw.shape == (k,) and n >= k and raw.max() < n:
        return raw
    return _fixed_ids(raw, 1, k, n)[0]


class Scann(Adapter):
    """ScaNN: k-means tree partitioning, 4-bit anisotropic AH scoring (LUT16, two
    dimensions per block), exact float re-ordering."""

    library = "scann"
    module = "scann"
    build_keys = {"num_leaves": None, "dims_per_block": 2, "spherical": False}
    sweep_keys = {"leaves_to_search": None, "reorder": None}
    no_runbook = "the scann_ops_pybind searcher is built once from a whole dataset and has no delete"
    no_filter = (
        "ScannSearcher.search / search_batched / search_batched_parallel take only "
        "final_num_neighbors, pre_reorder_num_neighbors, leaves_to_search (and batch_size), "
        "and scann_pybind.ScannNumpy exposes no restrict or filter method"
    )
    # The anisotropic-quantization threshold (ScaNN's recommended 0.2) and the
    # build-time reorder default; every search passes its own pre_reorder_num_neighbors.
    AQ_THRESHOLD = 0.2
    BUILD_REORDER = 100

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        import scann

        self.scann = scann
        self.distance = "dot_product" if metric == "ip" else "squared_l2"
        self.searcher = None
        self.n = 0
        self.leaves = None
        self.reorder = None

    @classmethod
    def check(cls, build, sweep, k, n):
        if build["num_leaves"] > n:
            raise InputError(
                f"scann: num_leaves {build['num_leaves']} exceeds the {n} base vectors"
            )
        for p in sweep:
            # ScaNN clamps leaves_to_search to num_leaves without a word, and with
            # reorder < k returns fewer than k neighbours (zero-padded in batches).
            if p["leaves_to_search"] > build["num_leaves"]:
                raise InputError(
                    f"scann: leaves_to_search {p['leaves_to_search']} exceeds "
                    f"num_leaves {build['num_leaves']}"
                )
            if p["reorder"] < k:
                raise InputError(f"scann: reorder {p['reorder']} is below k = {k}")

    def _ts(self) -> int:
        """ScaNN's training_sample_size (tree and AH alike): min(--train-size, n)."""
        return int(self.train_size if not self.n else min(self.train_size, self.n))

    def description(self) -> str:
        b = self.build_params
        ts = self._ts()
        return (
            f'scann_ops_pybind.builder(X, {self.k}, "{self.distance}")'
            f".tree(num_leaves={b['num_leaves']}, num_leaves_to_search={self._default_leaves()}, "
            f"training_sample_size={ts}, spherical={b['spherical']})"
            f".score_ah({b['dims_per_block']}, "
            f"anisotropic_quantization_threshold={self.AQ_THRESHOLD}, "
            f"training_sample_size={ts}).reorder({self.BUILD_REORDER})"
            ".set_n_training_threads(threads).build() [float32 reorder]; every search "
            "passes leaves_to_search and pre_reorder_num_neighbors = reorder, overriding "
            "the build defaults"
        )

    def _default_leaves(self) -> int:
        return max(1, self.build_params["num_leaves"] // 10)

    def add(self, data: np.ndarray, threads: int) -> None:
        b = self.build_params
        self.n = len(data)
        ts = self._ts()
        if ts < 1:
            raise InputError(f"scann: training sample size {ts} (--train-size) must be positive")
        self.searcher = (
            self.scann.scann_ops_pybind.builder(data, self.k, self.distance)
            .tree(
                num_leaves=b["num_leaves"],
                num_leaves_to_search=self._default_leaves(),
                training_sample_size=ts,
                spherical=b["spherical"],
            )
            .score_ah(
                b["dims_per_block"],
                anisotropic_quantization_threshold=self.AQ_THRESHOLD,
                training_sample_size=ts,
            )
            .reorder(self.BUILD_REORDER)
            .set_n_training_threads(threads)
            .build()
        )

    def set_search(self, params: dict) -> None:
        self.leaves = params["leaves_to_search"]
        self.reorder = params["reorder"]

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.searcher.search(
            q[0],
            final_num_neighbors=k,
            pre_reorder_num_neighbors=self.reorder,
            leaves_to_search=self.leaves,
        )
        return _one_ids(ids, k, self.n)

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        if threads == 1:
            # search_batched runs on the calling thread only.
            ids, _ = self.searcher.search_batched(
                qs, final_num_neighbors=k, pre_reorder_num_neighbors=self.reorder,
                leaves_to_search=self.leaves,
            )
        else:
            # search_batched_parallel splits the batch into chunks of batch_size
            # over the searcher's pool (set_num_threads); chunks no bigger than an
            # even share keep every thread busy on small batches.
            self.searcher.set_num_threads(threads)
            ids, _ = self.searcher.search_batched_parallel(
                qs, final_num_neighbors=k, pre_reorder_num_neighbors=self.reorder,
                leaves_to_search=self.leaves,
                batch_size=max(1, min(256, -(-len(qs) // threads))),
            )
        return _fixed_ids(ids, len(qs), k, self.n)

    def memory(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="omen-peers-") as d:
            self.searcher.serialize(d)
            size = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())
        return {"index_bytes": int(size), "index_bytes_method": "scann serialize() directory size"}


class Glass(Adapter):
    """glass (pyglass-portable): HNSW graph, searched over SQ8U codes with FP32 refine."""

    library = "pyglass-portable"
    module = "glass"
    build_keys = {"R": None, "L": None}
    sweep_keys = {"ef": None}
    no_runbook = "glass.Index builds a graph once from a whole dataset and has no delete"
    no_filter = (
        "glass.Searcher has only search(query, k), batch_search(query, k, num_threads), "
        "set_ef, optimize and get_last_search_dist_cmps; no filter argument anywhere"
    )

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        import glass

        self.glass = glass
        # glass takes "IP" for inner product and "L2"; any other string is taken
        # silently as L2, so only these two are ever passed.
        self.metric_name = "IP" if metric == "ip" else "L2"
        self.graph = None
        self.searcher = None
        self.n = 0

    @classmethod
    def check(cls, build, sweep, k, n):
        # glass's one-query search() widens its pool to max(ef, 1.5 k) while
        # batch_search() keeps ef: below 1.5 k the two return different neighbours.
        least = -(-3 * k // 2)
        for p in sweep:
            if p["ef"] < least:
                raise InputError(
                    f"glass: ef {p['ef']} is below 1.5 k = {least} (its single-query search "
                    "would widen it and its batch search would not)"
                )

    def description(self) -> str:
        b = self.build_params
        m = self.metric_name
        return (
            f'glass.Index("HNSW", "{m}", "FP32", R={b["R"]}, L={b["L"]}).build(X); '
            f'glass.Searcher(graph, X, "{m}", "SQ8U", "FP32"), optimize(1), set_ef(ef)'
        )

    def set_threads(self, threads: int) -> None:
        self.glass.set_num_threads(threads)

    def add(self, data: np.ndarray, threads: int) -> None:
        b = self.build_params
        self.n = len(data)
        self.glass.set_num_threads(threads)
        index = self.glass.Index("HNSW", self.metric_name, "FP32", R=b["R"], L=b["L"])
        self.graph = index.build(data)
        self.searcher = self.glass.Searcher(self.graph, data, self.metric_name, "SQ8U", "FP32")
        # optimize() tunes the prefetch depth by timing sample searches on one thread.
        self.searcher.optimize(1)

    def set_search(self, params: dict) -> None:
        self.searcher.set_ef(params["ef"])

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.searcher.search(q[0], k)
        return _one_ids(ids, k, self.n)

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        ids, _ = self.searcher.batch_search(qs, k, threads)
        return _fixed_ids(ids, len(qs), k, self.n)

    def memory(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="omen-peers-") as d:
            path = os.path.join(d, "graph.glass")
            self.graph.save(path)
            graph_bytes = os.path.getsize(path)
        codes = self.n * self.dim  # SQ8U: one byte a dimension
        refine = 4 * self.n * self.dim  # FP32 refine vectors
        return {
            "index_bytes": int(graph_bytes + codes + refine),
            "index_bytes_method": "glass Graph.save file size + n*d SQ8U code bytes + 4*n*d FP32 "
            "refine bytes (the searcher has no serialisation; codes estimated unpadded)",
            "glass_graph_file_bytes": int(graph_bytes),
        }


class Symqg(Adapter):
    """SymphonyQG (rabitqlib.SymqgIndex): a graph over RaBitQ codes, FastScan
    neighbour estimates, exact re-ranking against the stored vectors."""

    library = "rabitqlib"
    module = "rabitqlib"
    build_keys = {"degree": None, "ef_construction": None, "quantization_bits": 0}
    sweep_keys = {"ef": None}
    no_runbook = "rabitqlib's SymphonyQG index is built once from a whole dataset and has no delete"
    no_filter = (
        "SymqgIndex.search / search_batch take (queries, k, ef, num_threads) only; "
        "no filter argument or method"
    )

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        import rabitqlib

        if build["degree"] % 32 != 0:
            raise InputError(f"symqg: degree {build['degree']} must be a multiple of 32")
        if build["quantization_bits"] not in (0, 4, 8):
            raise InputError(
                "symqg: quantization_bits must be 0 (float32 vectors), 4 or 8, "
                f"got {build['quantization_bits']}"
            )
        # Its rotator rejects many dimensions (50 among them): zero-pad to a
        # multiple of 64, base and queries alike, which changes no L2 distance or
        # inner product.
        self.padded = -(-dim // 64) * 64
        self.index = rabitqlib.SymqgIndex(
            self.padded,
            build["degree"],
            "ip" if metric == "ip" else "l2",
            build["quantization_bits"],
        )
        self.ef = None
        self.n = 0

    @classmethod
    def check(cls, build, sweep, k, n):
        if build["degree"] >= n:
            raise InputError(f"symqg: degree {build['degree']} must be below the {n} base vectors")
        for p in sweep:
            if p["ef"] < k:
                raise InputError(f"symqg: ef {p['ef']} is below k = {k}")

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if self.padded == self.dim:
            return np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((len(x), self.padded), dtype=np.float32)
        out[:, : self.dim] = x
        return out

    def description(self) -> str:
        b = self.build_params
        m = "ip" if self.metric == "ip" else "l2"
        return (
            f'rabitqlib.SymqgIndex({self.padded}, {b["degree"]}, "{m}", {b["quantization_bits"]})'
            f'.build(X, {b["ef_construction"]}, threads) [init=pipnn; vectors zero-padded '
            f"{self.dim} -> {self.padded} dims]; search(Q, k, ef, threads)"
        )

    def add(self, data: np.ndarray, threads: int) -> None:
        self.n = len(data)
        self.index.build(self._pad(data), self.build_params["ef_construction"], threads)

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        return self._pad(queries)

    def set_search(self, params: dict) -> None:
        self.ef = params["ef"]

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.search(q, k, self.ef, 1)
        return _one_ids(ids[0], k, self.n)

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        ids, _ = self.index.search_batch(qs, k, self.ef, threads)
        return _fixed_ids(ids, len(qs), k, self.n)

    def memory(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="omen-peers-") as d:
            path = os.path.join(d, "index.symqg")
            self.index.save(path)
            size = os.path.getsize(path)
        return {
            "index_bytes": int(size),
            "index_bytes_method": "rabitqlib SymqgIndex.save file size",
        }


class SvsVamana(Adapter):
    """Intel SVS Vamana over uncompressed float32 vectors."""

    library = "scalable-vs"
    module = "svs"
    build_keys = {"graph_max_degree": None, "window_size": None}
    sweep_keys = {"search_window_size": None}
    no_runbook = "the adapter drives the static svs.Vamana, which has no delete (svs.DynamicVamana would be another system)"
    no_filter = (
        "svs.Vamana.search(queries, n_neighbors) takes no filter, and VamanaSearchParameters "
        "holds only buffer_config, prefetch_lookahead, prefetch_step and "
        "search_buffer_visited_set"
    )

    def __init__(self, dim, metric, build):
        super().__init__(dim, metric, build)
        import svs

        self.svs = svs
        self.distance = svs.DistanceType.MIP if metric == "ip" else svs.DistanceType.L2
        # SVS's documented defaults: alpha > 1 for a distance minimised, < 1 for a
        # similarity maximised.
        self.alpha = 0.95 if metric == "ip" else 1.2
        self.index = None
        self.n = 0

    @classmethod
    def check(cls, build, sweep, k, n):
        for p in sweep:
            # SVS widens a window below k without a word.
            if p["search_window_size"] < k:
                raise InputError(
                    f"svs-vamana: search_window_size {p['search_window_size']} is below k = {k}"
                )

    def description(self) -> str:
        b = self.build_params
        d = "MIP" if self.metric == "ip" else "L2"
        return (
            f"svs.Vamana.build(svs.VamanaBuildParameters(graph_max_degree={b['graph_max_degree']}, "
            f"window_size={b['window_size']}, alpha={self.alpha}), X [float32], "
            f"svs.DistanceType.{d}, num_threads=threads); search_window_size"
        )

    def set_threads(self, threads: int) -> None:
        if self.index is not None:
            self.index.num_threads = threads

    def add(self, data: np.ndarray, threads: int) -> None:
        b = self.build_params
        self.n = len(data)
        params = self.svs.VamanaBuildParameters(
            graph_max_degree=b["graph_max_degree"], window_size=b["window_size"], alpha=self.alpha
        )
        self.index = self.svs.Vamana.build(params, data, self.distance, num_threads=threads)

    def set_search(self, params: dict) -> None:
        self.index.search_window_size = params["search_window_size"]

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.search(q, k)
        return _one_ids(ids[0], k, self.n)

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        self.index.num_threads = threads
        ids, _ = self.index.search(qs, k)
        return _fixed_ids(ids, len(qs), k, self.n)

    def memory(self) -> dict:
        with tempfile.TemporaryDirectory(prefix="omen-peers-") as d:
            dirs = [os.path.join(d, x) for x in ("config", "graph", "data")]
            self.index.save(*dirs)
            size = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())
        return {"index_bytes": int(size), "index_bytes_method": "svs Vamana.save directories' size"}


SYSTEMS: dict[str, type[Adapter]] = {
    "faiss-flat": FaissFlat,
    "faiss-hnsw": FaissHnsw,
    "faiss-ivfflat": FaissIvfFlat,
    "faiss-ivfpq": FaissIvfPq,
    "faiss-ivfpqfs": FaissIvfPqFs,
    "hnswlib": Hnswlib,
    "usearch": Usearch,
    "scann": Scann,
    "glass": Glass,
    "symqg": Symqg,
    "svs-vamana": SvsVamana,
}

# Omen itself, through its Python package (crates/omen-py), on exactly this path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from omen_adapter import make_classes as _omen_classes  # noqa: E402

_omen_class = _omen_classes(Adapter, InputError)
# `omen-<kind>` for any kind of omen's registry, made on first use; `omen-*`
# stands for all of them in --list-available (one module decides them all).
OMEN_ANY = "omen-*"


class _Systems(dict):
    def __missing__(self, name: str):
        if not name.startswith("omen-") or name == OMEN_ANY:
            raise KeyError(name)
        cls = _omen_class(name[len("omen-"):])
        cls.module = "omen"
        cls.library = "omen"
        self[name] = cls
        return cls

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and name.startswith("omen-"))


SYSTEMS = _Systems(SYSTEMS)
SYSTEMS[OMEN_ANY] = _omen_class("*")
SYSTEMS[OMEN_ANY].module = "omen"


# ---------------------------------------------------------------------------
# Measurement


def nearest_rank(sorted_us: np.ndarray, q: float) -> float:
    """Nearest-rank percentile, the same rule as the harness's latency.rs."""
    n = len(sorted_us)
    rank = int(np.ceil(q * n))
    return float(sorted_us[min(max(rank, 1), n) - 1])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def as_ids(result: Any, nq: int, k: int) -> np.ndarray:
    ids = np.asarray(result, dtype=np.int64)
    if ids.shape != (nq, k):
        raise RuntimeError(f"search returned shape {ids.shape}, expected {(nq, k)}")
    return ids


def measure_single(
    adapter: Adapter, queries: np.ndarray, k: int, count: int, warmup: int, passes: int = 1
):
    """One query per call on one thread, over the first `count` queries, `passes`
    times; the fastest pass counts (ann-benchmarks' best-of-runs rule). Returns
    (qps, latency dict, ids of those queries) of that pass."""
    adapter.set_threads(1)
    rows = [queries[i : i + 1] for i in range(count)]
    for q in rows[:warmup]:
        adapter.search_one(q, k)
    clock = time.perf_counter_ns
    search = adapter.search_one
    best = None
    for _ in range(max(1, passes)):
        lat_ns = np.empty(count, dtype=np.int64)
        ids = np.empty((count, k), dtype=np.int64)
        for i, q in enumerate(rows):
            t0 = clock()
            r = search(q, k)
            lat_ns[i] = clock() - t0
            ids[i] = np.asarray(r).reshape(-1)
        if best is None or lat_ns.sum() < best[0].sum():
            best = (lat_ns, ids)
    lat_ns, ids = best
    total_s = lat_ns.sum() / 1e9
    us = np.sort(lat_ns / 1e3)
    latency = {
        "p50_us": nearest_rank(us, 0.50),
        "p95_us": nearest_rank(us, 0.95),
        "p99_us": nearest_rank(us, 0.99),
        "p999_us": nearest_rank(us, 0.999),
        "mean_us": float(us.mean()),
        "max_us": float(us[-1]),
    }
    return count / total_s, latency, ids


def measure_batch(adapter: Adapter, queries: np.ndarray, k: int, threads: int, runs: int):
    """All queries in one call, `runs` times; QPS of the fastest run."""
    seconds = []
    cpu_seconds = []
    ids = None
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        r = adapter.search_batch(queries, k, threads)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        ids = as_ids(r, len(queries), k)
    return len(queries) / min(seconds), seconds, cpu_seconds, ids


def run(args: argparse.Namespace) -> dict:
    cls = SYSTEMS[args.system]
    if args.filter is not None and not cls.supports_filter:
        # Before anything is read or built: the harness records the system as
        # skipped with this line.
        raise Unsupported(cls.unsupported_filter(args.system))
    if args.k <= 0:
        raise InputError("k must be positive")
    if args.threads <= 0:
        raise InputError("threads must be positive")
    if args.batch_threads is not None and args.batch_threads <= 0:
        raise InputError("batch-threads must be positive")
    if args.batch_runs <= 0:
        raise InputError("batch-runs must be positive")
    try:
        build_given = json.loads(args.build_params)
        sweep_given = json.loads(args.sweep)
    except json.JSONDecodeError as e:
        raise InputError(f"--build-params/--sweep must be JSON: {e}") from e
    if not isinstance(build_given, dict):
        raise InputError("--build-params must be a JSON object")
    if not isinstance(sweep_given, list) or not all(isinstance(p, dict) for p in sweep_given):
        raise InputError("--sweep must be a JSON array of objects")
    if not sweep_given:
        raise InputError("--sweep must hold at least one point ([{}] for a system without search parameters)")
    build = _check_keys(f"{args.system} build", build_given, cls.build_keys)
    sweep = [_check_keys(f"{args.system} sweep", p, cls.sweep_keys) for p in sweep_given]
    if build.get("refine") is False and any(p.get("k_factor", 1) != 1 for p in sweep):
        raise InputError("k_factor needs refine = true")

    base = read_fbin(args.base)
    queries = read_fbin(args.queries)
    if base.shape[1] != queries.shape[1]:
        raise InputError(f"base dimension {base.shape[1]} != query dimension {queries.shape[1]}")
    n, dim = base.shape
    nq = len(queries)
    if n == 0 or nq == 0:
        raise InputError(f"empty input: {n} base vectors, {nq} queries")
    mask = None if args.filter is None else read_filter(args.filter, n)
    single_count = nq if args.single_queries is None else min(args.single_queries, nq)
    if single_count < 0:
        raise InputError("single-queries must be >= 0")
    cls.check(build, sweep, args.k, n)
    ids_dir = Path(args.ids_dir)
    ids_dir.mkdir(parents=True, exist_ok=True)

    load_start = os.getloadavg()
    rss_before = rss_bytes()
    adapter = cls(dim, args.metric, build)
    adapter.k = args.k
    adapter.train_size = min(args.train_size, n)

    train_seconds = 0.0
    train_vectors = 0
    if adapter.needs_training():
        train_vectors = min(args.train_size, n)
        rng = np.random.default_rng(args.train_seed)
        sample_rows = np.sort(rng.choice(n, size=train_vectors, replace=False))
        sample = np.ascontiguousarray(base[sample_rows])
        adapter.set_threads(args.threads)
        t0 = time.perf_counter()
        adapter.train(sample)
        train_seconds = time.perf_counter() - t0
        del sample
    c0 = time.process_time()
    t0 = time.perf_counter()
    adapter.add(base, args.threads)
    add_seconds = time.perf_counter() - t0
    add_cpu_seconds = time.process_time() - c0
    memory = adapter.memory()
    memory["index_bytes_per_vector"] = memory["index_bytes"] / n
    queries = adapter.prepare_queries(queries)
    if mask is not None:
        # Once, before the first search: every timed search below is filtered.
        adapter.set_filter(mask)

    # One-query-at-a-time passes run in rounds over the whole sweep: a point's
    # passes are spread over the run rather than back to back, so that one slow
    # spell of a shared machine does not decide a point; its fastest pass counts.
    singles: list = [None] * len(sweep)
    if single_count > 0:
        for r in range(max(1, args.single_passes)):
            for i, params in enumerate(sweep):
                adapter.set_search(params)
                m = measure_single(
                    adapter,
                    queries,
                    args.k,
                    single_count,
                    min(args.warmup, single_count) if r == 0 else 0,
                    1,
                )
                if singles[i] is None or m[0] > singles[i][0]:
                    singles[i] = m

    points = []
    for i, params in enumerate(sweep):
        adapter.set_search(params)
        point: dict[str, Any] = {"params": adapter.effective_params(params)}
        single_ids = None
        if singles[i] is not None:
            qps, latency, single_ids = singles[i]
            point.update(qps_single=qps, single_queries=single_count, latency=latency)
        else:
            point.update(qps_single=None, single_queries=0, latency=None)
        batch_threads = args.batch_threads or args.threads
        qps_b, secs, cpu, ids = measure_batch(
            adapter, queries, args.k, batch_threads, args.batch_runs
        )
        point.update(
            qps_batch=qps_b, batch_threads=batch_threads, batch_seconds=secs, batch_cpu_seconds=cpu
        )
        if single_ids is not None:
            # The two calling conventions must agree on what they return; a
            # difference (other than ties reordered) is reported, never hidden.
            same = np.mean(
                [len(set(a) & set(b)) / args.k for a, b in zip(single_ids, ids[:single_count])]
            )
            point["single_batch_id_agreement"] = float(same)
        ids_path = ids_dir / f"{args.system}-{i}.ibin"
        write_ids(ids_path, ids)
        point["ids_file"] = str(ids_path.resolve())
        points.append(point)
        print(
            f"omen_peers: {args.system} {params}: single {point['qps_single'] or 0:.0f} QPS, "
            f"batch {qps_b:.0f} QPS ({batch_threads} threads)",
            file=sys.stderr,
        )

    memory["peak_rss_bytes"] = peak_rss_bytes()
    memory["rss_before_build_bytes"] = rss_before
    import numpy

    result = {
        "schema": SCHEMA,
        "system": args.system,
        "library": adapter.library,
        "version": adapter.version(),
        "index": adapter.description(),
        "metric": args.metric,
        "k": args.k,
        "threads": args.threads,
        "dataset": {"base": args.base, "queries": args.queries, "n": n, "nq": nq, "dim": dim},
        "build_params": build,
        "build": {
            "threads": args.threads,
            "train_vectors": train_vectors,
            "train_seconds": train_seconds,
            "add_vectors": n,
            "add_seconds": add_seconds,
            "add_cpu_seconds": add_cpu_seconds,
            "add_vectors_per_sec": n / add_seconds if add_seconds > 0 else None,
        },
        "memory": memory,
        "points": points,
        "environment": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "cpu_count": os.cpu_count(),
            "warmup_queries": args.warmup,
            "batch_runs": args.batch_runs,
            # 1-minute load averages: above the core count, timings are contended.
            "loadavg_start": load_start[0],
            "loadavg_end": os.getloadavg()[0],
        },
    }
    if mask is not None:
        result["filter"] = {
            "allowed": int(np.count_nonzero(mask)),
            "n": n,
            "how": adapter.filter_how(),
        }
    return result


RUNBOOK_SCHEMA = "omen-peers-runbook/1"


def _answer(adapter: Adapter, ids: np.ndarray) -> np.ndarray:
    """A search's ids as tags (only omen's labels need mapping)."""
    f = getattr(adapter, "rb_answer", None)
    return ids if f is None else f(ids)


def _rb_range(step: dict, a: str, b: str, n: int) -> np.ndarray:
    lo, hi = step.get(a), step.get(b)
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < hi <= n):
        raise InputError(f"runbook step {step.get('step')}: bad range {a}={lo!r} {b}={hi!r} for {n} rows")
    return np.arange(lo, hi, dtype=np.int64)


def run_runbook(args: argparse.Namespace) -> dict:
    """--runbook: applies the harness's checked runbook (JSON: {"steps": [...],
    "max_tags": N, "fresh": bool}) to one system. Each search step times the
    batch call (--batch-runs passes, the fastest counts) and writes its ids as
    tags; insert, delete and replace steps are timed as one call each (training
    on a seeded sample of the first insert's rows, timed apart). With "fresh",
    the final live rows are then built into a new index and searched once more.
    The harness computes every recall."""
    cls = SYSTEMS[args.system]
    try:
        build_given = json.loads(args.build_params)
        sweep_given = json.loads(args.sweep)
        book = json.loads(Path(args.runbook).read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"--build-params/--sweep/--runbook must be JSON: {e}") from e
    if not isinstance(build_given, dict) or not isinstance(sweep_given, list) or len(sweep_given) != 1:
        raise InputError("a runbook takes a build object and exactly one search point")
    build = _check_keys(f"{args.system} build", build_given, cls.build_keys)
    point = _check_keys(f"{args.system} sweep", sweep_given[0], cls.sweep_keys)
    why = cls.runbook_unsupported(args.system, build)
    if why is not None:
        raise Unsupported(why)
    if args.k <= 0 or args.threads <= 0 or args.batch_runs <= 0:
        raise InputError("k, threads and batch-runs must be positive")
    steps = book.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InputError("--runbook holds no steps")
    base = read_fbin(args.base)
    queries = read_fbin(args.queries)
    n, dim = base.shape
    if queries.shape[1] != dim:
        raise InputError(f"base dimension {dim} != query dimension {queries.shape[1]}")
    cls.check(build, [point], args.k, n)
    ids_dir = Path(args.ids_dir)
    ids_dir.mkdir(parents=True, exist_ok=True)
    batch_threads = args.batch_threads or args.threads

    def make() -> Adapter:
        a = cls(dim, args.metric, build)
        a.k = args.k
        a.train_size = min(args.train_size, n)
        return a

    def train_on(a: Adapter, rows: np.ndarray) -> float:
        size = min(args.train_size, len(rows))
        rng = np.random.default_rng(args.train_seed)
        pick = np.sort(rng.choice(len(rows), size=size, replace=False))
        sample = np.ascontiguousarray(rows[pick])
        a.set_threads(args.threads)
        t0 = time.perf_counter()
        a.train(sample)
        return time.perf_counter() - t0

    def search(a: Adapter, tag: str) -> tuple[float, str]:
        a.set_search(point)
        qs = a.prepare_queries(queries)
        best = None
        ids = None
        for _ in range(args.batch_runs):
            t0 = time.perf_counter()
            r = a.search_batch(qs, args.k, batch_threads)
            secs = time.perf_counter() - t0
            best = secs if best is None else min(best, secs)
            ids = as_ids(r, len(qs), args.k)
        path = ids_dir / f"{args.system}-{tag}.ibin"
        write_ids(path, _answer(a, ids))
        return len(qs) / best, str(path.resolve())

    rss_before = rss_bytes()
    adapter = make()
    adapter.rb_start(int(book.get("max_tags", n)))
    # The vector each live tag holds (a replace gives a tag another row's vector).
    tag_row = np.full(n, -1, dtype=np.int64)
    train_seconds = 0.0
    train_vectors = 0
    out_steps = []
    for step in steps:
        op = step.get("op")
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"step": step.get("step"), "op": op}
        if op == "insert":
            tags = _rb_range(step, "start", "end", n)
            data = np.ascontiguousarray(base[tags])
            if adapter.needs_training() and train_vectors == 0:
                train_vectors = min(args.train_size, len(data))
                train_seconds = train_on(adapter, data)
                t0 = time.perf_counter()
            adapter.rb_insert(tags, data, args.threads)
            tag_row[tags] = tags
            rec["rows"] = len(tags)
        elif op == "delete":
            tags = _rb_range(step, "start", "end", n)
            adapter.rb_delete(tags)
            tag_row[tags] = -1
            rec["rows"] = len(tags)
        elif op == "replace":
            tags = _rb_range(step, "tags_start", "tags_end", n)
            rows = _rb_range(step, "ids_start", "ids_end", n)
            if len(tags) != len(rows):
                raise InputError(f"runbook step {step.get('step')}: {len(tags)} tags but {len(rows)} rows")
            adapter.rb_replace(tags, np.ascontiguousarray(base[rows]), args.threads)
            tag_row[tags] = rows
            rec["rows"] = len(tags)
        elif op == "search":
            rec["qps"], rec["ids_file"] = search(adapter, f"step-{step.get('step')}")
        else:
            raise InputError(f"runbook step {step.get('step')}: unknown operation {op!r}")
        rec["seconds"] = time.perf_counter() - t0
        out_steps.append(rec)
        print(f"omen_peers: {args.system} runbook step {rec['step']} {op}: {rec['seconds']:.3f} s", file=sys.stderr)
    memory = adapter.memory()
    memory["rss_bytes"] = rss_bytes()
    memory["rss_before_bytes"] = rss_before
    description = adapter.description()
    how = adapter.rb_how()
    del adapter

    fresh = None
    if book.get("fresh"):
        live = np.nonzero(tag_row >= 0)[0]
        data = np.ascontiguousarray(base[tag_row[live]])
        a = make()
        a.rb_start(len(live))
        ft = 0.0
        if a.needs_training():
            ft = train_on(a, data)
        t0 = time.perf_counter()
        a.rb_insert(live.astype(np.int64), data, args.threads)
        secs = time.perf_counter() - t0
        qps, path = search(a, "fresh")
        fresh = {"rows": int(len(live)), "train_seconds": ft, "build_seconds": secs, "qps": qps, "ids_file": path}
        del a

    memory["peak_rss_bytes"] = peak_rss_bytes()
    return {
        "schema": RUNBOOK_SCHEMA,
        "system": args.system,
        "library": cls.library,
        "version": metadata.version(cls.library) if cls.library != "omen" else _omen_version(),
        "index": description,
        "how": how,
        "metric": args.metric,
        "k": args.k,
        "threads": args.threads,
        "batch_threads": batch_threads,
        "build_params": build,
        "search_params": point,
        "train_vectors": train_vectors,
        "train_seconds": train_seconds,
        "steps": out_steps,
        "memory": memory,
        "fresh": fresh,
    }


def _omen_version() -> str:
    try:
        return metadata.version("omen")
    except metadata.PackageNotFoundError:
        import omen

        return omen.__version__


INSTALL_HINT = "bash scripts/setup-peers.sh"


def list_available(timeout_s: float = 120.0) -> dict:
    """{system: {"available", "package", "install", "error"}}, by importing each
    system's module in a child process of this interpreter (all at once): an import
    that crashes or hangs marks its systems unavailable instead of ending the listing."""
    import signal

    modules: dict[str, list[str]] = {}
    for name, cls in SYSTEMS.items():
        modules.setdefault(cls.module, []).append(name)
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-c", f"import {m}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in modules
    }
    errors: dict[str, str | None] = {}
    for m, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            errors[m] = f"import {m} did not finish in {timeout_s:.0f} s"
            continue
        if proc.returncode == 0:
            errors[m] = None
        elif proc.returncode < 0:
            try:
                sig = signal.Signals(-proc.returncode).name
            except ValueError:
                sig = str(-proc.returncode)
            errors[m] = f"import {m} was killed by signal {sig}"
        else:
            lines = [line for line in err.splitlines() if line.strip()]
            errors[m] = lines[-1] if lines else f"import {m} exited with status {proc.returncode}"
    return {
        name: {
            "available": errors[cls.module] is None,
            "package": cls.library,
            "install": INSTALL_HINT,
            "error": errors[cls.module],
        }
        for name, cls in SYSTEMS.items()
    }


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _stdout_to_stderr():
    """Points file descriptor 1 at stderr for the duration: some libraries (glass)
    print progress on the C-level stdout, which must not mix with the JSON report."""
    sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--list-available",
        "--check",
        action="store_true",
        help="print {system: {available, package, install, error}} as JSON and exit "
        "(no other option needed)",
    )
    # The run options are required unless only the availability is asked for.
    req = not any(a in ("--list-available", "--check") for a in argv)
    p.add_argument("--system", required=req, choices=SYSTEMS, metavar="SYSTEM")
    p.add_argument("--base", required=req, help=".fbin base vectors")
    p.add_argument("--queries", required=req, help=".fbin query vectors")
    p.add_argument("--metric", required=req, choices=["ip", "l2"])
    p.add_argument("--k", type=int, required=req)
    p.add_argument("--threads", type=int, required=req, help="build and batch-search threads")
    p.add_argument(
        "--batch-threads",
        type=int,
        default=None,
        help="threads of the batch search call when not --threads",
    )
    p.add_argument("--build-params", default="{}", help="JSON object")
    p.add_argument("--sweep", default="[{}]", help="JSON array of search-parameter objects")
    p.add_argument(
        "--train-size",
        type=int,
        default=100_000,
        help="IVF training sample (ScaNN: its training_sample_size, capped at n)",
    )
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument(
        "--single-queries",
        type=int,
        default=None,
        help="queries timed one per call (default: all)",
    )
    p.add_argument("--warmup", type=int, default=100, help="untimed single queries first")
    p.add_argument("--batch-runs", type=int, default=3, help="batch passes; the fastest counts")
    p.add_argument(
        "--single-passes",
        type=int,
        default=1,
        help="rounds of one-query-at-a-time passes over the sweep; each point's fastest counts",
    )
    p.add_argument(
        "--filter",
        default=None,
        metavar="PATH",
        help="row filter: exactly n bytes (n = rows of --base), byte i 1 if row i may be "
        "returned, 0 if not; every timed search is filtered (exit 3 with an 'unsupported:' "
        "line for a system without filtered search)",
    )
    p.add_argument(
        "--runbook",
        default=None,
        metavar="PATH",
        help="apply a runbook instead of a sweep: a JSON file {steps: [{step, op: insert|delete|"
        "replace|search, start, end | tags_start, tags_end, ids_start, ids_end}], max_tags, fresh} "
        "checked by the harness; --sweep holds one point; exit 3 with an 'unsupported:' line for "
        "a system that cannot delete",
    )
    p.add_argument("--ids-dir", required=req, help="directory for the ids files")
    p.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.list_available:
        print(json.dumps(list_available(), indent=1))
        return 0
    try:
        # Library chatter on the C stdout goes to stderr; only the report goes out.
        with _stdout_to_stderr():
            result = run(args) if args.runbook is None else run_runbook(args)
    except Unsupported as e:
        print(f"unsupported: {e}", file=sys.stderr)
        return 3
    except InputError as e:
        print(f"omen_peers: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, MemoryError, OSError) as e:
        print(f"omen_peers: {args.system} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
