"""The in-process runner: the job queue of the embedded (SQLite) setup.

Jobs run in a small thread pool of the process that asked for them (``papersift serve``,
a CLI command), with the same names, functions and retry schedule as on the PostgreSQL
queue (``jobs.tasks``), so one command is still all a single-machine install needs.
Nothing here survives the process, and nothing needs to: what a job must not lose is in
the database before it is asked for (the outbox, the daily run's steps, the digest
ledger), so the next run picks it up. The last ``history`` jobs are kept in memory for
``/admin/jobs`` and ``/metrics``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from papersift.jobs.info import FAILED, QUEUED, RUNNING, SUCCEEDED, JobInfo, now
from papersift.jobs.tasks import JOBS, JobFailed, get, run_job
from papersift.settings import Settings
from papersift.store.db import Database

log = logging.getLogger("papersift.jobs")

__all__ = ["JOBS", "InProcessRunner", "run_job"]


class InProcessRunner:
    """Runs jobs in this process's threads, retrying failures on the job's schedule."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        workers: int = 1,
        *,
        history: int = 500,
        delay_scale: float = 1.0,
    ) -> None:
        self.settings = settings
        self.db = db
        self.history = history
        self.delay_scale = delay_scale  # tests shorten the backoff
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="papersift-job")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._jobs: OrderedDict[int, JobInfo] = OrderedDict()
        self._timers: set[threading.Timer] = set()
        self._closed = False

    def defer(self, name: str, **kwargs: Any) -> JobInfo:
        """Start ``name`` in the background; ``.result(timeout)`` waits for its report.
        KeyError for an unknown job. An exclusive job already waiting is returned as is."""
        job = get(name)
        with self._lock:
            if job.exclusive:
                for info in self._jobs.values():
                    if info.task == name and info.status == QUEUED:
                        return info
            info = JobInfo(next(self._ids), name, kwargs, QUEUED, queue=job.queue)
            self._jobs[info.id] = info
            while len(self._jobs) > self.history:
                oldest = next(iter(self._jobs.values()))
                if oldest.status in (QUEUED, RUNNING):
                    break
                self._jobs.popitem(last=False)
            self._submit(info)
        return info

    def _submit(self, info: JobInfo) -> None:
        if not self._closed:
            self._pool.submit(self._run, info)

    def _run(self, info: JobInfo) -> None:
        job = JOBS[info.task]
        info.status, info.attempts, info.started_at = RUNNING, info.attempts + 1, now()
        try:
            report = run_job(info.task, self.settings, self.db, **info.args)
        except Exception as exc:  # a job's failure is recorded, never kills the pool
            info.error = f"{exc.__class__.__name__}: {exc}"[:2000]
            if isinstance(exc, JobFailed) or info.attempts >= job.retry.attempts:
                log.error("job %s #%d failed for good: %s", info.task, info.id, info.error)
                self._finish(info, FAILED)
                return
            wait = job.retry.delay(info.attempts) * self.delay_scale
            log.warning(
                "job %s #%d failed (attempt %d), retried in %.0fs: %s",
                info.task, info.id, info.attempts, wait, info.error,
            )  # fmt: skip
            info.status = QUEUED
            timer = threading.Timer(wait, self._resubmit, args=(info,))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
            return
        info.report, info.error = report, None
        self._finish(info, SUCCEEDED)

    def _resubmit(self, info: JobInfo) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive()}
            self._submit(info)

    @staticmethod
    def _finish(info: JobInfo, status: str) -> None:
        info.status, info.finished_at = status, now()
        info.done.set()

    # -- what the admin page and metrics read ---------------------------------------------
    def list(self, status: str | None = None, limit: int = 100) -> list[JobInfo]:
        with self._lock:
            found = [j for j in reversed(self._jobs.values()) if status in (None, j.status)]
        return found[:limit]

    def retry(self, job_id: int) -> JobInfo:
        """Run a failed job again; LookupError if it is not a failed job of this process."""
        with self._lock:
            info = self._jobs.get(job_id)
            if info is None or info.status != FAILED:
                raise LookupError(f"no failed job {job_id} in this process")
            info.status, info.attempts, info.error = QUEUED, 0, None
            info.done.clear()
            self._submit(info)
        return info

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            for timer in self._timers:
                timer.cancel()
        self._pool.shutdown(wait=wait)
