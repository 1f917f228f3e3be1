"""Which corpus paper an imported reference is: by arXiv id, then DOI, then normalized title.

A reference that matches nothing becomes a paper of its own through the ingest merge
(:func:`papersift.ingest.pipeline.merge_records`), in the caller's transaction, so it is
stored, deduplicated and indexed exactly like an ingested one (and counts for
recommendations). Corpus papers that match are left as they are: a reader's export never
rewrites the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from papersift.ingest.errors import IngestError
from papersift.ingest.merge import conflicts
from papersift.ingest.pipeline import merge_records
from papersift.ingest.records import PaperRecord
from papersift.library.formats import ImportEntry
from papersift.store import papers as paper_store
from papersift.store.db import Session

SOURCE = "library-import"  # the papers' ``sources`` entry for references a reader imported
MIN_TITLE_WORDS = 2  # "Introduction" alone names too many papers to match by title


@dataclass
class EntryResult:
    """What became of one reference: ``matched`` (an existing paper), ``added`` (a new
    paper) or ``failed``; ``reason`` says by what it matched, or why it failed."""

    n: int
    title: str
    status: str
    paper_id: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "title": self.title,
            "status": self.status,
            "paper_id": self.paper_id,
            "reason": self.reason,
        }


def _record(entry: ImportEntry) -> PaperRecord:
    """The ingest record of a reference (IngestError if it cannot be one)."""
    url = entry.url if entry.url and entry.url.lower().startswith(("http://", "https://")) else None
    record = PaperRecord(
        title=entry.title,
        abstract=entry.abstract,
        authors=list(entry.authors),
        published=entry.published,
        doi=entry.doi,
        arxiv_id=entry.arxiv_id,
        abs_url=url if url and len(url) <= 2000 else None,
        location=f"entry {entry.n}",
    )
    return record.finalize()


class _Corpus:
    """The stored papers a batch of records could be, indexed by each identity."""

    def __init__(self, session: Session, records: list[PaperRecord]) -> None:
        rows = paper_store.find_matches(
            session,
            [r.arxiv_id for r in records if r.arxiv_id],
            [r.doi for r in records if r.doi],
            [r.title_key for r in records if len(r.title_key.split()) >= MIN_TITLE_WORDS],
        )
        self.rows = {row["id"]: row for row in rows}
        self.by_arxiv = {row["arxiv_id"]: row["id"] for row in rows if row["arxiv_id"]}
        self.by_doi: dict[str, list[str]] = {}
        self.by_title: dict[str, list[str]] = {}
        for row in rows:
            if row["doi"]:
                self.by_doi.setdefault(row["doi"], []).append(row["id"])
            self.by_title.setdefault(row["title_key"], []).append(row["id"])

    def match(self, record: PaperRecord) -> tuple[str, str] | None:
        """(paper id, what matched) or None."""
        if record.arxiv_id and record.arxiv_id in self.by_arxiv:
            return self.by_arxiv[record.arxiv_id], "arXiv id"
        for pid in self.by_doi.get(record.doi or "", ()):
            if not conflicts(self.rows[pid], record):
                return pid, "DOI"
        if len(record.title_key.split()) >= MIN_TITLE_WORDS:
            for pid in sorted(self.by_title.get(record.title_key, ())):
                if not conflicts(self.rows[pid], record):
                    return pid, "title"
        return None


def resolve_entries(
    session: Session, entries: list[ImportEntry], *, now: datetime | None = None
) -> list[EntryResult]:
    """Match every reference to a paper, adding the unmatched ones as papers (in the
    session's transaction: the caller commits all of it or nothing). In entry order."""
    results: dict[int, EntryResult] = {}
    records: list[tuple[ImportEntry, PaperRecord]] = []
    for entry in entries:
        if entry.error:
            results[entry.n] = EntryResult(entry.n, entry.label, "failed", reason=entry.error)
            continue
        try:
            records.append((entry, _record(entry)))
        except IngestError as exc:
            results[entry.n] = EntryResult(entry.n, entry.label, "failed", reason=exc.message)
    corpus = _Corpus(session, [r for _, r in records])
    new: list[tuple[ImportEntry, PaperRecord]] = []
    for entry, record in records:
        found = corpus.match(record)
        if found is None:
            new.append((entry, record))
        else:
            results[entry.n] = EntryResult(entry.n, entry.label, "matched", found[0], found[1])
    if new:
        merger, ids = merge_records(
            session, [r for _, r in new], SOURCE, now=now or datetime.now(UTC)
        )
        first_of: dict[str, int] = {}
        for (entry, _), pid in zip(new, ids, strict=True):
            if pid in first_of:
                result = EntryResult(
                    entry.n, entry.label, "matched", pid, f"same paper as entry {first_of[pid]}"
                )
            elif merger.state.get(pid) == "added":
                result = EntryResult(entry.n, entry.label, "added", pid, "new paper")
            else:  # the merge found a stored paper the identities above did not
                result = EntryResult(entry.n, entry.label, "matched", pid, "title")
            first_of.setdefault(pid, entry.n)
            results[entry.n] = result
    return [results[e.n] for e in entries]
