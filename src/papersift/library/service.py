"""A reader's library: saving papers into tags, notes, a tag's page, import and export.

The web app, the API and the CLI call these; they check names and sizes, resolve paper
references and keep each change to one transaction. Account export and deletion include
the library (registered below).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, get_args

from papersift.accounts.export import register_eraser, register_exporter
from papersift.library import export as library_export
from papersift.library.formats import LibraryFormatError, parse
from papersift.library.matching import EntryResult, resolve_entries
from papersift.model import Paper, strip_controls
from papersift.search import MAX_K, SearchFilters, SearchService
from papersift.store import library as store
from papersift.store import papers as paper_store
from papersift.store.db import Database, StoreError, store_error_text
from papersift.store.schema_library import DEFAULT_TAG, MAX_TAG_CHARS

log = logging.getLogger("papersift.library")

LibrarySort = Literal["added", "date", "title"]
LIBRARY_SORTS: tuple[LibrarySort, ...] = get_args(LibrarySort)
MAX_NOTE_CHARS = 20_000
MAX_TAGS = 500  # per reader: a bound on what one account can make the database hold
# Names of pages under /library/ (a tag of that name would hide them).
RESERVED_TAGS = frozenset({"import", "imports", "searches"})

register_exporter("library", store.export_library)
register_eraser("library", store.delete_user_library)


class LibraryError(ValueError):
    """A library request that cannot be done; the message is for the reader."""


class NotFound(LibraryError):
    """The paper, tag or saved search does not exist (or is not this reader's)."""


def clean_tag_name(name: str | None) -> str:
    """A tag name as stored: one line, spaces collapsed, 1 to 100 characters, no '/'
    (it is a path segment of /library/<tag>)."""
    text = " ".join(strip_controls(name or "").split())
    if not text:
        raise LibraryError("the tag name is empty")
    if len(text) > MAX_TAG_CHARS:
        raise LibraryError(f"the tag name is longer than {MAX_TAG_CHARS} characters")
    if "/" in text or "\\" in text:
        raise LibraryError("a tag name cannot contain '/' or '\\'")
    if text.casefold() in RESERVED_TAGS:
        raise LibraryError(f"{text!r} is a page of the library; choose another tag name")
    return text


def _tag_or_default(name: str | None) -> str:
    return clean_tag_name(name) if name is not None and name.strip() else DEFAULT_TAG


def _check_room(session: Any, user_id: int, name: str) -> None:
    if (
        store.tag_by_name(session, user_id, name) is None
        and len(store.tags(session, user_id)) >= MAX_TAGS
    ):
        raise LibraryError(f"you have {MAX_TAGS} tags already; delete some first")


@dataclass(frozen=True)
class TagInfo:
    id: int
    name: str
    count: int
    created_at: datetime


@dataclass
class SavedPaper:
    """A paper in a reader's library: when it was first saved and in which tags."""

    paper: Paper
    added_at: datetime
    tags: list[str] = field(default_factory=list)


# -- tags and saved papers -----------------------------------------------------------------


def tags(db: Database, user_id: int) -> list[TagInfo]:
    """The reader's tags, by name, with how many papers each holds."""
    with db.session() as s:
        counts = store.tag_counts(s, user_id)
        return [
            TagInfo(t.id, t.name, counts.get(t.id, 0), t.created_at) for t in store.tags(s, user_id)
        ]


def tag(db: Database, user_id: int, name: str) -> TagInfo:
    with db.session() as s:
        row = store.tag_by_name(s, user_id, name)
        if row is None:
            raise NotFound(f"you have no tag called {name!r}")
        return TagInfo(
            row.id, row.name, store.tag_counts(s, user_id).get(row.id, 0), row.created_at
        )


def save(
    db: Database, user_id: int, paper_ref: str, tag_name: str | None = None
) -> tuple[str, str, bool]:
    """Save a paper (id, arXiv id or DOI) into a tag (default "Saved"), creating the tag;
    (paper id, tag, whether it was new there)."""
    name = _tag_or_default(tag_name)
    with db.session() as s:
        paper_id = paper_store.resolve_id(s, paper_ref or "")
        if paper_id is None:
            raise NotFound(f"no paper {paper_ref!r}")
        _check_room(s, user_id, name)
        return paper_id, name, store.add(s, user_id, paper_id, name)


def remove(db: Database, user_id: int, paper_id: str, tag_name: str | None = None) -> int:
    """Take a paper out of one tag, or out of the whole library (``tag_name`` None)."""
    with db.session() as s:
        tag_id = None
        if tag_name is not None:
            row = store.tag_by_name(s, user_id, tag_name)
            if row is None:
                raise NotFound(f"you have no tag called {tag_name!r}")
            tag_id = row.id
        return store.remove(s, user_id, paper_id, tag_id)


def create_tag(db: Database, user_id: int, name: str) -> str:
    clean = clean_tag_name(name)
    with db.session() as s:
        _check_room(s, user_id, clean)
        store.ensure_tag(s, user_id, clean)
    return clean


def rename_tag(db: Database, user_id: int, old: str, new: str) -> str:
    clean = clean_tag_name(new)
    with db.session() as s:
        row = store.tag_by_name(s, user_id, old)
        if row is None:
            raise NotFound(f"you have no tag called {old!r}")
        if clean != old and store.tag_by_name(s, user_id, clean) is not None:
            raise LibraryError(f"you have a tag called {clean!r} already")
        store.rename_tag(s, user_id, row.id, clean)
    return clean


def delete_tag(db: Database, user_id: int, name: str) -> None:
    with db.session() as s:
        row = store.tag_by_name(s, user_id, name)
        if row is None:
            raise NotFound(f"you have no tag called {name!r}")
        store.delete_tag(s, user_id, row.id)


def tags_of(db: Database, user_id: int, paper_ids: list[str]) -> dict[str, list[str]]:
    """The reader's tags of each paper (cards show them)."""
    with db.session() as s:
        return store.tags_of(s, user_id, paper_ids)


def _sorted(items: list[SavedPaper], sort: str) -> list[SavedPaper]:
    if sort == "date":
        return sorted(items, key=lambda i: i.paper.published or date.min, reverse=True)
    if sort == "title":
        return sorted(items, key=lambda i: i.paper.title.casefold())
    return items  # added: newest first, as stored


def papers(
    db: Database,
    user_id: int,
    tag_name: str | None = None,
    *,
    sort: str = "added",
    query: str = "",
    search: Callable[[], SearchService] | None = None,
) -> list[SavedPaper]:
    """The papers of one tag (or of the whole library), sorted; with ``query`` only those
    the search service finds among them, best first unless another ``sort`` is asked."""
    if sort not in LIBRARY_SORTS and not (query and sort == "relevance"):
        raise LibraryError(f"sort must be one of {', '.join(LIBRARY_SORTS)}")
    with db.session() as s:
        tag_id = None
        if tag_name is not None:
            row = store.tag_by_name(s, user_id, tag_name)
            if row is None:
                raise NotFound(f"you have no tag called {tag_name!r}")
            tag_id = row.id
        entries = store.entries(s, user_id, tag_id)
        ids = [pid for pid, _ in entries]
        if query.strip() and ids:
            if search is None:
                raise LibraryError("search is not available")
            filters = SearchFilters(paper_ids=tuple(ids))
            hits = search().search(query, k=min(len(ids), MAX_K), filters=filters, spell=False).hits
            ids = [h.paper_id for h in hits]
        elif query.strip():
            ids = []
        found = paper_store.get_papers(s, ids)
        where = store.tags_of(s, user_id, ids)
    added = dict(entries)
    items = [SavedPaper(found[i], added[i], where.get(i, [])) for i in ids if i in found]
    return items if query.strip() and sort == "relevance" else _sorted(items, sort)


# -- notes ---------------------------------------------------------------------------------


def note(db: Database, user_id: int, paper_id: str) -> str:
    with db.session() as s:
        row = store.note(s, user_id, paper_id)
        return row.text if row is not None else ""


def set_note(db: Database, user_id: int, paper_id: str, text: str) -> None:
    """Write (or with empty text delete) the reader's private note on a paper."""
    clean = strip_controls((text or "").replace("\r\n", "\n")).strip()
    if len(clean) > MAX_NOTE_CHARS:
        raise LibraryError(f"the note is longer than {MAX_NOTE_CHARS:,} characters")
    with db.session() as s:
        if paper_store.resolve_id(s, paper_id) != paper_id:
            raise NotFound(f"no paper {paper_id!r}")
        store.set_note(s, user_id, paper_id, clean)


# -- import and export ---------------------------------------------------------------------


@dataclass
class ImportOutcome:
    """An import's report: each entry's fate, and whether the new papers were indexed."""

    import_id: int
    format: str
    tag: str
    filename: str
    entries: list[EntryResult]
    index_error: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.import_id,
            "format": self.format,
            "tag": self.tag,
            "filename": self.filename,
            "matched": self.count("matched"),
            "added": self.count("added"),
            "failed": self.count("failed"),
            "entries": [e.to_dict() for e in self.entries],
            "index_error": self.index_error,
        }


def import_file(
    db: Database,
    user_id: int,
    data: bytes,
    *,
    filename: str = "",
    tag_name: str | None = None,
    format: str | None = None,
    index: Callable[[list[str]], Any] | None = None,
) -> ImportOutcome:
    """Import a BibTeX, RIS or CSL-JSON export into a tag (default: the file's name).

    One transaction: the new papers, the saved entries and the report go in together, or
    (a database error) nothing does. A file that cannot be read raises LibraryError before
    anything is written. ``index`` gets the new papers' ids after the commit (a search
    index failure is reported in the outcome, the import stands).
    """
    try:
        parsed = parse(data, filename, format)
    except LibraryFormatError as exc:
        raise LibraryError(str(exc)) from None
    stem = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rsplit(".", 1)[0]
    name = _tag_or_default(tag_name if tag_name and tag_name.strip() else stem or None)
    try:
        with db.session() as s:
            _check_room(s, user_id, name)
            results = resolve_entries(s, parsed.entries)
            tag_row = store.ensure_tag(s, user_id, name)
            ids = [r.paper_id for r in results if r.paper_id]
            store.add_to_tag(s, user_id, tag_row.id, ids)
            report = [r.to_dict() for r in results]
            row = store.record_import(
                s,
                user_id,
                tag_id=tag_row.id,
                filename=filename[:255],
                format=parsed.format,
                report=report,
            )
            import_id = row.id
    except StoreError as exc:
        log.warning("library import failed: %s", store_error_text(exc))
        raise LibraryError("the database refused the import; nothing was imported") from None
    outcome = ImportOutcome(import_id, parsed.format, name, filename[:255], results)
    added = list(dict.fromkeys(r.paper_id for r in results if r.status == "added" and r.paper_id))
    if added and index is not None:
        try:
            index(added)
        except Exception as exc:  # the papers are in; the index catches up at the next start
            log.warning("new library papers not indexed yet: %s", exc)
            outcome.index_error = f"{exc.__class__.__name__}: {exc}"
    return outcome


def import_report(db: Database, user_id: int, import_id: int) -> ImportOutcome:
    with db.session() as s:
        row = store.import_report(s, user_id, import_id)
        if row is None:
            raise NotFound("no such import")
        tag_row = store.tag_by_id(s, user_id, row.tag_id) if row.tag_id is not None else None
        entries = [EntryResult(**e) for e in row.report]
        return ImportOutcome(
            row.id, row.format, tag_row.name if tag_row else "", row.filename, entries
        )


def export_tag(db: Database, user_id: int, tag_name: str | None, format: str) -> str:
    """A tag's papers (the whole library with None), in the order saved, as ``format``."""
    if format not in library_export.EXPORT_FORMATS:
        raise LibraryError(
            f"unknown format {format!r}; use one of {', '.join(library_export.EXPORT_FORMATS)}"
        )
    items = papers(db, user_id, tag_name)
    return library_export.render([i.paper for i in items], format)
