"""How a new record folds into the paper it duplicates.

Rules are deterministic and only fill gaps (or take a strictly newer version), so
re-ingesting the same file, or the same paper from several sources, changes nothing twice.
"""

from __future__ import annotations

from datetime import datetime

from papersift.ingest.records import PaperRecord
from papersift.model import title_paper_id
from papersift.store.papers import content_hash, new_paper_row


def _union(existing: list, new: list) -> list:
    seen = {str(x).lower() for x in existing}
    out = list(existing)
    for item in new:
        if str(item).lower() not in seen:
            out.append(item)
            seen.add(str(item).lower())
    return out


def _pick(current: str | None, incoming: str | None, newer: bool, same: bool) -> str | None:
    """The value to keep: a newer version's, else the one already there; between two
    descriptions of the same version the larger, so the order of files does not matter."""
    if not incoming:
        return current
    if newer or not current:
        return incoming
    return max(current, incoming) if same else current


def new_row(record: PaperRecord, paper_id: str, source: str, now: datetime) -> dict:
    """The papers row of a record that matched no stored paper."""
    return new_paper_row(
        record, paper_id=paper_id, source=source, now=now, title_key=record.title_key
    )


def preferred_id(record: PaperRecord) -> str:
    return record.arxiv_id or title_paper_id(record.title)


def merge_into(row: dict, record: PaperRecord, source: str, now: datetime) -> bool:
    """Fold ``record`` into ``row`` in place; True if anything changed."""
    before = dict(row)
    newer = bool(record.updated and (row["updated"] is None or record.updated > row["updated"]))
    if newer or not row["abstract"]:
        if record.abstract:
            row["abstract"] = record.abstract
    if newer and record.title:
        row["title"] = record.title
        row["title_key"] = record.title_key
    if record.authors and (newer or not row["authors"]):
        row["authors"] = record.authors
    if record.categories and (newer or not row["categories"]):
        row["categories"] = record.categories
    if record.published and (row["published"] is None or record.published < row["published"]):
        row["published"] = record.published
    if newer:
        row["updated"] = record.updated
    if record.announced and (row["announced"] is None or record.announced < row["announced"]):
        row["announced"] = record.announced  # the first listing is the paper's day
    same_version = record.updated == row["updated"]
    for key in ("primary_category", "comment"):
        row[key] = _pick(row[key], getattr(record, key), newer, same_version)
    for key in ("arxiv_id", "doi", "abs_url", "pdf_url"):
        if not row[key] and getattr(record, key):
            row[key] = getattr(record, key)
    row["code_urls"] = _union(row["code_urls"] or [], record.code_urls)
    row["has_code"] = bool(row["code_urls"])
    row["sources"] = _union(row["sources"] or [], [source])
    row["content_hash"] = content_hash(row["title"], row["abstract"])
    changed = row != before
    if changed:
        row["modified_at"] = now
    return changed


def conflicts(row: dict, record: PaperRecord) -> bool:
    """True when a title match is really a different paper (its ids disagree)."""
    if record.arxiv_id and row["arxiv_id"] and record.arxiv_id != row["arxiv_id"]:
        return True
    return bool(record.doi and row["doi"] and record.doi != row["doi"])
