"""Omen: a vector storage engine with interchangeable indexes, from Python.

Two classes, numpy arrays in and out:

* :class:`Collection` — a durable collection in a directory (string ids, a
  write-ahead log, checkpoints): ``Collection.create(dir, dim=50, metric="l2",
  index="hnsw", m=16)``, ``Collection.open(dir)``; ``insert_batch``,
  ``upsert``, ``delete``, ``get``, ``search``, ``search_batch``,
  ``checkpoint``, ``stats``; a context manager that closes it.
* :class:`Index` — an index over in-memory storage with integer labels (row
  numbers in insertion order), for benchmarks: ``Index("hnsw", 50, "l2",
  m=16, ef_construction=200)``; ``add``, ``search``, ``search_batch``,
  ``memory_bytes``. ``search`` and ``search_batch`` take ``filter=``: a 1-D
  bool or uint8 array with one entry per row, or a :class:`Filter` made from
  one (built once, reused without a copy per call); only rows whose entry is
  nonzero may be returned.

The index kinds and the keyword arguments each takes come from the engine's
registry: :func:`kinds` lists them.

Bad input raises ``ValueError``/``TypeError`` with the engine's message and
changes nothing; an unknown id ``KeyError``; I/O ``OSError``; a damaged file
:class:`CorruptionError` (a subclass of ``OSError``) naming the file and byte
offset. Arrays of any real dtype are converted to float32. The GIL is released
while the engine builds, writes or searches.
"""

from ._omen import Collection, CorruptionError, Filter, Index, __version__, kinds, simd_isa

__all__ = ["Collection", "CorruptionError", "Filter", "Index", "kinds", "simd_isa", "__version__"]
