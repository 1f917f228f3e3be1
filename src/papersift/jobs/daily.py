"""The daily job: harvest what is new, index it, send the due digests, deliver the outbox.

One run per day (UTC), recorded in ``daily_runs`` with the state of each step, so:

- a second run the same day does nothing (``already_done`` in its report);
- a run that was killed, or failed, resumes at the step that did not finish: the harvest
  at its next page (``harvest_state`` holds the position of the day's request), the
  index by bringing it in step with the database, the digests through their ledger
  (each exactly once), the outbox from what is still waiting;
- two runs at once cannot both work: the second one finds the day owned by a live process
  and stops (``DailyBusy``); a dead owner's run (same host and its process gone, or no
  sign of life for ``STALE``) is taken over.

"New" means since the last day whose run finished (the day before, on a first run): the
harvest asks for records from that day to this one, both included, so a day missed by a
broken timer is caught up on the next run. On a weekday a harvest that returns nothing
is a warning (a source that went stale looks like a quiet day); warnings do not fail the
run, they are listed in its report.

Each step is a plain function of (settings, database, run context), with no state of its
own, so a job queue can run the whole day or one step in a worker process.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from papersift.digest import outbox
from papersift.digest.run import run_digests
from papersift.digest.smtp import SmtpConfigError, SmtpError
from papersift.digest.subscriptions import CONFIRMED, list_subscribers
from papersift.ingest.harvest import HarvestConfig, HarvestError, harvest_arxiv, harvest_oai
from papersift.search.service import get_service
from papersift.settings import Settings
from papersift.store import daily_runs as store
from papersift.store.db import Database

STEPS = ("harvest", "index", "digests", "outbox")
STALE = timedelta(minutes=30)  # a run with no sign of life this long is taken over
HEARTBEAT = 30.0  # seconds between two signs of life while a step works
MAX_ERROR = 2000

Log = Callable[[str], None]


class DailyError(Exception):
    """The daily job cannot run as configured (bad ``daily_source``)."""


class DailyBusy(DailyError):
    """Another live process is running this day's job."""


@dataclass(frozen=True)
class Source:
    """Where the day's papers come from (``daily_source``)."""

    kind: str  # "oai" or "arxiv"
    target: str  # the OAI base URL or the arXiv query
    set_spec: str | None = None

    @classmethod
    def parse(cls, value: str) -> Source | None:
        """None for an empty setting; DailyError naming the problem for a bad one."""
        text = value.strip()
        if not text:
            return None
        kind, sep, rest = text.partition(":")
        rest = rest.strip()
        if not sep or kind not in ("oai", "arxiv") or not rest:
            raise DailyError(
                f"daily_source must be oai:URL, oai:URL#SET or arxiv:QUERY, got {value!r}"
            )
        if kind == "arxiv":
            return cls("arxiv", rest)
        url, _hash, set_spec = rest.partition("#")
        if not url.startswith(("http://", "https://")):
            raise DailyError(f"daily_source oai: needs an http(s) URL, got {url!r}")
        return cls("oai", url, set_spec.strip() or None)


@dataclass
class DailyReport:
    """What a run did: per step, its state and numbers; warnings for an operator."""

    day: date
    since: date | None = None
    status: str = store.RUNNING
    already_done: bool = False
    resumed: bool = False
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == store.DONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "status": self.status,
            "already_done": self.already_done,
            "resumed": self.resumed,
            "steps": self.steps,
            "warnings": self.warnings,
            "error": self.error,
        }


@dataclass
class RunContext:
    """What one step needs to know about the run it belongs to."""

    settings: Settings
    db: Database
    day: date
    since: date
    harvest: HarvestConfig
    warnings: list[str]
    alive: Callable[[], None]
    log: Log


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: str | None, heartbeat: datetime | None, now: datetime) -> bool:
    if owner is None:
        return True
    host, _sep, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return int(pid) == os.getpid()  # our own earlier run in this process
    return heartbeat is None or now - heartbeat > STALE


# -- steps ---------------------------------------------------------------------------------
def harvest_step(ctx: RunContext) -> dict[str, Any]:
    """Fetch the papers listed from ``since`` to the run's day; resumes a cut-off harvest."""
    source = Source.parse(ctx.settings.daily_source)
    if source is None:
        return {"skipped": "no daily_source set"}

    def on_page(_event: object) -> None:
        ctx.alive()

    if source.kind == "oai":
        result = harvest_oai(
            ctx.db, source.target, set_spec=source.set_spec, from_date=ctx.since,
            until_date=ctx.day, config=ctx.harvest, progress=on_page, log=ctx.log,
        )  # fmt: skip
    else:
        window = f"submittedDate:[{ctx.since:%Y%m%d}0000 TO {ctx.day:%Y%m%d}2359]"
        result = harvest_arxiv(
            ctx.db, f"({source.target}) AND {window}", max_results=ctx.settings.daily_max,
            url=ctx.settings.arxiv_api_url, config=ctx.harvest, progress=on_page, log=ctx.log,
        )  # fmt: skip
        if result.limit_reached:
            ctx.warnings.append(
                f"the harvest stopped at daily_max={ctx.settings.daily_max} papers; "
                "raise it to fetch the rest of the day"
            )
    if result.records == 0 and ctx.day.weekday() < 5:
        ctx.warnings.append(
            f"the harvest of {source.kind}:{source.target} from {ctx.since} to {ctx.day} "
            "returned no papers on a weekday: check that the source is still current"
        )
    return {
        "source": f"{source.kind}:{source.target}",
        "records": result.records,
        "added": result.added,
        "updated": result.updated,
        "pages": result.pages,
        "resumed": result.resumed,
    }


def index_step(ctx: RunContext) -> dict[str, Any]:
    """Bring the search indexes in step with the database (embeds what is missing)."""
    last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last > HEARTBEAT:
            last = time.monotonic()
            ctx.alive()

    report = get_service(ctx.settings, ctx.db).sync(progress=progress)
    return dict(report.to_dict())


def digests_step(ctx: RunContext) -> dict[str, Any]:
    """Send the digests due today, each exactly once (the digest ledger)."""
    if not outbox.smtp_configured(ctx.settings):
        if list_subscribers(ctx.db, CONFIRMED):
            ctx.warnings.append("no SMTP configured (smtp_url = none): no digest was sent")
        return {"skipped": "no SMTP configured"}
    report = run_digests(ctx.settings, ctx.db, day=ctx.day, rate=ctx.settings.smtp_rate)
    ctx.warnings.extend(report.warnings)
    if not report.ok:
        raise DailyError(
            f"digests not all sent ({report.aborted or report.counts()}): "
            "see `papersift digest send`; rerun `papersift daily` to retry"
        )
    return {"counts": report.counts()}


def outbox_step(ctx: RunContext) -> dict[str, Any]:
    """Deliver what waits in the outbox; what cannot go now stays for the next run."""
    report = outbox.deliver(ctx.settings, ctx.db, due_only=False)
    if report.stopped:
        ctx.warnings.append(f"outbox not delivered: {report.stopped}")
    if report.held:
        ctx.warnings.append(
            f"{report.held} mail(s) kept in the outbox (no SMTP configured): papersift mail outbox"
        )
    return report.to_dict()


STEP_FUNCTIONS: dict[str, Callable[[RunContext], dict[str, Any]]] = {
    "harvest": harvest_step,
    "index": index_step,
    "digests": digests_step,
    "outbox": outbox_step,
}


# -- the run --------------------------------------------------------------------------------
def today() -> date:
    """The run's day: UTC, so hosts in different time zones agree on it."""
    return datetime.now(UTC).date()


def _begin(db: Database, day: date, owner: str) -> tuple[DailyReport, dict[str, dict[str, Any]]]:
    """Claim the day's run (create it, or take it over from a dead owner)."""
    now = datetime.now(UTC)
    report = DailyReport(day)
    for _ in range(3):
        try:
            with db.session() as s:
                row = store.get(s, day)
                if row is None:
                    since = store.last_done_day(s, day) or day - timedelta(days=1)
                    store.create(s, day, since=since, owner=owner, now=now)
                    report.since = since
                    return report, {}
                report.since = row.since
                steps = dict(row.steps or {})
                if row.status == store.DONE:
                    report.status, report.already_done = store.DONE, True
                    report.steps, report.warnings = steps, list(row.warnings or [])
                    return report, steps
                if row.status == store.RUNNING and not _owner_dead(
                    row.owner, row.heartbeat_at, now
                ):
                    raise DailyBusy(
                        f"the daily job for {day} is running in {row.owner} "
                        f"(last sign of life {row.heartbeat_at:%H:%M:%S} UTC)"
                    )
                if not store.take_over(s, day, old_owner=row.owner, owner=owner, now=now):
                    continue
                report.resumed = bool(steps)
                report.warnings = list(row.warnings or [])
                return report, steps
        except store.RunTaken:
            continue
    raise DailyBusy(f"another process claimed the daily job for {day} at the same time")


def run_daily(
    settings: Settings,
    db: Database,
    *,
    day: date | None = None,
    harvest: HarvestConfig | None = None,
    log: Log | None = None,
    on_step: Callable[[str, dict[str, Any]], None] | None = None,
) -> DailyReport:
    """Run (or resume, or skip) the day's job; see the module docstring.

    Raises DailyError for a bad ``daily_source`` (before anything is written) and
    DailyBusy when a live process owns the day. A step that fails ends the run with status
    ``failed`` and its error in the report; the next run resumes there.
    """
    Source.parse(settings.daily_source)
    day = day or today()
    owner = owner_id()
    report, steps = _begin(db, day, owner)
    if report.already_done:
        return report
    log = log or (lambda _m: None)
    last_beat = [time.monotonic()]

    def alive() -> None:
        if time.monotonic() - last_beat[0] >= 1.0:
            last_beat[0] = time.monotonic()
            with db.session() as s:
                store.save(s, day, owner, heartbeat_at=datetime.now(UTC))

    ctx = RunContext(
        settings, db, day, report.since or day - timedelta(days=1),
        harvest or HarvestConfig(), report.warnings, alive, log,
    )  # fmt: skip
    for name in STEPS:
        if steps.get(name, {}).get("status") == store.DONE:
            report.steps[name] = steps[name]
            continue
        started = time.perf_counter()
        try:
            detail = STEP_FUNCTIONS[name](ctx)
        except (DailyError, HarvestError, SmtpError, SmtpConfigError, OSError) as exc:
            steps[name] = {"status": store.FAILED, "error": str(exc)[:MAX_ERROR]}
            report.steps[name] = steps[name]
            report.status, report.error = store.FAILED, f"{name}: {exc}"[:MAX_ERROR]
            _save(db, day, owner, steps, report, status=store.FAILED, error=report.error)
            return report
        steps[name] = {"status": store.DONE, "seconds": round(time.perf_counter() - started, 2)}
        steps[name].update(detail)
        report.steps[name] = steps[name]
        _save(db, day, owner, steps, report)
        if on_step:
            on_step(name, steps[name])
    report.status = store.DONE
    _save(db, day, owner, steps, report, status=store.DONE, finished_at=datetime.now(UTC))
    return report


def _save(
    db: Database,
    day: date,
    owner: str,
    steps: dict[str, dict[str, Any]],
    report: DailyReport,
    **values: Any,
) -> None:
    with db.session() as s:
        saved = store.save(
            s, day, owner, steps=dict(steps), warnings=list(report.warnings),
            heartbeat_at=datetime.now(UTC), **values,
        )  # fmt: skip
    if not saved:
        raise DailyBusy(f"the daily job for {day} was taken over by another process")
