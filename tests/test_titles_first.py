"""A large update is searchable by meaning before its abstracts are embedded (titles first),
and a run killed in between leaves the title vectors pending, not taken for done."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

import tests.test_search as base
from papersift.search import SearchService, spelling
from papersift.search import indexer as indexer_mod
from papersift.search.catalog import PROVISIONAL, Catalog, paper_key
from papersift.store.db import Database

search_home = base.search_home  # the indexed seed home (a session fixture)
own_home = base.own_home

TOPICS = ["soil erosion", "bird migration", "coral reefs", "glacier melt", "river deltas"]
TARGET = {
    "id": "2601.09999",
    "title": "Tokamak plasma confinement with reinforcement learning",
    "abstract": "A controller keeps fusion plasma stable in a tokamak reactor.",
    "authors": ["Lise Meitner"],
    "categories": ["physics.plasm-ph"],
    "published": date(2026, 1, 5),
    "code_urls": [],
}


class Killed(Exception):
    """Stands for the process being killed while it embeds the abstracts."""


def _papers(n: int) -> list[dict]:
    out = [TARGET]
    for i in range(n - 1):
        topic = TOPICS[i % len(TOPICS)]
        out.append(
            {
                **TARGET,
                "id": f"2601.{i:05d}",
                "title": f"Field measurements of {topic}, survey {i}",
                "abstract": f"We report measurements of {topic} at site {i}.",
            }
        )
    return out


def _writer_with_new_papers(home: Path, n: int) -> tuple[Database, SearchService, list[dict]]:
    """The home's database with ``n`` new papers in it, and a service to index them."""
    settings, db = base._open(home)
    papers = _papers(n)
    now = datetime.now(UTC)
    with db.session() as s:
        s.add_all(base._row(p, now) for p in papers)
    return db, SearchService(settings, db), papers


def test_titles_are_searchable_first_and_a_killed_run_leaves_them_pending(
    own_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer_mod, "TITLE_FIRST", 20)
    db, writer, papers = _writer_with_new_papers(own_home, 40)
    settings = writer.settings
    reader = SearchService(settings, db)  # stands for the web server's process
    seen: dict[str, object] = {}

    def progress(done: int, total: int) -> None:
        # Told as soon as the titles' vectors are live, before any abstract is embedded.
        res = reader.search("fusion reactor plasma control", k=3, mode="semantic")
        seen["done"], seen["total"] = done, total
        seen["first"] = res.hits[0].paper_id if res.hits else None
        seen["message"] = res.message
        raise Killed

    with pytest.raises(Killed):
        writer.index_papers([p["id"] for p in papers], progress=progress)
    assert seen["first"] == TARGET["id"] and (seen["done"], seen["total"]) == (0, 40)
    assert "40 papers are not embedded yet" in str(seen["message"])
    catalog = Catalog(own_home / "index" / writer.status()["dir"] / "catalog.sqlite")
    hashes = catalog.hashes([p["id"] for p in papers])
    assert all(str(vec).startswith(PROVISIONAL) for _lex, vec in hashes.values())
    assert len(catalog.without_vectors(limit=1000)) == 40  # still to do, by the next run
    catalog.close()

    report = SearchService(settings, db).sync()  # what `papersift index` runs
    assert report.embedded == 40 and report.pending_vectors == 0
    fresh = SearchService(settings, db)
    res = fresh.search("fusion reactor plasma control", k=3, mode="semantic")
    assert res.hits[0].paper_id == TARGET["id"] and not res.message
    # The live vector is now that of title and abstract, not of the title alone.
    live = fresh._ready()
    assert live is not None and live.vectors is not None
    _found, vecs = live.vectors.get([paper_key(TARGET["id"])])
    full = fresh.embedder.encode([f"{TARGET['title']}. {TARGET['abstract']}"])[0]
    title = fresh.embedder.encode([TARGET["title"]])[0]
    assert float(vecs[0] @ full) > 0.99 > float(vecs[0] @ title)
    assert np.isclose(np.linalg.norm(vecs[0]), 1.0, atol=1e-2)
    db.dispose()


def test_a_small_update_embeds_the_whole_text_at_once(own_home: Path) -> None:
    db, writer, papers = _writer_with_new_papers(own_home, 5)
    calls: list[int] = []
    report = writer.index_papers([p["id"] for p in papers], progress=lambda d, t: calls.append(d))
    assert report.embedded == 5 and report.pending_vectors == 0
    catalog = Catalog(own_home / "index" / writer.status()["dir"] / "catalog.sqlite")
    assert not any(
        str(vec).startswith(PROVISIONAL)
        for _lex, vec in catalog.hashes([p["id"] for p in papers]).values()
    )
    catalog.close()
    db.dispose()


def test_spelling_counts_are_added_after_the_papers_are_searchable(
    own_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The word counts of spelling suggestions are one file rewritten whole (seconds at a
    million papers): an update counts its papers' words once they are searchable."""
    monkeypatch.setattr(indexer_mod, "TITLE_FIRST", 20)
    db, writer, papers = _writer_with_new_papers(own_home, 40)
    folder = own_home / "index" / writer.status()["dir"]
    assert "tokamak" not in (spelling.Vocabulary.load(folder) or spelling.Vocabulary()).counts
    counted_when_live: list[bool] = []

    def progress(done: int, total: int) -> None:
        if not counted_when_live:
            vocab = spelling.Vocabulary.load(folder)
            counted_when_live.append(vocab is not None and "tokamak" in vocab.counts)

    writer.index_papers([p["id"] for p in papers], progress=progress)
    vocab = spelling.Vocabulary.load(folder)
    assert vocab is not None and vocab.counts["tokamak"] == 1 and vocab.counts["survey"] >= 39
    assert counted_when_live == [False]
    db.dispose()
