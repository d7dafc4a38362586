#!/usr/bin/env python3
"""Writes small ann-benchmarks HDF5 files with h5py, the way ann-benchmarks does.

    python datasets/scripts/make_hdf5_fixtures.py OUT_DIR [--seed N]

Each file holds `train` (200 x 8 float32), `test` (20 x 8), `neighbors` (the
exact top 10 of each test row over train) and `distances` (in ann-benchmarks'
convention: unsquared Euclidean, angular = 1 - cosine), with the root attributes
`distance` and `point_type` as variable-length strings, as ann-benchmarks'
`write_output` stores them. `neighbors`/`distances` are int64/float64 in the
contiguous file (as `write_output` makes them from numpy) and int32/float32 in
the others. Layouts:

  contiguous.hdf5     h5py's defaults (what ann-benchmarks writes): contiguous
                      datasets, the earliest file format (superblock 0)
  chunked-gzip.hdf5   chunked (16 rows) with gzip level 4 and the shuffle filter
  latest.hdf5         libver="latest" (superblock 3, new-style object headers),
                      chunked with gzip, angular
  no-neighbors.hdf5   only train and test (no ground truth)

The Rust tests read the committed copies under datasets/tests/fixtures; the
Python tests (crates/omen-py/tests/test_hdf5_cli.py) write fresh ones with this
script's `write` and run the `omen` CLI on them.
"""
import sys

import h5py
import numpy as np


def exact(train, test, metric, k=10):
    if metric == "angular":
        a = train / np.linalg.norm(train, axis=1, keepdims=True)
        b = test / np.linalg.norm(test, axis=1, keepdims=True)
        d = 1.0 - b @ a.T
    else:
        d = np.sqrt(((test[:, None, :] - train[None, :, :]) ** 2).sum(-1))
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return ids.astype(np.int32), np.take_along_axis(d, ids, axis=1).astype(np.float32)


def write(path, layout, metric="euclidean", seed=7, n=200, nq=20, dim=8, neighbors=True):
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n, dim)).astype(np.float32)
    test = rng.standard_normal((nq, dim)).astype(np.float32)
    chunked = layout in ("chunked-gzip", "latest")
    libver = None
    if layout == "latest":
        libver = "latest"
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["type"] = "dense"
        f.attrs["distance"] = metric
        f.attrs["dimension"] = dim
        f.attrs["point_type"] = "float"
        def put(name, data):
            kw = {}
            if chunked:  # 16-row chunks: several per dataset, a partial last one
                kw = dict(chunks=(min(16, data.shape[0]), data.shape[1]), compression="gzip",
                          compression_opts=4, shuffle=True)
            f.create_dataset(name, data=data, **kw)

        put("train", train)
        put("test", test)
        if neighbors:
            ids, dist = exact(train, test, metric)
            if layout == "contiguous":
                ids, dist = ids.astype(np.int64), dist.astype(np.float64)
            put("neighbors", ids)
            put("distances", dist)
    return train, test


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--seed" else 7
    write(f"{out}/contiguous.hdf5", "contiguous", seed=seed)
    write(f"{out}/chunked-gzip.hdf5", "chunked-gzip", seed=seed)
    write(f"{out}/latest.hdf5", "latest", metric="angular", seed=seed)
    write(f"{out}/no-neighbors.hdf5", "contiguous", seed=seed, neighbors=False)


if __name__ == "__main__":
    main()
