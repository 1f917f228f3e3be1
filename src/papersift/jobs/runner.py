"""The jobs by name, and the in-process runner the embedded (SQLite) setup uses.

A queue integration registers the same functions under the same names; what a job needs
is passed as keyword arguments of plain values, its settings and database are opened by
whoever runs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from typing import Any

from papersift.digest import outbox
from papersift.jobs import daily
from papersift.settings import Settings
from papersift.store.db import Database

log = logging.getLogger("papersift.jobs")


def _daily(settings: Settings, db: Database, *, day: str | None = None) -> dict[str, Any]:
    report = daily.run_daily(settings, db, day=date.fromisoformat(day) if day else None)
    return report.to_dict()


def _deliver(
    settings: Settings, db: Database, *, ids: list[int] | None = None, due_only: bool = True
) -> dict[str, Any]:
    return outbox.deliver(settings, db, ids=ids, due_only=due_only).to_dict()


JOBS: dict[str, Callable[..., dict[str, Any]]] = {"daily": _daily, "mail.deliver": _deliver}


def run_job(name: str, settings: Settings, db: Database, **kwargs: Any) -> dict[str, Any]:
    """Run one job now, in this thread; KeyError for an unknown name."""
    return JOBS[name](settings, db, **kwargs)


class InProcessRunner:
    """Runs jobs in a small thread pool of this process: no queue to set up, and nothing
    survives the process; what a job must not lose is in the database already (the
    outbox, the daily run's steps), so the next run picks it up."""

    def __init__(self, settings: Settings, db: Database, workers: int = 1) -> None:
        self.settings = settings
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="papersift-job")
        self._lock = threading.Lock()

    def defer(self, name: str, **kwargs: Any) -> Future[dict[str, Any]]:
        """Start ``name`` in the background; its future holds the result."""
        if name not in JOBS:
            raise KeyError(f"unknown job {name!r}")
        with self._lock:
            future = self._pool.submit(run_job, name, self.settings, self.db, **kwargs)
        future.add_done_callback(self._report)
        return future

    @staticmethod
    def _report(future: Future[dict[str, Any]]) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("background job failed: %s: %s", exc.__class__.__name__, exc)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
