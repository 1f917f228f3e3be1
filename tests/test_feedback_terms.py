"""The index terms the catalog keeps for hybrid search's feedback (search/catalog.py).

On a private copy of the seeded home, rebuilt once for the module: real tantivy, real
SQLite, real MiniLM vectors (cached by text, see conftest).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from papersift.model import normalize_title
from papersift.search import SearchService, feedback, textwork
from papersift.search.catalog import decode_terms, encode_terms, paper_key
from papersift.search.spelling import Vocabulary
from papersift.search.types import SearchError
from papersift.settings import load_settings
from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store.db import Database
from papersift.store.schema import EmbeddingRow, PaperRow


@pytest.fixture(scope="module")
def indexed(seeded_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("terms") / "home"
    shutil.copytree(seeded_home, path)
    settings = load_settings(path, f"sqlite:///{path / 'papersift.db'}")
    db = Database(settings.db_url)
    SearchService(settings, db).rebuild()
    db.dispose()
    return path


@pytest.fixture
def svc(indexed: Path, tmp_path: Path):
    path = tmp_path / "home"
    shutil.copytree(indexed, path)
    settings = load_settings(path, f"sqlite:///{path / 'papersift.db'}")
    db = Database(settings.db_url)
    service = SearchService(settings, db)
    yield service
    db.dispose()


def _papers(svc: SearchService, n: int) -> list[PaperRow]:
    with svc.db.session() as s:
        rows = s.scalars(select(PaperRow).where(PaperRow.abstract != "").order_by(PaperRow.id))
        return list(rows)[:n]


def _live(svc: SearchService):
    live = svc._current()
    assert live is not None
    return live


def test_encoding_round_trips_counts_and_empty_texts():
    terms = ["graph", "neural", "graph", "network", "graph", "neural", "x9"]
    assert decode_terms(encode_terms(terms)) == Counter(terms)
    assert decode_terms(encode_terms([])) == {}
    # Order is kept (commonest first; ties as the relevance model meets them), also for a
    # row stored in another order, or with only counted or only single terms.
    assert list(decode_terms(encode_terms(terms))) == ["graph", "neural", "network", "x9"]
    for text, want in (
        ("a b:2 c", {"a": 1, "b": 2, "c": 1}),
        ("a:2 b c:3", {"a": 2, "b": 1, "c": 3}),
        ("a:3", {"a": 3}),
        ("a b c", {"a": 1, "b": 1, "c": 1}),
    ):
        got = decode_terms(zlib.compress(text.encode()))
        assert got == want and list(got) == list(want), text


def test_a_build_stores_every_papers_terms(svc: SearchService):
    live = _live(svc)
    papers = _papers(svc, 40)
    stored = live.catalog.terms([paper_key(p.id) for p in papers])
    assert len(stored) == len(papers) == 40
    for p in papers:
        text = f"{p.title}. {p.abstract}"
        assert stored[paper_key(p.id)] == Counter(live.lexical.analyze(text)), p.id


def test_feedback_reads_the_text_the_index_holds_then_the_database(svc: SearchService):
    """A paper whose database text changed but which was not re-indexed yet keeps the
    distribution of its indexed text; without a stored row it is read from the database."""
    live = _live(svc)
    paper = _papers(svc, 1)[0]
    key = paper_key(paper.id)
    indexed = svc.executor.term_distributions(live, [key])[key]
    with svc.db.session() as s:  # the text changes; nobody re-indexes
        s.execute(
            update(PaperRow).where(PaperRow.id == paper.id).values(abstract="Zeolite catalysis.")
        )
    live.terms.clear()
    assert svc.executor.term_distributions(live, [key])[key] == indexed
    with sqlite3.connect(live.catalog.path) as conn:
        conn.execute("DELETE FROM terms WHERE paper_id = ?", (paper.id,))
    live.terms.clear()
    fallback = svc.executor.term_distributions(live, [key])[key]
    assert set(fallback) == set(live.lexical.analyze(f"{paper.title}. Zeolite catalysis."))


def test_stale_or_damaged_rows_are_not_read(svc: SearchService):
    live = _live(svc)
    first, second = _papers(svc, 2)
    keys = [paper_key(first.id), paper_key(second.id)]
    with sqlite3.connect(live.catalog.path) as conn:
        conn.execute("UPDATE terms SET lex_hash = 'older text' WHERE paper_id = ?", (first.id,))
        conn.execute("UPDATE terms SET counts = x'00ff00' WHERE paper_id = ?", (second.id,))
    assert live.catalog.terms(keys) == {}
    live.terms.clear()  # both are read from the database instead, and still used
    dists = svc.executor.term_distributions(live, keys)
    assert dists[keys[0]] and dists[keys[1]]


def test_hybrid_ranks_the_same_from_stored_terms_or_the_database(svc: SearchService):
    queries = ["graph neural networks", "speech recognition", "protein structure", "diffusion"]

    def ranking() -> dict[str, list[tuple[str, float]]]:
        _live(svc).terms.clear()
        return {
            q: [(h.paper_id, round(h.score, 6)) for h in svc.search(q, k=20).hits] for q in queries
        }

    stored = ranking()
    with sqlite3.connect(_live(svc).catalog.path) as conn:
        conn.execute("DELETE FROM terms")
    assert _live(svc).catalog.terms([paper_key(p.id) for p in _papers(svc, 5)]) == {}
    assert ranking() == stored and all(stored.values())


def _paper(paper_id: str, title: str, abstract: str) -> PaperRow:
    now = datetime.now(UTC)
    return PaperRow(
        id=paper_id,
        title=title,
        title_key=normalize_title(title),
        abstract=abstract,
        authors=[],
        categories=[],
        code_urls=[],
        sources=["test"],
        first_seen=now,
        modified_at=now,
        content_hash=paper_store.content_hash(title, abstract),
    )


def test_new_changed_and_removed_papers_keep_their_rows_in_step(svc: SearchService):
    pid, key, title = "2502.00077", paper_key("2502.00077"), "Stellarator coil design"
    with svc.db.session() as s:
        s.add(_paper(pid, title, "Coils for a stellarator optimised by gradient descent on coils."))
    svc.index_papers([pid])
    assert _live(svc).catalog.terms([key])[key]["coil"] == 3
    abstract = "Tokamak plasma held stable by a learned controller; plasma shape follows."
    with svc.db.session() as s:
        s.execute(
            update(PaperRow)
            .where(PaperRow.id == pid)
            .values(abstract=abstract, content_hash=paper_store.content_hash(title, abstract))
        )
    svc.index_papers([pid])
    stored = _live(svc).catalog.terms([key])[key]
    assert stored["plasma"] == 2 and stored["coil"] == 1 and "gradient" not in stored
    with svc.db.session() as s:
        s.execute(EmbeddingRow.__table__.delete().where(EmbeddingRow.paper_id == pid))
        s.execute(PaperRow.__table__.delete().where(PaperRow.id == pid))
    assert svc.index_papers([pid]).removed == 1
    with sqlite3.connect(_live(svc).catalog.path) as conn:
        assert conn.execute("SELECT count(*) FROM terms WHERE paper_id = ?", (pid,)).fetchone() == (
            0,
        )


def test_only_writing_connections_get_the_big_page_cache(tmp_path: Path):
    """Each serving thread holds its own catalog connection: readers keep SQLite's small
    page cache (dozens of threads x 32 MB would be most of a worker's memory)."""
    import threading

    from papersift.search.catalog import WRITE_CACHE_KIB, Catalog

    catalog = Catalog(tmp_path / "catalog.sqlite")
    seen: dict[str, int] = {}

    def reader() -> None:
        catalog.terms([1, 2])
        with catalog._conn() as conn:
            seen["reader"] = conn.execute("PRAGMA cache_size").fetchone()[0]

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    catalog.put_terms([("p1", "abc", encode_terms(["x"]))])
    with catalog._conn() as conn:
        seen["writer"] = conn.execute("PRAGMA cache_size").fetchone()[0]
    assert seen == {"reader": -2000, "writer": -WRITE_CACHE_KIB}


def _catalog_rows(live) -> dict[str, tuple[str, bytes]]:
    with sqlite3.connect(live.catalog.path) as conn:
        rows = conn.execute("SELECT paper_id, lex_hash, counts FROM terms").fetchall()
    return {pid: (lex_hash, counts) for pid, lex_hash, counts in rows}


def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many batches from the seeded home's few hundred papers: several are in flight."""
    real = search_docs.iter_paper_docs
    monkeypatch.setattr(search_docs, "iter_paper_docs", lambda s: real(s, batch=40))


def test_a_rebuild_in_a_worker_process_stores_what_one_process_does(
    svc: SearchService, monkeypatch: pytest.MonkeyPatch
):
    """Past ``PROCESS_FROM`` papers a rebuild analyses texts in a worker process
    (search/textwork.py): the catalog's term rows and the spelling vocabulary come out the
    same, every batch's rows included."""
    alone = _catalog_rows(_live(svc))
    words = Vocabulary.load(_live(svc).folder)
    assert words is not None and len(alone) > 200
    started = []
    monkeypatch.setattr(textwork, "PROCESS_FROM", 100)  # the first three batches stay here
    _small_batches(monkeypatch)
    pool = textwork.ProcessPoolExecutor
    monkeypatch.setattr(
        textwork, "ProcessPoolExecutor", lambda **kw: started.append(1) or pool(**kw)
    )
    svc.rebuild()
    assert started == [1]  # one worker, started once
    live = _live(svc)
    assert _catalog_rows(live) == alone
    again = Vocabulary.load(live.folder)
    assert again is not None and again.counts == words.counts


def _worker_dies(papers):  # runs in the worker process, in place of textwork.analyse
    os._exit(3)


def test_a_worker_process_that_dies_fails_the_rebuild_and_changes_nothing(
    svc: SearchService, monkeypatch: pytest.MonkeyPatch
):
    before = _live(svc).folder
    hits = [h.paper_id for h in svc.search("graph neural networks", k=5, mode="lexical").hits]
    monkeypatch.setattr(textwork, "PROCESS_FROM", 0)  # every batch goes to the worker
    monkeypatch.setattr(textwork, "analyse", _worker_dies)
    _small_batches(monkeypatch)
    with pytest.raises(SearchError, match="analysing paper texts"):
        svc.rebuild()
    svc.generations.forget()
    live = _live(svc)
    assert live.folder == before
    assert sorted(p.name for p in before.parent.iterdir() if p.is_dir()) == [before.name]
    assert [
        h.paper_id for h in svc.search("graph neural networks", k=5, mode="lexical").hits
    ] == hits


class _CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.submitted += 1
        return super().submit(*args, **kwargs)


def test_feedback_rescoring_on_two_cores_scores_as_one_does(svc: SearchService):
    """Half the keys scored on a spare core: every key's expansion score is the same, to
    the bit, as from one query over all of them, and keys matching no term are there at 0."""
    lexical = _live(svc).lexical
    keys = [paper_key(p.id) for p in _papers(svc, 300)]
    weights = {("text", t): w for t, w in {"imag": 0.5, "diffus": 0.3, "graph": 0.2}.items()}
    weights["title", "imag"] = 0.1
    alone = lexical.scores_among(weights, keys)
    with _CountingPool() as pool:
        split = feedback.scores_among(lexical, weights, keys, pool)
        assert pool.submitted == 1
        few = feedback.scores_among(lexical, weights, keys[: feedback.SPLIT_FROM - 1], pool)
        assert pool.submitted == 1  # too few keys to be worth a hand-off
    assert split == alone and set(split) == set(keys)
    assert 0 < sum(s > 0 for s in split.values()) < len(keys)
    assert few == {k: alone[k] for k in keys[: feedback.SPLIT_FROM - 1]}
    assert feedback.scores_among(lexical, weights, keys, None) == alone


def test_candidate_vectors_read_in_two_steps_are_those_read_at_once(svc: SearchService):
    """The lexical candidates' vectors are read while the dense side runs, the rest after:
    the same vector for every key, missing keys still missing."""
    live = _live(svc)
    keys = [paper_key(p.id) for p in _papers(svc, 120)]
    absent = paper_key("not-a-paper")
    qvec = live.vectors.get(keys[:1])[1][0]
    at_once = feedback.CandidateVectors(live.vectors, keys + [absent])
    stepwise = feedback.CandidateVectors(live.vectors, keys[:50]).add(
        live.vectors, keys[30:] + [absent]
    )
    assert np.array_equal(stepwise.cosines(keys, qvec), at_once.cosines(keys, qvec))
    assert np.isnan(stepwise.cosines([absent], qvec)).all()
    assert np.array_equal(stepwise.matrix(keys[::-1]), at_once.matrix(keys[::-1]))
    assert stepwise.matrix([absent]) is None
    empty = feedback.CandidateVectors(live.vectors, []).add(live.vectors, keys[:5])
    assert np.array_equal(empty.matrix(keys[:5]), at_once.matrix(keys[:5]))
