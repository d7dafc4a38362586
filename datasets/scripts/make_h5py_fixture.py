#!/usr/bin/env python3
"""Writes tests/fixtures/h5py-tiny-angular.hdf5 the way ann-benchmarks does.

ann-benchmarks' `write_output` (ann_benchmarks/datasets.py) stores the root
attributes type/distance/dimension/point_type as h5py strings and ints, `train`
and `test` as float32, and `neighbors` (int64) / `distances` (float64) with exact
top-`count` results. This script reproduces that layout on a tiny seeded set so
that the Rust reader is tested against a file written by h5py, not only by
itself. Run it with h5py and numpy installed:

    python3 -m venv /tmp/h5 && /tmp/h5/bin/pip install h5py numpy
    /tmp/h5/bin/python datasets/scripts/make_h5py_fixture.py
"""
import os

import h5py
import numpy as np

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "h5py-tiny-angular.hdf5")
rng = np.random.default_rng(7)
train = rng.standard_normal((200, 8)).astype(np.float32)
test = rng.standard_normal((10, 8)).astype(np.float32)
count = 10

def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)

cos = unit(test.astype(np.float64)) @ unit(train.astype(np.float64)).T
dist = 1.0 - cos
order = np.argsort(dist, axis=1, kind="stable")[:, :count]

with h5py.File(out, "w") as f:
    f.attrs["type"] = "dense"
    f.attrs["distance"] = "angular"
    f.attrs["dimension"] = train.shape[1]
    f.attrs["point_type"] = "float"
    f.create_dataset("train", data=train)
    f.create_dataset("test", data=test)
    neighbors = f.create_dataset("neighbors", (len(test), count), dtype=int)
    distances = f.create_dataset("distances", (len(test), count), dtype=float)
    neighbors[:] = order
    distances[:] = np.take_along_axis(dist, order, axis=1)
print(out, os.path.getsize(out), "bytes")
