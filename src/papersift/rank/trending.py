"""Trending papers: a gravity-style, time-decayed score from upvotes and page views.

For a window W (day, week or month) and a paper p::

    points(p) = upvotes cast on p within W + VIEW_WEIGHT * views of p within W
    age(p)    = hours since p appeared (published date, else first seen), capped at W in hours
    score(p)  = points(p) / (age(p) + 2) ** GRAVITY

This is the Hacker News "gravity" formula with GRAVITY = 1.5 and a view worth a tenth of an
upvote. The age cap is ours: inside a window, newer papers win a tie in attention, but a
classic that gets a burst of votes this week is not buried by its publication year, since
every paper older than the window is penalised alike. Papers with no votes or views in the
window score 0 and follow, newest first seen first, so the list is never empty while the
database has papers.

Only papers with activity in the window are scored (two GROUP BY queries on indexed
columns), and the rest is one indexed "newest first" query: cheap enough to compute per
request, and the web app caches it for a few seconds on top (see ``TrendingCache``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

from papersift.store import papers as paper_store
from papersift.store import votes as vote_store
from papersift.store.db import Session

WINDOWS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
GRAVITY = 1.5
VIEW_WEIGHT = 0.1


def _arrival(published: date | None, first_seen: datetime | None, now: datetime) -> datetime:
    if published is not None:
        return datetime.combine(published, dtime(), tzinfo=UTC)
    return first_seen or now


def decayed_score(points: float, age_hours: float, window: timedelta) -> float:
    """The formula of the module docstring for one paper."""
    capped = min(max(age_hours, 0.0), window.total_seconds() / 3600)
    return points / (capped + 2) ** GRAVITY


def check_window(window: str) -> timedelta:
    try:
        return WINDOWS[window]
    except KeyError:
        raise ValueError(f"unknown window {window!r}: use one of {', '.join(WINDOWS)}") from None


def activity(session: Session, since: datetime) -> dict[str, float]:
    """Points (votes + weighted views) per paper since ``since``."""
    points: dict[str, float] = {}
    for paper_id, count in vote_store.votes_since(session, since).items():
        points[paper_id] = points.get(paper_id, 0.0) + float(count)
    for paper_id, count in vote_store.views_since(session, since.date()).items():
        points[paper_id] = points.get(paper_id, 0.0) + VIEW_WEIGHT * float(count)
    return points


def trending(
    session: Session, window: str = "day", *, limit: int = 20, now: datetime | None = None
) -> list[tuple[str, float]]:
    """(paper_id, score) best first; inactive papers follow, newest first seen first."""
    span = check_window(window)
    if limit <= 0:
        return []
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:  # a naive "now" is UTC, as everywhere in the store
        now = now.replace(tzinfo=UTC)
    points = activity(session, now - span)
    scored: list[tuple[str, float, datetime]] = []
    for paper_id, published, first_seen in paper_store.arrivals(session, list(points)):
        age = (now - _arrival(published, first_seen, now)).total_seconds() / 3600
        seen = first_seen or now
        scored.append((paper_id, decayed_score(points[paper_id], age, span), seen))
    scored.sort(key=lambda t: (-t[1], -t[2].timestamp(), t[0]))
    out = [(pid, score) for pid, score, _ in scored[:limit]]
    if len(out) < limit:
        taken = {pid for pid, _ in out}
        # Over-fetch by the number already taken so the filler never comes up short.
        for paper_id in paper_store.recently_seen_ids(session, limit - len(out) + len(taken)):
            if paper_id not in taken:
                out.append((paper_id, 0.0))
                if len(out) == limit:
                    break
    return out


def record_view(session: Session, paper_id: str, day: date | None = None) -> None:
    """Count one view of a paper on a day (UTC today by default); an upsert, race-safe."""
    vote_store.add_view(session, paper_id, day or datetime.now(UTC).date())


class TrendingCache:
    """Trending lists per (window, limit), recomputed at most every ``ttl`` seconds.

    Thread-safe; ``invalidate()`` after a vote so the voter sees the change at once.
    """

    def __init__(self, compute: Callable[[str, int], list[tuple[str, float]]], ttl: float = 10.0):
        self._compute = compute
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, list[tuple[str, float]]]] = {}
        self._generation = 0  # bumped by invalidate(): a result computed before is not kept

    def get(self, window: str, limit: int) -> list[tuple[str, float]]:
        key = (window, limit)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            generation = self._generation
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        value = self._compute(window, limit)
        with self._lock:
            if generation == self._generation:
                self._entries[key] = (now, value)
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
