"""The search vocabulary: what a caller asks for and what it gets back.

One definition of each mode, sort order, limit and result type, so the CLI, the web app and
the digest speak the same language as the service (a front end derives its parameter checks
from these constants instead of repeating them). Plain values only: importing this module
loads no index, model or database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol, get_args

Mode = Literal["hybrid", "lexical", "semantic"]
Sort = Literal["relevance", "date"]  # date: newest first

MODES: tuple[Mode, ...] = get_args(Mode)
SORTS: tuple[Sort, ...] = get_args(Sort)
DEFAULT_MODE: Mode = "hybrid"
DEFAULT_SORT: Sort = "relevance"
DEFAULT_K = 10

MAX_K = 1000  # results per request
MAX_OFFSET = 10_000  # deepest result a request may start at
# Longest query text a front end accepts; the service reads the first MAX_QUERY_CHARS of it
# (papersift.search.query) and ignores the rest.
MAX_QUERY_LENGTH = 10_000
MAX_COLLECTION_NAME = 255  # the longest collection name the database holds
MAX_CATEGORY = 64  # arXiv categories are short (cs.CL, physics.chem-ph)


class SearchError(ValueError):
    """A request that cannot be served as asked (message is for the user)."""


@dataclass(frozen=True)
class SearchFilters:
    """Conditions every hit must meet (combined with AND; None means any).

    Frozen, so it is hashable and can be part of a result cache key.
    """

    date_from: date | None = None
    date_to: date | None = None
    has_code: bool | None = None
    collection: str | None = None
    category: str | None = None
    paper_ids: tuple[str, ...] | None = None  # only these papers (e.g. a digest's new ones)

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return self.paper_ids is not None or any(
            v is not None and v != ""
            for v in (self.date_from, self.date_to, self.has_code, self.collection, self.category)
        )

    def validate(self) -> None:
        """Raise SearchError for filters that contradict each other."""
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise SearchError("the start date is after the end date")


NO_FILTERS = SearchFilters()


@dataclass(frozen=True)
class SearchRequest:
    """One search as asked: hashable, so a front end can key a result cache by it."""

    query: str
    k: int = DEFAULT_K
    offset: int = 0
    mode: str = DEFAULT_MODE
    sort: str = DEFAULT_SORT
    filters: SearchFilters = NO_FILTERS

    def validate(self) -> None:
        """Raise SearchError for a mode, sort, size or offset the service does not serve.

        (The filters are checked separately, after the query: an empty query is answered
        with a message whatever its filters.)
        """
        if self.mode not in MODES:
            raise SearchError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.sort not in SORTS:
            raise SearchError(f"unknown sort {self.sort!r}; use relevance or date")
        if not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}")
        if not isinstance(self.offset, int) or not 0 <= self.offset <= MAX_OFFSET:
            raise SearchError(f"offset must be between 0 and {MAX_OFFSET:,}")


@dataclass(frozen=True)
class SearchHit:
    """One ranked paper; higher scores rank higher (scales differ between modes)."""

    paper_id: str
    score: float


@dataclass
class SearchResults:
    """A page of hits, how many papers matched in all, and a note for the user if any."""

    hits: list[SearchHit]
    total: int  # how many matches there are to page through (only matches: see floor.py)
    query: str
    mode: str
    message: str | None = None
    # The paper a pasted arXiv id, DOI or paper link names (a front end may go straight there).
    direct: str | None = None
    # "Did you mean" text from the corpus vocabulary (None when every word is known);
    # ``corrected``: the hits are the suggestion's (the query as typed found too little).
    suggestion: str | None = None
    corrected: bool = False
    # ``total`` is a lower bound: a broad keyword query is not counted in full (at least
    # this many match; each of them can be paged through). See lexical.COUNT_CAP.
    more: bool = False


@dataclass
class IndexReport:
    """What an index run did."""

    indexed: int = 0
    embedded: int = 0
    removed: int = 0
    pending_vectors: int = 0  # papers left without a vector (too many to embed now)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, int | float]:
        """JSON-ready mapping (seconds rounded to hundredths)."""
        return {
            "indexed": self.indexed,
            "embedded": self.embedded,
            "removed": self.removed,
            "pending_vectors": self.pending_vectors,
            "seconds": round(self.seconds, 2),
        }


class Progress(Protocol):
    """Told how many papers are embedded so far out of how many (the CLI draws a bar)."""

    def __call__(self, done: int, total: int) -> None: ...
