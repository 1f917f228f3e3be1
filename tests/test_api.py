"""The JSON API over real HTTP: uvicorn on 127.0.0.1 serving the real app and a real
SQLite database (the seed corpus plus two hand-made papers, see conftest)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

PROBLEM = "application/problem+json"
SLASH_ID = "hep-th/9901001"
HOSTILE_QUERIES = [
    "",
    "   ",
    "x" * 10_000,
    '"unbalanced quote',
    "((((attention",
    "title:",
    "author:",
    "🚀🔥 transformers",
    r"$\frac{a}{b}$ \alpha",
    "null\x00byte\x07bell",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "AND OR NOT",
    "*",
    "%00%ff",
]


@pytest.fixture
def client(live_server: str) -> Iterator[httpx.Client]:
    """A fresh client: no cookies, i.e. a new visitor."""
    with httpx.Client(base_url=live_server, timeout=30) as c:
        yield c


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def a_seed_paper(client: httpx.Client) -> str:
    name = client.get("/api/v1/collections").json()["results"][0]["name"]
    return client.get(f"/api/v1/collections/{name}", params={"k": 1}).json()["results"][0]["id"]


# --- papers ---------------------------------------------------------------------------


def test_paper_with_slash_id(client: httpx.Client) -> None:
    r = client.get(f"/api/v1/papers/{SLASH_ID}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == SLASH_ID and body["url"] == f"/papers/{SLASH_ID}"
    assert body["code_url"] == "https://github.com/example/strings"
    assert "eprint = {hep-th/9901001}" in body["bibtex"]
    assert body["authors"] == ["Ada Lovelace", "Alan Turing"]
    assert r.headers["etag"] and "no-cache" in r.headers["cache-control"]


def test_paper_by_arxiv_version_resolves(client: httpx.Client) -> None:
    assert client.get(f"/api/v1/papers/{SLASH_ID}v3").json()["id"] == SLASH_ID


def test_seed_paper_lists_its_collections(client: httpx.Client) -> None:
    pid = a_seed_paper(client)
    body = client.get(f"/api/v1/papers/{pid}").json()
    assert body["collections"] and body["collections"][0]["url"].startswith("/collections/")
    assert body["votes"] >= 0 and body["title"]


def test_etag_revalidation(client: httpx.Client) -> None:
    first = client.get(f"/api/v1/papers/{SLASH_ID}")
    again = client.get(
        f"/api/v1/papers/{SLASH_ID}", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    other = client.get(f"/api/v1/papers/{SLASH_ID}", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200


@pytest.mark.parametrize(
    "ref", ["does-not-exist", "%00", "a%0Ab", "x" * 300, "..%2F..%2Fetc%2Fpasswd", "%F0%9F%9A%80"]
)
def test_unknown_or_hostile_paper_ids_are_404(client: httpx.Client, ref: str) -> None:
    assert_problem(client.get(f"/api/v1/papers/{ref}"), 404)
    # no visitor yet: 403, unless the path itself names nothing (404 before any handler)
    assert client.post(f"/api/v1/papers/{ref}/upvote").status_code in (403, 404)
    client.get("/")  # now one
    assert_problem(client.post(f"/api/v1/papers/{ref}/upvote"), 404)
    assert_problem(client.get(f"/api/v1/papers/{ref}/similar"), 404)


# --- votes ----------------------------------------------------------------------------


def test_upvote_needs_a_cookie_from_a_page_and_counts_once(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as alice, httpx.Client(base_url=live_server) as bob:
        before = alice.get(f"/api/v1/papers/{SLASH_ID}").json()["votes"]
        refused = alice.post(f"/api/v1/papers/{SLASH_ID}/upvote")  # no visitor seen before
        assert refused.status_code == 403 and "ps_visitor" in refused.json()["detail"]
        page = alice.get(f"/papers/{SLASH_ID}")
        assert "ps_visitor=" in page.headers["set-cookie"]
        assert "HttpOnly" in page.headers["set-cookie"]
        assert "SameSite=Lax" in page.headers["set-cookie"]
        bob.get(f"/papers/{SLASH_ID}")
        r = alice.post(f"/api/v1/papers/{SLASH_ID}/upvote")
        assert r.status_code == 200
        assert r.json() == {"id": SLASH_ID, "votes": before + 1, "voted": True}
        again = alice.post(f"/api/v1/papers/{SLASH_ID}/upvote")
        assert again.json()["votes"] == before + 1 and "set-cookie" not in again.headers
        assert bob.post(f"/api/v1/papers/{SLASH_ID}/upvote").json()["votes"] == before + 2
        assert alice.delete(f"/api/v1/papers/{SLASH_ID}/upvote").json() == {
            "id": SLASH_ID,
            "votes": before + 1,
            "voted": False,
        }
        undo = alice.post(f"/api/v1/papers/{SLASH_ID}/upvote", params={"undo": "true"})
        assert undo.json()["votes"] == before + 1  # undo twice changes nothing
        assert bob.delete(f"/api/v1/papers/{SLASH_ID}/upvote").json()["votes"] == before


def test_forged_cookie_cannot_vote(live_server: str) -> None:
    with httpx.Client(base_url=live_server, cookies={"ps_visitor": "forged.value"}) as c:
        r = c.post(f"/api/v1/papers/{SLASH_ID}/upvote")
        assert r.status_code == 403


def test_votes_change_the_etag_and_trending(client: httpx.Client) -> None:
    pid = a_seed_paper(client)
    etag = client.get(f"/api/v1/papers/{pid}").headers["etag"]
    top_before = client.get("/api/v1/trending", params={"window": "day", "k": 1}).json()
    for _ in range(3):  # three visitors make it the most-voted paper of the day
        with httpx.Client(base_url=str(client.base_url)) as voter:
            voter.get(f"/papers/{pid}")  # a vote needs a visitor seen before
            assert voter.post(f"/api/v1/papers/{pid}/upvote").status_code == 200
    assert client.get(f"/api/v1/papers/{pid}", headers={"If-None-Match": etag}).status_code == 200
    top = client.get("/api/v1/trending", params={"window": "day", "k": 1}).json()["results"][0]
    assert top["id"] == pid and top["score"] > 0 and top["votes"] >= 3
    assert top_before["results"][0]["id"] != pid or top_before["results"][0]["votes"] < 3


def test_cross_site_vote_is_refused(client: httpx.Client) -> None:
    r = client.post(f"/api/v1/papers/{SLASH_ID}/upvote", headers={"Origin": "https://evil.example"})
    assert_problem(r, 403)
    r = client.post(f"/api/v1/papers/{SLASH_ID}/upvote", headers={"Sec-Fetch-Site": "cross-site"})
    assert_problem(r, 403)


def test_body_too_large_is_413(client: httpx.Client) -> None:
    big = b"x" * (65 * 1024)
    assert_problem(client.post(f"/api/v1/papers/{SLASH_ID}/upvote", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"y" * 4096

    r = client.post(
        f"/papers/{SLASH_ID}/upvote",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and "Traceback" not in r.text


# --- trending, collections -------------------------------------------------------------


@pytest.mark.parametrize("window", ["day", "week", "month"])
def test_trending_windows_and_pagination(client: httpx.Client, window: str) -> None:
    full = client.get("/api/v1/trending", params={"window": window, "k": 10}).json()
    assert full["window"] == window and len(full["results"]) == 10
    scores = [p["score"] for p in full["results"]]
    assert scores == sorted(scores, reverse=True)
    by_offset = client.get("/api/v1/trending", params={"window": window, "k": 5, "offset": 5})
    by_page = client.get("/api/v1/trending", params={"window": window, "k": 5, "page": 2})
    ids = [p["id"] for p in full["results"][5:]]
    assert [p["id"] for p in by_offset.json()["results"]] == ids
    assert [p["id"] for p in by_page.json()["results"]] == ids


@pytest.mark.parametrize(
    "params",
    [{"window": "year"}, {"k": 0}, {"k": 101}, {"k": "ten"}, {"offset": -1}, {"page": 0}],
)
def test_trending_bad_params_are_422(client: httpx.Client, params: dict) -> None:
    body = assert_problem(client.get("/api/v1/trending", params=params), 422)
    assert body["errors"] and body["errors"][0]["loc"][0] == "query"


def test_collections(client: httpx.Client) -> None:
    listing = client.get("/api/v1/collections").json()
    assert listing["total"] == 5 and len(listing["results"]) == 5
    first = listing["results"][0]
    page = client.get(f"/api/v1/collections/{first['name']}", params={"k": 7, "offset": 3})
    body = page.json()
    assert body["size"] == first["size"] and len(body["results"]) == 7
    assert [p["rank"] for p in body["results"]] == list(range(4, 11))
    assert client.get("/api/v1/collections", params={"k": 2, "page": 3}).json()["results"] == [
        {k: v for k, v in r.items()} for r in listing["results"][4:5]
    ]
    assert_problem(client.get("/api/v1/collections/nope"), 404)
    assert_problem(client.get("/api/v1/collections/a%00b"), 404)


# --- search ---------------------------------------------------------------------------


def test_search_results_shape(client: httpx.Client) -> None:
    r = client.get("/api/v1/search", params={"q": "ternary binary transformer", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "ternary binary transformer" and body["mode"] == "hybrid"
    assert 0 < len(body["results"]) <= 5 and body["total"] >= len(body["results"])
    top = body["results"][0]
    for key in ("id", "title", "authors", "abstract", "score", "code_url", "url", "votes"):
        assert key in top
    assert "Ternary" in top["title"] or "Binary" in top["title"]
    assert r.headers["etag"] and "max-age" in r.headers["cache-control"]


def test_search_pagination_is_consistent(client: httpx.Client) -> None:
    q = {"q": "language models", "k": 10}
    first = client.get("/api/v1/search", params=q).json()
    second = client.get("/api/v1/search", params={**q, "k": 5, "offset": 5}).json()
    paged = client.get("/api/v1/search", params={**q, "k": 5, "page": 2}).json()
    ids = [p["id"] for p in first["results"][5:]]
    assert [p["id"] for p in second["results"]] == ids == [p["id"] for p in paged["results"]]
    assert first["next"] and "offset=10" in first["next"]


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
def test_search_modes(client: httpx.Client, mode: str) -> None:
    body = client.get("/api/v1/search", params={"q": "flash attention", "mode": mode}).json()
    assert body["mode"] == mode and body["results"]


def test_search_filters(client: httpx.Client) -> None:
    coded = client.get("/api/v1/search", params={"q": "model", "has_code": "true", "k": 20})
    assert coded.status_code == 200
    assert coded.json()["results"] and all(p["code_url"] for p in coded.json()["results"])
    name = client.get("/api/v1/collections").json()["results"][0]["name"]
    inside = client.get("/api/v1/search", params={"q": "model", "collection": name}).json()
    for p in inside["results"]:
        names = [c["name"] for c in client.get(f"/api/v1/papers/{p['id']}").json()["collections"]]
        assert name in names
    none = client.get("/api/v1/search", params={"q": "model", "date_from": "2999-01-01"})
    assert none.status_code == 200 and none.json()["results"] == []


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_queries_never_fail(client: httpx.Client, query: str) -> None:
    r = client.get("/api/v1/search", params={"q": query})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert isinstance(body["results"], list)
    if not query.strip():
        assert body["results"] == [] and body["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"q": "x", "mode": "magic"},
        {"q": "x", "k": 0},
        {"q": "x", "k": 1000},
        {"q": "x", "offset": -5},
        {"q": "x", "date_from": "yesterday"},
        {"q": "x", "has_code": "perhaps"},
        {"q": "x", "sort": "random"},
        {"q": "x", "collection": "bad\x01name"},
        {"q": "x" * 10_001},
    ],
)
def test_search_bad_params_are_422(client: httpx.Client, params: dict) -> None:
    assert_problem(client.get("/api/v1/search", params=params), 422)


def test_similar(client: httpx.Client) -> None:
    pid = a_seed_paper(client)
    body = client.get(f"/api/v1/papers/{pid}/similar", params={"k": 5}).json()
    assert body["id"] == pid and 0 < len(body["results"]) <= 5
    assert pid not in [p["id"] for p in body["results"]]
    assert_problem(client.get(f"/api/v1/papers/{pid}/similar", params={"k": 0}), 422)


# --- errors, headers, feeds, docs -------------------------------------------------------


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert_problem(client.get("/api/v1/nothing-here"), 404)
    assert_problem(client.put("/api/v1/trending"), 405)


def test_security_headers_everywhere(client: httpx.Client) -> None:
    for path in ["/api/v1/trending", "/api/v1/nothing", "/", "/papers/x", "/static/app.css"]:
        h = client.get(path).headers
        assert "default-src 'self'" in h["content-security-policy"]
        assert "'unsafe-inline'" not in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"


def test_atom_feeds_parse(client: httpx.Client) -> None:
    import xml.etree.ElementTree as ET

    ns = {"a": "http://www.w3.org/2005/Atom"}
    r = client.get("/feeds/trending.atom", params={"window": "week"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    assert len(ET.fromstring(r.content).findall("a:entry", ns)) == 30
    for q in ["attention", "bad\x01\x02control <&> chars", "", "🚀"]:
        r = client.get("/feeds/search.atom", params={"q": q})
        assert r.status_code == 200, r.text[:300]
        feed = ET.fromstring(r.content)  # parses: control characters were dropped
        if q == "attention":
            assert feed.findall("a:entry", ns)
    assert client.get("/feeds/trending.atom", params={"window": "x"}).status_code == 400
    assert client.get("/feeds/search.atom", params={"q": "x", "mode": "x"}).status_code == 400


def test_hostile_paper_is_escaped_in_json_and_feed(client: httpx.Client) -> None:
    body = client.get("/api/v1/papers/phostile00001").json()
    assert body["title"].startswith("<script>")  # JSON carries the text as it is
    assert client.get("/api/v1/papers/phostile00001").headers["content-type"] == (
        "application/json"
    )


def test_openapi_and_docs(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in [
        "/api/v1/search",
        "/api/v1/papers/{paper_id}",
        "/api/v1/trending",
        "/api/v1/collections",
        "/api/v1/collections/{name}",
        "/api/v1/papers/{paper_id}/upvote",
        "/api/v1/papers/{paper_id}/similar",
    ]:
        assert path in spec["paths"], path
    assert "Problem" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert (
        docs.status_code == 200
        and "img-src 'self' data:" in docs.headers["content-security-policy"]
    )
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text and "<script>" not in docs.text
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_json_is_valid_utf8_without_ascii_escapes(client: httpx.Client) -> None:
    r = client.get("/api/v1/trending", params={"k": 3})
    assert json.loads(r.content.decode("utf-8"))["results"]


def test_a_broad_query_says_its_total_is_a_lower_bound(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyword query broader than the count cap is not counted in full: the API says its
    total is a lower bound and the page shows 'N+'; a narrow one is counted exactly."""
    from papersift.search import lexical

    monkeypatch.setattr(lexical, "COUNT_CAP", 5)
    query = {"q": "learning networks data", "mode": "lexical", "k": 5}
    broad = client.get("/api/v1/search", params=query).json()
    assert broad["total_is_lower_bound"] is True
    assert broad["total"] > 5 and len(broad["results"]) == 5 and broad["next"]
    page = client.get("/search", params={"q": query["q"], "mode": "lexical"}).text
    assert f"{broad['total']:,}+ results" in page
    monkeypatch.setattr(lexical, "COUNT_CAP", 10_000)
    exact = client.get("/api/v1/search", params={**query, "q": "learning networks data model"})
    assert exact.json()["total_is_lower_bound"] is False
