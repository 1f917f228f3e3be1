"""The IVF vector index (search/ivf.py) on clustered vectors, as real embeddings are.

Random vectors have no clusters, so on them an inverted file only works by scanning every
list; these tests use mixtures around centres, where a query scans a few of many lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from papersift.search import ivf
from papersift.search.vectors import VectorIndex, VectorParams

DIM = 48


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, DIM)).astype(np.float32)
    m = centres[rng.integers(0, len(centres), n)] + 1.5 * rng.standard_normal((n, DIM))
    m = m.astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def built() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    vecs = _clustered(120_000)
    # 63-bit keys, the largest among them: catalog keys use the whole range.
    keys = (np.arange(len(vecs), dtype=np.uint64) * 2_654_435_761) % (1 << 63)
    keys[0] = (1 << 63) - 1
    index = VectorIndex(DIM, VectorParams(engine="ivf", exact_limit=1_000, probe_share=0.05))
    index.add_many(
        [(keys[i : i + 30_000], vecs[i : i + 30_000]) for i in range(0, len(vecs), 30_000)]
    )
    return index, keys, vecs


def _recall(index: VectorIndex, keys: np.ndarray, vecs: np.ndarray, queries: np.ndarray) -> float:
    hits = 0
    for q in queries:
        truth = set(keys[np.argsort(-(vecs @ q))[:10]].tolist())
        hits += len(truth & set(index.search(q, 10)[0].tolist()))
    return hits / (10 * len(queries))


def test_a_query_scans_a_few_lists_and_still_finds_the_nearest(built) -> None:
    index, keys, vecs = built
    graph = index._graph
    assert isinstance(graph, ivf.IvfIndex) and index.kind == "ivf" and len(index) == 120_000
    assert graph.lists == ivf.lists_for(120_000) == 468
    assert graph.probes == 195  # enough lists for 50,000 papers here (5 % at a million)
    queries = _clustered(60, seed=7)
    assert _recall(index, keys, vecs, queries) >= 0.9
    found, got = index.get(keys[:3])
    assert found.all() and np.allclose((got * vecs[:3]).sum(axis=1), 1.0, atol=1e-3)
    assert index.search(vecs[0], 1)[0][0] == (1 << 63) - 1


def test_the_probe_share_trades_speed_for_recall_without_a_rebuild(
    built, tmp_path, monkeypatch
) -> None:
    index, keys, vecs = built
    index.save(tmp_path)
    queries = _clustered(60, seed=8)
    monkeypatch.setattr(ivf, "MIN_SCAN", 1_000)  # the share alone decides here
    recalls = []
    for share, probes in ((0.01, 5), (0.1, 47), (1.0, 468)):
        opened = VectorIndex.load(tmp_path, DIM, VectorParams(probe_share=share), view=True)
        assert isinstance(opened._graph, ivf.IvfIndex) and opened._graph.probes == probes
        recalls.append(_recall(opened, keys, vecs, queries))
    # (scanning every list leaves only the 8-bit codes between it and exact search)
    assert recalls[0] <= recalls[1] <= recalls[2] and recalls[2] >= 0.97
    assert recalls[0] < recalls[2] - 0.05  # fewer lists, fewer true neighbours: the share counts


def test_replacing_and_removing_keep_one_vector_per_key(tmp_path: Path) -> None:
    vecs = _clustered(3_000, seed=2)
    keys = np.arange(10, 3_010, dtype=np.uint64)
    index = VectorIndex(DIM, VectorParams(engine="ivf", exact_limit=100))
    index.add_many([(keys, vecs)])
    graph = index._graph
    assert isinstance(graph, ivf.IvfIndex)
    graph.add(keys[:5], vecs[100:105])  # replaced in place (a merge folds a changed paper)
    graph.remove(np.array([keys[6], 999_999], dtype=np.uint64))  # one key it never held
    assert len(graph) == 2_999 and not graph.contains(keys[6:7]).any()
    got = graph.get(keys[:1])
    assert float(got[0] @ vecs[100]) > 0.999 and float(got[0] @ vecs[0]) < 0.99


def _faiss_decoded(graph: ivf.IvfIndex, keys: np.ndarray) -> np.ndarray:
    """faiss's own decoding, through a direct map made for the call (the index has none)."""
    import faiss

    index = graph._index
    assert int(index.direct_map.type) == int(faiss.DirectMap.NoMap)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    try:
        got = np.asarray(index.reconstruct_batch(keys.astype(np.int64)), dtype=np.float32)
    finally:
        index.set_direct_map_type(faiss.DirectMap.NoMap)
    return got / np.linalg.norm(got, axis=1, keepdims=True)


def test_vectors_by_key_decode_as_faiss_does_after_every_change(tmp_path: Path) -> None:
    """``get`` decodes the 8-bit codes itself (search/ivf.py's ``_CodeMap``): the values are
    faiss's own, also once lists have grown, shrunk or been reloaded from the file."""
    vecs = _clustered(6_000, seed=4)
    keys = (np.arange(len(vecs), dtype=np.uint64) * 7_919 + 3) % (1 << 63)
    index = VectorIndex(DIM, VectorParams(engine="ivf", exact_limit=100))
    index.add_many([(keys[:4_000], vecs[:4_000])])
    graph = index._graph
    assert isinstance(graph, ivf.IvfIndex)
    wanted = keys[np.random.default_rng(5).permutation(4_000)[:700]]  # any order, many lists
    np.testing.assert_allclose(graph.get(wanted), _faiss_decoded(graph, wanted), atol=1e-6)
    assert graph._codes is not None and not graph._stale  # numpy decoded, not faiss
    graph.add(keys[4_000:], vecs[4_000:])  # every list grows: its codes may move in memory
    grown = np.concatenate([wanted[:100], keys[-100:]])
    np.testing.assert_allclose(graph.get(grown), _faiss_decoded(graph, grown), atol=1e-6)
    graph.add(keys[:3], vecs[10:13])  # replaced
    graph.remove(keys[3:8])
    wanted = np.concatenate([keys[:3], keys[8:20], keys[-50:]])
    np.testing.assert_allclose(graph.get(wanted), _faiss_decoded(graph, wanted), atol=1e-6)
    assert float(graph.get(keys[:1])[0] @ vecs[10]) > 0.999
    index.save(tmp_path)
    reread = VectorIndex.load(tmp_path, DIM, index.params, view=True)._graph
    assert isinstance(reread, ivf.IvfIndex)
    np.testing.assert_allclose(reread.get(wanted), graph.get(wanted), atol=1e-6)


def test_a_damaged_ivf_file_is_an_error_not_a_crash(built, tmp_path: Path) -> None:
    index, _keys, _vecs = built
    index.save(tmp_path)
    path = tmp_path / VectorIndex.IVF
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(Exception):  # noqa: B017 (faiss raises RuntimeError; any error will do)
        VectorIndex.load(tmp_path, DIM)


def test_a_writer_opens_the_index_by_its_keys_and_reads_the_rest_when_asked(
    tmp_path: Path,
) -> None:
    """An update of a few papers needs only which keys the index holds: the keys file
    beside ``ivf.faiss`` answers that, and the index itself is read by the first search,
    decode or merge (and whenever the keys file does not describe this very file)."""
    vecs = _clustered(5_000, seed=9)
    keys = np.arange(100, 5_100, dtype=np.uint64)
    index = VectorIndex(DIM, VectorParams(engine="ivf", exact_limit=100))
    index.add_many([(keys, vecs)])
    index.save(tmp_path)
    assert ivf.keys_path(tmp_path / VectorIndex.IVF).is_file()
    full = VectorIndex.load(tmp_path, DIM, index.params, view=True)
    writer = VectorIndex.load(tmp_path, DIM, index.params)
    graph = writer._graph
    assert isinstance(graph, ivf.IvfIndex) and graph._loaded is None
    assert len(writer) == 5_000 and graph.lists == ivf.lists_for(5_000)
    assert graph.probes == full._graph.probes  # type: ignore[union-attr]
    writer.remove(keys[:3])
    writer.add(keys[3:5], vecs[10:12])  # to the delta layer
    assert writer.contains(keys[:6]).tolist() == [False, False, False, True, True, True]
    mtime = (tmp_path / VectorIndex.IVF).stat().st_mtime_ns
    writer.save(tmp_path)  # the delta layer only: the index file is not rewritten
    assert graph._loaded is None and (tmp_path / VectorIndex.IVF).stat().st_mtime_ns == mtime
    query = vecs[4000]
    got, want = writer.search(query, 10), full.search(query, 10)
    assert graph._loaded is not None  # read by the search
    assert got[0].tolist() == want[0].tolist()
    assert float(writer.get(keys[3:4])[1][0] @ vecs[10]) > 0.999  # the delta's vector

    # A keys file of another version of the index, or a damaged one, is not trusted.
    keys_file = ivf.keys_path(tmp_path / VectorIndex.IVF)
    stale = keys_file.read_bytes()
    index.add(np.array([9_999], dtype=np.uint64), vecs[:1])
    index.save(tmp_path / "other")
    (tmp_path / VectorIndex.IVF).write_bytes((tmp_path / "other" / VectorIndex.IVF).read_bytes())
    keys_file.write_bytes(stale)
    reopened = VectorIndex.load(tmp_path, DIM, index.params)._graph
    assert isinstance(reopened, ivf.IvfIndex) and reopened._loaded is not None
    assert reopened.contains(np.array([9_999], dtype=np.uint64)).all()
    keys_file.write_bytes(b"not numpy")
    damaged = VectorIndex.load(tmp_path, DIM, index.params)._graph
    assert isinstance(damaged, ivf.IvfIndex) and damaged._loaded is not None


def test_files_carry_no_direct_map_and_older_ones_with_it_still_work(tmp_path: Path) -> None:
    """faiss's id -> code hash table is neither written nor kept: reading one cost a reader
    0.4 s at a million papers. A file written with one (before) opens, searches, decodes
    and takes removals as a new one does."""
    import faiss

    vecs = _clustered(4_000, seed=12)
    keys = np.arange(1, 4_001, dtype=np.uint64)
    index = VectorIndex(DIM, VectorParams(engine="ivf", exact_limit=100))
    index.add_many([(keys, vecs)])
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    index.save(new_dir)
    graph = index._graph
    assert isinstance(graph, ivf.IvfIndex)
    graph._index.set_direct_map_type(faiss.DirectMap.Hashtable)  # as files were written
    index.save(old_dir)
    graph._index.set_direct_map_type(faiss.DirectMap.NoMap)
    new_file, old_file = new_dir / VectorIndex.IVF, old_dir / VectorIndex.IVF
    assert new_file.stat().st_size < old_file.stat().st_size - 4_000 * 8  # (an entry a key)
    for folder in (new_dir, old_dir):
        opened = VectorIndex.load(folder, DIM, index.params, view=True)
        inner = opened._graph
        assert isinstance(inner, ivf.IvfIndex)
        assert int(inner._index.direct_map.type) == int(faiss.DirectMap.NoMap)
        assert opened.search(vecs[17], 1)[0][0] == keys[17]
        assert float(opened.get(keys[17:18])[1][0] @ vecs[17]) > 0.999
        owned = ivf.IvfIndex.restore(folder / VectorIndex.IVF, index.params.probe_share)
        assert int(owned._index.direct_map.type) == int(faiss.DirectMap.NoMap)
        owned.remove(keys[:10])
        assert len(owned) == 3_990 and not owned.contains(keys[:10]).any()
        assert owned.search(vecs[3], 1).keys[0] != keys[3]


def test_a_loaded_index_is_mapped_from_its_file_and_searches_as_a_read_one(
    tmp_path: Path,
) -> None:
    """A loaded index is only searched (changes go to the delta layer), so its lists stay
    in the file, mapped: the same answers as an index read into memory, no changes to it,
    and a merge reads its own copy and replaces the file under the mapping."""
    vecs = _clustered(6_000, seed=21)
    keys = np.arange(10, 6_010, dtype=np.uint64)
    params = VectorParams(engine="ivf", exact_limit=50, probe_share=0.2)
    index = VectorIndex(DIM, params)
    index.add_many([(keys, vecs)])
    index.save(tmp_path)
    path = tmp_path / VectorIndex.IVF
    owned = ivf.IvfIndex.restore(path, params.probe_share)
    reader = VectorIndex.load(tmp_path, DIM, params, view=True)
    writer = VectorIndex.load(tmp_path, DIM, params)
    for opened in (reader, writer):
        graph = opened._graph
        assert isinstance(graph, ivf.IvfIndex) and graph._mapped and not owned._mapped
        for q in vecs[::600]:
            mine, theirs = graph.search(q, 20), owned.search(q, 20)
            assert mine.keys.tolist() == theirs.keys.tolist()
            np.testing.assert_allclose(mine.distances, theirs.distances, atol=1e-6)
        np.testing.assert_array_equal(graph.get(keys[::97])[1], owned.get(keys[::97])[1])
        with pytest.raises(RuntimeError, match="mapped"):
            graph.remove(keys[:1])
        with pytest.raises(RuntimeError, match="mapped"):
            graph.add(keys[:1], vecs[:1])
    before = reader.search(vecs[5], 1)[0][0]
    writer.remove(keys[:100])  # past exact_limit: the save merges into a new file
    writer.add(np.array([1], dtype=np.uint64), vecs[5:6])
    writer.save(tmp_path)
    assert reader.search(vecs[5], 1)[0][0] == before  # the old file, still mapped
    merged = VectorIndex.load(tmp_path, DIM, params, view=True)
    assert len(merged) == 5_901 and not merged.contains(keys[:100]).any()
    assert merged.search(vecs[5], 1)[0][0] == 1
