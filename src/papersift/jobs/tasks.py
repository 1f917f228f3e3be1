"""The background jobs by name: what each does, and how it is retried.

A job is a plain function of (settings, database, keyword arguments of plain JSON values)
that returns a JSON-able report and keeps no state of its own. Whatever must not be lost
is in the database before the job is asked for (a mail in the outbox, a digest's ledger
row, the daily run's steps), so a job that is retried, or runs twice at once on two
workers, repeats no effect: the outbox claims a mail once, the ledger sends a digest once,
the daily run is owned by one process.

A job raises :class:`RetryLater` (or any store, SMTP or OS error) when trying again later
may work, and :class:`JobFailed` when it cannot (a bad setting): the queue retries the
first kind with backoff and gives up on the second at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from papersift.settings import Settings
from papersift.store.db import Database

JobFunction = Callable[..., dict[str, Any]]


class JobFailed(Exception):
    """The job cannot succeed as configured: retrying will not help."""


class RetryLater(Exception):
    """The job did not finish for a reason that may pass (SMTP down, a lock held)."""


@dataclass(frozen=True)
class Retry:
    """Up to ``attempts`` runs in all; the n-th retry waits ``base ** n`` seconds."""

    attempts: int
    base: int

    def delay(self, attempt: int) -> float:
        """Seconds before run ``attempt + 1`` after ``attempt`` failed runs."""
        return float(self.base**attempt)


@dataclass(frozen=True)
class Job:
    """A job's name, function and queue behaviour.

    ``exclusive``: at most one runs at a time (across every worker) and at most one waits;
    a second request while one waits is dropped (the waiting one will do the work)."""

    name: str
    run: JobFunction
    retry: Retry
    exclusive: bool = False
    queue: str = "default"


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise JobFailed(f"day must be YYYY-MM-DD, got {value!r}") from None


def daily(settings: Settings, db: Database, *, day: str | None = None) -> dict[str, Any]:
    """The day's job (``jobs.daily``): harvest, index, digests, outbox; resumable."""
    from papersift.jobs.daily import DailyBusy, DailyError, run_daily

    try:
        report = run_daily(settings, db, day=_day(day))
    except DailyBusy as exc:
        raise RetryLater(str(exc)) from exc
    except DailyError as exc:
        raise JobFailed(str(exc)) from exc
    if not report.ok:
        raise RetryLater(report.error or "the daily job did not finish")
    return report.to_dict()


def deliver_mail(
    settings: Settings, db: Database, *, ids: list[int] | None = None, due_only: bool = True
) -> dict[str, Any]:
    """Deliver outbox mails (``ids``, or every waiting one whose time has come).

    The outbox row stays the durable record and keeps its own count of tries; this job only
    decides when to try again: asked for given mails, it fails (and is retried with
    backoff) while any of them is still waiting, and once they went, it also sends up to
    20 others whose time has come."""
    from papersift.digest import outbox
    from papersift.digest.smtp import SmtpConfigError

    try:
        report = outbox.deliver(settings, db, ids=ids, due_only=due_only)
    except SmtpConfigError as exc:
        raise JobFailed(str(exc)) from exc
    if report.stopped:
        raise RetryLater(f"mail not delivered: {report.stopped}")
    if ids and report.retry:
        raise RetryLater(f"{report.retry} mail(s) not delivered yet: {'; '.join(report.errors)}")
    result = report.to_dict()
    if ids and report.sent:  # the server works again: send what else waits for it
        result["others"] = outbox.OutboxSender(settings, db).deliver(limit=20).to_dict()
    return result


def send_digests(settings: Settings, db: Database, *, day: str | None = None) -> dict[str, Any]:
    """The digests due on ``day`` (default today, UTC), each exactly once (the ledger)."""
    from papersift.digest import outbox
    from papersift.digest.run import run_digests

    if not outbox.smtp_configured(settings):
        return {"skipped": "no SMTP configured"}
    the_day = _day(day) or datetime.now(UTC).date()
    report = run_digests(settings, db, day=the_day, rate=settings.smtp_rate)
    if not report.ok:
        raise RetryLater(f"digests not all sent: {report.aborted or report.counts()}")
    return {"day": the_day.isoformat(), "counts": report.counts()}


def sync_index(settings: Settings, db: Database) -> dict[str, Any]:
    """Bring this host's search index in step with the database: embeds newly ingested
    papers (``search.indexer``'s catch-up), resumable in chunks."""
    from papersift.search.service import get_service

    return dict(get_service(settings, db).sync().to_dict())


def publish_snapshot(settings: Settings, db: Database) -> dict[str, Any]:
    """Publish the index's newest generation to ``snapshot_url`` (``search.snapshots``):
    a base, or a delta of what changed since."""
    from papersift.search import snapshots

    try:
        snapshots.Store.of(settings)  # no snapshot_url, or s3:// without s3fs: say so once
    except snapshots.SnapshotError as exc:
        raise JobFailed(str(exc)) from exc
    try:
        return {"published": snapshots.publish_snapshot(settings, db)}
    except snapshots.SnapshotError as exc:  # an empty index, or the store failed: later
        raise RetryLater(str(exc)) from exc


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("mail.deliver", deliver_mail, Retry(attempts=8, base=3), queue="mail"),
        Job("digests", send_digests, Retry(attempts=6, base=4), queue="mail"),
        Job("daily", daily, Retry(attempts=4, base=30), exclusive=True),
        Job("index.sync", sync_index, Retry(attempts=5, base=10), exclusive=True),
        Job("snapshots.publish", publish_snapshot, Retry(attempts=5, base=10), exclusive=True),
    )
}


def get(name: str) -> Job:
    """The job called ``name``; KeyError naming the known ones."""
    try:
        return JOBS[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r} (known: {', '.join(sorted(JOBS))})") from None


def run_job(name: str, settings: Settings, db: Database, **kwargs: Any) -> dict[str, Any]:
    """Run one job now, in this thread."""
    return get(name).run(settings, db, **kwargs)
