"""The server around the app: ``papersift serve`` as a real process, its failure modes, the
500 handler, and the vote/trending flow on PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from papersift.settings import load_settings
from papersift.store.db import Database
from papersift.store.schema import PaperRow
from papersift.web.app import create_app
from papersift.web.ratelimit import Limit

from .digest_support import copy_home
from .server_support import free_port, serve_env, served, start_serve, stop, wait_until_up

PAPERSIFT = [str(Path(sys.executable).with_name("papersift"))]


def env_for(home: Path) -> dict[str, str]:
    return serve_env(home)


def test_serve_runs_the_app_and_stops_on_sigterm(web_home: Path, tmp_path: Path) -> None:

    home = tmp_path / "home"
    copy_home(web_home, home)
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log, (tmp_path / "serve.out").open("w") as out:
        proc = start_serve(port, env_for(home), log, out=out)
        try:
            if wait_until_up(proc, f"http://127.0.0.1:{port}/healthz") is None:
                pytest.fail("serve did not come up: " + (tmp_path / "serve.log").read_text())
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            assert r.json() == {"status": "ok"}
            page = httpx.get(f"http://127.0.0.1:{port}/papers/hep-th/9901001", timeout=10)
            assert page.status_code == 200 and "Strings on a slash" in page.text
        finally:
            stop(proc)
    out_text = (tmp_path / "serve.out").read_text()
    assert f"http://127.0.0.1:{port}/" in out_text


def test_serve_on_a_busy_port_says_so(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*PAPERSIFT, "serve", "--port", str(port)],
            env=env_for(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "already in use" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers"),
        (["--port", "70000"], "--port"),
        (["--host", "203.0.113.300"], "cannot listen"),
    ],
)
def test_serve_bad_options(home: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [*PAPERSIFT, "serve", *args], env=env_for(home), capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unhandled_errors_never_show_a_traceback(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'x.db'}")
    app = create_app(settings, warm_search=False)

    def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app.add_api_route("/api/v1/boom", boom)
    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = client.get("/api/v1/boom")
        assert api.status_code == 500
        assert api.headers["content-type"].startswith("application/problem+json")
        assert api.json()["detail"] == "internal error; it has been logged"
        page = client.get("/boom")
        assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
        for r in (api, page):
            assert "secret internals" not in r.text and "Traceback" not in r.text
            assert "default-src 'self'" in r.headers["content-security-policy"]


def _papers(db: Database, ids: list[str]) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        for pid in ids:
            s.add(
                PaperRow(
                    id=pid,
                    title=f"Paper {pid}",
                    title_key=pid,
                    abstract="a",
                    authors=[],
                    categories=[],
                    code_urls=[],
                    sources=[],
                    has_code=False,
                    first_seen=now,
                    modified_at=now,
                    content_hash="0" * 40,
                )
            )


def test_votes_and_trending_on_both_databases(db: Database, tmp_path: Path) -> None:
    """The same HTTP flow on SQLite and PostgreSQL: votes count once per visitor, undo
    works, trending follows, and the per-visitor rate limit answers 429 problem+json."""
    _papers(db, ["one", "two", "cond-mat/0101001"])
    settings = load_settings(tmp_path / "home", db.url)
    app = create_app(
        settings,
        db=db,
        warm_search=False,
        vote_limits=(Limit(capacity=6, rate=0.001), Limit(capacity=100, rate=1)),
    )
    with TestClient(app) as alice, TestClient(app) as bob:
        alice.get("/papers/one"), bob.get("/papers/one")  # a vote needs a visitor seen before
        assert alice.post("/api/v1/papers/cond-mat/0101001/upvote").json()["votes"] == 1
        assert bob.post("/api/v1/papers/cond-mat/0101001/upvote").json()["votes"] == 2
        assert alice.post("/api/v1/papers/cond-mat/0101001/upvote").json()["votes"] == 2
        assert bob.post("/api/v1/papers/two/upvote").json()["votes"] == 1
        top = [p["id"] for p in alice.get("/api/v1/trending?window=day").json()["results"]]
        assert top == ["cond-mat/0101001", "two", "one"]
        assert alice.delete("/api/v1/papers/cond-mat/0101001/upvote").json()["votes"] == 1
        assert bob.delete("/api/v1/papers/cond-mat/0101001/upvote").json()["votes"] == 0
        top = [p["id"] for p in alice.get("/api/v1/trending?window=day").json()["results"]]
        assert top[0] == "two"
        # alice has used 3 of her 6 tokens; the 4th extra call is refused.
        statuses = [alice.post("/api/v1/papers/one/upvote").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = alice.post("/api/v1/papers/one/upvote")
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert int(limited.headers["retry-after"]) > 0
        assert bob.post("/api/v1/papers/one/upvote").status_code == 200  # others unaffected


def test_search_overload_is_shed_with_503(web_home: Path) -> None:
    """With no room for another search, search routes answer 503 at once; others work."""
    settings = load_settings(web_home, f"sqlite:///{web_home / 'papersift.db'}")
    app = create_app(settings, warm_search=False, max_searches_in_flight=0)
    with TestClient(app) as client:
        api = client.get("/api/v1/search", params={"q": "attention"})
        assert api.status_code == 503 and api.headers["retry-after"] == "1"
        assert api.headers["content-type"].startswith("application/problem+json")
        assert api.json()["status"] == 503
        for path in ("/search?q=attention", "/feeds/search.atom?q=x"):
            page = client.get(path)
            assert page.status_code == 503 and "busy" in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/api/v1/papers/hep-th/9901001/similar").status_code == 503
        assert client.get("/api/v1/papers/hep-th/9901001").status_code == 200
        assert client.get("/").status_code == 200


def test_search_errors_reach_one_handler_on_every_route(web_home: Path) -> None:
    """A search that cannot start (the gate is full) is a 503 with Retry-After everywhere:
    problem+json on the API, the search page with its form, the feed's error page; the
    paper page is still served (without similar papers). A search the service refuses
    (dates the wrong way round, caught only there on the API) is a problem+json 400."""
    from papersift.web.state import web_state

    settings = load_settings(web_home, f"sqlite:///{web_home / 'papersift.db'}")
    app = create_app(settings, warm_search=False, search_concurrency=1, search_wait=0.0)
    gate = web_state(app).search.gate
    with TestClient(app) as client, gate:
        api = client.get("/api/v1/search", params={"q": "quantum gravity"})
        assert api.status_code == 503 and api.headers["retry-after"] == "1"
        assert api.headers["content-type"].startswith("application/problem+json")
        assert api.json()["detail"] == "search is busy right now"
        page = client.get("/search", params={"q": "quantum gravity"})
        assert page.status_code == 503 and page.headers["retry-after"] == "1"
        assert 'class="notice bad"' in page.text and 'name="q"' in page.text
        assert "Search is busy right now. Try again in a moment." in page.text
        feed = client.get("/feeds/search.atom", params={"q": "quantum gravity"})
        assert feed.status_code == 503 and feed.headers["retry-after"] == "1"
        assert feed.headers["content-type"].startswith("text/html")
        similar = client.get("/api/v1/papers/hep-th/9901001/similar")
        assert similar.status_code == 503 and similar.json()["status"] == 503
        assert client.get("/papers/hep-th/9901001").status_code == 200
        assert gate.rejected == 5
    with TestClient(app) as client:
        dates = {"q": "gravity", "date_from": "2024-05-01", "date_to": "2024-01-01"}
        bad = client.get("/api/v1/search", params=dates)
        assert bad.status_code == 400 and "retry-after" not in bad.headers
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "date" in bad.json()["detail"]


def test_paper_schema_has_every_field_of_a_paper() -> None:
    """The API's paper model names what ``Paper.to_dict`` gives (less the internal sources)
    plus the page URL and votes: a field added to papers cannot silently miss the API."""
    from papersift.model import Paper
    from papersift.web.schemas import PaperOut, paper_fields

    paper = Paper(id="p1", title="A title")
    assert set(PaperOut.model_fields) == set(paper_fields(paper, 0))
    assert set(paper_fields(paper, 0)) == set(paper.to_dict()) - {"sources"} | {"url", "votes"}
    assert PaperOut(**paper_fields(paper, 3)).votes == 3


def test_vote_limit_holds_across_workers(web_home: Path, tmp_path: Path) -> None:
    """`serve --workers 2`: one visitor gets the per-visitor burst (20) once, not per worker."""

    home = tmp_path / "home"
    copy_home(web_home, home)
    (home / "ratelimit.sqlite").unlink(missing_ok=True)
    with served(home, workers=2) as base:
        ids = [
            p["id"] for p in httpx.get(f"{base}/api/v1/trending?k=30", timeout=10).json()["results"]
        ]
        assert len(ids) == 30
        # A new connection per request, so the kernel spreads them over both workers.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base, limits=no_reuse, timeout=10) as visitor:
            visitor.get(f"/papers/{ids[0]}")  # a vote needs a visitor seen before
            statuses = [visitor.post(f"/api/v1/papers/{pid}/upvote").status_code for pid in ids]
            assert visitor.cookies.get("ps_visitor")
    assert statuses[:20] == [200] * 20 and set(statuses[20:]) == {429}, statuses


def test_served_warm_up_loads_search_and_freezes_what_it_loaded(web_home: Path) -> None:
    """What each ``serve`` worker does at start: model and indexes loaded (the feedback
    cache is left to fill from the catalog's stored terms), then the survivors frozen out of
    full collections (undone here for the other tests)."""
    import gc
    import weakref

    from papersift.search.service import get_service
    from papersift.web.app import _warm_search

    settings = load_settings(web_home, f"sqlite:///{web_home / 'papersift.db'}")
    db = Database(settings.db_url)
    app = create_app(settings, db=db, warm_search=False)
    assert gc.get_freeze_count() == 0
    try:
        _warm_search(app, freeze_gc=True)
        assert gc.get_freeze_count() > 10_000
        live = get_service(settings, db).generations.current()
        assert live is not None and len(live.terms) < len(live.catalog)
        with TestClient(app) as client:
            r = client.get("/api/v1/search", params={"q": "graph neural networks", "k": 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        # A frozen object is freed by reference counting only: an index generation that a
        # reload drops must hold no reference cycle, or each reload would leak it whole.
        service = get_service(settings, db)
        gone = weakref.ref(live)
        del live
        service.generations.forget()  # what an index update does
        assert gone() is None
    finally:
        gc.unfreeze()
        db.dispose()


def test_queries_at_and_past_the_http_limits(live_server: str) -> None:
    """A 10,000-character query (the most a search takes) is answered over real HTTP; a
    request line past the HTTP parser's ~64 KB is refused by the server itself with a 400
    (no traceback, no hang) and the server goes on serving."""
    long_query = " ".join(["attention"] * 1000)[:10_000]
    with httpx.Client(base_url=live_server, timeout=30) as client:
        ok = client.get("/api/v1/search", params={"q": long_query, "k": 3})
        assert ok.status_code == 200 and ok.json()["results"]
        page = client.get("/search", params={"q": long_query})
        assert page.status_code == 200
        host, port = live_server.removeprefix("http://").split(":")
        for path in ("/api/v1/search", "/search"):
            # httpx itself refuses URLs this long, so the request goes over a bare socket
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(f"GET {path}?q={'x' * 70_000} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line.startswith(b"HTTP/1.1 400"), status_line
            assert b"Traceback" not in rest and len(rest) < 500
        assert client.get("/healthz").json() == {"status": "ok"}
