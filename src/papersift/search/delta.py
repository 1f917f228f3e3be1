"""The delta layer of an approximate index: recent vectors beside the main IVF or HNSW file.

Rewriting a million-vector graph file for every update took longer than the update itself
(about 1.5 GB written at 1M papers). Instead an update goes to a small exact layer saved
as ``delta.npz``: the new or changed vectors (float32, searched exactly: a matrix product
over 20k x 384 is about 2 ms) and the keys of the main graph they hide ("gone": replaced
or removed papers). A search asks both and merges; the main graph's file is only rewritten
when the layer outgrows its limit, and a full rebuild starts without one.

The file is written to a temporary name and renamed, like the graph, so a crash never
leaves a half-written layer; stale entries (a merge that crashed between writing the graph
and dropping the layer) are harmless, because the layer always wins over the graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FILE = "delta.npz"


class Delta:
    """Keys -> float32 vectors searched exactly, plus the main-graph keys they hide."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self.keys = np.zeros(0, dtype=np.uint64)
        self.matrix = np.zeros((0, ndim), dtype=np.float32)
        self.gone: set[int] = set()  # keys of the main graph that no longer count
        self._rows: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def size(self) -> int:
        """Entries the layer carries (its vectors and the keys it hides)."""
        return len(self.keys) + len(self.gone)

    def _reindex(self) -> None:
        self._rows = {int(k): i for i, k in enumerate(self.keys.tolist())}

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return np.fromiter(map(self._rows.__contains__, keys.tolist()), dtype=bool, count=len(keys))

    def remove(self, keys: np.ndarray) -> None:
        drop = self.contains(keys)
        if drop.any():
            keep = ~np.isin(self.keys, keys[drop])
            self.keys, self.matrix = self.keys[keep], self.matrix[keep]
            self._reindex()

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.remove(keys)
        self.keys = np.concatenate([self.keys, keys])
        self.matrix = np.vstack([self.matrix, vectors])
        self._reindex()

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Vectors of keys the layer holds (callers checked ``contains``)."""
        return self.matrix[list(map(self._rows.__getitem__, keys.tolist()))]

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        count = min(count, len(self.keys))
        if count <= 0:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float32)
        sims = self.matrix @ query
        top = np.argpartition(-sims, count - 1)[:count] if count < len(sims) else np.arange(count)
        top = top[np.argsort(-sims[top], kind="stable")]
        return self.keys[top], sims[top]

    # -- files -----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the layer atomically (or delete its file when it is empty)."""
        path = Path(folder) / FILE
        if not self.size:
            path.unlink(missing_ok=True)
            return
        tmp = Path(folder) / f".delta.{os.getpid()}.tmp.npz"
        try:
            gone = np.array(sorted(self.gone), dtype=np.uint64)
            np.savez(tmp, keys=self.keys, matrix=self.matrix, gone=gone)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, folder: Path, ndim: int) -> Delta:
        """The saved layer of ``folder`` (an empty one if there is none)."""
        out = cls(ndim)
        path = Path(folder) / FILE
        if path.is_file():
            with np.load(path) as data:
                keys, matrix, gone = data["keys"], data["matrix"], data["gone"]
            if matrix.shape[1:] != (ndim,):
                raise ValueError(f"{path} does not hold {ndim}-dimensional vectors")
            out.keys = keys.astype(np.uint64)
            out.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            out.gone = {int(k) for k in gone.tolist()}
            out._reindex()
        return out

    @staticmethod
    def drop(folder: Path) -> None:
        (Path(folder) / FILE).unlink(missing_ok=True)
