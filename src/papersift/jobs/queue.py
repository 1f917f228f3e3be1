"""One way to ask for background work, whichever queue runs it.

``queue_for(settings, db).enqueue("mail.deliver", ids=[7])`` defers a job. On PostgreSQL
(``queue = auto`` or ``procrastinate``) the job goes to procrastinate's queue in the
database and a ``papersift worker`` on any host runs it; on SQLite (``auto`` or
``inprocess``) it runs in a thread of this process (``jobs.runner``). Callers never know
which: both take the same job names and keyword arguments (``jobs.tasks``), both retry with
the job's backoff, and both list their jobs, count them and retry a failed one.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from papersift.jobs.info import JobInfo, empty_counts
from papersift.jobs.runner import InProcessRunner
from papersift.settings import Settings
from papersift.store.db import Database

INPROCESS, PROCRASTINATE = "inprocess", "procrastinate"


class JobQueue(Protocol):
    """What callers, the CLI, the admin page and the metrics use."""

    kind: str

    def enqueue(self, name: str, **kwargs: Any) -> int | None: ...

    def jobs(self, statuses: list[str] | None = None, limit: int = 100) -> list[JobInfo]: ...

    def job(self, job_id: int) -> JobInfo: ...

    def counts(self) -> dict[str, int]: ...

    def depth(self) -> dict[str, int]: ...

    def retry(self, job_id: int) -> JobInfo: ...

    def check(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def backend(settings: Settings, db: Database) -> str:
    """The queue a process with these settings uses (see the module docstring)."""
    if settings.queue != "auto":
        return settings.queue
    return PROCRASTINATE if db.engine.dialect.name == "postgresql" else INPROCESS


class InProcessQueue:
    """:class:`JobQueue` over the in-process runner."""

    kind = INPROCESS

    def __init__(self, settings: Settings, db: Database, *, workers: int = 2) -> None:
        self.runner = InProcessRunner(settings, db, workers=workers)

    def enqueue(self, name: str, **kwargs: Any) -> int | None:
        return self.runner.defer(name, **kwargs).id

    def jobs(self, statuses: list[str] | None = None, limit: int = 100) -> list[JobInfo]:
        found = self.runner.list(limit=self.runner.history)
        return [j for j in found if not statuses or j.status in statuses][:limit]

    def job(self, job_id: int) -> JobInfo:
        for info in self.runner.list(limit=self.runner.history):
            if info.id == job_id:
                return info
        raise LookupError(f"no job {job_id} in this process")

    def counts(self) -> dict[str, int]:
        found = empty_counts()
        for info in self.runner.list(limit=self.runner.history):
            found[info.status] = found.get(info.status, 0) + 1
        return found

    def depth(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for info in self.runner.list("queued", limit=self.runner.history):
            found[info.queue] = found.get(info.queue, 0) + 1
        return found

    def retry(self, job_id: int) -> JobInfo:
        return self.runner.retry(job_id)

    def check(self) -> dict[str, Any]:
        return {"ok": True, "kind": self.kind, "waiting": sum(self.depth().values())}

    def close(self) -> None:
        self.runner.close(wait=False)


def open_queue(settings: Settings, db: Database) -> JobQueue:
    """A new queue handle for this process (close it when done)."""
    if backend(settings, db) == PROCRASTINATE:
        if db.engine.dialect.name != "postgresql":
            raise ValueError("queue = procrastinate needs a PostgreSQL database (db)")
        from papersift.jobs.pgqueue import ProcrastinateQueue

        return ProcrastinateQueue(settings, db)
    return InProcessQueue(settings, db)


_QUEUES: dict[tuple[str, str], JobQueue] = {}
_LOCK = threading.Lock()


def queue_for(settings: Settings, db: Database) -> JobQueue:
    """This process's queue for a database (made on first use, kept for the process)."""
    key = (db.url, settings.queue)
    with _LOCK:
        found = _QUEUES.get(key)
        if found is None:
            found = _QUEUES[key] = open_queue(settings, db)
        return found


def close_queues() -> None:
    """Close every queue ``queue_for`` made (an app's shutdown, a test's end)."""
    with _LOCK:
        for found in _QUEUES.values():
            found.close()
        _QUEUES.clear()


def enqueue(settings: Settings, db: Database, name: str, **kwargs: Any) -> int | None:
    """Defer job ``name`` on this process's queue; its id (None: an identical exclusive
    job already waits)."""
    return queue_for(settings, db).enqueue(name, **kwargs)
