"""The IVF vector index for large collections: faiss inverted lists of 8-bit scalar codes.

Why not only HNSW: on these 2 cores a usearch HNSW graph good enough for recall@100 0.95
took 2,100 s to build at a million papers (connectivity 48, expansion 300) and 8.5 ms a
search at 0.936 recall, with 1.2 GB of graph. An inverted file (k-means into ``lists``
clusters, each paper's vector kept as 8-bit per-dimension codes in its cluster's list, a
query scanning the ``probes`` nearest clusters) built the same 1M vectors in 46 s (27 s of
it training; a first experiment, by hand) and holds 414 MB; as served (3,906 lists, 196
scanned) the 1M search benchmark measured 2.7 ms a top 100 at recall@100 0.958 and a 301 s
build of the whole index, and at 236,579 papers bench/hnsw.py measured it against HNSW in
one run: 5 s against 406 s to build, 2.7 against 7.0 ms at the same recall (BENCHMARKS.md).
The 8-bit codes lose nothing measurable: the same index with float16 codes had the same
recall, and a decoded vector has cosine 0.99997 with the original, so candidates need no
re-scoring and ``get`` serves feedback too.

This class gives the inverted file the small surface ``VectorIndex`` uses of a usearch
graph (``add``, ``remove``, ``contains``, ``get``, ``search``, ``save``), so the rest of
the vector index (delta layer, filters, files) is the same for both. faiss is used as
designed: ``IndexIVFScalarQuantizer`` (no direct map: vectors by key are decoded here), file
I/O by ``write_index``/``read_index``. The file is read whole, not memory-mapped: mapped,
faiss searched it 2x slower, and 414 MB read in 0.25 s from a warm cache. A writer opens
it lazily: ``ivf.faiss.keys.npy`` beside it lists its keys, which is all an update of a
few papers asks of it, and the index is read only when a merge or a search needs it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# faiss's k-means wants 39 training points per cluster; 40 is what the measurements used.
TRAIN_PER_LIST = 40
MIN_TRAIN = 20_000
# A cluster per 256 papers: 3,906 at 1M (faiss's guide says 4-16 x sqrt(n), 4,000-16,000
# there); fewer, bigger clusters at small sizes, where 4 x sqrt(n) made lists of 40 papers
# and a query scanning 5 % of them read too few papers to fill a top 100 (recall@100 0.76
# at 30,000 papers against 0.95 at 1M).
PAPERS_PER_LIST = 256
# A query scans at least this many papers' codes (about 2.5 ms here). Recall@100 follows
# how many papers a query scans more than what share of the collection they are: 50,000
# gave 0.966 at 236,579 papers (21 % of them) and 0.958 at a million (5 %), 20,000 only
# 0.897 at 236,579 (bench/hnsw.py and the 1M run in BENCHMARKS.md).
MIN_SCAN = 50_000


def keys_path(path: Path | str) -> Path:
    """The file beside a saved index that lists its keys (see ``IvfIndex.save_keys``)."""
    return Path(f"{path}.keys.npy")


def lists_for(count: int) -> int:
    """Clusters for ``count`` vectors: one per 256, at least 1."""
    return max(1, count // PAPERS_PER_LIST)


def probes_for(lists: int, share: float, count: int) -> int:
    """Clusters a query scans: ``share`` of them, and enough for ``MIN_SCAN`` of ``count``."""
    wanted = max(share, MIN_SCAN / max(count, 1))
    return min(lists, max(1, math.ceil(lists * wanted)))


@dataclass
class Matches:
    """What a search returns, shaped like usearch's matches (keys, cosine distances)."""

    keys: np.ndarray
    distances: np.ndarray


def _faiss() -> Any:
    import faiss  # (imported late: it loads OpenMP and BLAS)

    return faiss


def _ids(keys: Iterable[int] | np.ndarray) -> np.ndarray:
    # Keys are 63-bit (catalog.paper_key), so they fit faiss's signed ids unchanged.
    return np.ascontiguousarray(np.asarray(keys, dtype=np.uint64).reshape(-1).astype(np.int64))


def sample_rows(total: int, seed: int = 0) -> np.ndarray:
    """Rows (sorted) to learn the clusters of ``total`` vectors from: all of a small
    collection, a random 40 per cluster of a big one (training time grows with sample x
    clusters, and 40 per cluster is what faiss's k-means asks for; faiss warns below 39)."""
    # At least 20,000: the 8-bit codes' per-dimension ranges are learned from the sample too,
    # and from a few hundred rows they clip the vectors outside them.
    want = max(lists_for(total) * TRAIN_PER_LIST, MIN_TRAIN)
    if total <= want:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(total, want, replace=False))


class IvfIndex:
    """Keys to unit vectors in faiss inverted lists; cosine = inner product."""

    def __init__(self, index: Any, probe_share: float) -> None:
        self._loaded: Any = index  # the faiss index (None until a lazily opened one is read)
        self._path: Path | None = None  # where a lazily opened index is read from
        self._mapped = False  # its lists are a view of the file (an index only searched)
        self._load_lock = threading.Lock()
        self.ndim = int(index.d)
        self._nlist = int(index.nlist)
        self.probe_share = probe_share
        self._sorted = np.zeros(0, dtype=np.uint64)  # keys held, sorted (faiss has no "contains")
        self._codes: _CodeMap | None = None  # where each key's code is (None: faiss decodes)
        self._stale = True  # the lists changed since ``_codes`` was made
        self._read_lists()
        self._set_probes()

    @property
    def _index(self) -> Any:
        """The faiss index, read from disk by the first call that needs more than keys."""
        index = self._loaded
        if index is None:
            with self._load_lock:
                if self._loaded is None:
                    assert self._path is not None
                    loaded = _read(self._path, self._mapped)
                    self._read_lists(loaded)  # (the file's own keys, were it replaced since)
                    loaded.nprobe = probes_for(self._nlist, self.probe_share, loaded.ntotal)
                    self._loaded = loaded  # (last: other threads see a whole index or none)
                index = loaded
        return index

    def _changeable(self) -> None:
        if self._mapped:  # (faiss cannot grow or shrink lists that are views of a file)
            raise RuntimeError("this IVF index is mapped from its file: restore it unmapped")

    def _set_probes(self) -> None:
        self._index.nprobe = probes_for(int(self._index.nlist), self.probe_share, len(self))

    # -- building ----------------------------------------------------------------------

    @classmethod
    def trained(
        cls, sample: np.ndarray, lists: int, probe_share: float, threads: int = 0
    ) -> IvfIndex:
        """An empty index of ``lists`` clusters learned from ``sample`` (float32 rows)."""
        faiss = _faiss()
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        ndim = sample.shape[1]
        lists = max(1, min(lists, len(sample)))
        coarse = faiss.IndexFlatIP(ndim)
        index = faiss.IndexIVFScalarQuantizer(
            coarse, ndim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.own_fields = True
        coarse.this.disown()  # (the IVF index owns and frees its coarse quantizer)
        index.cp.verbose = False
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        index.train(sample)
        return cls(index, probe_share)

    # -- the surface VectorIndex uses ----------------------------------------------------

    def __len__(self) -> int:
        return len(self._sorted) if self._loaded is None else int(self._loaded.ntotal)

    @property
    def lists(self) -> int:
        return self._nlist

    @property
    def probes(self) -> int:
        return probes_for(self._nlist, self.probe_share, len(self))

    @property
    def memory_usage(self) -> int:
        """Bytes of codes and keys (what the index holds in memory, roughly)."""
        return len(self) * (int(self._index.code_size) + 8 + 16) + self.lists * self.ndim * 4

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        ids = _ids(keys)
        if not len(ids):
            return
        self._changeable()
        faiss = _faiss()
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        self.remove(ids[self.contains(ids)])  # a key holds one vector
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._sorted = np.union1d(self._sorted, ids.astype(np.uint64))
        self._stale = True  # the lists have grown (and may have moved in memory)
        self._set_probes()

    def remove(self, keys: np.ndarray) -> None:
        ids = _ids(keys)
        if not len(ids):
            return
        self._changeable()
        faiss = _faiss()
        # (no direct map, see ``_without_direct_map``: faiss walks every list and asks a
        # hashed set of the ids, a few ms at a million papers)
        self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))
        self._sorted = np.setdiff1d(self._sorted, ids.astype(np.uint64), assume_unique=False)
        self._stale = True
        self._set_probes()

    def contains(self, keys: np.ndarray) -> np.ndarray:
        wanted = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if not len(self._sorted):
            return np.zeros(len(wanted), dtype=bool)
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return np.asarray(self._sorted[at] == wanted, dtype=bool)

    def get(self, keys: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Decoded float32 vectors of keys the index holds (every key must be present);
        ``dtype`` is accepted as usearch's ``get`` takes it, and is always float32 here."""
        ids = _ids(keys)
        if not len(ids):
            return np.zeros((0, self.ndim), dtype=np.float32)
        if self._stale:
            self._read_lists()
        codes = self._codes
        if codes is not None:
            got = codes.decode(np.searchsorted(self._sorted, ids.astype(np.uint64)))
        else:  # codes this decoding does not know: faiss finds them by its direct map
            if int(self._index.direct_map.type) != int(_faiss().DirectMap.Hashtable):
                self._index.set_direct_map_type(_faiss().DirectMap.Hashtable)
            got = np.asarray(self._index.reconstruct_batch(ids), dtype=np.float32)
        # Decoding 8-bit codes leaves a norm off 1 by about 1e-4: unit again, as stored.
        norms = np.linalg.norm(got, axis=1, keepdims=True)
        return got / np.where(norms > 0, norms, 1)

    def search(self, query: np.ndarray, count: int, threads: int = 1) -> Matches:
        """The ``count`` nearest (at most), as cosine distances; one thread for one query, as
        a served worker searches (OpenMP's thread count is per calling thread)."""
        _faiss().omp_set_num_threads(max(1, threads))
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        sims, ids = self._index.search(q, count)
        ok = ids[0] >= 0  # faiss pads a short answer with -1
        return Matches(ids[0][ok].astype(np.uint64), 1.0 - sims[0][ok].astype(np.float32))

    # -- files -------------------------------------------------------------------------

    def save(self, path: str) -> None:
        _faiss().write_index(self._index, path)

    def save_keys(self, path: Path | str) -> None:
        """Beside the index saved at ``path``, in its final place: the keys it holds, with
        the file's size and time. Why: an update of a few papers only asks which keys the
        index holds (its new vectors go to the delta layer), and reading the whole index
        for that took a writer 1-2.5 s at a million papers (``restore(lazy=True)``)."""
        st = os.stat(path)
        head = np.array([self.ndim, self._nlist, st.st_size, st.st_mtime_ns], dtype=np.uint64)
        target = keys_path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as fh:
                np.save(fh, np.concatenate([head, self._sorted]), allow_pickle=False)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def restore(
        cls, path: Path | str, probe_share: float, *, lazy: bool = False, mapped: bool = False
    ) -> IvfIndex:
        """The index saved at ``path``; ``lazy``: read only its keys now, if the file beside
        it lists them for this very file (else, or when more is asked, the whole index);
        ``mapped``: the lists stay in the file, mapped, for an index that is only searched
        (see :func:`_read`)."""
        if lazy:
            listed = _listed_keys(Path(path))
            if listed is not None:
                index = cls.__new__(cls)
                index._loaded, index._path, index._load_lock = None, Path(path), threading.Lock()
                index._mapped = mapped
                index.ndim, index._nlist, index.probe_share = listed[0], listed[1], probe_share
                index._sorted, index._codes, index._stale = listed[2], None, True
                return index
        index = cls(_read(Path(path), mapped), probe_share)
        index._mapped = mapped
        return index

    def _read_lists(self, index: Any = None) -> None:
        """Read which keys each inverted list holds: the sorted keys, and where each key's
        code lies for ``get``."""
        faiss = _faiss()
        index = self._index if index is None else index
        invlists = index.invlists
        ids, lists = [], []
        for i in range(int(index.nlist)):
            size = int(invlists.list_size(i))
            if size:
                ids.append(faiss.rev_swig_ptr(invlists.get_ids(i), size).copy())
                lists.append(np.full(size, i, dtype=np.int32))
        self._stale = False
        if not ids:
            self._sorted = np.zeros(0, dtype=np.uint64)
            self._codes = None
            return
        held = np.concatenate(ids).astype(np.uint64)
        order = np.argsort(held)  # (keys are unique: any sort gives this order; 2x a stable one)
        self._sorted = held[order]
        self._codes = _CodeMap.of(index, np.concatenate(lists)[order], order)


def _read(path: Path, mapped: bool) -> Any:
    """The faiss index in ``path``, without its direct map; ``mapped``: its inverted lists
    are views of the file mapped into memory (faiss's ``IO_FLAG_MMAP_IFC``), not copies.
    Why: at a million papers reading the 400 MB of lists took 0.3-0.45 s of a new
    process's first query, mapping them 10 ms, with the same search speed once the pages
    are in the page cache, which the serving workers then share. Only an index that is
    never changed is mapped (a loaded index changes only its delta layer; a merge reads
    its own copy), and files are replaced, never rewritten in place, so a mapping always
    sees the file it was opened on."""
    faiss = _faiss()
    flags = faiss.IO_FLAG_MMAP_IFC if mapped else 0
    return _without_direct_map(faiss.read_index(str(path), flags))


def _without_direct_map(index: Any) -> Any:
    """The index without faiss's id -> code hash table. Why: nothing here needs it (``get``
    decodes through ``_CodeMap``, ``remove`` walks the lists), and at a million papers
    reading a file that holds one took 0.6-0.7 s against 0.1-0.3 s, for 1M map entries
    held in memory by every serving process. Files written before keep theirs on disk;
    it is dropped once read and they are written without it."""
    index.set_direct_map_type(_faiss().DirectMap.NoMap)
    return index


def _listed_keys(path: Path) -> tuple[int, int, np.ndarray] | None:
    """(dimensions, lists, sorted keys) from the keys file of the index at ``path``, or None
    when there is none or it was written for another version of the file."""
    try:
        st = os.stat(path)
        data = np.load(keys_path(path), allow_pickle=False)
    except (OSError, ValueError):
        return None
    if data.dtype != np.uint64 or data.ndim != 1 or len(data) < 4:
        return None
    if (int(data[2]), int(data[3])) != (st.st_size, st.st_mtime_ns):
        return None
    return int(data[0]), int(data[1]), data[4:]


@dataclass
class _CodeMap:
    """Each held key's 8-bit code, found and decoded with numpy.

    Why not faiss's ``reconstruct_batch``: it finds each key in a hash table and decodes its
    code one vector at a time, 2.8 ms for a hybrid query's 400 candidates at a million papers
    on a slow host; here a gather and one vectorised decode (same values, to float rounding).
    The views point into the index's own lists (no copy); the map is rebuilt after a change.
    """

    lists: np.ndarray  # per key (in key order): its list
    starts: np.ndarray  # per key: where its code starts in that list's codes
    codes: list[memoryview]  # per list: its codes (a view of faiss's memory, no copy)
    centroids: np.ndarray  # (lists, ndim) float32: the residuals' origins
    scale: np.ndarray  # per dimension: value = code x scale + offset (+ centroid)
    offset: np.ndarray

    @classmethod
    def of(cls, index: Any, lists: np.ndarray, order: np.ndarray) -> _CodeMap | None:
        """The map of an index whose codes this decoding knows (else None: faiss decodes)."""
        faiss = _faiss()
        invlists = faiss.downcast_InvertedLists(index.invlists)
        sq = index.sq
        if (
            not isinstance(invlists, faiss.ArrayInvertedLists)
            or int(sq.qtype) != int(faiss.ScalarQuantizer.QT_8bit)
            or int(sq.code_size) != int(index.d)
        ):
            return None
        ndim, nlist = int(index.d), int(index.nlist)
        sizes = np.array([int(invlists.list_size(i)) for i in range(nlist)], dtype=np.int64)
        first = np.zeros(nlist, dtype=np.int64)  # each list's first key in the concatenation
        first[1:] = np.cumsum(sizes)[:-1]
        starts = (order - first[lists]) * ndim
        codes = [
            memoryview(faiss.rev_swig_ptr(invlists.get_codes(i), int(n) * ndim) if n else b"")
            for i, n in enumerate(sizes.tolist())
        ]
        trained = faiss.vector_to_array(sq.trained).astype(np.float32)
        if index.by_residual:
            centroids = index.quantizer.reconstruct_n(0, nlist).astype(np.float32)
        else:
            centroids = np.zeros((nlist, ndim), dtype=np.float32)
        # faiss's 8-bit decoding: a code is the middle of one of 255 steps of its range.
        vmin, vdiff = trained[:ndim], trained[ndim:]
        scale = vdiff / np.float32(255.0)
        return cls(lists, starts, codes, centroids, scale, vmin + np.float32(0.5) * scale)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Float32 vectors of the keys at these rows of the sorted keys."""
        lists = self.lists[rows]
        ndim = len(self.scale)
        codes = self.codes
        # (slices of memoryviews joined: a tenth of the time of numpy row assignments)
        picked = b"".join(
            [
                codes[i][at : at + ndim]
                for i, at in zip(lists.tolist(), self.starts[rows].tolist(), strict=True)
            ]
        )
        out = self.centroids[lists]
        out += np.frombuffer(picked, dtype=np.uint8).reshape(-1, ndim) * self.scale
        out += self.offset
        return out
