"""Where each harvest stopped (``harvest_state``): one row per distinct request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from papersift.store.schema import HarvestStateRow


@dataclass(frozen=True)
class HarvestPosition:
    """A harvest's saved position: the next resumption token or offset, and progress."""

    key: str
    resumption_token: str | None
    offset: int
    records: int
    done: bool
    updated_at: datetime


def load_position(session: Session, key: str) -> HarvestPosition | None:
    row = session.get(HarvestStateRow, key)
    if row is None:
        return None
    return HarvestPosition(
        row.key, row.resumption_token, row.offset, row.records, row.done, row.updated_at
    )


def save_position(
    session: Session, key: str, *, token: str | None, offset: int, records: int, done: bool
) -> None:
    """Create or move the harvest's position (in the caller's transaction)."""
    row = session.get(HarvestStateRow, key)
    if row is None:
        row = HarvestStateRow(key=key)
        session.add(row)
    row.resumption_token = token
    row.offset = offset
    row.records = records
    row.done = done
    row.updated_at = datetime.now(UTC)


def forget_position(session: Session, key: str) -> None:
    """Drop the saved position, so the next run starts over."""
    session.execute(delete(HarvestStateRow).where(HarvestStateRow.key == key))
