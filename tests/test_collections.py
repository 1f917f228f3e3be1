"""Collections have readable titles: given at ingest or by rename, else derived from the
file name's words or the papers' most distinctive title terms; never a hash, in the CLI,
the Python API and the JSON API."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from papersift.api import Library, LibraryError
from papersift.cli import app
from papersift.ingest import ingest_paths
from papersift.ingest.titles import distinctive_terms, title_df
from papersift.store.db import Database

from .conftest import SEEDS

FIXTURES = Path(__file__).parent / "fixtures"
FIRST_PAGE = "000_e3b0215ea9dd5350"
HASHLIKE = re.compile(r"[0-9a-f]{8,}")


def run(db_url: str, *args: str):
    return CliRunner().invoke(app, ["--db", db_url, *args], catch_exceptions=False)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _page(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copy(FIXTURES / "merge_page.txt", path)
    return path


def test_seed_pages_get_distinctive_term_titles(db: Database) -> None:
    assert not ingest_paths(db, [SEEDS]).failed
    with _library(db) as lib:
        titles = {c.name: c.title for c in lib.collections()}
    assert len(titles) == 5
    for name, title in titles.items():
        assert not HASHLIKE.search(title), (name, title)
        assert len(title.split(" · ")) == 3, title


def _library(db: Database) -> Library:
    from papersift.settings import load_settings

    return Library(settings=load_settings(), db=db)


def test_distinctive_terms_prefer_what_sets_the_titles_apart() -> None:
    corpus = [f"Language models for task {i}" for i in range(50)] + [
        "Diffusion models for video editing",
        "Video diffusion editing with attention",
        "Editing video by diffusion",
    ]
    df, n = title_df(corpus)
    terms = distinctive_terms(corpus[-3:], df, n)
    assert set(terms) == {"Diffusion", "video", "Editing"} or {t.lower() for t in terms} == {
        "diffusion",
        "video",
        "editing",
    }


def test_file_name_words_make_the_title(sqlite_db: Database, tmp_path: Path) -> None:
    page = _page(tmp_path, "reading-list_3f9a01c2d4e5.txt")
    assert not ingest_paths(sqlite_db, [page]).failed
    with _library(sqlite_db) as lib:
        [coll] = lib.collections()
    assert coll.name == "reading-list_3f9a01c2d4e5"
    assert coll.title == "Reading list"


def test_cli_collection_title_rename_and_listings(tmp_path: Path, home: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    page = _page(tmp_path, "0001_ab12cd34ef56.txt")
    result = run(db_url, "ingest", "-q", "--collection-title", "  My   reading list ", str(page))
    assert result.exit_code == 0, result.output
    listed = run(db_url, "collections", "list", "--json")
    [coll] = last_json(listed.stdout)["collections"]
    assert coll["name"] == "0001_ab12cd34ef56" and coll["title"] == "My reading list"

    renamed = run(db_url, "collections", "rename", coll["name"], "Sparse retrieval", "-d", "Saved")
    assert renamed.exit_code == 0, renamed.output
    stats = last_json(run(db_url, "stats", "--json").stdout)
    assert stats["collection_titles"] == {"0001_ab12cd34ef56": "Sparse retrieval"}
    table = run(db_url, "stats").stdout
    assert "Sparse retrieval" in table

    # the same page again without a title keeps the given one
    assert run(db_url, "ingest", "-q", str(page)).exit_code == 0
    with Library(db_url=db_url) as lib:
        [info] = lib.collections()
        assert (info.title, info.description) == ("Sparse retrieval", "Saved")

        from papersift.web.app import create_app

        client = TestClient(create_app(lib.settings))
        body = client.get("/api/v1/collections").json()
        assert body["results"][0]["title"] == "Sparse retrieval"
        one = client.get(f"/api/v1/collections/{info.name}").json()
        assert one["title"] == "Sparse retrieval" and one["description"] == "Saved"


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("   ", "title is empty"),
        ("bad\x07title", "control characters"),
        ("x" * 201, "201 characters (limit 200)"),
    ],
)
def test_bad_collection_title_ingests_nothing(
    tmp_path: Path, home: Path, title: str, message: str
) -> None:
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run(db_url, "ingest", "--collection-title", title, str(_page(tmp_path, "p.txt")))
    assert result.exit_code == 2
    assert message in result.stderr and "--collection-title" in result.stderr
    assert last_json(run(db_url, "stats", "--json").stdout)["papers"] == 0


def test_rename_refuses_unknown_collections_and_bad_titles(tmp_path: Path, home: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run(db_url, "ingest", "-q", str(_page(tmp_path, "page.txt"))).exit_code == 0
    unknown = run(db_url, "collections", "rename", "nope", "A title")
    assert unknown.exit_code == 1 and "no collection named 'nope'" in unknown.stderr
    bad = run(db_url, "collections", "rename", "page", "\x00")
    assert bad.exit_code == 2 and "control characters" in bad.stderr
    long_description = run(db_url, "collections", "rename", "page", "T", "-d", "d" * 2001)
    assert long_description.exit_code == 2 and "description" in long_description.stderr
    with Library(db_url=db_url) as lib:
        [info] = lib.collections()
        assert info.title == "Page" and info.description == ""
        with pytest.raises(LibraryError, match="no collection"):
            lib.rename_collection("nope", "T")
