"""Storage: SQLAlchemy schema, Alembic migrations and repositories.

The only package that writes SQL: every query of the app is a function in one of its
modules (papers, collections, votes, harvest_state, ...), taking a session. SQLite is the
embedded default; any SQLAlchemy URL (PostgreSQL for servers) works. Timestamps are
timezone-aware UTC on every database (``schema.UTCDateTime``).
"""

from papersift.store.db import Database, DatabaseError, Session, StoreError

__all__ = ["Database", "DatabaseError", "Session", "StoreError"]
