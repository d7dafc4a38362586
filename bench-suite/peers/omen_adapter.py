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
    supports_filter = True

    def _make(self, **params):
        import omen

        self.omen = omen
        # Angular sets are unit-normalised beforehand, so "ip" (distance 1 - dot)
        # ranks exactly as the peers' inner product.
        self.index = omen.Index(self.kind, self.dim, self.metric, **params)
        self.params: dict = {}
        # The row filter (an omen.Filter: the mask packed once), or None.
        self.mask = None

    def set_filter(self, mask: np.ndarray) -> None:
        # Packed into a bitset once, here, as FAISS's IDSelectorBitmap is: a
        # search handed the bool array itself would copy it on every call.
        self.mask = self.omen.Filter(np.asarray(mask, dtype=bool))

    def filter_how(self) -> str:
        how = {
            "flat": "the exhaustive scan admits only allowed rows",
            "hnsw": "HNSW estimates the filter's selectivity on a sample and scans the "
            "allowed rows exactly below a threshold, else walks the graph expanding "
            "excluded nodes too but admitting only allowed ones as results (then scans "
            "if fewer than k came back)",
            "ivfpq": "the IVF-PQ list scan admits only allowed rows as re-rank candidates",
        }.get(self.kind, "the index admits only allowed rows as results")
        return (
            f'omen.Filter(mask) (a bitset, built once) passed as omen.Index("{self.kind}")'
            f".search / search_batch(..., filter=...); {how}"
        )

    def description(self) -> str:
        b = ", ".join(f"{k}={v}" for k, v in self.build_params.items())
        return f'omen.Index("{self.kind}", dim={self.dim}, metric="{self.metric}"{", " + b if b else ""})'

    def add(self, data: np.ndarray, threads: int) -> None:
        self.index.add(data, threads=threads)

    def set_search(self, params: dict) -> None:
        self.params = dict(params)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q[0], k, filter=self.mask, **self.params)[0]

    def search_batch(self, qs: np.ndarray, k: int, threads: int) -> np.ndarray:
        return self.index.search_batch(qs, k, threads=threads, filter=self.mask, **self.params)[0]

    # Runbooks: omen.Index labels rows in the order they are added and never
    # reuses a label, so the adapter keeps the tag of every label (and the live
    # label of every tag) and answers in tags.
    supports_runbook = True

    def rb_start(self, max_tags: int) -> None:
        self.label_tag = np.empty(0, dtype=np.int64)
        self.tag_label: dict[int, int] = {}

    def rb_insert(self, tags: np.ndarray, data: np.ndarray, threads: int) -> None:
        labels = self.index.add(data, threads=threads)
        self.label_tag = np.concatenate([self.label_tag, np.asarray(tags, dtype=np.int64)])
        for t, label in zip(np.asarray(tags).tolist(), labels):
            self.tag_label[t] = label

    def rb_delete(self, tags: np.ndarray) -> None:
        labels = [self.tag_label.pop(t) for t in np.asarray(tags).tolist()]
        self.index.remove(labels)

    def rb_how(self) -> str:
        return (
            "insert: omen.Index.add(rows, threads) (new labels, mapped to the tags by the "
            "adapter); delete: omen.Index.remove(labels); replace: remove then add"
        )

    def rb_answer(self, labels: np.ndarray) -> np.ndarray:
        """Labels a search returned, as tags (-1 stays -1)."""
        labels = np.asarray(labels, dtype=np.int64)
        out = np.full(labels.shape, -1, dtype=np.int64)
        ok = labels >= 0
        out[ok] = self.label_tag[labels[ok]]
        return out

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


def make_classes(Adapter, InputError):
    """The adapter class for omen's index kind `kind`, built on
    omen_peers.Adapter (passed in to avoid an import cycle): returns
    `omen_class(kind)`. Every kind of the engine's registry is driven alike: its
    build and search keys are the kind's own (`omen.kinds()`), checked by the
    `omen` package itself (the harness checked them through the registry too),
    and an index that needs training (`is_trained` false) is trained on the
    harness's seeded sample before `add`."""

    def omen_class(kind: str):
        class OmenIndex(_OmenBase, Adapter):
            # None: the keys are passed through to omen.Index, which refuses
            # unknown ones naming the valid ones.
            build_keys = None
            sweep_keys = None

            @classmethod
            def check(cls, build, sweep, k, n):
                """The kind's keys (from the registry) and, on an empty index with
                the kind's defaults, every sweep point's values: refused before
                anything is built."""
                import omen

                kinds = {x["name"]: x for x in omen.kinds()}
                if kind not in kinds:
                    raise InputError(f"omen has no index kind {kind!r}; registered: {sorted(kinds)}")
                for what, given, known in (("build", [build], kinds[kind]["build"]), ("sweep", sweep, kinds[kind]["search"])):
                    for p in given:
                        unknown = sorted(set(p) - set(known))
                        if unknown:
                            raise InputError(f"omen-{kind} {what}: unknown parameter(s) {unknown}; known: {sorted(known)}")
                try:
                    probe = omen.Index(kind, 8)
                    for p in sweep:
                        probe.search(np.zeros(8, dtype=np.float32), max(k, 1), **p)
                except (ValueError, TypeError) as e:
                    raise InputError(f"omen-{kind} sweep: {e}") from e

            def __init__(self, dim, metric, build):
                Adapter.__init__(self, dim, metric, build)
                try:
                    self._make(**build)
                except (ValueError, TypeError) as e:
                    raise InputError(f"omen-{kind} build: {e}") from e

            def needs_training(self) -> bool:
                return not self.index.is_trained

            def train(self, sample: np.ndarray) -> None:
                self.index.train(sample)

        OmenIndex.kind = kind
        OmenIndex.__name__ = OmenIndex.__qualname__ = f"Omen[{kind}]"
        return OmenIndex

    return omen_class
