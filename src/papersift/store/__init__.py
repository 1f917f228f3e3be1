"""Storage: SQLAlchemy schema, Alembic migrations and repositories.

SQLite is the embedded default; any SQLAlchemy URL (PostgreSQL for servers) works.
"""

from papersift.store.db import Database

__all__ = ["Database"]
