"""Vectors of a filter's papers, gathered once: exact dense search under a common filter.

A category or collection holding 5-10 % of the papers is too many for gathering their
vectors on every query (17,700 at 236k papers: about 100 ms out of the graph) and too few for
the graph's own nearest neighbours to contain enough of them (an over-fetch of 20,000
neighbours cost as much). Readers repeat filters (their category, their collection), so the
passing papers' vectors are kept as one float32 matrix per filter, least recently used first
out, within a byte budget; a query under that filter is then one matrix product (a few
milliseconds). Keyed by the exact key set, so a filter whose papers changed is gathered anew.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

SUBSET_BYTES = 256 * 2**20  # float32 matrices kept per open vector index, in all

Gather = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # keys -> (found, vectors)


class SubsetCache:
    """Per open vector index: filter key sets -> (keys found, float32 matrix)."""

    def __init__(self, budget: int = SUBSET_BYTES) -> None:
        self.budget = budget
        self._items: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def fits(self, count: int, ndim: int) -> bool:
        """Whether a filter passing ``count`` papers may be kept (at most half the budget,
        so one broad filter cannot push out every other)."""
        return count * ndim * 4 <= self.budget // 2

    def search(
        self, keys: np.ndarray, query: np.ndarray, count: int, gather: Gather
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` nearest of ``keys`` to ``query`` (exact), gathering their vectors
        with ``gather`` the first time this key set is seen."""
        name = (len(keys), hash(np.ascontiguousarray(keys, dtype=np.uint64).tobytes()))
        with self._lock:
            got = self._items.get(name)
            if got is not None:
                self._items.move_to_end(name)
        if got is None:
            found, matrix = gather(keys)
            got = (keys[found], np.ascontiguousarray(matrix, dtype=np.float32))
            self._keep(name, got)
        present, matrix = got
        if not len(present):
            return present, np.zeros(0, dtype=np.float32)
        sims = matrix @ np.asarray(query, dtype=np.float32).reshape(-1)
        if count < len(sims):
            part = np.argpartition(-sims, count - 1)[:count]
            top = part[np.argsort(-sims[part], kind="stable")]
        else:
            top = np.argsort(-sims, kind="stable")
        return present[top], sims[top]

    def _keep(self, name: tuple[int, int], item: tuple[np.ndarray, np.ndarray]) -> None:
        size = item[1].nbytes + item[0].nbytes
        with self._lock:
            if name in self._items:
                return
            self._items[name] = item
            self._bytes += size
            while self._bytes > self.budget and len(self._items) > 1:
                _old, (k, m) = self._items.popitem(last=False)
                self._bytes -= k.nbytes + m.nbytes

    def clear(self) -> None:
        """Forget every matrix (the index changed)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
