"""Signing keys in the database: created once, atomically, by whichever host asks first."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Executable, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from papersift.store.schema_keys import SigningKeyRow


def get_or_create(session: Session, name: str, new_value: str) -> str:
    """The key called ``name``; ``new_value`` becomes it if there is none yet.

    INSERT ... ON CONFLICT DO NOTHING then SELECT: of any number of hosts racing, the first
    insert wins and every one of them reads the winner's key.
    """
    values = {"name": name, "value": new_value, "created_at": datetime.now(UTC)}
    dialect = session.get_bind().dialect.name
    stmt: Executable
    if dialect == "postgresql":
        stmt = pg_insert(SigningKeyRow).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(SigningKeyRow).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        stmt = insert(SigningKeyRow).values(**values)
    session.execute(stmt)
    value = session.scalar(select(SigningKeyRow.value).where(SigningKeyRow.name == name))
    if not value:
        raise RuntimeError(f"signing key {name!r} is empty in the database")
    return value
