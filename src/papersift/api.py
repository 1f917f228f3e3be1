"""The Python API: open a library, ingest, search, find similar papers, export.

A small surface for scripts and notebooks, the same calls the ``papersift`` command line
makes::

    import papersift

    with papersift.Library(home="~/papers") as lib:
        report = lib.ingest(["feeds/", "snapshot.jsonl.gz"])
        print(report.added, "new papers")
        for hit in lib.search("sparse attention", k=5, has_code=True).hits:
            print(hit.score, lib.paper(hit.paper_id).title)
        with open("refs.bib", "w") as out:
            out.writelines(lib.export("bibtex", collection="reading-list"))

A :class:`Library` is one database (SQLite in its home folder by default, or any SQLAlchemy
URL) and the search indexes derived from it under ``home/index``. Search results name
papers by id; :meth:`Library.paper` and :meth:`Library.papers` read them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any

from papersift.export import BibtexExport, to_jsonl
from papersift.ingest.pipeline import FileResult, IngestSummary, ProgressFn, ingest_paths
from papersift.ingest.staging import finish_interrupted
from papersift.ingest.titles import MAX_DESCRIPTION_CHARS, TitleError, clean_title
from papersift.model import Paper
from papersift.search import (
    IndexReport,
    Progress,
    SearchError,
    SearchFilters,
    SearchHit,
    SearchResults,
    SearchService,
    get_service,
)
from papersift.settings import Settings, load_settings
from papersift.store import collections as collection_store
from papersift.store import papers as paper_store
from papersift.store.db import Database

EXPORT_FORMATS = ("jsonl", "bibtex")
_FILTERS = tuple(f.name for f in fields(SearchFilters))


class LibraryError(ValueError):
    """A request the library cannot serve as asked; the message says why."""


@dataclass
class IngestReport(IngestSummary):
    """What :meth:`Library.ingest` did: every file's result, and the search index update.

    The papers are committed whatever happens to the index: ``index_error`` says why the
    index lags behind (``Library.index()`` catches up), ``index`` what the update did.
    """

    index: IndexReport | None = None
    index_error: str | None = None

    @property
    def ok(self) -> bool:
        """Every file went in (an index problem does not count: the papers are stored)."""
        return bool(self.files) and not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: per-file results and the totals."""
        return {
            "files": [f.to_dict() for f in self.files],
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": len(self.failed),
        }


@dataclass(frozen=True)
class CollectionInfo:
    """A collection's name, where it came from (e.g. the listing file) and its size."""

    name: str
    origin: str
    size: int
    title: str = ""  # readable, never a hash (see papersift.model.collection_display_title)
    description: str = ""


class Library:
    """One papersift library: a database and the search indexes derived from it.

    Parameters:
        home: the data folder (search indexes, the default SQLite database, the signing
            key); default ``$PAPERSIFT_HOME`` or ``~/.local/share/papersift``.
        db_url: any SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``);
            default ``$PAPERSIFT_DB`` or ``papersift.db`` in the home.
        settings: complete settings instead of ``home``/``db_url`` (what the CLI passes).
        db: an open database to use instead of opening one; the caller keeps ownership
            (``close()`` leaves it open).

    The schema is created or migrated on opening. Raises
    :class:`papersift.store.db.DatabaseError` if the database cannot be opened and
    :class:`papersift.settings.SettingsError` for invalid settings. Use it as a context
    manager, or call :meth:`close`. Searching is thread-safe; writes are not meant to be
    shared between threads.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        db_url: str | None = None,
        *,
        settings: Settings | None = None,
        db: Database | None = None,
    ) -> None:
        if settings is not None and (home is not None or db_url is not None):
            raise LibraryError("give settings, or home and db_url, not both")
        self.settings = settings or load_settings(home, db_url)
        self._owns_db = db is None
        self.db = db or Database(self.settings.db_url)
        self._search: SearchService | None = None

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the database connections (when the library opened them)."""
        if self._owns_db:
            self.db.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library(home={str(self.settings.home)!r})"

    @property
    def search_service(self) -> SearchService:
        """The search service of this home and database (one per process, shared)."""
        if self._search is None:
            self._search = get_service(self.settings, self.db)
        return self._search

    # -- writing -----------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        index: bool = True,
        on_files: Callable[[list[Path]], None] | None = None,
        on_file_start: Callable[[Path], ProgressFn | None] | None = None,
        on_file_done: Callable[[FileResult], None] | None = None,
        on_embed: Progress | None = None,
        collection_title: str | None = None,
    ) -> IngestReport:
        """Ingest files, folders and glob patterns; formats are detected from content.

        Parameters:
            paths: files, folders (searched recursively) or glob patterns.
            index: bring the search indexes up to date for the changed papers afterwards
                (see :meth:`update_index`).
            on_files: called once with the files found, before any is read.
            on_file_start: called as each file begins; may return a callback told how
                many records went in after each batch.
            on_file_done: called with each file's result, errors included.
            on_embed: told ``(done, total)`` while papers are embedded.
            collection_title: the title of the collections listing pages make (a bad
                title raises LibraryError before anything is read).

        Each file is one transaction: a bad file changes nothing, is reported in its
        result, and the other files still go in. Never raises for bad input files.
        """
        try:
            summary = ingest_paths(
                self.db,
                paths,
                on_files=on_files,
                on_file_start=on_file_start,
                on_file_done=on_file_done,
                collection_title=collection_title,
            )
        except TitleError as exc:
            raise LibraryError(str(exc)) from None
        report = IngestReport(files=summary.files)
        if index:
            self._index_changed(report, summary.changed_ids, on_embed)
        return report

    def update_index(
        self, paper_ids: list[str], *, on_embed: Progress | None = None
    ) -> IndexReport | None:
        """Make these (just committed) papers searchable, and any an interrupted run left
        unindexed; None if there were none and there is no index yet.

        They are searchable by keyword at once; they are embedded now unless there are
        very many (a snapshot import: hours of CPU), which :meth:`index` then embeds
        (``pending_vectors`` in the report counts them). Raises
        :class:`papersift.search.SearchError` or
        :class:`papersift.search.EmbedderError` when the indexes cannot be updated; the
        papers themselves are stored either way.
        """
        service = self.search_service
        if not paper_ids and not service.status().get("built"):
            return None
        # also indexes what an interrupted earlier run committed but never indexed
        report = service.papers_changed(list(paper_ids), progress=on_embed)
        if not paper_ids and not (report.indexed or report.removed or report.embedded):
            return None  # nothing was changed and nothing was left to catch up
        return report

    def _index_changed(
        self, report: IngestReport, paper_ids: list[str], on_embed: Progress | None
    ) -> None:
        try:
            report.index = self.update_index(paper_ids, on_embed=on_embed)
        except Exception as exc:  # the papers are in: any index failure is reported, not raised
            report.index_error = f"{exc.__class__.__name__}: {exc}"

    def index(self, *, rebuild: bool = False, on_embed: Progress | None = None) -> IndexReport:
        """Bring the search indexes in step with the database, embedding what is missing.

        Parameters:
            rebuild: build them anew from the database (stored embeddings are reused).
            on_embed: told ``(done, total)`` while papers are embedded.
        """
        finish_interrupted(self.db)  # revert a file an ingest killed mid-way left behind
        service = self.search_service
        if rebuild:
            return service.rebuild(progress=on_embed)
        return service.sync(progress=on_embed)

    # -- reading -----------------------------------------------------------------------------

    def paper(self, ref: str) -> Paper | None:
        """The paper with this id, arXiv id (any version or URL form) or DOI; None if none."""
        with self.db.session() as session:
            return paper_store.get_paper(session, ref)

    def papers(self, ids: Iterable[str]) -> list[Paper]:
        """Papers by id, in the order given; unknown ids are left out."""
        wanted = list(ids)
        with self.db.session() as session:
            found = paper_store.get_papers(session, wanted)
        return [found[i] for i in dict.fromkeys(wanted) if i in found]

    def count(self) -> int:
        """How many papers the library holds."""
        with self.db.session() as session:
            return paper_store.count_papers(session)

    def collections(self) -> list[CollectionInfo]:
        """Every collection with its size, by name."""
        with self.db.session() as session:
            rows = collection_store.collection_summaries(session)
        return [CollectionInfo(c.name, c.origin, c.size, c.title, c.description) for c in rows]

    def rename_collection(self, name: str, title: str, description: str | None = None) -> None:
        """Give a collection a readable title (and description); its name, the key in
        URLs and filters, stays. LibraryError for an unknown collection or a bad title."""
        try:
            title = clean_title(title)
            if description is not None:
                description = clean_title(
                    description, what="description", limit=MAX_DESCRIPTION_CHARS
                )
        except TitleError as exc:
            raise LibraryError(str(exc)) from None
        with self.db.session() as session:
            if not collection_store.set_title(session, name, title, description):
                raise LibraryError(f"no collection named {name!r}")

    def collections_of(self, paper_id: str) -> list[tuple[str, int]]:
        """(collection name, 1-based position) for every collection listing the paper."""
        with self.db.session() as session:
            return collection_store.collections_of_paper(session, paper_id)

    def stats(self) -> dict[str, Any]:
        """Counts: ``papers``, ``with_code``, ``collections`` (name -> size),
        ``collection_titles`` (name -> readable title) and
        ``sources`` (source -> papers, most first)."""
        with self.db.session() as session:
            papers = paper_store.count_papers(session)
            summaries = collection_store.collection_summaries(session)
            sources, with_code = paper_store.source_stats(session)
        return {
            "papers": papers,
            "with_code": with_code,
            "collections": {c.name: c.size for c in summaries},
            "collection_titles": {c.name: c.title for c in summaries},
            "sources": dict(Counter(sources).most_common()),
        }

    # -- searching ---------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        *,
        offset: int = 0,
        sort: str = "relevance",
        **filters: Any,
    ) -> SearchResults:
        """Ranked papers for ``query``.

        Parameters:
            query: words, ``"phrases"``, ``title:`` / ``author:`` fields, ``+required``,
                ``-excluded``, ``AND``/``OR``/``NOT``; a query that does not parse is
                searched as plain words (the results' ``message`` says so).
            k: results per page (1 to 1000).
            mode: ``hybrid`` (default), ``lexical`` (BM25) or ``semantic`` (embeddings).
            offset: results to skip (for paging).
            sort: ``relevance`` or ``date`` (newest first among the best matches).
            filters: ``date_from``/``date_to`` (``datetime.date``), ``has_code`` (bool),
                ``collection`` (name) and ``category`` (e.g. ``cs.CL``).

        Raises :class:`papersift.search.SearchError` for an unknown mode, sort or filter
        and for out-of-range ``k`` or ``offset``. The hits name papers by id.
        """
        unknown = sorted(set(filters) - set(_FILTERS))
        if unknown:
            raise SearchError(
                f"unknown filter {', '.join(unknown)}; use any of {', '.join(_FILTERS)}"
            )
        chosen = SearchFilters(**filters) if filters else None
        return self.search_service.search(
            query, k=k, offset=offset, mode=mode, filters=chosen, sort=sort
        )

    def similar(self, paper_id: str, k: int = 10) -> list[SearchHit]:
        """The ``k`` papers nearest in meaning to a paper (id, arXiv id or DOI), best first;
        the paper itself and its duplicates are left out. KeyError if there is no such
        paper; an empty list while the library has no embeddings."""
        return self.search_service.similar(paper_id, k)

    # -- exporting ---------------------------------------------------------------------------

    def export(self, format: str = "jsonl", collection: str | None = None) -> Iterator[str]:
        """The papers as text, piece by piece (write them out with ``writelines``).

        Parameters:
            format: ``jsonl`` (one JSON object per line) or ``bibtex``.
            collection: only this collection's papers, in its order; default every paper,
                by id.

        Raises :class:`LibraryError` at once for an unknown format or collection. Papers
        are read in batches, so a large library streams in constant memory.
        """
        if format not in EXPORT_FORMATS:
            raise LibraryError(f"unknown format {format!r}; use jsonl or bibtex")
        ids: list[str] | None = None
        if collection is not None:
            with self.db.session() as session:
                found = collection_store.get_collection(session, collection)
            if found is None:
                raise LibraryError(f"no collection named {collection!r}")
            ids = [entry.paper_id for entry in found.entries]
        return self._export(format, ids)

    def _export(self, format: str, ids: list[str] | None) -> Iterator[str]:
        render = to_jsonl if format == "jsonl" else BibtexExport()  # keys unique per export
        separator = "\n" if format == "bibtex" else ""
        with self.db.session() as session:
            if ids is None:
                papers: Iterator[Paper] = paper_store.iter_papers(session)
            else:
                by_id = paper_store.get_papers(session, ids)
                papers = (by_id[i] for i in ids if i in by_id)
            for i, paper in enumerate(papers):
                yield (separator if i else "") + render(paper)
