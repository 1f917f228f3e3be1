"""Property-based fuzzing of the HTML pages and feeds (schemathesis covers /api/v1 only).

Hypothesis draws hostile values for every query parameter and path segment of the
server-rendered routes (control characters, quotes, markup, LaTeX, emoji, very long text,
wrong types) and checks what a user or crawler would see: never a server error, always an
HTML page (or an Atom feed / BibTeX text where that is the route), never a traceback, and
nothing drawn ever echoed back unescaped. The app runs in-process over ASGI on a private
copy of the web test home, so the votes and sign-ups fuzzed here never reach other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .digest_support import private_app

HOSTILE = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            " ",
            '"unbalanced',
            "((((",
            "title:",
            "author:",
            "<script>alert(1)</script>",
            "$\\frac{a}{b}$ & <b>",
            "\x00\x01\x1b[31m",
            "🙂🚀 transformers",
            "a" * 12_000,
            "-",
            "AND OR NOT",
            "../../etc/passwd",
            "%00%0d%0a",
            "2024-13-45",
            "-1",
            "99999999999999999999",
        ]
    ),
)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def client(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_SyncASGI]:
    with private_app(web_home, tmp_path_factory.mktemp("pages-fuzz") / "home") as app:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        with _SyncASGI(transport) as c:
            yield c


class _SyncASGI:
    """A synchronous face over httpx's ASGI transport (Starlette's TestClient needs no
    server either, but it re-raises app exceptions instead of showing the 500 page)."""

    def __init__(self, transport: httpx.ASGITransport) -> None:
        import anyio.from_thread

        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=30
        )

    def __enter__(self) -> _SyncASGI:
        return self

    def __exit__(self, *exc: object) -> None:
        self._portal.call(self._client.aclose)
        self._portal_cm.__exit__(None, None, None)

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def go() -> httpx.Response:
            return await self._client.request(method, url, **kwargs)

        return self._portal.call(go)


def _check(response: httpx.Response, drawn: list[str], kind: str = "text/html") -> None:
    assert response.status_code < 500, response.text[:500]
    assert response.headers["content-type"].startswith(kind) or (
        response.status_code >= 400
        and response.headers["content-type"].startswith(("text/html", "application/problem"))
    ), response.headers["content-type"]
    body = response.text
    assert "Traceback" not in body and 'File "/' not in body
    for value in drawn:
        if "<script>" in value:
            assert "<script>alert(1)" not in body  # markup from the request never comes back raw


@SETTINGS
@given(
    q=HOSTILE,
    mode=HOSTILE | st.sampled_from(["hybrid", "lexical", "semantic"]),
    sort=HOSTILE | st.sampled_from(["relevance", "date"]),
    date_from=HOSTILE | st.dates().map(str),
    has_code=HOSTILE | st.sampled_from(["1", "0", "true"]),
    collection=HOSTILE,
    page=HOSTILE | st.integers(-5, 10**6).map(str),
)
def test_search_page_survives_any_parameters(
    client, q, mode, sort, date_from, has_code, collection, page
) -> None:
    params = {
        "q": q,
        "mode": mode,
        "sort": sort,
        "date_from": date_from,
        "has_code": has_code,
        "collection": collection,
        "page": page,
    }
    _check(client.request("GET", "/search", params=params), [q, collection])


@SETTINGS
@given(q=HOSTILE, window=HOSTILE | st.sampled_from(["day", "week", "month"]))
def test_feeds_and_trending_survive_any_parameters(client, q, window) -> None:
    _check(
        client.request("GET", "/feeds/search.atom", params={"q": q}),
        [q],
        kind="application/atom+xml",
    )
    _check(
        client.request("GET", "/feeds/trending.atom", params={"window": window}),
        [window],
        kind="application/atom+xml",
    )
    _check(client.request("GET", "/trending", params={"window": window}), [window])


@SETTINGS
@given(segment=HOSTILE)
def test_paper_and_collection_paths_survive_any_segment(client, segment) -> None:
    quoted = quote(segment, safe="")
    for path in (f"/papers/{quoted}", f"/collections/{quoted}"):
        _check(client.request("GET", path), [segment])
    _check(client.request("GET", f"/papers/{quoted}/bibtex"), [segment], kind="text/plain")


@SETTINGS
@given(email=HOSTILE, topics=HOSTILE, token=HOSTILE)
def test_subscription_pages_survive_any_form(client, email, topics, token) -> None:
    _check(
        client.request("POST", "/subscribe", data={"email": email, "topics": topics}),
        [email, topics],
    )
    _check(client.request("GET", "/subscriptions/confirm", params={"token": token}), [token])
    _check(client.request("POST", "/subscriptions/confirm", data={"token": token}), [token])
    _check(client.request("GET", "/unsubscribe", params={"token": token}), [token])
