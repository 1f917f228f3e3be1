"""The web side of search: parameter parsing shared by the page, the API and the feed, and
one :class:`WebSearch` per app that runs searches through its result cache and gate."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from papersift.search import (
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_SORT,
    MAX_CATEGORY,
    MAX_COLLECTION_NAME,
    MAX_QUERY_LENGTH,
    MODES,
    SORTS,
    SearchError,
    SearchFilters,
    SearchHit,
    SearchRequest,
    SearchResults,
    SearchService,
    get_service,
)
from papersift.search.generations import IndexUnavailable
from papersift.settings import Settings
from papersift.store.db import Database

log = logging.getLogger("papersift.web")

MAX_PAGE = 500
T = TypeVar("T")


class SearchUnavailable(RuntimeError):
    """The search service cannot run (index not built, model missing); answered 503."""


class SearchBusy(SearchUnavailable):
    """Too many searches are running in this worker; the client should retry shortly."""


class BadParams(ValueError):
    """A search parameter has an invalid value; the message is for the user (400)."""


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


@dataclass
class SearchParams:
    """One search as the page, the API and the feed ask for it."""

    q: str = ""
    mode: str = DEFAULT_MODE
    sort: str = DEFAULT_SORT
    date_from: date | None = None
    date_to: date | None = None
    has_code: bool | None = None
    collection: str | None = None
    category: str | None = None
    page: int = 1
    k: int = DEFAULT_K
    errors: list[str] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.k

    @property
    def filters(self) -> SearchFilters:
        return SearchFilters(
            date_from=self.date_from,
            date_to=self.date_to,
            has_code=self.has_code,
            collection=self.collection,
            category=self.category,
        )

    def request(self, offset: int | None = None) -> SearchRequest:
        """The search to run: at ``offset``, else at the first result of the page."""
        start = self.offset if offset is None else offset
        return SearchRequest(self.q, self.k, start, self.mode, self.sort, self.filters)

    def as_query(self) -> dict[str, Any]:
        """The non-default parameters, for links that keep the current search."""
        out: dict[str, Any] = {"q": self.q}
        if self.mode != DEFAULT_MODE:
            out["mode"] = self.mode
        if self.sort != DEFAULT_SORT:
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


def _text(raw: str | None, name: str, errors: list[str], limit: int) -> str | None:
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
    params.q = q[:MAX_QUERY_LENGTH]
    if len(q) > MAX_QUERY_LENGTH:
        errors.append(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    mode = (query.get("mode") or DEFAULT_MODE).strip().lower()
    if mode not in MODES:
        errors.append(f"mode must be one of {', '.join(MODES)}")
    else:
        params.mode = mode
    sort = (query.get("sort") or DEFAULT_SORT).strip().lower()
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
    params.collection = _text(query.get("collection"), "collection", errors, MAX_COLLECTION_NAME)
    params.category = _text(query.get("category"), "category", errors, MAX_CATEGORY)
    page = parse_page(query.get("page") or "1", MAX_PAGE)
    if page is None:
        errors.append(f"page must be a number from 1 to {MAX_PAGE}")
    else:
        params.page = page
    return params


def parse_page(raw: str, last: int) -> int | None:
    """``raw`` as a page number from 1 to ``last``, or None. Only ASCII digits count:
    ``str.isdigit`` also accepts "²" and other digit symbols that ``int`` refuses, and a
    5,000-digit number is over Python's int-parsing limit; both used to be 500s."""
    text = raw.strip()
    if not text.isascii() or not text.isdecimal() or len(text) > len(str(last)):
        return None
    value = int(text)
    return value if 1 <= value <= last else None


class ResultCache:
    """Recent search results per exact parameters, for ``ttl`` seconds (thread-safe LRU).

    The API already tells clients results may be 60 s old (Cache-Control: max-age=60), so
    the server keeps them as long: a repeated query (pagination back and forth, the feed
    of a popular search, many people following one link) skips the query embedding and
    both indexes. Keys name the index generation, so papers indexed meanwhile show up at
    the next request.
    """

    def __init__(self, size: int = 2048, ttl: float = 60.0) -> None:
        self.size = size
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key)
            if item is None or now - item[0] > self.ttl:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def through(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for ``key``, else ``compute()`` (then kept)."""
        hit = self.get(key)
        if hit is not None:
            found: T = hit
            return found
        value = compute()
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class WebSearch:
    """Searches for one app: the process-wide search service for its home and database,
    behind the app's result cache and admission gate."""

    def __init__(
        self, settings: Settings, db: Database, *, cache: ResultCache, gate: SearchGate
    ) -> None:
        self.settings = settings
        self.db = db
        self.cache = cache
        self.gate = gate

    def service(self) -> SearchService:
        """The search service (``SearchUnavailable`` when it cannot be opened)."""
        try:
            service = get_service(self.settings, self.db)
        except Exception as exc:
            log.exception("search service unavailable")
            raise SearchUnavailable("search is not available right now") from exc
        service.repair_in_background = True  # a damaged index never holds a request
        return service

    def run(self, params: SearchParams, offset: int | None = None) -> SearchResults:
        """Results for ``params`` at ``offset`` or the params' page (``SearchError``
        becomes ``BadParams``); from the cache when the same search ran lately."""
        asked = params.request(offset)

        def compute() -> SearchResults:
            with self.gate:
                service = self.service()
                try:
                    return service.search(
                        asked.query,
                        k=asked.k,
                        offset=asked.offset,
                        mode=asked.mode,
                        filters=asked.filters,
                        sort=asked.sort,
                    )
                except SearchError as exc:
                    raise BadParams(str(exc)) from exc
                except IndexUnavailable as exc:
                    raise SearchUnavailable(str(exc)) from exc

        return self.cache.through((asked, self._index_stamp()), compute)

    def _index_stamp(self) -> object:
        """Which index generation answers now: part of every cache key, so results never
        outlive an index change (a stat() of CURRENT, which every search makes anyway)."""
        try:
            return get_service(self.settings, self.db).generations.stamp()
        except Exception:
            return None  # the service cannot open: compute() says so

    def similar(self, paper_id: str, k: int) -> list[SearchHit] | None:
        """Nearest papers to ``paper_id`` through the cache; None when it is not indexed."""

        def compute() -> list[SearchHit] | None:
            with self.gate:
                try:
                    return self.service().similar(paper_id, k=k)
                except KeyError:
                    return None
                except SearchUnavailable:
                    raise
                except Exception as exc:  # a paper page never depends on the index
                    log.warning("similar papers unavailable for %s: %s", paper_id, exc)
                    raise SearchUnavailable("similar papers are not available now") from exc

        return self.cache.through(("similar", paper_id, k, self._index_stamp()), compute)
