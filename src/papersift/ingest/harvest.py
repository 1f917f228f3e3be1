"""Harvest papers over HTTP: OAI-PMH ListRecords and the arXiv API (Atom).

Politeness and robustness come first: one request at a time with a fixed pause between
requests (arXiv asks for 3 s), retries with exponential backoff on 5xx, 429, timeouts and
connection errors, and ``Retry-After`` honoured. Each page is merged and committed in its
own transaction together with the harvest's position (``harvest_state``), so a harvest
killed at any point resumes at the next page without duplicates or gaps.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

import httpx

from papersift import __version__
from papersift.ingest.arxiv_xml import FeedPage, parse_atom, parse_oai
from papersift.ingest.errors import IngestError
from papersift.ingest.pipeline import merge_records
from papersift.store import harvest_state
from papersift.store.db import Database, StoreError

ARXIV_API = "https://export.arxiv.org/api/query"
PREFIXES = ("arXiv", "arXivRaw", "oai_dc")
USER_AGENT = f"papersift/{__version__} (self-hosted paper discovery; polite harvester)"


class HarvestError(Exception):
    """A harvest stopped: the page that failed and why. Pages before it are kept."""


@dataclass
class HarvestConfig:
    """Politeness and retry knobs; tests shrink the waits to near zero."""

    delay: float = 3.0  # seconds between two requests
    retries: int = 5  # extra attempts per page after the first
    backoff: float = 2.0  # first retry waits this long, then doubles
    max_wait: float = 300.0  # cap for backoff and Retry-After
    timeout: float = 60.0
    page_size: int = 100  # arXiv API max_results per request
    sleep: Callable[[float], None] = time.sleep


@dataclass
class HarvestResult:
    """What a harvest run did; ``resumed`` says it continued an interrupted run."""

    key: str
    pages: int = 0
    records: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    retries: int = 0
    total: int | None = None
    resumed: bool = False
    done: bool = False
    already_done: bool = False
    limit_reached: bool = False  # arXiv API: stopped at max_results, more results exist
    changed_ids: list[str] = field(default_factory=list, repr=False)


@dataclass
class PageEvent:
    """Passed to the progress callback after each committed page."""

    page: int
    records: int
    total: int | None
    harvested: int


ProgressFn = Callable[[PageEvent], None]
LogFn = Callable[[str], None]


class _Fetcher:
    """GET with a minimum gap between requests and retries on transient failures."""

    def __init__(self, client: httpx.Client, config: HarvestConfig, log: LogFn | None) -> None:
        self.client = client
        self.config = config
        self.log = log or (lambda _msg: None)
        self.last_request: float | None = None
        self.retries = 0

    def _pause(self) -> None:
        if self.last_request is not None:
            wait = self.config.delay - (time.monotonic() - self.last_request)
            if wait > 0:
                self.config.sleep(wait)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())

    def get(self, url: str, params: dict[str, str | int]) -> bytes:
        """The body of a 200 response; HarvestError once retries are used up."""
        attempt = 0
        while True:
            self._pause()
            self.last_request = time.monotonic()
            problem: str
            wait: float | None = None
            try:
                response = self.client.get(url, params=params)
            except httpx.UnsupportedProtocol as exc:
                raise HarvestError(f"cannot fetch {url}: {exc}") from None
            except httpx.TimeoutException as exc:
                problem = f"timed out ({exc.__class__.__name__})"
            except httpx.TransportError as exc:
                problem = f"connection failed ({exc.__class__.__name__}: {exc})"
            else:
                status = response.status_code
                if status == 200:
                    return response.content
                if status != 429 and status < 500:  # the request itself is wrong: no retry
                    raise HarvestError(f"HTTP {status} from {response.url}")
                problem = f"HTTP {status}"
                if status in (429, 503):
                    wait = self._retry_after(response)
            if attempt >= self.config.retries:
                raise HarvestError(f"{problem} from {url}; gave up after {attempt + 1} attempts")
            backoff = self.config.backoff * (2**attempt)
            wait = wait if wait is not None else backoff
            wait = min(self.config.max_wait, max(wait, self.config.delay))
            attempt += 1
            self.retries += 1
            self.log(f"{problem}; retry {attempt}/{self.config.retries} in {wait:.1f}s")
            self.config.sleep(wait)
            self.last_request = None  # the wait above already spaced the requests


def check_url(url: str) -> None:
    """Refuse a malformed endpoint at once instead of retrying it for minutes."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HarvestError(f"not an http(s) URL: {url!r}")


def oai_key(
    url: str,
    prefix: str,
    set_spec: str | None,
    from_date: date | None,
    until_date: date | None = None,
) -> str:
    """The harvest_state key: one row per distinct request."""
    parts = [f"oai {url}", f"prefix={prefix}"]
    if set_spec:
        parts.append(f"set={set_spec}")
    if from_date:
        parts.append(f"from={from_date.isoformat()}")
    if until_date:
        parts.append(f"until={until_date.isoformat()}")
    return " ".join(parts)[:512]


def arxiv_key(query: str, page_size: int) -> str:
    return f"arxiv-api {query} page={page_size}"[:512]


def _commit_page(
    db: Database,
    page: FeedPage,
    source: str,
    result: HarvestResult,
    key: str,
    *,
    token: str | None,
    offset: int,
    done: bool,
) -> None:
    """Merge one page and move the harvest position, in a single transaction."""
    try:
        with db.session() as session:
            merger, _ids = merge_records(session, page.records, source)
            harvest_state.save_position(
                session,
                key,
                token=token,
                offset=offset,
                records=result.records + len(page.records),
                done=done,
            )
            added, updated, unchanged, changed = merger.counts()
    except StoreError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise HarvestError(f"database error on page {result.pages + 1}: {orig}") from None
    result.pages += 1
    result.records += len(page.records)
    result.added += added
    result.updated += updated
    result.unchanged += unchanged
    result.deleted += page.deleted
    result.changed_ids.extend(changed)
    result.done = done


def _client(config: HarvestConfig) -> httpx.Client:
    return httpx.Client(
        timeout=config.timeout,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=True,
    )


def _start(
    db: Database, key: str, restart: bool
) -> tuple[HarvestResult, harvest_state.HarvestPosition | None]:
    result = HarvestResult(key=key)
    with db.session() as session:
        position = harvest_state.load_position(session, key)
        if position is not None and restart:
            harvest_state.forget_position(session, key)
            position = None
    if position is not None:
        result.records = position.records
        result.resumed = not position.done
        result.already_done = position.done
    return result, position


def harvest_oai(
    db: Database,
    url: str,
    *,
    prefix: str = "arXiv",
    set_spec: str | None = None,
    from_date: date | None = None,
    until_date: date | None = None,
    config: HarvestConfig | None = None,
    restart: bool = False,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> HarvestResult:
    """ListRecords from an OAI-PMH endpoint, following resumption tokens to the end;
    ``from_date``/``until_date`` bound the records' datestamps (both days included).

    A finished harvest is not repeated unless ``restart``; an unfinished one resumes with
    its stored resumption token.
    """
    if prefix not in PREFIXES:
        raise HarvestError(f"unknown metadata prefix {prefix!r}; use one of {', '.join(PREFIXES)}")
    check_url(url)
    if from_date and until_date and until_date < from_date:
        raise HarvestError(f"until ({until_date}) is before from ({from_date})")
    config = config or HarvestConfig()
    key = oai_key(url, prefix, set_spec, from_date, until_date)
    result, state = _start(db, key, restart)
    if result.already_done:
        return result
    source = f"oai:{urlsplit(url).netloc or url}"
    token = state.resumption_token if state is not None else None
    page_no = state.offset if state is not None else 0
    with _client(config) as client:
        fetcher = _Fetcher(client, config, log)
        while True:
            if token:
                params: dict[str, str | int] = {"verb": "ListRecords", "resumptionToken": token}
            else:
                params = {"verb": "ListRecords", "metadataPrefix": prefix}
                if set_spec:
                    params["set"] = set_spec
                if from_date:
                    params["from"] = from_date.isoformat()
                if until_date:
                    params["until"] = until_date.isoformat()
            body = fetcher.get(url, params)
            result.retries = fetcher.retries
            try:
                page = parse_oai(body)
            except IngestError as exc:
                advice = (
                    "the stored resumption token has expired: rerun with --restart"
                    if "badResumptionToken" in str(exc)
                    else "rerun to resume"
                )
                raise HarvestError(
                    f"page {page_no + 1} ({_describe(params)}) is unusable: {exc}; "
                    f"{result.pages} page(s) before it were kept, {advice}"
                ) from None
            next_token = page.resumption_token
            if next_token is not None and next_token == token:
                raise HarvestError(
                    f"page {page_no + 1}: the server sent back the resumption token it was "
                    f"given ({token!r}); stopping instead of looping"
                )
            result.total = page.total or result.total
            page_no += 1
            _commit_page(
                db,
                page,
                source,
                result,
                key,
                token=next_token,
                offset=page_no,
                done=next_token is None,
            )
            if progress:
                progress(PageEvent(page_no, len(page.records), result.total, result.records))
            if next_token is None:
                return result
            token = next_token


def harvest_arxiv(
    db: Database,
    query: str,
    *,
    max_results: int | None = None,
    url: str = ARXIV_API,
    config: HarvestConfig | None = None,
    restart: bool = False,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> HarvestResult:
    """Page through an arXiv API search with start/max_results, oldest submissions first.

    Sorting by submission date ascending keeps earlier pages stable while new papers
    arrive, so a resumed harvest neither skips nor repeats.
    """
    check_url(url)
    if not query.strip():
        raise HarvestError("the arXiv query is empty")
    config = config or HarvestConfig()
    key = arxiv_key(query, config.page_size)
    result, state = _start(db, key, restart)
    start = state.offset if state is not None else 0
    if result.already_done and (max_results is None or start >= max_results):
        return result
    result.already_done = False
    limit = max_results if max_results is not None else None
    page_no = 0
    with _client(config) as client:
        fetcher = _Fetcher(client, config, log)
        while limit is None or start < limit:
            size = config.page_size if limit is None else min(config.page_size, limit - start)
            params: dict[str, str | int] = {
                "search_query": query,
                "start": start,
                "max_results": size,
                "sortBy": "submittedDate",
                "sortOrder": "ascending",
            }
            page = _fetch_atom(fetcher, url, params, result)
            if page.total is not None:
                result.total = min(page.total, limit) if limit is not None else page.total
            start += len(page.records)
            page_no += 1
            if page.total is not None:
                finished = not page.records or start >= page.total
            else:  # no totalResults: a short page is the last one
                finished = len(page.records) < size
            _commit_page(
                db,
                page,
                "arxiv-api",
                result,
                key,
                token=None,
                offset=start,
                done=finished,
            )
            if progress:
                progress(PageEvent(page_no, len(page.records), result.total, result.records))
            if finished:
                return result
    result.limit_reached = True
    return result


def _fetch_atom(
    fetcher: _Fetcher, url: str, params: dict[str, str | int], result: HarvestResult
) -> FeedPage:
    """One API page. arXiv sometimes answers an empty page mid-way: that is retried too."""
    start = params["start"]
    for attempt in range(fetcher.config.retries + 1):
        body = fetcher.get(url, params)
        try:
            page = parse_atom(body)
        except IngestError as exc:
            raise HarvestError(
                f"page at start={start} is unusable: {exc}; "
                f"{result.pages} page(s) before it were kept, rerun to resume"
            ) from None
        truncated = not page.records and page.total is not None and int(start) < page.total
        if not truncated:
            result.retries = fetcher.retries
            return page
        if attempt < fetcher.config.retries:
            fetcher.retries += 1
            wait = min(fetcher.config.max_wait, fetcher.config.backoff * (2**attempt))
            fetcher.log(f"empty page at start={start} of {page.total}; retry in {wait:.1f}s")
            fetcher.config.sleep(wait)
            fetcher.last_request = None
    raise HarvestError(
        f"arXiv returned empty pages at start={start} although it reports {page.total} "
        "results; rerun later to resume"
    )


def _describe(params: dict[str, str | int]) -> str:
    if "resumptionToken" in params:
        return f"resumptionToken={params['resumptionToken']}"
    return "first request"
