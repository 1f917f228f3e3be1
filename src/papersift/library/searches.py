"""Saved searches: a reader keeps a search (query and filters), sees what is new in it
since the last visit, follows it as an Atom feed and may have it in the digest.

"New" means papers first seen after the search's ``last_seen_at`` that the search finds
(the same search service and filters as the search page, restricted to those papers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from papersift.library.service import LibraryError, NotFound
from papersift.model import strip_controls
from papersift.search import (
    DEFAULT_MODE,
    DEFAULT_SORT,
    MAX_CATEGORY,
    MAX_COLLECTION_NAME,
    MAX_K,
    MAX_QUERY_LENGTH,
    MODES,
    SORTS,
    SearchFilters,
    SearchRequest,
    SearchService,
)
from papersift.store import library as store
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.store.schema_library import MAX_SEARCH_NAME_CHARS, SavedSearchRow

MAX_SAVED_SEARCHES = 200  # per reader
# The search page's parameters besides q that a saved search keeps (as the page spells them).
FILTER_KEYS = ("mode", "sort", "date_from", "date_to", "has_code", "collection", "category")


@dataclass(frozen=True)
class SavedSearch:
    id: int
    name: str
    query: str
    filters: dict[str, str]
    created_at: datetime
    last_seen_at: datetime
    in_digest: bool

    @property
    def params(self) -> dict[str, str]:
        """The search page's query string for it."""
        return {"q": self.query, **self.filters}


def _view(row: SavedSearchRow) -> SavedSearch:
    return SavedSearch(
        row.id,
        row.name,
        row.query,
        dict(row.filters or {}),
        row.created_at,
        row.last_seen_at,
        row.in_digest,
    )


def clean_filters(raw: dict[str, Any]) -> dict[str, str]:
    """The known, valid filter parameters of ``raw`` as strings (defaults left out);
    LibraryError for a value the search page would refuse."""
    out: dict[str, str] = {}
    for key in FILTER_KEYS:
        value = raw.get(key)
        if value is None or str(value).strip() == "":
            continue
        text = str(value).strip()
        if key == "mode" and text not in MODES or key == "sort" and text not in SORTS:
            raise LibraryError(
                f"{key} must be one of {', '.join(MODES if key == 'mode' else SORTS)}"
            )
        if key in ("date_from", "date_to"):
            try:
                text = date.fromisoformat(text).isoformat()
            except ValueError:
                raise LibraryError(f"{key} must be a date like 2024-01-31") from None
        if key == "has_code":
            if text.lower() in ("0", "false", "off", "no", "any"):
                continue
            text = "1"
        limit = MAX_COLLECTION_NAME if key == "collection" else MAX_CATEGORY
        if key in ("collection", "category") and (
            len(text) > limit or strip_controls(text) != text
        ):
            raise LibraryError(f"{key} is not a valid name")
        if (key, text) in (("mode", DEFAULT_MODE), ("sort", DEFAULT_SORT)):
            continue
        out[key] = text
    return out


def request_of(search: SavedSearch, k: int = MAX_K) -> SearchRequest:
    """The search to run for a saved search (for its page, feed and the digest)."""
    f = search.filters
    filters = SearchFilters(
        date_from=date.fromisoformat(f["date_from"]) if f.get("date_from") else None,
        date_to=date.fromisoformat(f["date_to"]) if f.get("date_to") else None,
        has_code=True if f.get("has_code") else None,
        collection=f.get("collection"),
        category=f.get("category"),
    )
    return SearchRequest(
        search.query, k, 0, f.get("mode", DEFAULT_MODE), f.get("sort", DEFAULT_SORT), filters
    )


def save_search(
    db: Database,
    user_id: int,
    query: str,
    filters: dict[str, Any],
    *,
    name: str | None = None,
    in_digest: bool = False,
) -> SavedSearch:
    text = " ".join(strip_controls(query or "").split())
    if not text:
        raise LibraryError("an empty search cannot be saved")
    if len(text) > MAX_QUERY_LENGTH:
        raise LibraryError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    label = " ".join(strip_controls(name or "").split()) or text
    label = label[:MAX_SEARCH_NAME_CHARS]
    clean = clean_filters(filters)
    with db.session() as s:
        existing = store.saved_searches(s, user_id)
        for row in existing:
            if row.query == text and dict(row.filters or {}) == clean:
                return _view(row)  # saving the same search twice keeps one
        if len(existing) >= MAX_SAVED_SEARCHES:
            raise LibraryError(f"you have {MAX_SAVED_SEARCHES} saved searches already")
        row = store.add_saved_search(s, user_id, label, text, clean, in_digest=in_digest)
        return _view(row)


def saved_searches(db: Database, user_id: int) -> list[SavedSearch]:
    with db.session() as s:
        return [_view(r) for r in store.saved_searches(s, user_id)]


def saved_search(db: Database, user_id: int, search_id: int) -> SavedSearch:
    with db.session() as s:
        row = store.saved_search(s, user_id, search_id)
        if row is None:
            raise NotFound("no such saved search")
        return _view(row)


def update_search(
    db: Database,
    user_id: int,
    search_id: int,
    *,
    name: str | None = None,
    in_digest: bool | None = None,
) -> None:
    label = None
    if name is not None:
        label = " ".join(strip_controls(name).split())[:MAX_SEARCH_NAME_CHARS]
        if not label:
            raise LibraryError("the name is empty")
    with db.session() as s:
        if not store.update_saved_search(s, user_id, search_id, name=label, in_digest=in_digest):
            raise NotFound("no such saved search")


def delete_search(db: Database, user_id: int, search_id: int) -> None:
    with db.session() as s:
        if not store.delete_saved_search(s, user_id, search_id):
            raise NotFound("no such saved search")


def mark_seen(db: Database, user_id: int, search_id: int, at: datetime | None = None) -> None:
    """The reader looked at the search's results: what is new counts from now."""
    with db.session() as s:
        if store.saved_search(s, user_id, search_id) is None:
            raise NotFound("no such saved search")
        store.touch_saved_search(s, search_id, at or datetime.now(UTC))


def matches(
    service: SearchService,
    db: Database,
    search: SavedSearch,
    *,
    since: datetime | None = None,
    k: int = MAX_K,
) -> list[str]:
    """Ids of the papers the saved search finds, best first (in its sort); with ``since``
    only papers first seen after it (its "new" ones)."""
    asked = request_of(search, k)
    filters = asked.filters
    if since is not None:
        with db.session() as s:
            ids = [pid for pid in paper_store.ids_first_seen_since(s, since)]
        if not ids:
            return []
        filters = SearchFilters(
            date_from=filters.date_from,
            date_to=filters.date_to,
            has_code=filters.has_code,
            collection=filters.collection,
            category=filters.category,
            paper_ids=tuple(ids),
        )
    res = service.search(
        asked.query, k=k, mode=asked.mode, sort=asked.sort, filters=filters, spell=False
    )
    return [h.paper_id for h in res.hits]


def new_matches(
    service: SearchService, db: Database, search: SavedSearch, k: int = MAX_K
) -> list[str]:
    """The papers new in a saved search since the reader last looked."""
    return matches(service, db, search, since=search.last_seen_at, k=k)
