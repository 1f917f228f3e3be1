"""Load shedding for search routes, decided in the event loop before any thread is used.

A hybrid search costs ~7 ms of CPU under load on the sample corpus (more on a big one), so past the
machine's capacity requests can only queue. They
queued in the thread pool and behind the GIL before (tens of seconds at 200 requests/s on
2 cores); now each worker lets at most ``max_in_flight`` search requests in at once and
answers the rest at once with 503 + ``Retry-After: 1`` (problem+json under /api, an HTML
page elsewhere). Accepted requests then wait behind a handful of others at most.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from papersift.web.observability import SHED
from papersift.web.problems import problem_bytes

SEARCH_PATHS = re.compile(
    r"^/(?:api/v1/search|search|feeds/search\.atom|api/v1/papers/.+/similar)$"
)


class SearchShedder:
    """Pure ASGI middleware inside ``SecurityMiddleware`` (which adds the security headers
    to its answers too); ``shed`` counts requests turned away."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int = 8) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not SEARCH_PATHS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            SHED.inc()
            await self._busy(scope, send)
            return
        self.in_flight += 1  # single-threaded event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _busy(self, scope: Scope, send: Send) -> None:
        detail = "search is busy right now; try again in a second"
        if scope["path"].startswith("/api/"):
            body = problem_bytes(503, detail, instance=scope["path"])
            ctype = b"application/problem+json"
        else:
            body = (
                "<!doctype html><html lang=en><meta charset=utf-8>"
                '<meta name=viewport content="width=device-width, initial-scale=1">'
                "<title>Busy · papersift</title><link rel=stylesheet href=/static/app.css>"
                "<main class=wrap><section class='panel error'><h1>Busy</h1>"
                f"<p>{detail.capitalize()}.</p><p><a href=/>Home</a></p></section></main>"
            ).encode()
            ctype = b"text/html; charset=utf-8"
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
