"""The packaged demo corpus and an install without a model: precomputed vectors are used
only for the model and texts they were made from; keyword search never needs the model,
and semantic search without one is an error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from papersift.cli import app
from papersift.ingest import ingest_paths
from papersift.ingest.demo import (
    CORPUS_FILE,
    DemoDataError,
    DemoVectors,
    data_dir,
    demo_paths,
    load_vectors,
    read_vectors,
)
from papersift.model import paper_day
from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store.db import Database

FIXTURES = Path(__file__).parent / "fixtures"


def test_packaged_corpus_is_real_recent_and_small() -> None:
    paths = demo_paths()
    assert paths[0].name == CORPUS_FILE and paths[1].name == "seeds"
    assert len(list(paths[1].glob("*.txt"))) == 5
    size = sum(p.stat().st_size for p in data_dir().rglob("*") if p.is_file())
    assert size < 8_000_000, size
    with gzip.open(paths[0], "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    assert 3_000 <= len(records) <= 5_000
    listed = [r for r in records if r.get("announced")]
    assert len(listed) >= 3_000 and all(r["authors"] for r in listed)
    assert len({r["announced"] for r in listed}) >= 10  # several real days


def test_packaged_vectors_fit_the_corpus() -> None:
    demo = read_vectors()
    assert demo is not None, "run tools/build_demo_corpus.py"
    assert demo.vectors.dtype == np.float16 and demo.vectors.shape[1] == 384
    assert len(demo.ids) == demo.vectors.shape[0] >= 4_000
    norms = np.linalg.norm(demo.vectors.astype(np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=0.01)


def _db_with_papers(tmp_path: Path) -> tuple[Database, dict[str, str]]:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    assert not ingest_paths(db, [FIXTURES / "generic.jsonl"]).failed
    with db.session() as s:
        ids = [p.id for p in paper_store.iter_papers(s)]
        return db, paper_store.content_hashes(s, ids)


def test_vectors_load_only_for_their_model_and_unchanged_texts(tmp_path: Path) -> None:
    db, hashes = _db_with_papers(tmp_path)
    ids = sorted(hashes)
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((len(ids) + 1, 8)).astype(np.float16)
    stale = {ids[0]: "0" * 40}  # its text changed since the vector was made
    demo = DemoVectors(
        "model-a",
        [*ids, "unknown-paper"],
        [stale.get(i, hashes[i]) for i in ids] + ["1" * 40],
        vecs,
    )
    assert load_vectors(db, "model-b", demo) == 0  # another model: nothing foreign stored
    assert load_vectors(db, "model-a", demo) == len(ids) - 1
    with db.session() as s:
        stored = search_docs.load_embeddings(s, hashes, "model-a", 8)
        assert search_docs.count_unembedded(s, "model-a") == 1
    assert set(stored) == set(ids[1:])
    assert np.allclose(stored[ids[1]], vecs[1].astype(np.float32))
    db.dispose()


def test_damaged_packaged_vectors_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "embeddings.json").write_text('{"model_id": "m", "papers": [["a", "h"]]}')
    np.save(tmp_path / "embeddings.npy", np.zeros((2, 4), dtype=np.float16))
    with pytest.raises(DemoDataError, match="do not fit"):
        read_vectors(tmp_path)
    (tmp_path / "embeddings.json").write_text("{not json")
    with pytest.raises(DemoDataError, match="unreadable"):
        read_vectors(tmp_path)
    assert read_vectors(tmp_path / "nothing-here") is None


def test_demo_papers_have_days_authors_and_titled_collections(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'demo.db'}")
    summary = ingest_paths(db, demo_paths())
    assert not summary.failed
    with db.session() as s:
        papers = list(paper_store.iter_papers(s))
        from papersift.store.collections import collection_summaries

        titles = [c.title for c in collection_summaries(s)]
    with_days = [p for p in papers if p.announced]
    assert len(with_days) >= 3_000 and all(p.authors for p in with_days)
    assert all(paper_day(p) for p in papers)
    assert len(titles) == 5 and all(" · " in t for t in titles)
    db.dispose()


def _run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_keyword_search_needs_no_model_and_semantic_says_it_is_missing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    monkeypatch.setenv("PAPERSIFT_MODEL_DIR", str(empty))
    assert _run("ingest", "-q", str(FIXTURES / "merge_page.txt")).exit_code == 0
    lexical = _run("search", "sparse retrieval", "--mode", "lexical", "--json")
    assert lexical.exit_code == 0, lexical.output
    hits = json.loads(lexical.stdout.strip().splitlines()[-1])["hits"]
    assert hits and hits[0]["title"] == "Sparse Retrieval with Learned Term Weights"
    semantic = _run("search", "sparse retrieval", "--mode", "semantic")
    assert semantic.exit_code == 1
    assert "semantic search needs the embedding model" in semantic.stderr
    assert str(empty) in semantic.stderr.replace("\n", "")
    hybrid = _run("search", "sparse retrieval", "--json")
    assert hybrid.exit_code == 0
    body = json.loads(hybrid.stdout.strip().splitlines()[-1])
    assert body["hits"] and "keyword results only" in (body["message"] or "")
    # a second ingest updates the keyword-only index
    assert _run("ingest", "-q", str(FIXTURES / "generic.jsonl")).exit_code == 0
    more = _run("search", "query expansion survey", "--mode", "lexical", "--json")
    assert json.loads(more.stdout.strip().splitlines()[-1])["hits"]
