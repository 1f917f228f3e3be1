"""Trending papers: a gravity-style, time-decayed score from upvotes and page views.

For a window W (day, week or month) and a paper p::

    points(p) = upvotes cast on p within W + VIEW_WEIGHT * views of p within W
    age(p)    = hours since p appeared (published date, else first seen), capped at W in hours
    score(p)  = points(p) / (age(p) + 2) ** GRAVITY

This is the Hacker News "gravity" formula with GRAVITY = 1.5 and a view worth a tenth of an
upvote. The age cap is ours: inside a window, newer papers win a tie in attention, but a
classic that gets a burst of votes this week is not buried by its publication year, since
every paper older than the window is penalised alike.

Papers with no votes or views in the window score 0 and follow, so the list is never empty
while the database has papers: first the papers whose day (``model.paper_day``) falls in
the window's last days with papers (the newest day on or before today, and the days before
it up to the window's length), those that more saved listing pages include first, then
those with a code link, then newest; after them every other paper, newest day first. A
fresh install has no votes or views at all: its trending list is then this fallback, and
:attr:`Ranking.signal` says which signal ranked the list ("votes", "views" or "newest"),
so pages and the API can say so.

Only papers with activity in the window are scored (two GROUP BY queries on indexed
columns), and the rest is one indexed "newest first" query: cheap enough to compute per
request, and the web app caches it for a few seconds on top (see ``TrendingCache``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Literal

from papersift.store import daily as daily_store
from papersift.store import papers as paper_store
from papersift.store import votes as vote_store
from papersift.store.db import Session

WINDOWS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
GRAVITY = 1.5
VIEW_WEIGHT = 0.1
Signal = Literal["votes", "views", "newest"]
SIGNAL_NOTES: dict[str, str] = {
    "votes": "Upvotes and views, decayed with age.",
    "views": "No votes in this window yet: ranked by views, decayed with age.",
    "newest": "No votes or views yet: showing the newest days' papers, those on saved "
    "listing pages and with a code link first.",
}


@dataclass
class Ranking:
    """A trending list, best first, and the signal that ranked it (see the module doc)."""

    signal: Signal
    items: list[tuple[str, float]] = field(default_factory=list)


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


def _activity(session: Session, since: datetime) -> tuple[dict[str, float], Signal]:
    """Points (votes + weighted views) per paper since ``since``, and the strongest signal."""
    points: dict[str, float] = {}
    votes = vote_store.votes_since(session, since)
    views = vote_store.views_since(session, since.date())
    for paper_id, count in votes.items():
        points[paper_id] = points.get(paper_id, 0.0) + float(count)
    for paper_id, count in views.items():
        points[paper_id] = points.get(paper_id, 0.0) + VIEW_WEIGHT * float(count)
    signal: Signal = "votes" if votes else "views" if views else "newest"
    return points, signal


def activity(session: Session, since: datetime) -> dict[str, float]:
    """Points (votes + weighted views) per paper since ``since``."""
    return _activity(session, since)[0]


def _fallback(
    session: Session, span: timedelta, now: datetime, want: int, taken: set[str]
) -> list[str]:
    """Papers without activity for the rest of a list (see the module docstring)."""
    out: list[str] = []
    anchor = daily_store.previous_day(session, now.date() + timedelta(days=1))
    if anchor is not None:
        start = anchor - timedelta(days=max(span.days, 1) - 1)
        for paper_id in daily_store.listed_first(session, start, anchor, want + len(taken)):
            if paper_id not in taken:
                out.append(paper_id)
    if len(out) < want:
        seen = taken | set(out)
        # Over-fetch by what is already taken so the filler never comes up short.
        for paper_id in daily_store.newest_by_day(session, want - len(out) + len(seen)):
            if paper_id not in seen:
                out.append(paper_id)
    return out[:want]


def ranking(
    session: Session,
    window: str = "day",
    *,
    limit: int = 20,
    now: datetime | None = None,
    fallback: Literal["days", "arrival"] = "days",
) -> Ranking:
    """The trending list of a window, best first, with the signal that ranked it.

    Papers without activity follow in the ``fallback`` order: ``days`` (the pages: see the
    module docstring) or ``arrival`` (newest first seen first: what a digest wants, whose
    trending part is about what is new since the last mail)."""
    span = check_window(window)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:  # a naive "now" is UTC, as everywhere in the store
        now = now.replace(tzinfo=UTC)
    points, signal = _activity(session, now - span)
    if limit <= 0:
        return Ranking(signal)
    scored: list[tuple[str, float, datetime]] = []
    for paper_id, published, first_seen in paper_store.arrivals(session, list(points)):
        age = (now - _arrival(published, first_seen, now)).total_seconds() / 3600
        seen = first_seen or now
        scored.append((paper_id, decayed_score(points[paper_id], age, span), seen))
    scored.sort(key=lambda t: (-t[1], -t[2].timestamp(), t[0]))
    out = [(pid, score) for pid, score, _ in scored[:limit]]
    if len(out) < limit:
        taken = {pid for pid, _ in out}
        if fallback == "days":
            rest = _fallback(session, span, now, limit - len(out), taken)
        else:
            # Over-fetch by the number already taken so the filler never comes up short.
            fetched = paper_store.recently_seen_ids(session, limit - len(out) + len(taken))
            rest = [pid for pid in fetched if pid not in taken][: limit - len(out)]
        out.extend((pid, 0.0) for pid in rest)
    return Ranking(signal, out)


def trending(
    session: Session, window: str = "day", *, limit: int = 20, now: datetime | None = None
) -> list[tuple[str, float]]:
    """(paper_id, score) best first; papers without activity follow, newest first seen
    first (the digest's order; the pages use :func:`ranking`'s days fallback)."""
    return ranking(session, window, limit=limit, now=now, fallback="arrival").items


def record_view(session: Session, paper_id: str, day: date | None = None) -> None:
    """Count one view of a paper on a day (UTC today by default); an upsert, race-safe."""
    vote_store.add_view(session, paper_id, day or datetime.now(UTC).date())


class TrendingCache:
    """Trending lists per (window, limit), recomputed at most every ``ttl`` seconds.

    ``compute`` returns a :class:`Ranking` (or, for older callers, just its items).
    Thread-safe; ``invalidate()`` after a vote so the voter sees the change at once.
    """

    def __init__(
        self,
        compute: Callable[[str, int], Ranking | list[tuple[str, float]]],
        ttl: float = 10.0,
    ):
        self._compute = compute
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, Ranking]] = {}
        self._generation = 0  # bumped by invalidate(): a result computed before is not kept

    def ranked(self, window: str, limit: int) -> Ranking:
        """The cached :class:`Ranking` of a window (its signal and items)."""
        key = (window, limit)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            generation = self._generation
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        value = self._compute(window, limit)
        if not isinstance(value, Ranking):
            value = Ranking("votes" if any(s > 0 for _, s in value) else "newest", value)
        with self._lock:
            if generation == self._generation:
                self._entries[key] = (now, value)
        return value

    def get(self, window: str, limit: int) -> list[tuple[str, float]]:
        return self.ranked(window, limit).items

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
