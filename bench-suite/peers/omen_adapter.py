"""Omen itself as a system of the peer adapter: `omen.Index` from the `omen` Python
package (crates/omen-py), driven by exactly the loop, queries and clock that drive
every peer. Imported by omen_peers.py, which registers these classes."""

from __future__ import annotations

from importlib import metadata

import numpy as np


class _OmenBase:
    """omen.Index over in-memory storage; labels are row numbers, as FAISS's."""

    library = "omen"
    kind = ""

    def _make(self, **params):
        import omen

        self.omen = omen
        # Angular sets are unit-normalised beforehand, so "ip" (distance 1 - dot)
        # ranks exactly as the peers' inner product.
        self.index = omen.Index(self.kind, self.dim, self.metric, **params)
        self.params: dict = {}

    def description(self) -> str:
        b = ", ".join(f"{k}={v}" for k, v in self.build_params.items())
        return f'omen.Index("{self.kind}", dim={self.dim}, metric="{self.metric}"{", " + b if b else ""})'

    def add(self, data: np.ndarray, threads: int) -> None:
        self.index.add(data, threads=threads)

    def set_search(self, params: dict) -> None:
        self.params = dict(params)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q[0], k, **self.params)[0]

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        return self.index.search_batch(qs, k, threads=threads, **self.params)[0]

    def memory(self) -> dict:
        return {
            "index_bytes": int(self.index.memory_bytes() + self.index.storage_bytes()),
            "index_bytes_method": "omen.Index.memory_bytes() + storage_bytes() (index structures plus the stored float32 vectors)",
        }

    def version(self) -> str:
        try:
            return metadata.version("omen")
        except metadata.PackageNotFoundError:
            return self.omen.__version__


def make_classes(Adapter):
    """The adapter classes, built on omen_peers.Adapter (passed in to avoid an
    import cycle)."""

    class OmenFlat(_OmenBase, Adapter):
        kind = "flat"
        build_keys: dict = {}
        sweep_keys: dict = {}

        def __init__(self, dim, metric, build):
            Adapter.__init__(self, dim, metric, build)
            self._make()

    class OmenHnsw(_OmenBase, Adapter):
        kind = "hnsw"
        build_keys = {"m": None, "ef_construction": None}
        sweep_keys = {"ef": None}

        def __init__(self, dim, metric, build):
            Adapter.__init__(self, dim, metric, build)
            self._make(m=build["m"], ef_construction=build["ef_construction"])

    class OmenIvfpq(_OmenBase, Adapter):
        kind = "ivfpq"
        build_keys = {"nlist": None, "m": None, "nbits": 4}
        sweep_keys = {"nprobe": None, "rerank_factor": 10}

        def __init__(self, dim, metric, build):
            Adapter.__init__(self, dim, metric, build)
            self._make(nlist=build["nlist"], m=build["m"], nbits=build["nbits"])

        def needs_training(self) -> bool:
            return True

        def train(self, sample: np.ndarray) -> None:
            self.index.train(sample)

    return {"omen-flat": OmenFlat, "omen-hnsw": OmenHnsw, "omen-ivfpq": OmenIvfpq}
