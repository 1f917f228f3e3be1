"""Search on real indexes of the seed corpus (plus a few dated, categorised papers).

One index is built per session on a copy of the seeded home; tests that change it work on
their own copy. Embeddings are real MiniLM vectors (cached across sessions by text, see
PAPERSIFT_EMBED_CACHE in conftest).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from papersift.cli import app
from papersift.model import normalize_title
from papersift.search import (
    EmbedderError,
    SearchError,
    SearchFilters,
    SearchRequest,
    SearchService,
    get_service,
)
from papersift.search import execute as execute_mod
from papersift.search import indexer as indexer_mod
from papersift.search.catalog import paper_key
from papersift.search.embedder import Embedder
from papersift.search.service import forget_services
from papersift.settings import Settings, load_settings
from papersift.store import papers as paper_store
from papersift.store.collections import get_collection
from papersift.store.db import Database
from papersift.store.schema import EmbeddingRow, PaperRow

from .digest_support import copy_home

FIRST_PAGE = "000_e3b0215ea9dd5350"

# Papers the seeds lack: dates, categories, authors (seed listing pages carry none of them).
EXTRA = [
    {
        "id": "2401.00001",
        "title": "Graph neural networks for molecular property prediction",
        "abstract": "We predict quantum chemical properties of molecules with message passing "
        "graph neural networks and equivariant features.",
        "authors": ["Marie Curie", "Linus Pauling"],
        "categories": ["cs.LG", "physics.chem-ph"],
        "published": date(2024, 1, 2),
        "code_urls": ["https://github.com/example/gnn-mol"],
    },
    {
        "id": "2305.00002",
        "title": "Protein structure prediction with deep learning",
        "abstract": "Deep networks predict the folded three-dimensional structure of proteins "
        "from their amino acid sequence.",
        "authors": ["Rosalind Franklin"],
        "categories": ["q-bio.BM", "cs.LG"],
        "published": date(2023, 5, 10),
        "code_urls": [],
    },
    {
        "id": "2209.00003",
        "title": "Message passing neural networks for crystal materials",
        "abstract": "Crystal graphs and message passing networks predict formation energies "
        "of inorganic materials.",
        "authors": ["Dorothy Hodgkin", "Marie Curie"],
        "categories": ["cond-mat.mtrl-sci"],
        "published": date(2022, 9, 1),
        "code_urls": ["https://github.com/example/crystal"],
    },
]


def _row(p: dict, now: datetime) -> PaperRow:
    return PaperRow(
        id=p["id"],
        arxiv_id=p["id"],
        title=p["title"],
        title_key=normalize_title(p["title"]),
        abstract=p["abstract"],
        authors=p["authors"],
        categories=p["categories"],
        published=p["published"],
        code_urls=p["code_urls"],
        has_code=bool(p["code_urls"]),
        sources=["test"],
        first_seen=now,
        modified_at=now,
        content_hash=paper_store.content_hash(p["title"], p["abstract"]),
    )


def _open(home: Path) -> tuple[Settings, Database]:
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    return settings, Database(settings.db_url)


@pytest.fixture(scope="session")
def search_home(seeded_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeds + EXTRA, indexed: seeds by a full build, EXTRA incrementally (read-only)."""
    path = tmp_path_factory.mktemp("search") / "home"
    shutil.copytree(seeded_home, path)
    settings, db = _open(path)
    service = SearchService(settings, db)
    report = service.rebuild()
    assert report.indexed == 804 and report.pending_vectors == 0
    now = datetime.now(UTC)
    with db.session() as s:
        s.add_all(_row(p, now) for p in EXTRA)
    service.index_papers([p["id"] for p in EXTRA])
    db.dispose()
    return path


@pytest.fixture(scope="module")
def svc(search_home: Path) -> SearchService:
    settings, db = _open(search_home)
    return SearchService(settings, db)


@pytest.fixture
def own_home(search_home: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the indexed home."""
    path = tmp_path / "home"
    copy_home(search_home, path)
    return path


def _titles(svc: SearchService, ids: list[str]) -> dict[str, PaperRow]:
    with svc.db.session() as s:
        rows = s.scalars(select(PaperRow).where(PaperRow.id.in_(ids))).all()
        return {r.id: r for r in rows}


def _some_seed_papers(svc: SearchService, n: int = 5) -> list[PaperRow]:
    """Seed papers with long, distinctive titles (picked by rule, not by hand)."""
    with svc.db.session() as s:
        rows = s.scalars(
            select(PaperRow).where(PaperRow.sources != '["test"]').order_by(PaperRow.id)
        ).all()
    rows = [r for r in rows if len(r.title.split()) >= 7 and r.abstract]
    return rows[:: max(1, len(rows) // n)][:n]


# -- relevance ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "semantic"])
def test_title_query_finds_its_paper_first(svc: SearchService, mode: str):
    for paper in _some_seed_papers(svc):
        res = svc.search(paper.title, k=5, mode=mode)
        ids = [h.paper_id for h in res.hits]
        if mode == "semantic":
            assert paper.id in ids[:3], (paper.title, ids)
        else:
            assert ids[0] == paper.id, (paper.title, ids)


def test_question_finds_paper_by_meaning(svc: SearchService):
    res = svc.search("how can neural networks predict properties of molecules", k=3)
    assert res.hits[0].paper_id == "2401.00001"
    assert res.mode == "hybrid" and res.message is None


def test_scores_are_descending_and_total_covers_hits(svc: SearchService):
    for mode in ("hybrid", "lexical", "semantic"):
        res = svc.search("language model reasoning", k=20, mode=mode)
        scores = [h.score for h in res.hits]
        assert len(res.hits) == 20
        assert scores == sorted(scores, reverse=True)
        assert res.total >= 20


def test_paging_is_consistent(svc: SearchService):
    for mode in ("hybrid", "lexical", "semantic"):
        whole = [h.paper_id for h in svc.search("diffusion models", k=30, mode=mode).hits]
        pages = []
        for offset in (0, 10, 20):
            pages += [
                h.paper_id
                for h in svc.search("diffusion models", k=10, offset=offset, mode=mode).hits
            ]
        assert pages == whole
        assert len(set(pages)) == 30


def test_phrase_and_field_syntax(svc: SearchService):
    res = svc.search('"protein structure"', k=5, mode="lexical")
    assert [h.paper_id for h in res.hits] == ["2305.00002"]
    res = svc.search("author:curie", k=10, mode="lexical")
    assert {h.paper_id for h in res.hits} == {"2401.00001", "2209.00003"}
    # author clauses have nothing to embed: hybrid ranks the lexical matches
    res = svc.search("author:hodgkin", k=10)
    assert [h.paper_id for h in res.hits] == ["2209.00003"]
    res = svc.search("title:crystal", k=10, mode="lexical")
    assert [h.paper_id for h in res.hits] == ["2209.00003"]
    res = svc.search("message passing -crystal", k=10, mode="lexical")
    ids = [h.paper_id for h in res.hits]
    assert "2401.00001" in ids and "2209.00003" not in ids


# -- hostile input -----------------------------------------------------------------------

HOSTILE = {
    "empty": "",
    "blank": "   \t\n ",
    "long": "attention " * 1000 + "x" * 1000,
    "unbalanced_quote": 'sparse "attention mechanisms',
    "unbalanced_paren": "(graph neural (networks",
    "bare_title": "title:",
    "bare_author": "author:",
    "emoji": "🤖🧠 robots learning 🚀",
    "only_emoji": "🤖🧠🚀",
    "latex": r"$\alpha$-stable \frac{1}{2} \mathbb{R}^n $O(n \log n)$",
    "control": "graph\x00 neural\x1b[31m networks\x07\u200b\ufeff",
    "operators": "AND OR NOT",
    "lone_signs": "- + ! ^ ~ * ?",
    "brackets": "[1 TO 5] {x} field:[a TO",
    "unknown_field": "arXiv:2401.00001 doi:10.1000/xyz",
    "stopwords": "the of and a",
    "rtl": "שלום עולם مرحبا",
    "huge_word": "a" * 5000,
}


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "semantic"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_queries_never_raise(svc: SearchService, name: str, mode: str):
    res = svc.search(HOSTILE[name], k=10, mode=mode)
    assert isinstance(res.hits, list) and res.total >= len(res.hits)
    assert res.query == HOSTILE[name]
    if name in ("empty", "blank"):
        assert res.hits == [] and res.message == "empty query"
    if name == "long":
        assert "shortened" in res.message
        assert res.hits  # still a useful result
    if name == "bare_title" and mode == "lexical":
        assert "simplified" in res.message
    if name in ("unbalanced_quote", "unbalanced_paren", "control", "emoji"):
        assert res.hits, "a query with real words must still find something"
    if name == "stopwords" and mode == "lexical":
        assert res.hits == [] and "no searchable words" in res.message


def test_control_characters_are_ignored(svc: SearchService):
    dirty = svc.search(HOSTILE["control"], k=5, mode="lexical")
    clean = svc.search("graph neural networks", k=5, mode="lexical")
    assert [h.paper_id for h in dirty.hits] == [h.paper_id for h in clean.hits]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"mode": "fuzzy"}, "unknown mode"),
        ({"sort": "stars"}, "unknown sort"),
        ({"k": 0}, "k must be"),
        ({"k": 100_000}, "k must be"),
        ({"offset": -1}, "offset must be"),
    ],
)
def test_bad_arguments_are_search_errors(svc: SearchService, kwargs: dict, text: str):
    with pytest.raises(SearchError, match=text):
        svc.search("graph", **kwargs)


def test_reversed_date_range_is_an_error(svc: SearchService):
    with pytest.raises(SearchError, match="start date"):
        svc.search(
            "graph", filters=SearchFilters(date_from=date(2024, 1, 1), date_to=date(2023, 1, 1))
        )


# -- filters and sorting -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "semantic"])
def test_filters(svc: SearchService, mode: str):
    def ids(**kw) -> list[str]:
        return [
            h.paper_id
            for h in svc.search(
                "neural networks prediction", k=50, mode=mode, filters=SearchFilters(**kw)
            ).hits
        ]

    assert set(ids(date_from=date(2023, 1, 1))) == {"2401.00001", "2305.00002"}
    assert set(ids(date_to=date(2023, 12, 31))) == {"2305.00002", "2209.00003"}
    assert ids(date_from=date(2023, 1, 1), date_to=date(2023, 12, 31)) == ["2305.00002"]
    assert set(ids(category="cs.LG")) == {"2401.00001", "2305.00002"}
    assert ids(category="cs.LG", has_code=True) == ["2401.00001"]
    assert ids(category="no.such") == []
    coded = ids(has_code=True)
    assert coded and set(coded) <= {r.id for r in _titles(svc, coded).values() if r.has_code}
    assert "2305.00002" not in coded


def test_has_code_filter_over_seeds(svc: SearchService):
    for mode in ("hybrid", "lexical", "semantic"):
        hits = svc.search(
            "language models", k=30, mode=mode, filters=SearchFilters(has_code=True)
        ).hits
        assert len(hits) == 30
        rows = _titles(svc, [h.paper_id for h in hits])
        assert all(rows[h.paper_id].has_code for h in hits)


def test_collection_filter(svc: SearchService):
    with svc.db.session() as s:
        members = {e.paper_id for e in get_collection(s, FIRST_PAGE).entries}
    for mode in ("hybrid", "lexical", "semantic"):
        res = svc.search(
            "large language models", k=40, mode=mode, filters=SearchFilters(collection=FIRST_PAGE)
        )
        assert res.hits and {h.paper_id for h in res.hits} <= members
    res = svc.search("graph", filters=SearchFilters(collection="nope"))
    assert res.hits == [] and "no collection named 'nope'" in res.message


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "semantic"])
def test_sort_by_date(svc: SearchService, mode: str):
    res = svc.search("neural networks", k=50, mode=mode, sort="date")
    ids = [h.paper_id for h in res.hits]
    dated = [i for i in ids if i in {p["id"] for p in EXTRA}]
    assert dated == ["2401.00001", "2305.00002", "2209.00003"]
    assert ids[:3] == dated  # undated papers come after dated ones


# -- similar -----------------------------------------------------------------------------


def test_similar_excludes_itself_and_finds_neighbours(svc: SearchService):
    hits = svc.similar("2401.00001", k=5)
    ids = [h.paper_id for h in hits]
    assert "2401.00001" not in ids and len(ids) == 5
    assert ids[0] == "2209.00003"  # the other message-passing paper
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # arXiv URL forms resolve to the same paper
    assert [h.paper_id for h in svc.similar("https://arxiv.org/abs/2401.00001v2", k=5)] == ids


def test_similar_unknown_id_raises_keyerror(svc: SearchService):
    with pytest.raises(KeyError):
        svc.similar("no-such-paper")
    with pytest.raises(SearchError):
        svc.similar("2401.00001", k=0)


def test_similar_excludes_duplicates(own_home: Path):
    settings, db = _open(own_home)
    now = datetime.now(UTC)
    dup = dict(EXTRA[0], id="pdup00000001")
    near = dict(EXTRA[0], id="pdup00000002", title=EXTRA[0]["title"].upper() + "!")
    with db.session() as s:
        for p in (dup, near):
            row = _row(p, now)
            row.arxiv_id = None
            s.add(row)
    service = SearchService(settings, db)
    service.index_papers([dup["id"], near["id"]])
    ids = [h.paper_id for h in service.similar("2401.00001", k=5)]
    assert "pdup00000001" not in ids and "pdup00000002" not in ids
    assert "2401.00001" not in [h.paper_id for h in service.similar("pdup00000001", k=5)]
    db.dispose()


# -- incremental, rebuild, other processes -----------------------------------------------


def test_incremental_add_update_and_another_service_sees_it(own_home: Path):
    settings, db = _open(own_home)
    writer = SearchService(settings, db)
    reader = SearchService(settings, db)  # stands for the web server's process
    assert reader.search("tokamak plasma", k=3, mode="lexical").hits == []
    now = datetime.now(UTC)
    paper = {
        "id": "2502.00009",
        "title": "Tokamak plasma confinement with reinforcement learning",
        "abstract": "A controller keeps fusion plasma stable in a tokamak.",
        "authors": ["Lise Meitner"],
        "categories": ["physics.plasm-ph"],
        "published": date(2025, 2, 1),
        "code_urls": [],
    }
    with db.session() as s:
        s.add(_row(paper, now))
    report = writer.index_papers([paper["id"]])
    assert report.indexed == 1 and report.embedded == 1
    for mode in ("hybrid", "lexical", "semantic"):
        hits = reader.search("fusion reactor control", k=3, mode=mode).hits
        assert hits[0].paper_id == "2502.00009", mode
    # the text changes: lexical and vectors follow, the paper is re-embedded
    with db.session() as s:
        s.execute(
            update(PaperRow)
            .where(PaperRow.id == paper["id"])
            .values(
                abstract="Stellarator coils optimised by gradient descent.",
                content_hash=paper_store.content_hash(
                    paper["title"], "Stellarator coils optimised by gradient descent."
                ),
            )
        )
    report = writer.index_papers([paper["id"]])
    assert report.embedded == 1
    for mode in ("lexical", "semantic"):
        hits = reader.search("stellarator coil design", k=1, mode=mode).hits
        assert hits[0].paper_id == "2502.00009", mode
    assert reader.search("controller keeps plasma stable", k=5, mode="lexical").hits == [] or all(
        h.paper_id != "2502.00009"
        for h in reader.search("controller keeps stable", k=5, mode="lexical").hits
    )
    # unchanged text: nothing to embed
    assert writer.index_papers([paper["id"]]).embedded == 0
    # ids that left the database are removed from the index
    with db.session() as s:
        s.execute(EmbeddingRow.__table__.delete().where(EmbeddingRow.paper_id == paper["id"]))
        s.execute(PaperRow.__table__.delete().where(PaperRow.id == paper["id"]))
    assert writer.index_papers([paper["id"]]).removed == 1
    assert all(
        h.paper_id != "2502.00009"
        for h in reader.search("stellarator coils", k=5, mode="lexical").hits
    )
    db.dispose()


def test_deleted_index_is_rebuilt_from_the_database(own_home: Path):
    settings, db = _open(own_home)
    first = SearchService(settings, db)
    before = [h.paper_id for h in first.search("image generation").hits]
    # (its checksum thread opens the catalog, so SQLite's side files would reappear in a
    # folder being deleted: the index is removed as a user would, with no search running)
    assert first.close()
    shutil.rmtree(settings.index_dir)
    service = SearchService(settings, db)
    after = [h.paper_id for h in service.search("image generation").hits]  # rebuilds on demand
    assert after == before
    status = service.status()
    assert status["built"] and status["docs"] == 807 and status["vectors"] == 807
    report = service.rebuild()  # stored embeddings are reused: nothing to embed
    assert report.indexed == 807 and report.embedded == 0
    assert [h.paper_id for h in service.search("image generation").hits] == before
    # the build set up the catalog's kept counts, so no later update scans for them
    conn = sqlite3.connect(settings.index_dir / service.status()["dir"] / "catalog.sqlite")
    assert conn.execute("SELECT docs, vectors, pending FROM tally").fetchone() == (807, 807, 0)
    conn.close()
    assert len([p for p in settings.index_dir.iterdir() if p.name.startswith("v")]) == 1
    db.dispose()


def test_corrupt_current_file_means_rebuild(own_home: Path):
    settings, db = _open(own_home)
    (settings.index_dir / "CURRENT").write_text("{not json")
    res = SearchService(settings, db).search("image generation")
    assert res.hits and json.loads((settings.index_dir / "CURRENT").read_text())["docs"] == 807
    db.dispose()


def test_papers_changed_defers_big_embedding_jobs(own_home: Path, monkeypatch):
    """After ingest: too many papers to embed are indexed by keyword at once, embedded by
    the next sync (what `papersift index` runs)."""
    settings, db = _open(own_home)
    now = datetime.now(UTC)
    new = [
        dict(
            EXTRA[0],
            id=f"2503.{i:05d}",
            title=f"Quantum annealing schedule number {i}",
            abstract=f"Annealing schedules for quantum optimisation, variant {i}.",
        )
        for i in range(3)
    ]
    with db.session() as s:
        s.add_all(_row(p, now) for p in new)
    monkeypatch.setattr(indexer_mod, "EMBED_LIMIT", 2)
    forget_services()
    service = get_service(settings, db)
    report = service.papers_changed([p["id"] for p in new])
    assert report.indexed == 3 and report.embedded == 0 and report.pending_vectors == 3
    expected = {p["id"] for p in new}
    res = service.search("quantum annealing schedule", k=3, mode="lexical")
    assert {h.paper_id for h in res.hits} == expected  # keyword-searchable at once
    res = service.search("quantum annealing schedule", k=10)
    assert expected <= {h.paper_id for h in res.hits}
    assert "not embedded yet" in res.message
    report = service.sync()  # what `papersift index` does
    assert report.embedded == 3 and report.pending_vectors == 0
    res = service.search("quantum annealing schedule", k=3, mode="semantic")
    assert {h.paper_id for h in res.hits} == expected and res.message is None
    forget_services()
    db.dispose()


def test_concurrent_searches_agree(svc: SearchService):
    queries = ["graph neural networks", "diffusion", "reinforcement learning", "speech"]
    expected = {q: [h.paper_id for h in svc.search(q).hits] for q in queries}
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for q in queries * 3:
                assert [h.paper_id for h in svc.search(q).hits] == expected[q]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_hybrid_ranks_the_same_with_the_dense_side_overlapped_or_inline(
    svc: SearchService, monkeypatch
):
    """An idle process overlaps a search's dense side in a thread, and re-scores half the
    feedback candidates there; a busy one runs both inline. The rankings are the same."""
    monkeypatch.setattr(execute_mod, "_CORES", 2)
    monkeypatch.setattr(execute_mod._Running, "RECENT", 0.0)  # back-to-back counts as idle
    submitted: list[str] = []
    pool = execute_mod._QUERY_POOL

    class CountingPool:
        def submit(self, fn, *args):
            submitted.append(fn.__name__)
            return pool.submit(fn, *args)

    monkeypatch.setattr(execute_mod, "_QUERY_POOL", CountingPool())
    queries = ["graph neural networks", "speech recognition", 'title:"language model"']

    def ranking(q: str) -> list[tuple[str, float]]:
        return [(h.paper_id, round(h.score, 6)) for h in svc.search(q, k=20).hits]

    overlapped = {q: ranking(q) for q in queries}
    assert submitted.count("dense_side") == len(queries)
    assert submitted.count("scores_among") == len(queries)  # feedback's second half
    before = len(submitted)
    with execute_mod._HYBRID_RUNNING.enter() as busy:  # as if another search were running
        assert not busy
        inline = {q: ranking(q) for q in queries}
    assert len(submitted) == before  # no thread hand-off
    monkeypatch.setattr(execute_mod._Running, "RECENT", 60.0)
    assert ranking(queries[0]) == overlapped[queries[0]]  # right after another: inline too
    assert len(submitted) == before
    assert inline == overlapped and all(overlapped.values())


def test_warm_fills_the_feedback_cache_and_ranks_the_same(search_home: Path):
    """warm() reads every indexed paper of a small corpus (newest first, capped by the
    limit) into the feedback cache; searches then rank exactly as from a cold cache."""
    settings, db = _open(search_home)
    cold = SearchService(settings, db)
    queries = ["graph neural networks", "speech recognition", 'title:"language model"']
    before = {
        q: [(h.paper_id, round(h.score, 6)) for h in cold.search(q, k=20).hits] for q in queries
    }
    live = cold._current()
    assert live is not None and 0 < len(live.terms) < 804
    live.terms.clear()
    assert cold.warm(limit=5) == 5 and len(live.terms) == 5
    with db.session() as s:
        newest = paper_store.newest_ids(s, 5)
    assert {paper_key(i) for i in newest} == set(live.terms)
    indexed = len(live.catalog)
    assert cold.warm() == indexed and len(live.terms) == indexed
    after = {
        q: [(h.paper_id, round(h.score, 6)) for h in cold.search(q, k=20).hits] for q in queries
    }
    assert after == before and all(after.values())
    db.dispose()


def test_get_service_is_cached_per_home(search_home: Path):
    settings, db = _open(search_home)
    assert get_service(settings, db) is get_service(load_settings(search_home, settings.db_url), db)
    db.dispose()


def test_bad_request_writes_nothing(seeded_home: Path, tmp_path: Path):
    """A request the service refuses fails before any index is built or model loaded (the
    home has papers but no index yet: a good request would build one)."""
    shutil.copytree(seeded_home, tmp_path / "home")
    settings, db = _open(tmp_path / "home")
    assert not settings.index_dir.exists()
    loads: list[int] = []

    def load() -> Embedder:
        loads.append(1)
        raise AssertionError("the model is not needed to refuse a request")

    service = SearchService(settings, db, load_embedder=load)
    for request in (
        SearchRequest("graph", mode="fuzzy"),
        SearchRequest("graph", k=0),
        SearchRequest(
            "graph", filters=SearchFilters(date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))
        ),
    ):
        with pytest.raises(SearchError):
            service.run(request)
    assert not settings.index_dir.exists() and not loads
    db.dispose()


def test_model_that_cannot_load_leaves_keyword_search(own_home: Path):
    """The embedder is loaded through the service's loader, only when a search needs it; if
    it fails, semantic and hybrid searches answer by keyword and say why."""
    settings, db = _open(own_home)
    calls: list[int] = []

    def broken() -> Embedder:
        calls.append(1)
        raise EmbedderError("model folder is empty")

    service = SearchService(settings, db, load_embedder=broken)
    lexical = service.search("protein structure prediction", k=3, mode="lexical")
    assert lexical.hits and lexical.message is None and not calls
    for mode in ("hybrid", "semantic"):
        res = service.search("protein structure prediction", k=3, mode=mode)
        assert [h.paper_id for h in res.hits] == [h.paper_id for h in lexical.hits]
        assert "model folder is empty" in res.message and "keyword results only" in res.message
    assert calls
    db.dispose()


def test_the_model_loads_beside_the_index_once(own_home: Path):
    """A search by meaning in a new service starts loading the model in its own thread (to
    overlap the index opening), and the model is loaded once however many searches ask at
    the same moment; keyword searches do not load it."""
    from papersift.search.embedder import get_embedder

    settings, db = _open(own_home)
    loads: list[str] = []
    started = threading.Barrier(3)

    def load() -> Embedder:
        loads.append(threading.current_thread().name)
        time.sleep(0.3)  # as long as a real model takes (this one is cached by the process)
        return get_embedder(settings.model_dir)

    service = SearchService(settings, db, load_embedder=load)
    assert service.search("protein structure", k=3, mode="lexical").hits and not loads
    assert service._preloading is None
    found: list[int] = []

    def search() -> None:
        started.wait()
        found.append(len(service.search("protein structure prediction", k=3).hits))

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert found == [3, 3, 3]
    # Once, by whichever thread came first (the loading thread, or a search that asked
    # before it got going: on this small index opening is quick).
    assert len(loads) == 1
    assert service._preloading is not None and service._preloading.name == "embedder-load"
    db.dispose()


def test_search_on_postgres_and_sqlite(db: Database, tmp_path: Path):
    """The service against both databases: embeddings stored, searched, re-used."""
    settings = load_settings(tmp_path / "home", db.url)
    service = SearchService(settings, db)
    assert service.search("graph").message.startswith("no papers yet")
    now = datetime.now(UTC)
    with db.session() as s:
        s.add_all(_row(p, now) for p in EXTRA)
    service.index_papers([p["id"] for p in EXTRA])
    assert service.search("protein folding", k=1).hits[0].paper_id == "2305.00002"
    with db.session() as s:
        assert len(s.scalars(select(EmbeddingRow.paper_id)).all()) == 3
    assert service.rebuild().embedded == 0


# -- CLI ---------------------------------------------------------------------------------


def _cli(home: Path, *args: str):
    return CliRunner().invoke(
        app, ["--home", str(home), "--db", f"sqlite:///{home / 'papersift.db'}", *args]
    )


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_cli_search_json(search_home: Path):
    result = _cli(search_home, "search", "graph neural networks molecules", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    data = _last_json(result.stdout)
    assert data["mode"] == "hybrid" and data["total"] >= 3
    assert data["hits"][0]["id"] == "2401.00001"
    assert data["hits"][0]["title"].startswith("Graph neural networks")
    assert [h["rank"] for h in data["hits"]] == [1, 2, 3]


def test_cli_search_filters_and_table(search_home: Path):
    result = _cli(
        search_home,
        "search",
        "neural networks",
        "--from",
        "2023",
        "--to",
        "2023-06",
        "--category",
        "cs.LG",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert [h["id"] for h in _last_json(result.stdout)["hits"]] == ["2305.00002"]
    result = _cli(
        search_home,
        "search",
        "neural networks",
        "--has-code",
        "--sort",
        "date",
        "-k",
        "2",
        "--mode",
        "lexical",
    )
    assert result.exit_code == 0 and "Graph neural networks" in result.stdout
    result = _cli(search_home, "search", "x", "--from", "2023-13")
    assert result.exit_code == 1 and "not a date" in result.output
    result = _cli(search_home, "search", "x", "--mode", "bogus")
    assert result.exit_code == 1 and "unknown mode" in result.output
    result = _cli(search_home, "search", "", "--json")
    assert result.exit_code == 0 and _last_json(result.stdout)["message"] == "empty query"


def test_cli_similar_json(search_home: Path):
    result = _cli(search_home, "similar", "2401.00001", "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    data = _last_json(result.stdout)
    assert [h["id"] for h in data["hits"]][0] == "2209.00003" and len(data["hits"]) == 2
    result = _cli(search_home, "similar", "nope")
    assert result.exit_code == 1 and "no paper with id" in result.output


def test_cli_index_json_and_rebuild(own_home: Path):
    result = _cli(own_home, "index", "--json")
    assert result.exit_code == 0, result.output
    assert _last_json(result.stdout) | {"seconds": 0} == {
        "indexed": 0,
        "embedded": 0,
        "removed": 0,
        "pending_vectors": 0,
        "seconds": 0,
    }
    result = _cli(own_home, "index", "--rebuild", "--json")
    assert result.exit_code == 0, result.output
    data = _last_json(result.stdout)
    assert data["indexed"] == 807 and data["embedded"] == 0


@pytest.mark.parametrize("command", ["search", "similar", "eval", "index"])
def test_cli_help_has_example(command: str):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


@pytest.mark.parametrize("engine", ["ivf", "hnsw"])
def test_approximate_index_through_the_service(own_home: Path, monkeypatch, engine: str):
    """Above the exact-search limit the service uses the configured approximate index."""
    monkeypatch.setenv("PAPERSIFT_EXACT_LIMIT", "100")
    monkeypatch.setenv("PAPERSIFT_VECTOR_INDEX", engine)
    settings, db = _open(own_home)
    exact = SearchService(settings, db)
    expected = {
        q: [h.paper_id for h in exact.search(q, k=5, mode="semantic").hits]
        for q in ("graph neural networks", "speech recognition")
    }
    writer = SearchService(settings, db)
    assert writer.params.exact_limit == 100
    assert writer.rebuild().embedded == 0
    folder = settings.index_dir / writer.status()["dir"]
    assert (folder / f"{engine}.{'faiss' if engine == 'ivf' else 'usearch'}").is_file()
    assert not (folder / "flat.npz").exists()
    reader = SearchService(settings, db)
    for q, ids in expected.items():
        got = [h.paper_id for h in reader.search(q, k=5, mode="semantic").hits]
        assert len(set(got) & set(ids)) >= 4, (q, got, ids)
    assert reader._current().vectors._view  # readers cannot change the file
    res = reader.search("neural networks prediction", k=10, filters=SearchFilters(category="cs.LG"))
    assert {h.paper_id for h in res.hits} == {"2401.00001", "2305.00002"}
    assert reader.similar("2401.00001", k=1)[0].paper_id == "2209.00003"
    now = datetime.now(UTC)
    extra = dict(
        EXTRA[0],
        id="2504.00001",
        title="Seismic tomography with neural operators",
        abstract="Neural operators invert seismic waveforms for earth structure.",
    )
    with db.session() as s:
        s.add(_row(extra, now))
    assert writer.index_papers(["2504.00001"]).embedded == 1
    assert (
        reader.search("seismic waveform inversion", k=1, mode="semantic").hits[0].paper_id
        == "2504.00001"
    )
    db.dispose()


def test_other_model_or_broken_model_falls_back_to_keywords(
    own_home: Path, tmp_path: Path, monkeypatch
):
    from papersift.search.embedder import resolve_model

    default = resolve_model()
    folder = tmp_path / "other-model"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(default.onnx_path)
    (folder / "tokenizer.json").symlink_to(default.tokenizer_path)
    monkeypatch.setenv("PAPERSIFT_MODEL_DIR", str(folder))
    settings, db = _open(own_home)
    service = SearchService(settings, db)
    res = service.search("graph neural networks molecules", k=3)
    assert "index --rebuild" in res.message and res.hits[0].paper_id == "2401.00001"
    assert res.mode == "hybrid"
    # `papersift index` cannot mix models; --rebuild re-embeds with the new one
    result = _cli(own_home, "index")
    assert result.exit_code == 1 and "papersift index --rebuild" in " ".join(result.output.split())
    monkeypatch.setenv("PAPERSIFT_MODEL_DIR", str(tmp_path / "missing"))
    res = SearchService(load_settings(own_home, settings.db_url), db).search("graph", k=3)
    assert "cannot be loaded" in res.message and res.hits
    result = _cli(own_home, "index", "--rebuild")
    assert result.exit_code == 1 and "does not exist" in " ".join(result.output.split())
    db.dispose()


def test_cli_table_shows_titles_verbatim(own_home: Path):
    settings, db = _open(own_home)
    now = datetime.now(UTC)
    paper = dict(
        EXTRA[0],
        id="2506.00001",
        title="[RE] Reproducing [bold]zeolite[/bold] sieves",
        abstract="A reproduction study of zeolite molecular sieves.",
    )
    with db.session() as s:
        s.add(_row(paper, now))
    SearchService(settings, db).index_papers([paper["id"]])
    db.dispose()
    result = _cli(own_home, "search", "zeolite sieves", "-k", "1", "--mode", "lexical")
    assert result.exit_code == 0 and "[RE] Reproducing [bold]zeolite[/bold]" in " ".join(
        result.stdout.replace("│", " ").split()
    )
    result = _cli(own_home, "index")
    assert result.exit_code == 0 and "up to date (808 papers)" in result.stdout


def test_a_common_filter_searched_from_kept_vectors_ranks_as_before(
    search_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """Filters passing more papers than exact gathering allows take the kept-matrix path
    (search/subsets.py); the answers are the ones exact search over the filter gives."""
    from papersift.search import execute

    settings, db = _open(search_home)
    query, filters = "large language models", SearchFilters(collection=FIRST_PAGE)
    before = {
        mode: [
            h.paper_id
            for h in SearchService(settings, db)
            .search(query, k=20, mode=mode, filters=filters)
            .hits
        ]
        for mode in ("semantic", "hybrid")
    }
    monkeypatch.setattr(execute, "FILTER_EXACT", 0)  # every filter now counts as common
    kept = SearchService(settings, db)
    for mode, expected in before.items():
        assert [
            h.paper_id for h in kept.search(query, k=20, mode=mode, filters=filters).hits
        ] == expected
    vectors = kept.generations.current().vectors
    assert vectors is not None and len(vectors.subsets._items) == 1  # one filter, kept once
