"""The PostgreSQL job queue: papersift's jobs as procrastinate tasks.

Why procrastinate: the queue lives in the PostgreSQL database papersift already needs for
several hosts (no Redis or RabbitMQ to run, back up and secure besides it), a job is
deferred in a plain SQL insert, workers are woken by LISTEN/NOTIFY, and it has what the jobs
need as designed: retries with backoff, locks (one index catch-up at a time), queueing
locks (no pile of identical waiting jobs) and periodic tasks deferred exactly once per
tick however many workers run. Celery or Dramatiq would need a broker next to the database.

Every job of ``jobs.tasks`` becomes a task of the same name. ``papersift worker`` runs
them (:func:`run_worker`); any other process defers them (:class:`ProcrastinateQueue`).
A job's last error goes to ``job_errors``; procrastinate itself records the state.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job as PJob
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from papersift.jobs import tasks
from papersift.jobs.info import FROM_PROCRASTINATE, JobInfo, empty_counts
from papersift.settings import Settings
from papersift.store import queue as store
from papersift.store.db import Database, StoreError

log = logging.getLogger("papersift.jobs")

CLEANUP_HOURS = 72  # succeeded jobs are removed after this; failed ones are kept
WORKER_SEEN = 60.0  # a worker whose heartbeat is older is not counted as alive


class Backoff(BaseRetryStrategy):
    """A job's :class:`~papersift.jobs.tasks.Retry` schedule; never for ``JobFailed``."""

    def __init__(self, retry: tasks.Retry) -> None:
        self.retry = retry

    def get_retry_decision(self, *, exception: BaseException, job: PJob) -> RetryDecision | None:
        if isinstance(exception, tasks.JobFailed) or job.attempts + 1 >= self.retry.attempts:
            return None
        return RetryDecision(retry_in={"seconds": int(self.retry.delay(job.attempts + 1))})


class _Runtime:
    """What a worker process's tasks run against: set by :func:`run_worker`."""

    settings: Settings | None = None
    db: Database | None = None


def _execute(name: str, context: JobContext, kwargs: dict[str, Any]) -> dict[str, Any]:
    settings, db = _Runtime.settings, _Runtime.db
    if settings is None or db is None:
        raise tasks.JobFailed("this process is not a papersift worker")
    kwargs.pop("timestamp", None)  # periodic runs pass the tick; the jobs do not need it
    job = context.job
    try:
        result = tasks.run_job(name, settings, db, **kwargs)
    except Exception as exc:
        text = f"{exc.__class__.__name__}: {exc}"[:2000]
        try:
            with db.session() as s:
                store.record_error(s, job.id or 0, name, job.attempts + 1, text, _now())
        except StoreError:
            log.exception("could not record the error of job %s", job.id)
        raise
    if job.attempts:  # an earlier attempt failed: its error is no longer the job's state
        with db.session() as s:
            store.clear_error(s, job.id or 0)
    return result


def _now() -> datetime:
    return datetime.now(UTC)


def _task_function(name: str) -> Any:
    def run(context: JobContext, **kwargs: Any) -> dict[str, Any]:
        return _execute(name, context, kwargs)

    run.__name__ = name.replace(".", "_")
    return run


def build_app(
    settings: Settings, *, worker: bool = False, periodic: bool = False
) -> procrastinate.App:
    """A procrastinate app with every job registered (and the periodic ones when asked);
    a worker uses the asynchronous connector, deferring processes the synchronous one."""
    info = store.queue_conninfo(settings.db_url)
    connector: procrastinate.BaseConnector
    if worker:
        connector = procrastinate.PsycopgConnector(min_size=1, max_size=4, **info)
    else:
        connector = procrastinate.SyncPsycopgConnector(min_size=0, max_size=4, **info)
    app = procrastinate.App(connector=connector)
    for job in tasks.JOBS.values():
        lock = job.name if job.exclusive else None
        app.task(
            name=job.name,
            queue=job.queue,
            retry=Backoff(job.retry),
            pass_context=True,
            lock=lock,
            queueing_lock=lock,
        )(_task_function(job.name))
    app.task(name="jobs.cleanup", queue="default", pass_context=True)(_cleanup)
    app.task(name="jobs.rescue", queue="default", pass_context=True)(_rescue)
    if periodic:
        _periodic(app, settings)
    return app


def _periodic(app: procrastinate.App, settings: Settings) -> None:
    """The jobs that run on a clock: deferred once per tick for all workers together."""
    if settings.queue_daily_cron:
        app.periodic(cron=settings.queue_daily_cron, periodic_id="daily")(app.tasks["daily"])
    # From the digest hour to midnight, hourly: the ledger sends each digest once, later
    # ticks retry what failed.
    hours = f"0 {settings.digest_hour}-23 * * *"
    app.periodic(cron=hours, periodic_id="digests")(app.tasks["digests"])
    # Outbox mail whose retry time has come (the outbox's own backoff schedule).
    app.periodic(cron="*/5 * * * *", periodic_id="outbox")(app.tasks["mail.deliver"])
    app.periodic(cron="17 * * * *", periodic_id="cleanup")(app.tasks["jobs.cleanup"])
    app.periodic(cron="*/10 * * * *", periodic_id="rescue")(app.tasks["jobs.rescue"])


async def _rescue(context: JobContext, timestamp: int | None = None) -> dict[str, Any]:
    """Queue again the jobs of workers that died mid-job (no heartbeat for
    ``WORKER_SEEN``): procrastinate leaves them ``doing`` until someone does. Each job is
    safe to run again (``jobs.tasks``)."""
    manager = context.app.job_manager
    stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=WORKER_SEEN))
    for job in stalled:
        log.warning("job %s #%s: its worker died; queued again", job.task_name, job.id)
        await manager.retry_job(job)
    return {"requeued": len(stalled)}


async def _cleanup(context: JobContext, timestamp: int | None = None) -> dict[str, Any]:
    """Remove succeeded jobs older than ``CLEANUP_HOURS`` (failed ones stay for an
    operator) and the errors of jobs that are gone."""
    await context.app.job_manager.delete_old_jobs(nb_hours=CLEANUP_HOURS)
    db = _Runtime.db
    pruned = 0
    if db is not None:

        def prune() -> int:
            with db.session() as s:
                return store.prune_errors(s)

        pruned = await asyncio.to_thread(prune)
    return {"errors_pruned": pruned}


def run_worker(
    settings: Settings,
    db: Database,
    *,
    concurrency: int | None = None,
    queues: list[str] | None = None,
    wait: bool = True,
    periodic: bool = True,
) -> None:
    """Run jobs until stopped (SIGINT/SIGTERM finish the running jobs first); with
    ``wait=False`` return once no job is waiting. ``periodic``: also defer the jobs that
    run on a clock (each tick once, however many workers do it; not with ``wait=False``)."""
    with db.engine.connect() as conn:
        problem = store.schema_problem(conn)
    if problem:
        raise tasks.JobFailed(problem)
    _Runtime.settings, _Runtime.db = settings, db
    app = build_app(settings, worker=True, periodic=periodic and wait)

    options: dict[str, Any] = {"queues": queues} if queues else {}

    async def main() -> None:
        async with app.open_async():
            await app.run_worker_async(
                concurrency=concurrency or settings.worker_concurrency,
                wait=wait,
                name=f"papersift-{settings.home.name}",
                delete_jobs="never",
                update_heartbeat_interval=10.0,
                stalled_worker_timeout=WORKER_SEEN,
                **options,
            )

    asyncio.run(main())


def _info(r: Any) -> JobInfo:
    return JobInfo(
        id=r.id, task=r.task_name, args=dict(r.args or {}),
        status=FROM_PROCRASTINATE.get(r.status, r.status), attempts=r.attempts,
        queue=r.queue_name, error=r.error, scheduled_at=r.scheduled_at,
        started_at=r.started_at, finished_at=r.finished_at,
    )  # fmt: skip


class ProcrastinateQueue:
    """Defers jobs to the PostgreSQL queue and reads its state."""

    kind = "procrastinate"

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._app: procrastinate.App | None = None

    def _opened(self) -> procrastinate.App:
        if self._app is None:
            app = build_app(self.settings)
            app.open()
            self._app = app
        return self._app

    def enqueue(self, name: str, **kwargs: Any) -> int | None:
        """Defer job ``name``; its id, or None when an exclusive job already waits."""
        tasks.get(name)
        try:
            return int(self._opened().tasks[name].defer(**kwargs))
        except pexc.AlreadyEnqueued:
            return None

    def jobs(self, statuses: list[str] | None = None, limit: int = 100) -> list[JobInfo]:
        """The newest jobs first; ``statuses`` in papersift's names (queued, failed, ...)."""
        wanted = [k for k, v in FROM_PROCRASTINATE.items() if v in statuses] if statuses else None
        with self.db.session() as s:
            rows = store.recent(s, statuses=wanted, limit=limit)
        return [_info(r) for r in rows]

    def counts(self) -> dict[str, int]:
        found = empty_counts()
        with self.db.session() as s:
            for status, n in store.counts(s).items():
                ours = FROM_PROCRASTINATE.get(status, status)
                found[ours] = found.get(ours, 0) + n
        return found

    def depth(self) -> dict[str, int]:
        with self.db.session() as s:
            return store.depth(s)

    def retry(self, job_id: int) -> JobInfo:
        """Queue a failed (or cancelled) job again, now; LookupError if there is none."""
        with self.db.session() as s:
            row = store.get_job(s, job_id)
        if row is None or row.status not in ("failed", "cancelled", "aborted"):
            state = "no such job" if row is None else f"it is {FROM_PROCRASTINATE[row.status]}"
            raise LookupError(f"job {job_id} cannot be retried: {state}")
        self._opened().job_manager.retry_job_by_id(job_id, retry_at=_now())
        with self.db.session() as s:
            store.clear_error(s, job_id)
        return self.job(job_id)

    def job(self, job_id: int) -> JobInfo:
        """One job by id; LookupError if there is none."""
        with self.db.session() as s:
            rows = store.recent(s, job_id=job_id, limit=1)
        if not rows:
            raise LookupError(f"no job {job_id}")
        return _info(rows[0])

    def check(self) -> dict[str, Any]:
        """Readiness: the queue's tables answer, and how many workers are alive."""
        try:
            with self.db.session() as s:
                waiting = sum(store.depth(s).values())
                workers = store.live_workers(s, WORKER_SEEN)
        except StoreError as exc:
            return {"ok": False, "kind": self.kind, "reason": str(exc).splitlines()[0][:200]}
        detail: dict[str, Any] = {"ok": True, "kind": self.kind, "waiting": waiting}
        detail["workers"] = workers
        if workers == 0:
            detail["warning"] = "no papersift worker is running: jobs wait until one starts"
        return detail

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
