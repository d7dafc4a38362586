"""Type stubs of the extension module behind `omen`."""

from os import PathLike
from types import TracebackType
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, "PathLike[str]"]
_Array = npt.ArrayLike
_Hit = tuple[str, float]
# A row filter: one entry per row of the index, nonzero = the row may be returned.
_MaskArray = Union[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]
_Mask = Union["Filter", _MaskArray]

class CorruptionError(OSError):
    """A damaged file: the message names the file and the byte offset."""

def simd_isa() -> str:
    """The SIMD instruction set the distance kernels chose ("avx512", "avx2", "neon", "scalar")."""

def kinds() -> list[dict[str, Any]]:
    """The registered index kinds: {"name", "description", "build": {key: help}, "search": {key: help}}."""

class Filter:
    """A row filter built once and reused by many searches: the mask (1-D, dtype bool
    or uint8; row i allowed iff mask[i] != 0) is copied into a bitset here, so a
    search given a Filter copies nothing (one given an array copies it per call)."""

    def __init__(self, mask: _MaskArray) -> None: ...
    @property
    def allowed(self) -> int:
        """Rows the filter allows."""
    def __len__(self) -> int:
        """Rows the filter covers."""

class Index:
    """An index over in-memory storage with integer labels (row numbers in insertion order)."""

    def __init__(self, kind: str, dim: int, metric: str = "l2", **params: Union[int, float, bool]) -> None:
        """kind: "flat", "hnsw" (m, ef_construction, ef_search, seed), "ivfpq"
        (nlist, m, nbits, train_size, nprobe, rerank_factor, seed) or "qg" (m,
        ef_construction, ef_search, seed, keep_pruned, fill_layer0, pq_m, train_at,
        train_sample).
        metric: "l2" (squared Euclidean), "ip" (distance 1 - dot) or "cosine"."""
    @property
    def kind(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def is_trained(self) -> bool: ...
    def __len__(self) -> int: ...
    def train(self, sample: _Array) -> None:
        """Trains an IVF-PQ index's quantizers on `sample` (n x dim)."""
    def add(self, data: _Array, threads: Optional[int] = None) -> range:
        """Appends and indexes the rows of `data` (n x dim); returns their labels."""
    def remove(self, labels: Sequence[int]) -> None:
        """Removes the rows of `labels`; KeyError (nothing removed) for one that
        is not in the index or is given twice. Labels are never reused."""
    def search(
        self,
        query: _Array,
        k: int = 10,
        *,
        filter: Optional[_Mask] = None,
        **params: Union[int, float, bool],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The k nearest rows to one query: (labels, distances), each of length k
        (-1 / inf past the rows there are). params: hnsw ef; ivfpq nprobe, rerank_factor; qg ef, rerank.

        filter: None, an omen.Filter, or a 1-D numpy array of dtype bool or uint8,
        with len(index) entries; row i may be returned iff filter[i] != 0. Fewer than
        k allowed rows give fewer hits (padded with -1 / inf); none allowed gives none.
        Another object or dtype (TypeError), shape or length (ValueError) is refused
        before searching."""
    def search_batch(
        self,
        queries: _Array,
        k: int = 10,
        threads: Optional[int] = None,
        *,
        filter: Optional[_Mask] = None,
        **params: Union[int, float, bool],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """One row of (labels, distances), each nq x k, per query, through the batch call.
        filter: as for search, applied to every query."""
    def memory_bytes(self) -> int:
        """Bytes held by the index's own structures (not the stored vectors)."""
    def storage_bytes(self) -> int:
        """Bytes held by the stored vectors."""

class Collection:
    """A durable collection in a directory: string ids, a write-ahead log and checkpoints."""

    @staticmethod
    def create(
        dir: _Path,
        dim: int,
        metric: str = "l2",
        index: str = "flat",
        storage: str = "memory",
        durability: str = "group",
        **params: Union[int, float, bool],
    ) -> "Collection":
        """A new, empty collection in `dir`; params are the index's build parameters."""
    @staticmethod
    def open(dir: _Path, durability: str = "group") -> "Collection":
        """Opens the collection in `dir` (last checkpoint plus the log)."""
    @property
    def path(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def index(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: str) -> bool: ...
    def insert(self, id: str, vector: _Array) -> None: ...
    def insert_batch(self, ids: Sequence[str], vectors: _Array) -> None:
        """Adds len(ids) vectors (n x dim) as one log record, all or nothing."""
    def upsert(self, id: str, vector: _Array) -> None: ...
    def delete(self, id: str) -> None:
        """Removes a live id; KeyError if it is not live."""
    def get(self, id: str) -> Optional[npt.NDArray[np.float32]]: ...
    def search(self, query: _Array, k: int = 10, **params: Union[int, float, bool]) -> list[_Hit]:
        """The k nearest live ids as (id, distance), closest first."""
    def search_batch(
        self, queries: _Array, k: int = 10, threads: Optional[int] = None, **params: Union[int, float, bool]
    ) -> list[list[_Hit]]:
        """One result list per query row, through the batch path."""
    def checkpoint(self) -> dict[str, int]: ...
    def wait_indexed(self) -> None: ...
    def sync(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Collection": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
