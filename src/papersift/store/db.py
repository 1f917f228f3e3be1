"""Engine, sessions and migrations for one database URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from papersift.home import create_private_file, ensure_private_dir

# What services above the store name: a session is one transaction's handle, and any
# failure the database reports is a StoreError, whichever driver is underneath.
StoreError = SQLAlchemyError

__all__ = [
    "Database",
    "DatabaseError",
    "Session",
    "StoreError",
    "Timeouts",
    "create_db_engine",
    "is_unavailable",
    "store_error_text",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseError(Exception):
    """The database URL is unusable or the database cannot be reached."""


@dataclass(frozen=True)
class Timeouts:
    """How long a caller waits on the database before it gives up (seconds).

    Batch work (ingest, digests) waits long; a web request waits briefly and answers 503
    with Retry-After instead (see :func:`is_unavailable`). ``statement`` and ``connect``
    apply to PostgreSQL; ``busy`` is SQLite's lock wait and the pool's checkout wait.
    """

    busy: float = 30.0
    connect: int = 10
    statement: float | None = None

    @classmethod
    def for_requests(cls, busy: float, connect: int, statement: float) -> Timeouts:
        return cls(busy=busy, connect=connect, statement=statement)


def _sqlite_pragmas(busy: float) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # WAL lets the web server read while an ingest or digest run writes: readers
        # never wait on a writer, only writers wait (up to ``busy`` s) on each other.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
        cur.close()

    return on_connect


_UNAVAILABLE_SQLSTATES = {"57014", "57P01", "57P02", "57P03", "53300", "08000", "08001", "08006"}


def is_unavailable(exc: BaseException) -> bool:
    """True when a store error means "the database is busy or away, try again soon"
    (SQLite locked, PostgreSQL unreachable, cancelled by the statement timeout, the pool
    exhausted), as opposed to a bug or bad data."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in _UNAVAILABLE_SQLSTATES


def sqlite_folder(url: str) -> Path | None:
    """The folder of a SQLite database file, or None for other URLs and in-memory ones."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().parent


def create_db_engine(url: str, timeouts: Timeouts | None = None) -> Engine:
    """An engine with the right settings for SQLite or a server database."""
    limits = timeouts or Timeouts()
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"not a database URL: {url!r}") from exc
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser()
            try:
                ensure_private_dir(path.parent)
                create_private_file(path)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create database {path}: {exc.strerror or exc}"
                ) from None
        engine = create_engine(url, connect_args={"timeout": limits.busy})
        event.listen(engine, "connect", _sqlite_pragmas(limits.busy))
        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    elif parsed.drivername.split("+")[0] not in ("postgresql", "postgres"):
        raise DatabaseError(
            f"unsupported database {parsed.drivername!r} in {url!r}: "
            "use sqlite:///PATH or postgresql://user@host/dbname"
        )
    try:
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            pool_timeout=limits.busy,
            connect_args=_pg_connect_args(limits),
        )
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from None


def _pg_connect_args(limits: Timeouts) -> dict[str, Any]:
    """libpq options: a bounded connect, and with a statement limit also a TCP user timeout
    and keepalives, so a server that stops answering fails the query instead of hanging it."""
    args: dict[str, Any] = {"connect_timeout": limits.connect}
    if limits.statement is not None:
        ms = int(limits.statement * 1000)
        args["options"] = f"-c statement_timeout={ms}"
        args["tcp_user_timeout"] = ms
        args.update(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
    return args


def store_error_text(exc: StoreError) -> str:
    """One short line naming a database error: the driver's exception and its first line."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{orig.__class__.__name__}: {first}"[:500]


class Database:
    """One database: its engine, a session factory and the migration runner."""

    def __init__(self, url: str, *, migrate: bool = True, timeouts: Timeouts | None = None) -> None:
        self.url = url
        self.timeouts = timeouts or Timeouts()
        self.engine = create_db_engine(url, self.timeouts)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (no-op when current)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as exc:  # driver errors vary; name the URL without its password
            safe = make_url(self.url).render_as_string(hide_password=True)
            raise DatabaseError(f"cannot open or migrate database {safe}: {exc}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def prepare_bulk_write(session: Session, *, sqlite_cache_kib: int) -> None:
    """Tune the session's transaction for a bulk ingest of many papers.

    SQLite's default 2 MB page cache spills the growing indexes to the WAL mid-transaction;
    a bigger one keeps the indexes of a few hundred thousand papers in memory (measured at
    64 MB: about 15% more papers/s at 100k; memory is only used as pages are). On
    PostgreSQL a table filled inside this very transaction has no statistics yet, so the
    planner scans it whole for every identity lookup: quadratic on a big first ingest
    (450 papers/s at 100k). The ingest's lookups are always by indexed columns.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text(f"PRAGMA cache_size = -{int(sqlite_cache_kib)}"))
    elif dialect == "postgresql":
        session.execute(text("SET LOCAL enable_seqscan = off"))
