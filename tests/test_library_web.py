"""The library on the web and in the API, against the real app (TestClient) on a copy of the
seeded, indexed home: saving from cards and the paper page, private notes, a BibTeX import
whose new paper becomes searchable, exports read back by the real parsers, saved searches
with their new matches and Atom feed, tokens, CSRF and cross-site checks."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import bibtexparser
import pytest
import rispy
from fastapi.testclient import TestClient

from papersift.settings import load_settings
from papersift.store.db import Database
from papersift.web.app import create_app
from tests.accounts_support import api_token, make_account, sign_in

from .digest_support import copy_home

STRINGS = "hep-th/9901001"  # WEB_EXTRA_PAPERS: an arXiv id with a slash
SURGERY = "Causal Inference by String Diagram Surgery"  # a seed paper's title
IMPORT = f"""@article{{strings,
  title = {{Strings on a slash}},
  eprint = {{{STRINGS}}}, archivePrefix = {{arXiv}},
}}
@inproceedings{{surgery, title = {{{SURGERY.lower()}}}, author = {{Jacobs, Bart}}}}
@misc{{fresh, title = {{Zyxquartz lattices for reading lists}},
  author = {{Roe, Richard}}, abstract = {{Zyxquartz lattices organise what a reader saved.}}}}
@misc{{empty, author = {{Nobody}}}}
""".encode()


@pytest.fixture(scope="module")
def home(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the indexed web home: imports here add papers to it."""
    path = tmp_path_factory.mktemp("library-web") / "home"
    copy_home(web_home, path)
    return path


@pytest.fixture(scope="module")
def app_db(home: Path) -> Iterator[tuple[TestClient, Database]]:
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    db = Database(settings.db_url)
    app = create_app(settings, db=db, warm_search=False)
    with TestClient(app, base_url="http://testserver") as client:
        yield client, db
    db.dispose()


def _csrf(client: TestClient, path: str = "/library") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "no form on " + path
    return match.group(1)


def _new_client(client: TestClient) -> TestClient:
    return TestClient(client.app, base_url="http://testserver")


def test_library_needs_an_account(app_db: tuple[TestClient, Database]) -> None:
    client, _ = app_db
    anon = _new_client(client)
    page = anon.get("/library", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/signin")
    assert anon.get("/api/v1/library/tags").status_code == 401
    assert "☆ Save" not in anon.get("/search", params={"q": "strings slash"}).text


def test_save_note_import_export_and_search(app_db: tuple[TestClient, Database]) -> None:
    client, db = app_db
    alice = make_account(db, "alice@example.org")
    web = _new_client(client)
    sign_in(web, db, alice)
    assert web.get("/library").status_code == 200
    # Save from a card on the search page (no CSRF token: refused).
    results = web.get("/search", params={"q": "strings slash branes"})
    assert "☆ Save" in results.text
    assert web.post("/library/save", data={"paper_id": STRINGS}).status_code == 403
    token = _csrf(web)
    saved = web.post(
        "/library/save",
        data={"csrf_token": token, "paper_id": STRINGS, "new_tag": "Strings", "next": "/search"},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/search"
    assert "★ Saved" in web.get("/search", params={"q": "strings slash branes"}).text
    # The paper page shows the tag and takes a private note, shown to its owner only.
    paper = web.get(f"/papers/{STRINGS}")
    assert 'href="/library/Strings"' in paper.text and "Private note" in paper.text
    web.post(
        "/library/note",
        data={"csrf_token": token, "paper_id": STRINGS, "text": "<b>read §3</b>"},
    )
    paper = web.get(f"/papers/{STRINGS}")
    assert "&lt;b&gt;read §3&lt;/b&gt;" in paper.text and "<b>read §3</b>" not in paper.text
    bob = make_account(db, "bob@example.org")
    other = _new_client(client)
    sign_in(other, db, bob)
    assert "read §3" not in other.get(f"/papers/{STRINGS}").text
    assert other.get("/library/Strings").status_code == 404  # alice's tag is hers
    # Import a BibTeX file: per-entry report, the new paper becomes searchable.
    upload = web.post(
        "/library/import",
        data={"csrf_token": token, "tag": "Imported"},
        files={"file": ("mine.bib", IMPORT, "application/x-bibtex")},
    )
    assert upload.status_code == 200, upload.text[:500]
    assert "1 matched" not in upload.text and "2 matched, 1 added, 1 failed" in upload.text
    assert "no title" in upload.text
    new_id = re.search(r'<a href="/papers/([^"]+)">Zyxquartz lattices', upload.text).group(1)
    found = web.get("/search", params={"q": "zyxquartz lattices"})
    assert f'href="/papers/{new_id}"' in found.text
    inside = web.get("/library/Imported", params={"q": "zyxquartz"})
    assert "Zyxquartz lattices" in inside.text and SURGERY not in inside.text
    by_title = web.get("/library/Imported", params={"sort": "title"}).text
    assert (
        by_title.index(SURGERY) < by_title.index("Strings on a slash") < by_title.index("Zyxquartz")
    )
    # Export the tag and read it back with the real parsers.
    bib = web.get("/library/Imported/export", params={"format": "bibtex"})
    assert bib.status_code == 200 and "attachment" in bib.headers["content-disposition"]
    lib = bibtexparser.parse_string(bib.text)
    assert not lib.failed_blocks and len(lib.entries) == 3
    ris = rispy.loads(web.get("/library/Imported/export", params={"format": "ris"}).text)
    assert sorted(r["title"] for r in ris)[0] == SURGERY
    items = json.loads(web.get("/library/Imported/export", params={"format": "csl-json"}).text)
    assert len(items) == 3
    assert web.get("/library/Imported/export", params={"format": "docx"}).status_code == 400
    # A bad file: a clear message, nothing imported.
    bad = web.post(
        "/library/import",
        data={"csrf_token": token, "tag": "Broken"},
        files={"file": ("x.json", b"[1, 2", "application/json")},
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    assert web.get("/library/Broken").status_code == 404


def test_api_with_a_token(app_db: tuple[TestClient, Database]) -> None:
    client, db = app_db
    carol = make_account(db, "carol@example.org")
    auth = {"Authorization": f"Bearer {api_token(db, carol)}"}
    api = _new_client(client)
    got = api.post("/api/v1/library/papers", json={"paper_id": STRINGS, "tag": "RL"}, headers=auth)
    assert got.status_code == 200 and got.json() == {
        "paper_id": STRINGS,
        "tag": "RL",
        "added": True,
    }
    assert api.get("/api/v1/library/tags", headers=auth).json() == [
        {"name": "RL", "count": 1, "url": "/library/RL"}
    ]
    listing = api.get("/api/v1/library", params={"tag": "RL"}, headers=auth).json()
    assert listing["total"] == 1 and listing["results"][0]["tags"] == ["RL"]
    imported = api.post(
        "/api/v1/library/import",
        params={"tag": "FromApi", "filename": "x.ris"},
        content=b"TY  - GEN\nTI  - Strings on a slash: an old-style arXiv id\nER  - \n",
        headers=auth,
    )
    assert imported.status_code == 200, imported.text
    body = imported.json()
    assert (body["matched"], body["added"], body["failed"]) == (1, 0, 0)
    assert body["entries"][0]["paper_id"] == STRINGS and body["entries"][0]["reason"] == "title"
    ris = api.get("/api/v1/library/export", params={"tag": "RL", "format": "ris"}, headers=auth)
    assert rispy.loads(ris.text)[0]["urls"] == ["https://arxiv.org/abs/hep-th/9901001"]
    note = api.put(f"/api/v1/library/notes/{STRINGS}", json={"text": "api note"}, headers=auth)
    assert note.json() == {"paper_id": STRINGS, "text": "api note"}
    removed = api.delete(f"/api/v1/library/papers/{STRINGS}", params={"tag": "RL"}, headers=auth)
    assert removed.json() == {"removed": 1}
    too_big = api.post("/api/v1/library/import", content=b"x" * (5 * 1024 * 1024 + 1), headers=auth)
    assert too_big.status_code == 413
    # With the session cookie, a write from another site is refused.
    web = _new_client(client)
    sign_in(web, db, carol)
    evil = web.post(
        "/api/v1/library/papers",
        json={"paper_id": STRINGS},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert evil.status_code == 403


def test_saved_search_new_matches_and_feed(app_db: tuple[TestClient, Database]) -> None:
    client, db = app_db
    dave = make_account(db, "dave@example.org")
    web = _new_client(client)
    sign_in(web, db, dave)
    search = web.get("/search", params={"q": "qwvprism detectors", "has_code": "1"})
    assert "Save this search" in search.text
    token = _csrf(web, "/search?q=qwvprism+detectors")
    saved = web.post(
        "/library/searches",
        data={"csrf_token": token, "q": "qwvprism detectors", "name": "Prisms"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    page = web.get("/library/searches")
    assert "Prisms" in page.text and "nothing new" in page.text
    search_id = int(re.search(r'href="/library/searches/(\d+)"', page.text).group(1))
    feed_path = re.search(r'href="(/feeds/saved/[^"]+)"', page.text).group(1).replace("&amp;", "&")
    # A paper that arrives now is new for the search.
    web.post(
        "/library/import",
        data={"csrf_token": token, "tag": "Prism"},
        files={"file": ("p.bib", b"@misc{p, title={Qwvprism detectors at scale}}", "text/plain")},
    )
    assert "1 new" in web.get("/library/searches").text
    detail = web.get(f"/library/searches/{search_id}")
    assert "Qwvprism detectors at scale" in detail.text
    assert "nothing new" in web.get("/library/searches").text  # seen now
    feed = _new_client(client).get(feed_path)  # a feed reader: no cookie
    assert feed.status_code == 200
    titles = [
        e.text for e in ET.fromstring(feed.content).iter("{http://www.w3.org/2005/Atom}title")
    ]
    assert "Qwvprism detectors at scale" in titles
    assert _new_client(client).get(f"/feeds/saved/{search_id}.atom?key=forged").status_code == 404
    web.post(f"/library/searches/{search_id}/digest", data={"csrf_token": token, "in_digest": "1"})
    listed = web.get("/api/v1/library/searches").json()
    assert listed[0]["in_digest"] is True and listed[0]["name"] == "Prisms"


def test_a_big_import_is_indexed_in_the_background(
    app_db: tuple[TestClient, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from papersift.web.routes import library as library_routes

    client, db = app_db
    monkeypatch.setattr(library_routes, "SYNC_INDEX", 0)  # every import counts as big
    erin = make_account(db, "erin@example.org")
    web = _new_client(client)
    sign_in(web, db, erin)
    upload = web.post(
        "/library/import",
        data={"csrf_token": _csrf(web), "tag": "Big"},
        files={"file": ("b.bib", b"@misc{b, title={Vlorptango meshes in the background}}", "x")},
    )
    assert "1 added" in upload.text
    new_id = re.search(r'<a href="/papers/([^"]+)">Vlorptango', upload.text).group(1)
    deadline = time.monotonic() + 60
    while f'href="/papers/{new_id}"' not in web.get("/search", params={"q": "vlorptango"}).text:
        assert time.monotonic() < deadline, "the imported paper never became searchable"
        time.sleep(0.5)
