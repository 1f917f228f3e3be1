"""Collection repository: ordered lists of papers such as saved listing pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from papersift.model import Collection, CollectionEntry, collection_display_title
from papersift.store.schema import CollectionEntryRow, CollectionRow, PaperRow


@dataclass(frozen=True)
class CollectionSummary:
    """A collection without its entries: name (the key), readable title, size."""

    name: str
    origin: str
    title: str
    description: str
    size: int


def upsert_collection(
    session: Session, name: str, origin: str, paper_ids: list[str], *, title: str | None = None
) -> str:
    """Create or replace a collection's entries (and its title, when given); returns
    'added', 'updated' or 'unchanged'."""
    row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
    if row is None:
        row = CollectionRow(
            name=name,
            origin=origin,
            title=title or "",
            description="",
            created_at=datetime.now(UTC),
        )
        session.add(row)
        session.flush()
        state = "added"
    else:
        retitled = title is not None and row.title != title
        if retitled:
            row.title = title or ""
        if _same_entries(session, row.id, paper_ids) and row.origin == origin:
            return "updated" if retitled else "unchanged"
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


def _same_entries(session: Session, collection_id: int, paper_ids: list[str]) -> bool:
    current = session.scalars(
        select(CollectionEntryRow.paper_id)
        .where(CollectionEntryRow.collection_id == collection_id)
        .order_by(CollectionEntryRow.rank)
    ).all()
    return list(current) == paper_ids


def set_title(session: Session, name: str, title: str, description: str | None = None) -> bool:
    """Give a collection its title (and description, when given); False if it is unknown."""
    row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
    if row is None:
        return False
    row.title = title
    if description is not None:
        row.description = description
    return True


def untitled(session: Session) -> list[str]:
    """Names of the collections that have no title yet."""
    return list(
        session.scalars(
            select(CollectionRow.name).where(CollectionRow.title == "").order_by(CollectionRow.name)
        )
    )


def member_titles(session: Session, name: str) -> list[str]:
    """The titles of a collection's papers, in its order."""
    stmt = (
        select(PaperRow.title)
        .join(CollectionEntryRow, CollectionEntryRow.paper_id == PaperRow.id)
        .join(CollectionRow, CollectionEntryRow.collection_id == CollectionRow.id)
        .where(CollectionRow.name == name)
        .order_by(CollectionEntryRow.rank)
    )
    return list(session.scalars(stmt))


def collection_summaries(session: Session) -> list[CollectionSummary]:
    """Every collection with its readable title and size, by name."""
    stmt = (
        select(
            CollectionRow.name,
            CollectionRow.origin,
            CollectionRow.title,
            CollectionRow.description,
            func.count(CollectionEntryRow.rank),
        )
        .outerjoin(CollectionEntryRow, CollectionEntryRow.collection_id == CollectionRow.id)
        .group_by(CollectionRow.id)
        .order_by(CollectionRow.name)
    )
    return [
        CollectionSummary(n, o, collection_display_title(n, t), d, c)
        for n, o, t, d, c in session.execute(stmt)
    ]


def collection_titles(session: Session, names: list[str]) -> dict[str, str]:
    """Name -> readable title of the named collections."""
    if not names:
        return {}
    stmt = select(CollectionRow.name, CollectionRow.title).where(CollectionRow.name.in_(names))
    return {n: collection_display_title(n, t) for n, t in session.execute(stmt)}


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
        name=row.name,
        origin=row.origin,
        title=collection_display_title(row.name, row.title),
        description=row.description,
        entries=[CollectionEntry(r, p) for r, p in entries],
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
