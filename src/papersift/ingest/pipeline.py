"""Ingest files into the database: detect, parse, merge duplicates, one logical
transaction per file.

A file either goes in whole or not at all; a bad file is reported and the next one still
goes in. Records are staged in batches (short transactions, so web writes get through)
and a multi-gigabyte snapshot streams through in bounded memory.
"""

from __future__ import annotations

import glob
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from papersift.ingest.errors import IngestError
from papersift.ingest.formats import open_source
from papersift.ingest.merge import conflicts, merge_into, new_row, preferred_id
from papersift.ingest.records import PaperRecord
from papersift.ingest.staging import StagedFile, finish_interrupted, staged_file
from papersift.ingest.titles import clean_title, fill_missing_titles
from papersift.store import papers as paper_store
from papersift.store import staging as staging_store
from papersift.store.db import (
    Database,
    Session,
    StoreError,
    prepare_bulk_write,
    store_error_text,
)

log = logging.getLogger(__name__)

BATCH = 2000
SQLITE_CACHE_KIB = 65_536  # page cache of an ingest transaction on SQLite (see merge_records)
SUFFIXES = {".txt", ".xml", ".atom", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".gz", ".abs"}

ProgressFn = Callable[[int], None]


@dataclass
class FileResult:
    """What one file did to the database."""

    path: str
    format: str = ""
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    collection: str | None = None
    error: str | None = None
    changed_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def records(self) -> int:
        return self.added + self.updated + self.unchanged

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the changed ids are left out: they can be many)."""
        return {
            "path": self.path,
            "format": self.format,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "collection": self.collection,
            "error": self.error,
        }


@dataclass
class IngestSummary:
    """Every file's result, in the order the files were given."""

    files: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if not f.ok]

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files if f.ok)

    @property
    def added(self) -> int:
        return self.total("added")

    @property
    def updated(self) -> int:
        return self.total("updated")

    @property
    def unchanged(self) -> int:
        return self.total("unchanged")

    @property
    def changed_ids(self) -> list[str]:
        return [pid for f in self.files for pid in f.changed_ids]


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[FileResult]]:
    """Files named directly, found in folders (recursively) or matched by globs, in order."""
    found: list[Path] = []
    missing: list[FileResult] = []
    for raw in paths:
        text = str(raw)
        candidates: list[Path]
        if any(ch in text for ch in "*?["):
            candidates = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            if not candidates:
                missing.append(FileResult(text, error=f"{text}: no file matches this pattern"))
        else:
            candidates = [Path(text)]
        for path in candidates:
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(files):
                        sub = Path(root) / name
                        if sub.suffix.lower() in SUFFIXES and not name.startswith("."):
                            found.append(sub)
            elif path.exists():
                found.append(path)
            else:
                missing.append(FileResult(str(path), error=f"{path}: no such file or folder"))
    unique = list(dict.fromkeys(found))
    return unique, missing


class Merger:
    """Merges batches of records into papers, straight into a session's transaction or
    into a staged file (see :mod:`papersift.ingest.staging`).

    Only the current batch's rows are kept in memory: earlier batches are already written
    (to the same transaction, or staged), so a duplicate further down the file is found by
    the database lookup. Memory stays bounded for a multi-gigabyte snapshot.
    """

    def __init__(self, source: str, now: datetime, *, batch: int | None = None) -> None:
        self.source = source
        self.now = now
        self.batch = batch  # the staged file's batch id; None writes papers directly
        self.state: dict[str, str] = {}  # paper id -> added / updated / unchanged
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, dict] = {}
        self.by_arxiv: dict[str, str] = {}
        self.by_doi: dict[str, str] = {}
        self.by_title: dict[str, list[str]] = {}
        self.taken: set[str] = set()

    def _index(self, row: dict) -> None:
        pid = row["id"]
        self.rows[pid] = row
        if row["arxiv_id"]:
            self.by_arxiv[row["arxiv_id"]] = pid
        if row["doi"]:
            self.by_doi.setdefault(row["doi"], pid)
        ids = self.by_title.setdefault(row["title_key"], [])
        if pid not in ids:
            ids.append(pid)

    def _stored(self, session: Session, arx: list[str], dois: list[str], keys: list[str]) -> list:
        """Rows the batch could merge into: stored ones, superseded by this file's staged
        version of the same paper (a superseded row is matched by its staged values only)."""
        found = paper_store.find_matches(session, arx, dois, keys)
        if self.batch is None:
            return found
        staged = staging_store.find_matches(session, self.batch, arx, dois, keys)
        superseded = staging_store.existing_ids(session, self.batch, [r["id"] for r in found])
        return [r for r in found if r["id"] not in superseded] + staged

    def _existing(self, session: Session, ids: list[str]) -> set[str]:
        taken = paper_store.existing_ids(session, ids)
        if self.batch is not None:
            taken |= staging_store.existing_ids(session, self.batch, ids)
        return taken

    def _load(self, session: Session, batch: list[PaperRecord]) -> None:
        """Fetch every stored row the batch could merge into, and the ids it could collide with."""
        arx = [r.arxiv_id for r in batch if r.arxiv_id]
        dois = [r.doi for r in batch if r.doi]
        keys = [r.title_key for r in batch]
        for row in self._stored(session, arx, dois, keys):
            self._index(row)
            self.state.setdefault(row["id"], "unchanged_existing")
        wanted = {preferred_id(r) for r in batch} - self.rows.keys()
        self.taken = self._existing(session, list(wanted))

    def _match(self, record: PaperRecord) -> str | None:
        if record.arxiv_id and record.arxiv_id in self.by_arxiv:
            return self.by_arxiv[record.arxiv_id]
        if record.doi and record.doi in self.by_doi:
            pid = self.by_doi[record.doi]
            if not conflicts(self.rows[pid], record):
                return pid
        for pid in self.by_title.get(record.title_key, ()):
            if not conflicts(self.rows[pid], record):
                return pid
        return None

    def _new_id(self, session: Session, record: PaperRecord) -> str:
        base = preferred_id(record)
        if base not in self.rows and base not in self.taken:
            return base
        n = 2  # a different paper already holds the id (same title, other arXiv id)
        while f"{base}-{n}" in self.rows or self._existing(session, [f"{base}-{n}"]):
            n += 1
        return f"{base}-{n}"

    def plan(
        self, session: Session, batch: list[PaperRecord]
    ) -> tuple[list[str], list[dict], list[dict]]:
        """Merge a batch (reading only): the paper id of each record in order, the rows to
        insert and the rows to update."""
        self._load(session, batch)
        ids: list[str] = []
        inserts: dict[str, dict] = {}
        updates: dict[str, dict] = {}
        for record in batch:
            pid = self._match(record)
            if pid is None:
                pid = self._new_id(session, record)
                row = new_row(record, pid, self.source, self.now)
                self._index(row)
                self.state[pid] = "added"
                inserts[pid] = row
            else:
                row = self.rows[pid]
                old_title_key = row["title_key"]
                if merge_into(row, record, self.source, self.now):
                    if pid not in inserts:  # rows inserted below are written in final form
                        updates[pid] = row
                    if self.state[pid] != "added":
                        self.state[pid] = "updated"
                elif self.state[pid] == "unchanged_existing":
                    self.state[pid] = "unchanged"
                if row["title_key"] != old_title_key or row["arxiv_id"] or row["doi"]:
                    self._index(row)
            ids.append(pid)
        self._reset()
        return ids, list(inserts.values()), list(updates.values())

    def apply(self, session: Session, batch: list[PaperRecord]) -> list[str]:
        """Merge a batch and write it into the session's papers; the ids in record order."""
        ids, inserts, updates = self.plan(session, batch)
        paper_store.insert_rows(session, inserts)
        paper_store.update_rows(session, updates)
        return ids

    def counts(self) -> tuple[int, int, int, list[str]]:
        """(added, updated, unchanged, ids of added or updated papers) so far."""
        added = [pid for pid, s in self.state.items() if s == "added"]
        updated = [pid for pid, s in self.state.items() if s == "updated"]
        unchanged = sum(1 for s in self.state.values() if s == "unchanged")
        return len(added), len(updated), unchanged, added + updated


def _batched(records: Iterator[PaperRecord], size: int) -> Iterator[list[PaperRecord]]:
    batch: list[PaperRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def merge_records(
    session: Session,
    records: Iterable[PaperRecord],
    source: str,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH,
    progress: ProgressFn | None = None,
) -> tuple[Merger, list[str]]:
    """Merge ``records`` into the session's transaction (a harvest page: small); the merger
    and the ids in record order."""
    prepare_bulk_write(session, sqlite_cache_kib=SQLITE_CACHE_KIB)
    merger = Merger(source, now or datetime.now(UTC))
    order: list[str] = []
    for batch in _batched(iter(records), batch_size):
        order.extend(merger.apply(session, batch))
        if progress:
            progress(len(batch))
    return merger, order


def stage_records(
    staged: StagedFile,
    records: Iterable[PaperRecord],
    source: str,
    *,
    batch_size: int = BATCH,
    progress: ProgressFn | None = None,
) -> tuple[Merger, list[str]]:
    """Merge ``records`` into a staged file, one short write transaction per batch (the
    lookups read outside it, so web writes wait for the inserts only)."""
    merger = Merger(source, datetime.now(UTC), batch=staged.batch)
    order: list[str] = []
    for batch in _batched(iter(records), batch_size):
        with staged.reading() as session:
            prepare_bulk_write(session, sqlite_cache_kib=SQLITE_CACHE_KIB)
            ids, inserts, updates = merger.plan(session, batch)
        staged.write(inserts + updates)
        order.extend(ids)
        if progress:
            progress(len(batch))
    return merger, order


def ingest_file(
    db: Database,
    path: Path,
    *,
    progress: ProgressFn | None = None,
    source: str | None = None,
    batch_size: int = BATCH,
    collection_title: str | None = None,
) -> FileResult:
    """Ingest one file as one logical transaction (staged in short ones: see
    :mod:`papersift.ingest.staging`); errors are returned in the result, not raised.
    ``collection_title`` titles the collection a listing page makes (checked already)."""
    result = FileResult(str(path))
    label = source or f"file:{path.name}"
    try:
        parsed = open_source(path)
        result.format = parsed.format
        with staged_file(db, label) as staged:
            merger, order = stage_records(
                staged, parsed.records, label, batch_size=batch_size, progress=progress
            )
            if not order and not parsed.deleted:
                raise IngestError("no papers found in file")
            collection = None
            if parsed.collection is not None:
                result.collection = parsed.collection.name
                collection = {
                    "name": parsed.collection.name,
                    "origin": parsed.collection.origin,
                    "title": collection_title,
                    "order": order,
                }
            staged.commit(collection)
            result.added, result.updated, result.unchanged, result.changed_ids = merger.counts()
    except IngestError as exc:
        exc.at(source=str(path))
        _clear(result, str(exc))
    except StoreError as exc:
        _clear(result, f"{path}: database error, file not ingested ({store_error_text(exc)})")
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # corrupt .gz, vanished file
        _clear(result, f"{path}: cannot read file ({exc.__class__.__name__}: {exc})")
    return result


def _clear(result: FileResult, error: str) -> None:
    result.error = error
    result.added = result.updated = result.unchanged = 0
    result.changed_ids = []


def ingest_paths(
    db: Database,
    paths: Iterable[str | Path],
    *,
    on_files: Callable[[list[Path]], None] | None = None,
    on_file_start: Callable[[Path], ProgressFn | None] | None = None,
    on_file_done: Callable[[FileResult], None] | None = None,
    collection_title: str | None = None,
) -> IngestSummary:
    """Ingest every file under ``paths``; each file is its own all-or-nothing ingest.

    The hooks let a front end follow along: ``on_files`` gets the files found (before any
    is read), ``on_file_start`` is called as each file begins and may return a callback
    told how many records went in per batch, ``on_file_done`` gets each file's result
    (errors included: a bad file is reported there and the next file still goes in).
    Names that match nothing come first in the summary, as failed results.
    ``collection_title`` titles every collection the listing pages make (a bad title
    raises :class:`~papersift.ingest.titles.TitleError` before anything is read);
    collections still untitled afterwards get a readable default title.
    """
    if collection_title is not None:
        collection_title = clean_title(collection_title)
    files, missing = expand_paths(paths)
    summary = IngestSummary(files=list(missing))
    try:
        finish_interrupted(db)  # a file an earlier run committed but did not publish
    except StoreError as exc:
        log.warning("interrupted ingest not finished: %s", store_error_text(exc))
    if on_files:
        on_files(files)
    for path in files:
        progress = on_file_start(path) if on_file_start else None
        result = ingest_file(db, path, progress=progress, collection_title=collection_title)
        summary.files.append(result)
        if on_file_done:
            on_file_done(result)
    if any(f.collection for f in summary.files):
        _title_collections(db)
    return summary


def _title_collections(db: Database) -> None:
    """Default titles for new collections; derived data, so a failure only logs."""
    try:
        with db.session() as session:
            fill_missing_titles(session)
    except StoreError as exc:
        log.warning("collection titles not derived: %s", store_error_text(exc))
