"""Vector index: exact numpy search for small collections, an approximate index for large ones.

Below ``exact_limit`` vectors (default 20,000) a float32 matrix is searched exactly: a matrix
product over 20k x 384 takes about 2 ms, as fast as any approximate index there, with perfect
recall and nothing to build. Above it the vectors live in an approximate index, by the
``vector_index`` setting: ``ivf`` (the default: faiss inverted lists of 8-bit codes, see
``ivf.py``; at a million papers it builds in under a minute and searches in 2-3 ms) or
``hnsw`` (a usearch graph, cosine, bf16 by default; ``f16``, ``i8``, ``f32``), kept for
deployments that measured it better on their data. Either is called "the graph" below.

On disk a flat index is ``flat.npz`` (keys + float32 matrix), the others ``ivf.faiss`` and
``hnsw.usearch``; each is written to a temporary file and renamed, so a reader never sees a
half-written file. A usearch graph opened from disk is memory-mapped (a first query does not
wait for 1.5 GB at a million papers); an IVF file is read whole (414 MB at 1M). Updates to
an index opened from disk go to a small exact delta layer beside it (``delta.py``), so an
update writes kilobytes instead of the whole index; the layer is folded in when it outgrows
``exact_limit`` and by every rebuild. An index built in memory (a rebuild) is built by big
multi-threaded calls (``add_many``). ``view=True`` opens the index read-only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike

from papersift.search import ivf
from papersift.search.delta import Delta
from papersift.search.ivf import IvfIndex
from papersift.search.subsets import SubsetCache
from papersift.settings import current as current_settings

if TYPE_CHECKING:
    from usearch.index import Index

EXACT_LIMIT = 20_000
BULK_CHUNK = 100_000  # vectors per call when building a graph (all cores share each call)


@dataclass
class VectorParams:
    """Approximate index settings (ignored by the exact index); the deployment's settings."""

    # Measured at a million papers (bench/search.py's synthetic corpus, 200 real query
    # embeddings, recall@100 against exact search): connectivity 32 / expansion_add 200 gave
    # 0.920 at expansion_search 512 and 0.947 at 1024 (7.7 ms); 48 / 300 gives 0.937 at 512
    # and 0.954 at 768 (7.3 ms a search) for a 30 % bigger graph and a 50 % longer build.
    # The defaults of HNSW libraries (16 / 128 / 64) give about 0.8 there.
    # bf16 against f16 at 100k (bench/hnsw.py, connectivity 16): recall@100 0.974 / 0.976 at
    # expansion_search 768, 0.957 / 0.959 at 512, searches 20-50 % faster (AVX-512 BF16 dot
    # products instead of converting halves), builds 7 % faster, the same memory. i8 halves
    # the memory but its recall stops near 0.92 without re-scoring the candidates.
    engine: str = "ivf"  # ivf | hnsw (above exact_limit)
    probe_share: float = 0.05  # ivf: share of the clusters a query scans
    dtype: str = "bf16"  # hnsw: bf16 | f16 | i8 | f32
    connectivity: int = 48
    expansion_add: int = 300
    expansion_search: int = 768
    exact_limit: int = EXACT_LIMIT

    @classmethod
    def from_env(cls) -> VectorParams:
        """The deployment's settings (validated there: a bad value is an error, not ignored)."""
        settings = current_settings()
        return cls(
            engine=settings.vector_index,
            probe_share=settings.ivf_probe_share,
            dtype=settings.vector_dtype,
            connectivity=settings.hnsw_connectivity,
            expansion_add=settings.hnsw_expansion_add,
            expansion_search=settings.hnsw_expansion_search,
            exact_limit=settings.exact_limit,
        )


def _as_keys(keys: ArrayLike) -> np.ndarray:
    return np.asarray(keys, dtype=np.uint64).reshape(-1)


def _as_matrix(vectors: ArrayLike, ndim: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, ndim)


class VectorIndex:
    """Keys (u64) to unit vectors, searchable by cosine similarity (higher is closer)."""

    FLAT = "flat.npz"
    HNSW = "hnsw.usearch"
    IVF = "ivf.faiss"
    FILES = (FLAT, HNSW, IVF)

    def __init__(self, ndim: int, params: VectorParams | None = None) -> None:
        self.ndim = ndim
        self.params = params or VectorParams()
        self._keys = np.zeros(0, dtype=np.uint64)
        self._matrix = np.zeros((0, ndim), dtype=np.float32)
        self._rows: dict[int, int] = {}
        self._graph: Index | IvfIndex | None = None  # once the collection outgrows exact search
        self._view = False  # opened read-only
        # A graph opened from disk: memory-mapped from ``_folder``, changes go to ``_delta``.
        self._delta: Delta | None = None
        self._folder: Path | None = None
        self._gone_arr: np.ndarray | None = None  # ``_delta.gone`` as an array (for isin)
        self.subsets = SubsetCache()  # vectors of common filters' papers (subsets.py)

    # -- state ---------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``exact``, ``ivf`` or ``hnsw``: what answers a search now."""
        if self._graph is None:
            return "exact"
        return "ivf" if isinstance(self._graph, IvfIndex) else "hnsw"

    @property
    def is_approximate(self) -> bool:
        """Whether an approximate index (of either engine) holds the main vectors."""
        return self._graph is not None

    def __len__(self) -> int:
        if self._graph is None:
            return len(self._keys)
        if self._delta is None:
            return len(self._graph)
        return len(self._graph) - len(self._delta.gone) + len(self._delta)

    @property
    def delta_size(self) -> int:
        """Entries waiting in the delta layer (0 when there is none)."""
        return self._delta.size if self._delta is not None else 0

    def _new_graph(self, sample: np.ndarray | None, total: int) -> Index | IvfIndex:
        """An empty approximate index for ``total`` vectors; an IVF learns its clusters
        from ``sample`` (rows of ``ivf.sample_rows(total)``)."""
        p = self.params
        if p.engine == "ivf":
            assert sample is not None
            return IvfIndex.trained(sample, ivf.lists_for(total), p.probe_share)
        from usearch.index import Index

        return Index(
            ndim=self.ndim,
            metric="cos",
            dtype=p.dtype,
            connectivity=p.connectivity,
            expansion_add=p.expansion_add,
            expansion_search=p.expansion_search,
        )

    def _to_graph(self, incoming: np.ndarray) -> None:
        every = np.vstack([self._matrix, incoming])
        sample = every[ivf.sample_rows(len(every))] if self.params.engine == "ivf" else None
        graph = self._new_graph(sample, len(every))
        if len(self._keys):
            graph.add(self._keys, self._matrix)
        self._graph = graph
        self._keys = np.zeros(0, dtype=np.uint64)
        self._matrix = np.zeros((0, self.ndim), dtype=np.float32)
        self._rows = {}

    # -- writing -------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._view:
            raise RuntimeError("this vector index is a read-only view; open it with view=False")
        self.subsets.clear()  # about to change: no kept matrix stays valid

    def remove(self, keys: ArrayLike) -> None:
        keys = _as_keys(keys)
        if not len(keys):
            return
        self._writable()
        if self._delta is not None:
            self._delta.remove(keys)
            self._hide(keys)
            return
        if self._graph is not None:
            present = keys[self._graph.contains(keys)]
            if len(present):
                self._graph.remove(present)
            return
        drop = {int(k) for k in keys if int(k) in self._rows}
        if not drop:
            return
        keep = np.array([int(k) not in drop for k in self._keys.tolist()], dtype=bool)
        self._keys = self._keys[keep]
        self._matrix = self._matrix[keep]
        self._rows = {int(k): i for i, k in enumerate(self._keys.tolist())}

    def add(self, keys: ArrayLike, vectors: ArrayLike) -> None:
        """Add or replace vectors (unit length expected) under ``keys``."""
        keys = _as_keys(keys)
        vectors = _as_matrix(vectors, self.ndim)
        if not len(keys):
            return
        self._writable()
        if self._delta is not None:
            self._hide(keys)
            self._delta.add(keys, vectors)
            return
        self.remove(keys)
        if self._graph is None and len(self._keys) + len(keys) > self.params.exact_limit:
            self._to_graph(vectors)
        if self._graph is not None:
            self._graph.add(keys, vectors, threads=os.cpu_count() or 0)
            return
        start = len(self._keys)
        self._keys = np.concatenate([self._keys, keys])
        self._matrix = np.vstack([self._matrix, vectors])
        for offset, key in enumerate(keys.tolist()):
            self._rows[key] = start + offset

    def add_many(self, chunks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add (keys, vectors) chunks of new keys to an index built in memory (a rebuild):
        the graph is filled by big multi-threaded calls, not batch by batch."""
        self._writable()
        total = sum(len(k) for k, _v in chunks)
        if self._delta is not None or self._graph is not None or len(self._keys):
            for keys, vectors in chunks:
                self.add(keys, vectors)
            return
        if total <= self.params.exact_limit:
            for keys, vectors in chunks:
                self.add(keys, vectors)
            return
        sample = _sample_rows(chunks, self.ndim) if self.params.engine == "ivf" else None
        graph = self._new_graph(sample, total)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        size = 0
        for i, (keys, vectors) in enumerate(chunks):
            pending.append((keys, vectors))
            size += len(keys)
            if size >= BULK_CHUNK or i == len(chunks) - 1:
                graph.add(
                    _as_keys(np.concatenate([k for k, _v in pending])),
                    _as_matrix(np.vstack([v for _k, v in pending]), self.ndim),
                    threads=os.cpu_count() or 0,
                )
                pending, size = [], 0
        self._graph = graph

    # -- the delta layer -------------------------------------------------------------------

    def _hide(self, keys: np.ndarray) -> None:
        """Mark the keys the main graph holds as gone (their new vectors, if any, go to the
        delta layer)."""
        assert self._graph is not None and self._delta is not None
        present = keys[np.asarray(self._graph.contains(keys), dtype=bool).reshape(-1)]
        if len(present):
            self._delta.gone.update(int(k) for k in present.tolist())
            self._gone_arr = None

    def _gone(self) -> np.ndarray:
        assert self._delta is not None
        if self._gone_arr is None:
            self._gone_arr = np.array(sorted(self._delta.gone), dtype=np.uint64)
        return self._gone_arr

    def _merge(self) -> None:
        """Fold the delta layer into a writable copy of the graph (then saved whole)."""
        assert self._graph is not None and self._delta is not None and self._folder is not None
        graph = _restore(self._folder, self.params, view=False)
        hidden = self._gone()
        if len(hidden):
            graph.remove(hidden)
        if len(self._delta):
            graph.add(self._delta.keys, self._delta.matrix, threads=os.cpu_count() or 0)
        self._graph = graph
        self._delta = Delta(self.ndim)
        self._gone_arr = None

    # -- reading -------------------------------------------------------------------------

    def contains(self, keys: ArrayLike) -> np.ndarray:
        keys = _as_keys(keys)
        if self._graph is not None:
            found = np.asarray(self._graph.contains(keys), dtype=bool).reshape(-1)
            if self._delta is not None and self._delta.size:
                found &= ~np.isin(keys, self._gone())
                found |= self._delta.contains(keys)
            return found
        return np.array([int(k) in self._rows for k in keys.tolist()], dtype=bool)

    def get(self, keys: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, float32 vectors of the found keys in order)."""
        wanted = _as_keys(keys)
        found = self.contains(wanted)
        present = wanted[found]
        if not len(present):
            return found, np.zeros((0, self.ndim), dtype=np.float32)
        if self._graph is not None:
            if self._delta is not None and len(self._delta):
                recent = self._delta.contains(present)
                if recent.any():
                    out = np.zeros((len(present), self.ndim), dtype=np.float32)
                    out[recent] = self._delta.get(present[recent])
                    if (~recent).any():
                        out[~recent] = self._graph_get(present[~recent])
                    return found, out
            return found, self._graph_get(present)
        rows = [self._rows[int(k)] for k in present.tolist()]
        return found, self._matrix[rows]

    def _graph_get(self, keys: np.ndarray) -> np.ndarray:
        assert self._graph is not None
        # (every key is present, so no row is None; usearch takes numpy dtypes too)
        got = self._graph.get(keys, dtype=np.float32)  # type: ignore[arg-type]
        matrix = np.vstack(cast(tuple[np.ndarray, ...], got)) if isinstance(got, tuple) else got
        return _as_matrix(cast(np.ndarray, matrix), self.ndim)

    def _graph_search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._graph is not None
        matches = self._graph.search(query, count, threads=1)
        return (
            np.asarray(matches.keys, dtype=np.uint64),
            1.0 - np.asarray(matches.distances, dtype=np.float32),
        )

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, cosine similarities) of the ``count`` nearest vectors, best first."""
        count = min(count, len(self))
        if count <= 0:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float32)
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if self._graph is not None:
            delta = self._delta
            if delta is None or not delta.size:
                return self._graph_search(query, count)
            # Over-fetch by the hidden keys that could be among the nearest, drop them, and
            # merge with the layer's own nearest.
            keys, sims = self._graph_search(query, count + min(len(delta.gone), count))
            if delta.gone:
                keep = ~np.isin(keys, self._gone())
                keys, sims = keys[keep], sims[keep]
            d_keys, d_sims = delta.search(query, count)
            keys, sims = np.concatenate([keys, d_keys]), np.concatenate([sims, d_sims])
            top = np.argsort(-sims, kind="stable")[:count]
            return keys[top], sims[top]
        sims = self._matrix @ query
        if count < len(sims):
            top = np.argpartition(-sims, count - 1)[:count]
        else:
            top = np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        return self._keys[top], sims[top]

    def search_subset(
        self, query: np.ndarray, keys: np.ndarray, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search restricted to ``keys``, a filter's papers, whose vectors are kept
        for the next query under the same filter (see ``subsets.py``)."""
        return self.subsets.search(_as_keys(keys), query, count, self.get)

    def search_among(
        self, query: np.ndarray, keys: ArrayLike, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search restricted to ``keys`` (for narrow filters)."""
        wanted = _as_keys(keys)
        found, vectors = self.get(wanted)
        wanted = wanted[found]
        if not len(wanted):
            return wanted, np.zeros(0, dtype=np.float32)
        sims = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        top = np.argsort(-sims, kind="stable")[:count]
        return wanted[top], sims[top]

    # -- files ---------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write atomically into ``folder`` (and drop the file of the other kind)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self._delta is not None:
            if self._folder is not None and folder.resolve() == self._folder.resolve():
                if self._delta.size <= self.params.exact_limit:
                    self._delta.save(folder)  # the graph file is unchanged
                    return
            self._merge()  # outgrown (or saved elsewhere): the graph is written whole
        name = {"exact": self.FLAT, "hnsw": self.HNSW, "ivf": self.IVF}[self.kind]
        tmp = folder / (f".{name}.{os.getpid()}.tmp" + (".npz" if name == self.FLAT else ""))
        try:
            if self._graph is not None:
                self._graph.save(str(tmp))
            else:
                np.savez(tmp, keys=self._keys, matrix=self._matrix)
            ivf.keys_path(folder / self.IVF).unlink(missing_ok=True)  # (lists the old file)
            os.replace(tmp, folder / name)
            if isinstance(self._graph, IvfIndex):
                self._graph.save_keys(folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves nothing behind
            raise
        for other in self.FILES:
            if other != name:
                (folder / other).unlink(missing_ok=True)
        Delta.drop(folder)  # folded in (a stale one would be harmless: the layer wins)
        if self._delta is not None:
            self._folder = folder

    @classmethod
    def exists(cls, folder: Path) -> bool:
        return any((Path(folder) / name).is_file() for name in cls.FILES)

    @classmethod
    def load(
        cls, folder: Path, ndim: int, params: VectorParams | None = None, *, view: bool = False
    ) -> VectorIndex:
        """Open the index saved in ``folder`` (an empty one if there is none)."""
        index = cls(ndim, params)
        folder = Path(folder)
        flat_path = folder / cls.FLAT
        if (folder / cls.HNSW).is_file() or (folder / cls.IVF).is_file():
            # Which engine is the file's, not the setting's (a rebuild applies a new setting).
            # A usearch graph is mapped, also for writers: they change only the delta layer,
            # for which an IVF index's keys suffice (the rest is read if a merge needs it).
            graph = _restore(folder, index.params, view=True, lazy=not view)
            if graph.ndim != ndim:
                raise ValueError(f"{folder} does not hold {ndim}-dimensional vectors")
            index._graph = graph
            index._view = view
            index._folder = folder
            delta = Delta.load(folder, ndim)
            if delta.size:
                # Hidden keys the graph no longer has are dropped; keys the layer holds hide
                # the graph's copy (a merge that crashed before dropping the layer).
                marked = np.array(sorted(delta.gone | set(delta.keys.tolist())), dtype=np.uint64)
                held = np.asarray(graph.contains(marked), dtype=bool).reshape(-1)
                delta.gone = {int(k) for k in marked[held].tolist()}
            index._delta = delta
        elif flat_path.is_file():
            with np.load(flat_path) as data:
                keys, matrix = data["keys"], data["matrix"]
            if matrix.shape[1:] != (ndim,):
                raise ValueError(f"{flat_path} does not hold {ndim}-dimensional vectors")
            index._keys = keys.astype(np.uint64)
            index._matrix = matrix.astype(np.float32)
            index._rows = {int(k): i for i, k in enumerate(index._keys.tolist())}
        return index


def _restore(
    folder: Path, params: VectorParams, *, view: bool, lazy: bool = False
) -> Index | IvfIndex:
    """The approximate index saved in ``folder`` (IVF or usearch, whichever file is there)."""
    if (folder / VectorIndex.IVF).is_file():
        return IvfIndex.restore(
            folder / VectorIndex.IVF, params.probe_share, lazy=lazy, mapped=view
        )
    from usearch.index import Index

    path = folder / VectorIndex.HNSW
    graph = Index.restore(str(path), view=view)
    if graph is None:
        raise ValueError(f"{path} cannot be read")
    # (settable: usearch's stubs lose the property's setter)
    graph.expansion_search = params.expansion_search  # type: ignore[misc]
    return graph


def _sample_rows(chunks: list[tuple[np.ndarray, np.ndarray]], ndim: int) -> np.ndarray:
    """A random sample of the rows of ``chunks`` big enough to train an IVF on all of them,
    gathered without stacking every chunk (1.5 GB at a million papers)."""
    sizes = np.array([len(k) for k, _v in chunks], dtype=np.int64)
    rows = ivf.sample_rows(int(sizes.sum()))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    which = np.searchsorted(starts, rows, side="right") - 1
    out = np.empty((len(rows), ndim), dtype=np.float32)
    for c in np.unique(which).tolist():
        picked = which == c
        out[picked] = np.asarray(chunks[c][1][rows[picked] - starts[c]], dtype=np.float32)
    return out
