"""The web side of search: parameter parsing shared by the page, the API and the feed, and
access to ``papersift.search.service`` (imported lazily: the web app still serves paper
pages, trending and collections when the search package or its index is missing)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import Request

log = logging.getLogger("papersift.web")

MODES = ("hybrid", "lexical", "semantic")
SORTS = ("relevance", "date")
MAX_QUERY = 10_000
MAX_PAGE = 500
PAGE_SIZE = 10


class SearchUnavailable(RuntimeError):
    """The search service cannot run (package missing or index not built)."""


class SearchBusy(SearchUnavailable):
    """Too many searches are running in this worker; the client should retry shortly."""


class SearchGate:
    """Admission control for searches in one worker process.

    A hybrid search costs ~7 ms of CPU under load on the sample corpus (query embedding,
    two indexes, re-scoring, the response), so a 2-core machine answers at most ~250 a
    second whatever the web tier does. Letting every request in only makes them share the
    CPU and wait in line for tens of seconds under overload; instead at most
    ``concurrency`` searches run at once and a request that cannot start within
    ``max_wait`` seconds is turned away at once (503 + Retry-After). Cached results never
    pass the gate.
    """

    def __init__(self, concurrency: int = 2, max_wait: float = 0.5) -> None:
        self._slots = threading.BoundedSemaphore(concurrency)
        self.max_wait = max_wait
        self.rejected = 0

    def __enter__(self) -> SearchGate:
        if not self._slots.acquire(timeout=self.max_wait):
            self.rejected += 1
            raise SearchBusy("search is busy right now")
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


class BadParams(ValueError):
    """A search parameter has an invalid value; the message is for the user."""


@dataclass
class SearchParams:
    q: str = ""
    mode: str = "hybrid"
    sort: str = "relevance"
    date_from: date | None = None
    date_to: date | None = None
    has_code: bool | None = None
    collection: str | None = None
    category: str | None = None
    page: int = 1
    k: int = PAGE_SIZE
    errors: list[str] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.k

    def as_query(self) -> dict[str, Any]:
        """The non-default parameters, for links that keep the current search."""
        out: dict[str, Any] = {"q": self.q}
        if self.mode != "hybrid":
            out["mode"] = self.mode
        if self.sort != "relevance":
            out["sort"] = self.sort
        if self.date_from:
            out["date_from"] = self.date_from.isoformat()
        if self.date_to:
            out["date_to"] = self.date_to.isoformat()
        if self.has_code:
            out["has_code"] = "1"
        if self.collection:
            out["collection"] = self.collection
        if self.category:
            out["category"] = self.category
        return out


def _date(raw: str | None, name: str, errors: list[str]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        errors.append(f"{name} must be a date like 2024-01-31")
        return None


def _text(raw: str | None, name: str, errors: list[str], limit: int = 255) -> str | None:
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if len(value) > limit or any(ord(c) < 32 for c in value):
        errors.append(f"{name} is not a valid name")
        return None
    return value


def parse_params(query: dict[str, str]) -> SearchParams:
    """Search parameters from a query string; problems go to ``errors`` (never raises)."""
    errors: list[str] = []
    params = SearchParams(errors=errors)
    q = query.get("q") or ""
    params.q = q[:MAX_QUERY]
    if len(q) > MAX_QUERY:
        errors.append(f"the query is longer than {MAX_QUERY} characters")
    mode = (query.get("mode") or "hybrid").strip().lower()
    if mode not in MODES:
        errors.append(f"mode must be one of {', '.join(MODES)}")
    else:
        params.mode = mode
    sort = (query.get("sort") or "relevance").strip().lower()
    if sort not in SORTS:
        errors.append(f"sort must be one of {', '.join(SORTS)}")
    else:
        params.sort = sort
    params.date_from = _date(query.get("date_from"), "from", errors)
    params.date_to = _date(query.get("date_to"), "to", errors)
    if params.date_from and params.date_to and params.date_from > params.date_to:
        errors.append("the 'from' date is after the 'to' date")
    code = (query.get("has_code") or "").strip().lower()
    if code in ("1", "true", "on", "yes"):
        params.has_code = True
    elif code not in ("", "0", "false", "off", "no", "any"):
        errors.append("has_code must be 1 or 0")
    params.collection = _text(query.get("collection"), "collection", errors)
    params.category = _text(query.get("category"), "category", errors, limit=64)
    raw_page = (query.get("page") or "1").strip()
    if raw_page.isdigit() and 1 <= int(raw_page) <= MAX_PAGE:
        params.page = int(raw_page)
    else:
        errors.append(f"page must be a number from 1 to {MAX_PAGE}")
    return params


def service(request: Request):  # -> papersift.search.service.SearchService
    """The process-wide search service for this app's home and database."""
    try:
        from papersift.search.service import get_service
    except ImportError as exc:
        raise SearchUnavailable("search is not installed") from exc
    try:
        return get_service(request.app.state.settings, request.app.state.db)
    except Exception as exc:
        log.exception("search service unavailable")
        raise SearchUnavailable("search is not available right now") from exc


class ResultCache:
    """Recent search results per exact parameters, for ``ttl`` seconds (thread-safe LRU).

    The API already tells clients results may be 60 s old (Cache-Control: max-age=60), so
    the server keeps them as long: a repeated query (pagination back and forth, the feed
    of a popular search, many people following one link) skips the query embedding and
    both indexes. Papers ingested meanwhile show up at the latest ``ttl`` seconds later.
    """

    def __init__(self, size: int = 2048, ttl: float = 60.0) -> None:
        self.size = size
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> Any | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key)
            if item is None or now - item[0] > self.ttl:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _gate(request: Request) -> SearchGate | contextlib.nullcontext:
    return getattr(request.app.state, "search_gate", None) or contextlib.nullcontext()


def run_search(request: Request, params: SearchParams, offset: int | None = None):
    """SearchResults for params, at ``offset`` or the params' page (``SearchError`` becomes
    ``BadParams``); served from the app's ``ResultCache`` when the same search ran lately."""
    start = params.offset if offset is None else offset
    key = (
        params.q,
        params.k,
        start,
        params.mode,
        params.sort,
        params.date_from,
        params.date_to,
        params.has_code,
        params.collection,
        params.category,
    )
    cache: ResultCache | None = getattr(request.app.state, "search_cache", None)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    with _gate(request):
        results = _search(request, params, start)
    if cache is not None:
        cache.put(key, results)
    return results


def _search(request: Request, params: SearchParams, start: int):
    svc = service(request)
    from papersift.search.service import SearchError, SearchFilters

    filters = SearchFilters(
        date_from=params.date_from,
        date_to=params.date_to,
        has_code=params.has_code,
        collection=params.collection,
        category=params.category,
    )
    try:
        return svc.search(
            params.q,
            k=params.k,
            offset=start,
            mode=params.mode,
            filters=filters,
            sort=params.sort,
        )
    except SearchError as exc:
        raise BadParams(str(exc)) from exc


def similar_papers(request: Request, paper_id: str, k: int) -> list:
    """``SearchService.similar`` through the result cache (KeyError when not indexed)."""
    key = ("similar", paper_id, k)
    cache: ResultCache | None = getattr(request.app.state, "search_cache", None)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    with _gate(request):
        hits = service(request).similar(paper_id, k=k)
    if cache is not None:
        cache.put(key, hits)
    return hits
