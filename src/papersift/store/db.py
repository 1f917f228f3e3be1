"""Engine, sessions and migrations for one database URL."""

from __future__ import annotations

import os
import socket
import threading
import time
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
# The newest revision in migrations/versions (a test holds it to Alembic's own head): a
# database already there is not handed to Alembic, whose import and script reading were
# 0.2 s of every command's start.
HEAD_REVISION = "0011"


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


# Page cache of each SQLite connection, KiB (SQLite's default is 2 MB). Reading the ten
# feedback papers of a hybrid search by id took 1.2-1.6 ms at a million papers (a 3.2 GB
# file) with the default and with 8 MB, 0.12 ms with 32 MB: the B-tree's inner pages then
# stay cached instead of being read again for every row. Pages are allocated only as used.
READ_CACHE_KIB = 32 * 1024


def _sqlite_pragmas(busy: float) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")
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
        engine = create_engine(
            url,
            # With a statement deadline a dead connection fails fast on its own; a ping
            # would be one more round trip that nothing times out.
            pool_pre_ping=limits.statement is None,
            pool_size=10,
            max_overflow=20,
            pool_timeout=limits.busy,
            connect_args=_pg_connect_args(limits),
        )
        if limits.statement is not None:
            _watch_statements(engine, limits.statement + 1.0)
        return engine
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


class _Watchdog:
    """Cuts the socket of a PostgreSQL statement that outlived its deadline.

    ``statement_timeout`` is enforced by the server, and TCP timeouts only see unanswered
    packets: neither helps when the server (or a proxy before it) accepts bytes and never
    answers. One thread checks the running statements' deadlines; shutting the socket
    down makes the blocked driver call fail at once, and the pool drops the connection.
    """

    def __init__(self) -> None:
        self._running: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, token: int, fd: int, seconds: float) -> None:
        with self._lock:
            self._running[token] = (time.monotonic() + seconds, fd)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="db-watchdog", daemon=True)
                self._thread.start()

    def stop(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                late = [(t, fd) for t, (due, fd) in self._running.items() if due <= now]
                for token, _fd in late:
                    del self._running[token]
            for _token, fd in late:
                try:
                    sock = socket.socket(fileno=os.dup(fd))
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    finally:
                        sock.close()
                except OSError:
                    pass  # finished or closed meanwhile


_WATCHDOG = _Watchdog()


def _socket_of(dbapi_connection: Any) -> int | None:
    try:
        return int(dbapi_connection.pgconn.socket)
    except Exception:
        return None


def _watch_statements(engine: Engine, seconds: float) -> None:
    """Give every statement on ``engine`` a client-side deadline (see :class:`_Watchdog`);
    one statement runs per connection at a time, so the socket names it."""

    def stop(dbapi_connection: Any) -> None:
        fd = _socket_of(dbapi_connection)
        if fd is not None:
            _WATCHDOG.stop(fd)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, *_args: Any) -> None:
        fd = _socket_of(conn.connection.dbapi_connection)
        if fd is not None:
            _WATCHDOG.start(fd, fd, seconds)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, *_args: Any) -> None:
        stop(conn.connection.dbapi_connection)

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        conn = context.connection
        if conn is not None and conn.connection.dbapi_connection is not None:
            stop(conn.connection.dbapi_connection)

    @event.listens_for(engine, "checkin")
    def _back(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            stop(dbapi_connection)


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

    def at_head(self) -> bool:
        """Whether the schema is at the newest revision (False on any doubt: no version
        table yet, another revision, an error reading it)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except StoreError:
            return False
        return [tuple(r) for r in rows] == [(HEAD_REVISION,)]

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (no-op when current)."""
        if self.at_head():
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        # A migration is batch work: it runs with the long defaults, not a web request's.
        own = self.timeouts != Timeouts()
        engine = create_db_engine(self.url) if own else self.engine
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as exc:  # driver errors vary; name the URL without its password
            safe = make_url(self.url).render_as_string(hide_password=True)
            raise DatabaseError(f"cannot open or migrate database {safe}: {exc}") from exc
        finally:
            if own:
                engine.dispose()

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
