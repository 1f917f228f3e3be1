"""Server-rendered pages over real HTTP: content, escaping, CSRF-protected upvotes,
friendly errors, no inline script or style anywhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

SLASH_ID = "hep-th/9901001"
HOSTILE_ID = "phostile00001"


@pytest.fixture
def browser(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=30) as c:
        yield c


class PageCheck(HTMLParser):
    """Collects what the CSP forbids or what would make a page depend on other hosts."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.style_attrs = 0
        self.event_attrs: list[str] = []
        self.external: list[str] = []
        self.inputs: dict[str, str] = {}
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            if not a.get("src"):
                self.inline_scripts += 1
            elif "://" in (a["src"] or ""):
                self.external.append(a["src"] or "")
        if tag == "link" and "://" in (a.get("href") or ""):
            if a.get("rel") == "stylesheet":
                self.external.append(a["href"] or "")
        if "style" in a:
            self.style_attrs += 1
        self.event_attrs += [k for k in a if k.startswith("on")]
        if tag == "input" and a.get("name"):
            self.inputs[a["name"] or ""] = a.get("value") or ""


def check_page(response: httpx.Response, status: int = 200) -> PageCheck:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "Traceback" not in response.text
    parser = PageCheck()
    parser.feed(response.text)
    assert parser.inline_scripts == 0 and parser.style_attrs == 0
    assert parser.event_attrs == [] and parser.external == []
    return parser


def csrf_of(page: httpx.Response) -> str:
    return check_page(page).inputs["csrf_token"]


# --- pages ----------------------------------------------------------------------------


def test_home(browser: httpx.Client) -> None:
    r = browser.get("/")
    page = check_page(r)
    assert "Trending" in r.text and "Newest" in r.text and "Collections" in r.text
    assert 'action="/subscribe"' in r.text and page.inputs["csrf_token"]
    assert "ps_visitor=" in r.headers["set-cookie"]  # the form's token needs a visitor
    assert r.text.count('class="card"') >= 20
    for window in ("day", "week", "month"):
        check_page(browser.get("/", params={"window": window}))
    check_page(browser.get("/", params={"window": "decade"}), 400)


def test_paper_page_with_slash_id(browser: httpx.Client) -> None:
    r = browser.get(f"/papers/{SLASH_ID}")
    check_page(r)
    assert "Strings on a slash" in r.text
    assert 'href="https://github.com/example/strings"' in r.text
    assert f'action="/papers/{SLASH_ID}/upvote"' in r.text
    assert (
        '<a href="/authors/Ada%20Lovelace">Ada Lovelace</a>, '
        '<a href="/authors/Alan%20Turing">Alan Turing</a>' in r.text
    )
    assert '<span class="math">$x&lt;y$</span>' in r.text
    assert "&amp; " in r.text and "&lt;b&gt;bold&lt;/b&gt;" in r.text
    assert "@misc{lovelace" in r.text.lower() or "eprint = {hep-th/9901001}" in r.text


def test_versioned_id_redirects_to_canonical(browser: httpx.Client) -> None:
    r = browser.get(f"/papers/{SLASH_ID}v2", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == f"/papers/{SLASH_ID}"


def test_hostile_paper_is_inert(browser: httpx.Client) -> None:
    r = browser.get(f"/papers/{HOSTILE_ID}")
    check_page(r)
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(" in r.text
    assert "&lt;/textarea&gt;&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert "{{ 7*7 }}" in r.text and ">49<" not in r.text  # no template injection
    assert "javascript:" not in r.text  # the code link was not an http(s) URL...
    assert 'class="btn code"' not in r.text  # ...so there is no Code button at all
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in r.text


def test_bibtex_download(browser: httpx.Client) -> None:
    r = browser.get(f"/papers/{SLASH_ID}/bibtex")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-bibtex")
    assert r.text.startswith("@misc{lovelace") and "hep-th/9901001" in r.text
    assert browser.get("/papers/nope/bibtex").status_code == 404


@pytest.mark.parametrize("path", ["/papers/nope", "/papers/%00", "/collections/nope", "/zzz"])
def test_not_found_pages(browser: httpx.Client, path: str) -> None:
    r = browser.get(path)
    check_page(r, 404)
    assert "Not Found" in r.text


def test_trending_page(browser: httpx.Client) -> None:
    r = browser.get("/trending", params={"window": "week"})
    check_page(r)
    assert r.text.count('class="card"') == 30 and 'rel="next"' in r.text
    check_page(browser.get("/trending", params={"window": "week", "page": "2"}))
    for bad in ({"window": "<script>"}, {"page": "0"}, {"page": "-1"}, {"page": "9999"}):
        r = browser.get("/trending", params=bad)
        check_page(r, 400)
        assert "<script>" not in r.text


def test_collection_pages(browser: httpx.Client) -> None:
    r = browser.get("/collections")
    check_page(r)
    name = re.search(r'href="/collections/([^"]+)"', r.text).group(1)
    page = browser.get(f"/collections/{name}")
    check_page(page)
    ranks = [int(x) for x in re.findall(r'<span class="rank">(\d+)</span>', page.text)]
    assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) == 50
    second = browser.get(f"/collections/{name}", params={"page": "2"})
    assert re.findall(r'<span class="rank">(\d+)</span>', second.text)[0] == "51"
    check_page(browser.get(f"/collections/{name}", params={"page": "999"}), 400)


# --- upvotes through the HTML form ------------------------------------------------------


def votes_shown(page: httpx.Response) -> int:
    return int(re.search(r'class="vote-count">(\d+)<', page.text).group(1))


def test_form_upvote_with_csrf(browser: httpx.Client) -> None:
    page = browser.get(f"/papers/{SLASH_ID}")
    before = votes_shown(page)
    token = csrf_of(page)
    r = browser.post(
        f"/papers/{SLASH_ID}/upvote", data={"csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/papers/{SLASH_ID}"
    page = browser.get(f"/papers/{SLASH_ID}")
    assert votes_shown(page) == before + 1
    assert 'name="undo"' in page.text and 'aria-pressed="true"' in page.text
    # The page's script posts the same form asking for JSON.
    r = browser.post(
        f"/papers/{SLASH_ID}/upvote",
        data={"csrf_token": token, "undo": "1"},
        headers={"Accept": "application/json"},
    )
    assert r.json() == {"votes": before, "voted": False}


def test_form_upvote_without_valid_csrf_is_refused(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as mallory, httpx.Client(base_url=live_server) as v:
        stolen = csrf_of(mallory.get(f"/papers/{SLASH_ID}"))
        count = votes_shown(v.get(f"/papers/{SLASH_ID}"))
        for data in (
            {},
            {"csrf_token": ""},
            {"csrf_token": "forged"},
            {"csrf_token": stolen},
            {"csrf_token": "x" * 5000},
        ):
            r = v.post(f"/papers/{SLASH_ID}/upvote", data=data)
            check_page(r, 403)
        assert votes_shown(v.get(f"/papers/{SLASH_ID}")) == count
    with httpx.Client(base_url=live_server) as fresh:  # no cookie at all
        check_page(fresh.post(f"/papers/{SLASH_ID}/upvote", data={"csrf_token": stolen}), 403)


def test_form_upvote_on_unknown_paper(browser: httpx.Client) -> None:
    token = csrf_of(browser.get(f"/papers/{SLASH_ID}"))
    check_page(browser.post("/papers/nope/upvote", data={"csrf_token": token}), 404)


def test_form_body_limit(browser: httpx.Client) -> None:
    token = csrf_of(browser.get(f"/papers/{SLASH_ID}"))
    r = browser.post(f"/papers/{SLASH_ID}/upvote", data={"csrf_token": token, "pad": "z" * 70_000})
    assert r.status_code == 413 and "Traceback" not in r.text


def test_page_views_feed_trending(browser: httpx.Client, live_server: str, web_home) -> None:
    """Ten visitors (from ten addresses: one address counts at most a few views a day)
    open a paper, each twice: ten views are stored (a reload is not a view), and they lift
    the paper in trending (the page cache refreshes within seconds)."""
    from papersift.rank.trending import trending
    from papersift.store.db import Database
    from papersift.store.schema import PaperViewRow

    month = browser.get("/api/v1/trending", params={"window": "month", "k": 100}).json()
    quiet = next(p["id"] for p in reversed(month["results"]) if p["score"] == 0)
    for n in range(10):
        transport = httpx.HTTPTransport(local_address=f"127.0.1.{n + 1}")
        with httpx.Client(base_url=live_server, transport=transport) as visitor:
            visitor.get("/")  # get a visitor cookie first, as a browser would
            assert visitor.get(f"/papers/{quiet}").status_code == 200
            visitor.get(f"/papers/{quiet}")
    database = Database(f"sqlite:///{web_home / 'papersift.db'}", migrate=False)
    try:
        with database.session() as s:
            rows = s.query(PaperViewRow).filter_by(paper_id=quiet).all()
            assert sum(r.count for r in rows) == 10
            assert dict(trending(s, "month", limit=100))[quiet] > 0
    finally:
        database.dispose()


# --- search page ------------------------------------------------------------------------


def test_search_page_results_and_highlights(browser: httpx.Client) -> None:
    r = browser.get("/search", params={"q": "ternary binary"})
    page = check_page(r)
    assert page.inputs["q"] == "ternary binary"  # the query stays in the box
    assert "<mark>Ternary</mark>" in r.text or "<mark>ternary</mark>" in r.text
    assert "result" in r.text and r.text.count('class="card"') >= 1
    assert 'href="/feeds/search.atom?q=ternary+binary"' in r.text


def test_search_page_pagination_and_filters(browser: httpx.Client) -> None:
    r = browser.get("/search", params={"q": "model", "has_code": "1", "mode": "lexical"})
    check_page(r)
    assert 'value="lexical" selected' in r.text and 'name="has_code" value="1" checked' in r.text
    nxt = re.search(r'rel="next" href="([^"]+)"', r.text)
    assert nxt and "page=2" in nxt.group(1) and "has_code=1" in nxt.group(1)
    r2 = browser.get("/search" + nxt.group(1).replace("&amp;", "&"))
    check_page(r2)
    assert "Page 2" in r2.text and 'rel="prev"' in r2.text


def test_search_page_empty_query_is_friendly(browser: httpx.Client) -> None:
    for params in ({}, {"q": ""}, {"q": "   "}):
        r = browser.get("/search", params=params)
        check_page(r)
        assert "Type a few words" in r.text


@pytest.mark.parametrize(
    "query",
    [
        "<script>alert(1)</script>",
        '"unbalanced',
        "((((",
        "title:",
        "🚀",
        "$\\frac{1}{2}$",
        "x" * 10_000,
        "a\x00b\x1fc",
        "' OR 1=1 --",
        "mark lt amp",
    ],
)
def test_search_page_hostile_queries(browser: httpx.Client, query: str) -> None:
    r = browser.get("/search", params={"q": query})
    check_page(r)
    assert "<script>alert(1)" not in r.text


@pytest.mark.parametrize(
    "params",
    [
        {"q": "x", "mode": "magic"},
        {"q": "x", "page": "0"},
        {"q": "x", "page": "abc"},
        {"q": "x", "date_from": "2024-99-99"},
        {"q": "x", "has_code": "maybe"},
        {"q": "x", "collection": "a\x01"},
        {"q": "x", "sort": "<b>"},
        {"q": "x" * 10_001},
        {"q": "x", "date_from": "2024-05-01", "date_to": "2024-01-01"},
    ],
)
def test_search_page_bad_params_are_400_with_the_form(browser: httpx.Client, params: dict) -> None:
    r = browser.get("/search", params=params)
    page = check_page(r, 400)
    assert 'class="notice bad"' in r.text and "q" in page.inputs
    assert "<b>" not in r.text.split("<main")[1]
