"""Collection repository: ordered lists of papers such as saved listing pages."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from papersift.model import Collection, CollectionEntry
from papersift.store.schema import CollectionEntryRow, CollectionRow


def upsert_collection(session: Session, name: str, origin: str, paper_ids: list[str]) -> str:
    """Create or replace a collection's entries; returns 'added', 'updated' or 'unchanged'."""
    row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
    if row is None:
        row = CollectionRow(name=name, origin=origin, created_at=datetime.now(UTC))
        session.add(row)
        session.flush()
        state = "added"
    else:
        current = session.scalars(
            select(CollectionEntryRow.paper_id)
            .where(CollectionEntryRow.collection_id == row.id)
            .order_by(CollectionEntryRow.rank)
        ).all()
        if list(current) == paper_ids and row.origin == origin:
            return "unchanged"
        session.execute(
            delete(CollectionEntryRow).where(CollectionEntryRow.collection_id == row.id)
        )
        row.origin = origin
        state = "updated"
    if paper_ids:
        session.execute(
            insert(CollectionEntryRow),
            [
                {"collection_id": row.id, "rank": rank, "paper_id": pid}
                for rank, pid in enumerate(paper_ids, start=1)
            ],
        )
    return state


def collection_sizes(session: Session) -> list[tuple[str, str, int]]:
    """(name, origin, number of entries) for every collection, by name."""
    stmt = (
        select(CollectionRow.name, CollectionRow.origin, func.count(CollectionEntryRow.rank))
        .outerjoin(CollectionEntryRow, CollectionEntryRow.collection_id == CollectionRow.id)
        .group_by(CollectionRow.id, CollectionRow.name, CollectionRow.origin)
        .order_by(CollectionRow.name)
    )
    return [(n, o, c) for n, o, c in session.execute(stmt)]


def get_collection(session: Session, name: str) -> Collection | None:
    row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
    if row is None:
        return None
    entries = session.execute(
        select(CollectionEntryRow.rank, CollectionEntryRow.paper_id)
        .where(CollectionEntryRow.collection_id == row.id)
        .order_by(CollectionEntryRow.rank)
    )
    return Collection(
        name=row.name, origin=row.origin, entries=[CollectionEntry(r, p) for r, p in entries]
    )


def existing_names(session: Session, names: list[str]) -> set[str]:
    """Which of ``names`` are collections."""
    if not names:
        return set()
    return set(session.scalars(select(CollectionRow.name).where(CollectionRow.name.in_(names))))


def collections_of_paper(session: Session, paper_id: str) -> list[tuple[str, int]]:
    """(collection name, rank) for every collection listing the paper."""
    stmt = (
        select(CollectionRow.name, CollectionEntryRow.rank)
        .join(CollectionEntryRow, CollectionEntryRow.collection_id == CollectionRow.id)
        .where(CollectionEntryRow.paper_id == paper_id)
        .order_by(CollectionRow.name)
    )
    return [(n, r) for n, r in session.execute(stmt)]


def paper_ids_in_collections(session: Session, names: list[str]) -> set[str]:
    stmt = (
        select(CollectionEntryRow.paper_id)
        .join(CollectionRow, CollectionEntryRow.collection_id == CollectionRow.id)
        .where(CollectionRow.name.in_(names))
    )
    return set(session.scalars(stmt))
