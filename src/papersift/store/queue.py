"""The job queue's tables on PostgreSQL: procrastinate's own schema, in its own namespace.

procrastinate keeps its jobs, workers and periodic defers in tables and functions it
defines (``procrastinate/sql/schema.sql``). They live in the PostgreSQL schema ``QUEUE``
(not ``public``), so the app's Alembic metadata never sees them and dropping the queue is
one ``DROP SCHEMA``. Every queue connection sets ``search_path`` to it
(:func:`queue_conninfo`), which is how procrastinate's unqualified SQL finds its objects.

Migration 0009 installs the schema of the procrastinate version installed at that time
and records which one it was (the schema's comment); :func:`schema_problem` tells a worker
when the installed library is newer than the database's queue schema.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from papersift.store.schema_jobs import JobErrorRow

QUEUE = "procrastinate"  # the PostgreSQL schema holding the queue
_TAG = "papersift queue: procrastinate schema "


def _library_dir() -> Path:
    import procrastinate

    return Path(procrastinate.__file__).parent / "sql"


def library_schema_version() -> str:
    """The newest schema migration the installed procrastinate ships (``03.04.00_50``)."""
    names = sorted(p.name for p in (_library_dir() / "migrations").glob("*.sql"))
    return "_".join(names[-1].split("_")[:2]) if names else "unknown"


def install(conn: Connection) -> None:
    """Create the queue schema and procrastinate's objects in it (PostgreSQL only); a
    no-op when it is there. Runs inside the caller's transaction (the migration's)."""
    if conn.dialect.name != "postgresql":
        return
    exists = conn.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": QUEUE}
    ).first()
    if exists:
        return
    sql = (_library_dir() / "schema.sql").read_text(encoding="utf-8")
    previous = conn.execute(text("SELECT current_setting('search_path')")).scalar_one()
    conn.exec_driver_sql(f'CREATE SCHEMA "{QUEUE}"')
    conn.exec_driver_sql(f'SET LOCAL search_path TO "{QUEUE}"')
    # Driver SQL without parameters: procrastinate's text has % and :: in it.
    conn.exec_driver_sql(sql.replace("%", "%%"))
    conn.execute(text("SELECT set_config('search_path', :p, true)"), {"p": previous})
    conn.exec_driver_sql(f"COMMENT ON SCHEMA \"{QUEUE}\" IS '{_TAG}{library_schema_version()}'")


def uninstall(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{QUEUE}" CASCADE')


def installed_version(conn: Connection) -> str | None:
    """The procrastinate schema version the database's queue was made with, or None."""
    comment = conn.execute(
        text("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = :n"),
        {"n": QUEUE},
    ).scalar_one_or_none()
    if comment is None:
        return None
    return str(comment).removeprefix(_TAG)


def schema_problem(conn: Connection) -> str | None:
    """Why the queue cannot be used with this database, or None when it can."""
    found = installed_version(conn)
    if found is None:
        return f"the database has no job queue schema {QUEUE!r} (run any papersift command)"
    wanted = library_schema_version()
    if found != wanted:
        return (
            f"the database's job queue was made by procrastinate schema {found}, the installed "
            f"procrastinate uses {wanted}: install the matching papersift release"
        )
    return None


def queue_conninfo(url: str) -> dict[str, Any]:
    """psycopg connection arguments for the queue, from the app's database URL."""
    parsed = make_url(url)
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return {
        "conninfo": plain,
        "kwargs": {"options": f"-c search_path={QUEUE}", "connect_timeout": 10},
    }


# -- reading the queue (the CLI, the admin page, /metrics) ------------------------------------
_JOBS = f'"{QUEUE}".procrastinate_jobs'
_EVENTS = f'"{QUEUE}".procrastinate_events'
_WORKERS = f'"{QUEUE}".procrastinate_workers'


def counts(session: Session) -> dict[str, int]:
    """Jobs per procrastinate status (only statuses that have jobs)."""
    rows = session.execute(text(f"SELECT status::text, count(*) FROM {_JOBS} GROUP BY status"))
    return {str(status): int(n) for status, n in rows}


def depth(session: Session) -> dict[str, int]:
    """Jobs waiting to run, per queue (the figure /metrics calls queue depth)."""
    rows = session.execute(
        text(f"SELECT queue_name, count(*) FROM {_JOBS} WHERE status = 'todo' GROUP BY 1")
    )
    return {str(name): int(n) for name, n in rows}


def recent(
    session: Session,
    *,
    statuses: list[str] | None = None,
    job_id: int | None = None,
    limit: int = 100,
) -> list[Any]:
    """The newest jobs first, with their start and end times and last error."""
    where = "WHERE j.status::text = ANY(:statuses)" if statuses else ""
    if job_id is not None:
        where = "WHERE j.id = :job_id"
    sql = f"""
        SELECT j.id, j.queue_name, j.task_name, j.args, j.status::text AS status, j.attempts,
               j.scheduled_at,
               (SELECT max(e.at) FROM {_EVENTS} e
                 WHERE e.job_id = j.id AND e.type = 'started') AS started_at,
               (SELECT max(e.at) FROM {_EVENTS} e
                 WHERE e.job_id = j.id AND e.type IN ('succeeded', 'failed', 'cancelled',
                                                      'aborted')) AS finished_at,
               r.error
          FROM {_JOBS} j LEFT JOIN job_errors r ON r.job_id = j.id
          {where}
         ORDER BY j.id DESC
         LIMIT :limit"""
    params: dict[str, Any] = {"limit": limit}
    if statuses:
        params["statuses"] = statuses
    if job_id is not None:
        params["job_id"] = job_id
    return list(session.execute(text(sql), params))


def get_job(session: Session, job_id: int) -> Any | None:
    return session.execute(
        text(f"SELECT id, task_name, status::text AS status FROM {_JOBS} WHERE id = :id"),
        {"id": job_id},
    ).first()


def live_workers(session: Session, within_seconds: float) -> int:
    """Workers that sent a heartbeat in the last ``within_seconds``."""
    return int(
        session.execute(
            text(
                f"SELECT count(*) FROM {_WORKERS} "
                "WHERE last_heartbeat > now() - make_interval(secs => :s)"
            ),
            {"s": within_seconds},
        ).scalar_one()
    )


def record_error(
    session: Session, job_id: int, task: str, attempt: int, error: str, at: datetime
) -> None:
    """Keep a job's last error (one row per job, replaced on each failed attempt)."""
    row = session.get(JobErrorRow, job_id)
    if row is None:
        session.add(JobErrorRow(job_id=job_id, task=task, attempt=attempt, error=error, at=at))
    else:
        row.task, row.attempt, row.error, row.at = task, attempt, error, at


def clear_error(session: Session, job_id: int) -> None:
    session.execute(delete(JobErrorRow).where(JobErrorRow.job_id == job_id))


def prune_errors(session: Session) -> int:
    """Drop the errors of jobs procrastinate removed (its old-jobs clean-up)."""
    result = session.execute(
        text(f"DELETE FROM job_errors WHERE job_id NOT IN (SELECT id FROM {_JOBS})")
    )
    return int(getattr(result, "rowcount", 0) or 0)
