"""SQL of a staged ingest: the one batch in progress, its staged rows, publishing and undo.

See :mod:`papersift.store.schema_staging` for the tables and :mod:`papersift.ingest.staging`
for the protocol. Every function here is one short group of statements meant to run in
its own short transaction, so a web write waits for one of them at most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from papersift.store.papers import PAPER_COLUMNS, insert_rows
from papersift.store.schema import PaperRow
from papersift.store.schema_staging import (
    PRIOR,
    PUBLISHED,
    STAGING,
    TO_PUBLISH,
    IngestBatchRow,
    staged_papers,
)

_IN_CHUNK = 500
_PAPERS = cast(Table, PaperRow.__table__)
_S = staged_papers.c


@dataclass(frozen=True)
class Batch:
    """The ingest batch in progress, as read from the database."""

    id: int
    state: str
    owner: str
    source: str
    heartbeat_at: datetime
    collection: dict[str, Any] | None


def claim(session: Session, source: str, owner: str, now: datetime) -> int:
    """Start a batch and return its id; raises IntegrityError (at flush or commit) when
    another batch holds the one lane."""
    row = IngestBatchRow(
        lane=1, source=source, state=STAGING, owner=owner, started_at=now, heartbeat_at=now
    )
    session.add(row)
    session.flush()
    return row.id


def current(session: Session) -> Batch | None:
    row = session.scalar(select(IngestBatchRow).where(IngestBatchRow.lane == 1))
    if row is None:
        return None
    return Batch(row.id, row.state, row.owner, row.source, row.heartbeat_at, row.collection)


def set_state(
    session: Session,
    batch: int,
    state: str,
    now: datetime,
    *,
    collection: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {"state": state, "heartbeat_at": now}
    if collection is not None:
        values["collection"] = collection
    session.execute(update(IngestBatchRow).where(IngestBatchRow.id == batch).values(**values))


def heartbeat(session: Session, batch: int, now: datetime) -> None:
    session.execute(
        update(IngestBatchRow).where(IngestBatchRow.id == batch).values(heartbeat_at=now)
    )


def _rows(session: Session, stmt: Any) -> list[dict]:
    out = []
    for row in session.execute(stmt).mappings():
        item = dict(row)
        del item["batch_id"], item["phase"]
        out.append(item)
    return out


def _staged(batch: int, phase: int = TO_PUBLISH) -> ColumnElement[bool]:
    return and_(_S.batch_id == batch, _S.phase == phase)


def find_matches(
    session: Session,
    batch: int,
    arxiv_ids: Sequence[str],
    dois: Sequence[str],
    title_keys: Sequence[str],
) -> list[dict]:
    """Staged rows (as papers rows) sharing an arXiv id, DOI or title key with records."""
    found: dict[str, dict] = {}
    for column, values in ((_S.arxiv_id, arxiv_ids), (_S.doi, dois), (_S.title_key, title_keys)):
        wanted = [v for v in dict.fromkeys(values) if v]
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            stmt = select(staged_papers).where(_staged(batch), column.in_(chunk))
            for item in _rows(session, stmt):
                found.setdefault(item["id"], item)
    return list(found.values())


def existing_ids(session: Session, batch: int, ids: Sequence[str]) -> set[str]:
    """Which of these paper ids the batch has staged."""
    out: set[str] = set()
    wanted = list(ids)
    for i in range(0, len(wanted), _IN_CHUNK):
        stmt = select(_S.id).where(_staged(batch), _S.id.in_(wanted[i : i + _IN_CHUNK]))
        out.update(session.scalars(stmt))
    return out


def stage(session: Session, batch: int, rows: list[dict]) -> None:
    """Write complete papers rows into the batch, replacing any staged earlier."""
    if not rows:
        return
    ids = [row["id"] for row in rows]
    for i in range(0, len(ids), _IN_CHUNK):
        session.execute(
            delete(staged_papers).where(_staged(batch), _S.id.in_(ids[i : i + _IN_CHUNK]))
        )
    extra = {"batch_id": batch, "phase": TO_PUBLISH}
    insert_rows(session, [{**row, **extra} for row in rows], table=staged_papers)


def _range(session: Session, batch: int, phase: int, size: int) -> tuple[str, str] | None:
    """The lowest and highest id of the next ``size`` staged rows of a phase."""
    ids = list(
        session.scalars(select(_S.id).where(_staged(batch, phase)).order_by(_S.id).limit(size))
    )
    return (ids[0], ids[-1]) if ids else None


def _within(batch: int, phase: int, span: tuple[str, str]) -> ColumnElement[bool]:
    return and_(_staged(batch, phase), _S.id >= span[0], _S.id <= span[1])


def _upsert_papers(session: Session, where: ColumnElement[bool]) -> None:
    """INSERT ... SELECT staged rows ... ON CONFLICT (id) DO UPDATE: whole rows into papers."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_PAPERS).from_select(
        PAPER_COLUMNS, select(*[_S[name] for name in PAPER_COLUMNS]).where(where)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[_PAPERS.c.id],
        set_={name: stmt.excluded[name] for name in PAPER_COLUMNS if name != "id"},
    )
    session.execute(stmt)


def publish_chunk(session: Session, batch: int, size: int) -> bool:
    """Move the next ``size`` staged rows into papers, keeping the rows they replace;
    False when none was left. A chunk moves whole or not at all."""
    span = _range(session, batch, TO_PUBLISH, size)
    if span is None:
        return False
    rows = _within(batch, TO_PUBLISH, span)
    replaced = _PAPERS.c.id.in_(select(_S.id).where(rows))
    prior = select(
        literal(batch), literal(PRIOR), *[_PAPERS.c[name] for name in PAPER_COLUMNS]
    ).where(replaced)
    session.execute(
        staged_papers.insert().from_select(["batch_id", "phase", *PAPER_COLUMNS], prior)
    )
    _upsert_papers(session, rows)
    session.execute(update(staged_papers).where(rows).values(phase=PUBLISHED))
    return True


def undo_chunk(session: Session, batch: int, size: int) -> bool:
    """Revert the next ``size`` published rows: new papers removed, replaced ones restored;
    False when none was left."""
    span = _range(session, batch, PUBLISHED, size)
    if span is None:
        return False
    published, priors = _within(batch, PUBLISHED, span), _within(batch, PRIOR, span)
    # every replaced row was saved with the same id in the same transaction, so the
    # priors of this range belong to exactly these published rows
    new = set(session.scalars(select(_S.id).where(published)))
    new -= set(session.scalars(select(_S.id).where(priors)))
    wanted = sorted(new)
    for i in range(0, len(wanted), _IN_CHUNK):
        session.execute(delete(_PAPERS).where(_PAPERS.c.id.in_(wanted[i : i + _IN_CHUNK])))
    _upsert_papers(session, priors)
    session.execute(delete(staged_papers).where(priors))
    session.execute(delete(staged_papers).where(published))
    return True


def clear_chunk(session: Session, batch: int, size: int) -> bool:
    """Delete up to ``size`` of the batch's staged rows, any phase; False when none left."""
    ids = list(
        session.scalars(select(_S.id).where(_S.batch_id == batch).order_by(_S.id).limit(size))
    )
    if not ids:
        return False
    session.execute(
        delete(staged_papers).where(_S.batch_id == batch, _S.id >= ids[0], _S.id <= ids[-1])
    )
    return True


def release(session: Session, batch: int) -> None:
    """Free the lane (the batch's staged rows are gone by now)."""
    session.execute(delete(staged_papers).where(_S.batch_id == batch))
    session.execute(delete(IngestBatchRow).where(IngestBatchRow.id == batch))
