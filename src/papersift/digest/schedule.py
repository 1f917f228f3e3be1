"""The optional digest scheduler inside ``papersift serve --digests``.

A daemon thread wakes every ``interval`` seconds and, once the local time is past
``hour`` (``PAPERSIFT_DIGEST_HOUR``, default 7), runs the digests of the day. Running more
often than needed is harmless: the ledger makes each (subscriber, period) go out once, so
a late wake-up, a restart of the server or a cron job next to it never double-sends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date, datetime

from papersift.digest.run import RunReport, run_digests
from papersift.settings import Settings
from papersift.store.db import Database

log = logging.getLogger("papersift.digest")

DEFAULT_HOUR = 7
DEFAULT_INTERVAL = 900.0


def _deliver_outbox(settings: Settings, db: Database) -> None:
    """On every wake: retry the outbox mail whose time has come (a sign-up mail that
    could not go at once), so a server alone, without timers, still delivers it."""
    from papersift.digest import outbox

    if not outbox.smtp_configured(settings):
        return
    try:
        report = outbox.deliver(settings, db, due_only=True)
    except Exception:
        log.exception("outbox delivery failed")
        return
    if report.sent or report.errors:
        log.info("outbox: %s", report.to_dict())


def start_scheduler(
    settings: Settings,
    db: Database,
    *,
    hour: int | None = None,
    interval: float = DEFAULT_INTERVAL,
    rate: float | None = None,
    clock: Callable[[], datetime] = datetime.now,
    on_report: Callable[[RunReport], None] | None = None,
) -> Callable[[], None]:
    """Start the scheduler thread; returns a function that stops it (and waits for it)."""
    hour = settings.digest_hour if hour is None else hour
    rate = settings.smtp_rate if rate is None else rate
    stop = threading.Event()

    def loop() -> None:
        last_clean: date | None = None
        while not stop.is_set():
            now = clock()
            if now.hour >= hour and last_clean != now.date():
                try:
                    report = run_digests(
                        settings, db, day=now.date(), rate=rate, should_stop=stop.is_set
                    )
                    counts = report.counts()
                    log.info("digests for %s: %s", now.date(), counts)
                    if report.aborted:
                        log.warning("digest run stopped: %s", report.aborted)
                    elif not counts.get("failed"):
                        last_clean = now.date()  # nothing left to retry today
                    if on_report:
                        on_report(report)
                except Exception:
                    log.exception("digest run failed")
            _deliver_outbox(settings, db)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="papersift-digests", daemon=True)
    thread.start()
    log.info("digest scheduler started: daily after %02d:00, checking every %.0fs", hour, interval)

    def stop_scheduler() -> None:
        stop.set()
        thread.join(timeout=60)

    return stop_scheduler
