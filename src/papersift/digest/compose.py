"""What goes into one subscriber's digest (``mail`` writes the message that carries it).

For a subscriber and a period (a day, or an ISO week for weekly subscribers):

1. Trending papers of the period (``papersift.rank.trending``) that are actually news:
   they had votes or views in the window, or were first seen since the last digest.
   Without that filter an idle site would mail its whole back catalogue, one day at a time.
2. Papers first seen since the subscriber's last digest that match a topic or sit in a
   followed collection. A topic is searched among the papers first seen since then (not the
   whole corpus, where new papers drown among old ones) and its matches are those above the
   search's relevance floor in its stricter digest mode (``search.floor.digest_keep``: the
   paper must hold the topic's rarer words or be close in meaning), so a narrow topic
   brings a handful and an unrelated one nothing.
3. For a subscriber whose address has a reader account (``digest.reader``): a section per
   tag (new recommendations for it) and one per saved search in the digest (its new
   matches).

No paper appears twice in a mail, no paper already mailed to the subscriber (table
``sent_papers``) comes back, nor one the reader was sent in any section or dismissed
(``reader_sent``, ``rec_feedback``), and at most ``max_papers`` go out: with other sections,
trending takes a third of the room, the sections fill the rest round-robin, and trending
fills whatever room they leave.

``Composer`` caches everything that does not depend on the subscriber (trending lists,
search hits per topic, collection members, paper rows) for the length of one run, so
composing for thousands of subscribers costs one indexed lookup of their sent papers each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from papersift.digest.subscriptions import Subscriber
from papersift.model import Paper
from papersift.rank.trending import WINDOWS, trending
from papersift.settings import Settings
from papersift.store import collections as collection_store
from papersift.store import ledger as ledger_store
from papersift.store import papers as paper_store
from papersift.store.db import Database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from papersift.digest.reader import ReaderSections
    from papersift.search.service import SearchService

log = logging.getLogger(__name__)

TRENDING_POOL = 200  # trending candidates fetched per window and run
HITS_PER_TOPIC = 1000  # matches kept per topic among the new papers (the search's maximum)
# A topic is searched once per run and hour of its subscribers' "since" (rounded down):
# subscribers of one daily run had their last digest within minutes of each other.
TOPIC_SINCE_STEP = timedelta(hours=1)
MAX_LOOKBACK = timedelta(days=30)  # a subscriber back from a long pause gets a month


def period_key(frequency: str, day: date) -> str:
    """Ledger period: the ISO date for daily digests, the ISO week (``2024-W18``) for weekly."""
    if frequency == "weekly":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return day.isoformat()


def window_of(frequency: str) -> str:
    """The trending window a digest of this frequency covers."""
    return "week" if frequency == "weekly" else "day"


def period_end(day: date) -> datetime:
    """The end of ``day`` in local time, as UTC: 'now' for a digest of a past day."""
    return datetime.combine(day + timedelta(days=1), time.min).astimezone().astimezone(UTC)


@dataclass
class Section:
    """One heading of a digest and its papers, in order. ``via`` names it in the reader's
    sent marks; ``link``, ``note`` and ``reasons`` (paper id -> why) are shown with it."""

    title: str
    papers: list[Paper] = field(default_factory=list)
    via: str = "digest"
    link: str = ""
    note: str = ""
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass
class Digest:
    """One subscriber's mail for one period (possibly empty)."""

    subscriber: Subscriber
    day: date
    period: str
    sections: list[Section] = field(default_factory=list)
    reader_id: int | None = None  # the account of the subscriber's address, if any

    @property
    def paper_ids(self) -> list[str]:
        return [p.id for s in self.sections for p in s.papers]

    def marks(self) -> list[tuple[str, list[str]]]:
        """(via, paper ids) per section: what the reader's sent marks record."""
        return [(s.via, [p.id for p in s.papers]) for s in self.sections if s.papers]

    @property
    def empty(self) -> bool:
        return not any(s.papers for s in self.sections)


class Composer:
    """Composes digests for one run; not thread-safe (one per run or thread)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        now: datetime | None = None,
        search: SearchService | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.now = now or datetime.now(UTC)
        self._search = search
        self._trending: dict[str, list[tuple[str, float]]] = {}
        self._topic_hits: dict[tuple[str, datetime], list[str]] = {}
        self._collections: dict[str, list[str]] = {}
        self._first_seen: dict[str, datetime] = {}
        self._papers: dict[str, Paper] = {}
        self._readers: ReaderSections | None = None
        self._warnings: list[str] = []

    @property
    def warnings(self) -> list[str]:
        extra = self._readers.warnings if self._readers is not None else []
        return self._warnings + extra

    def readers(self) -> ReaderSections:
        """Accounts and their tag and saved-search sections (``digest.reader``)."""
        if self._readers is None:
            from papersift.digest.reader import ReaderSections

            self._readers = ReaderSections(self.settings, self.db, self._service)
        return self._readers

    # -- shared, cached inputs ----------------------------------------------------------
    def _trending_for(self, s: Session, window: str) -> list[tuple[str, float]]:
        if window not in self._trending:
            self._trending[window] = trending(s, window, limit=TRENDING_POOL, now=self.now)
        return self._trending[window]

    def _service(self) -> SearchService:
        if self._search is None:  # loaded on the first topic: runs without topics skip it
            from papersift.search.service import get_service

            self._search = get_service(self.settings, self.db)
        return self._search

    def _topic(self, topic: str, since: datetime) -> list[str]:
        """Ids of the papers first seen since about ``since`` (see ``TOPIC_SINCE_STEP``; the
        caller keeps those after its own instant) that match ``topic``, best first."""
        step = TOPIC_SINCE_STEP.total_seconds()
        start = datetime.fromtimestamp(since.timestamp() // step * step, UTC)
        key = (topic.casefold(), start)
        if key in self._topic_hits:
            return self._topic_hits[key]
        ids: list[str] = []
        try:
            hits = self._service().matches(
                topic, since=start, limit=HITS_PER_TOPIC, mode="hybrid", digest=True
            )
            ids = [h.paper_id for h in hits]
        except Exception as exc:
            self._warnings.append(f"topic {topic!r} could not be searched: {exc}")
            log.warning("digest topic %r: search failed: %s", topic, exc)
        self._topic_hits[key] = ids
        return ids

    def _collection(self, s: Session, name: str) -> list[str]:
        if name not in self._collections:
            found = collection_store.get_collection(s, name)
            self._collections[name] = [e.paper_id for e in found.entries] if found else []
        return self._collections[name]

    def _load_first_seen(self, s: Session, ids: Iterable[str]) -> None:
        missing = [i for i in dict.fromkeys(ids) if i not in self._first_seen]
        if missing:
            for pid, _published, seen in paper_store.arrivals(s, missing):
                self._first_seen[pid] = seen or self.now

    def _load_papers(self, s: Session, ids: list[str]) -> dict[str, Paper]:
        missing = [i for i in ids if i not in self._papers]
        if missing:
            self._papers.update(paper_store.get_papers(s, missing))
        return {i: self._papers[i] for i in ids if i in self._papers}

    # -- one subscriber --------------------------------------------------------------------
    def since(self, sub: Subscriber) -> datetime:
        """Papers first seen after this instant count as new for ``sub``."""
        window = WINDOWS[window_of(sub.frequency)]
        start = sub.last_digest_at or (self.now - window)
        return max(start, self.now - MAX_LOOKBACK)

    def compose(self, sub: Subscriber, day: date) -> Digest:
        """The digest for ``sub`` on ``day`` (its period follows the sub's frequency)."""
        window = window_of(sub.frequency)
        digest = Digest(sub, day, period_key(sub.frequency, day))
        since = self.since(sub)
        readers = self.readers()
        reader = readers.reader(sub.email, since)
        digest.reader_id = user_id = reader.user_id if reader is not None else None
        # One empty section per list, in the lists' order: how the reader's sent marks
        # name it and what it shows besides its papers.
        shown: list[Section] = []
        with self.db.session() as s:
            trend = self._trending_for(s, window)
            lists: list[tuple[str, list[str]]] = [
                (f'New on "{t}"', self._topic(t, since)) for t in sub.topics
            ]
            lists += [(f"New in {c}", self._collection(s, c)) for c in sub.collections]
            shown = [Section(title, via="digest:topic") for title, _ in lists[: len(sub.topics)]]
            shown += [Section(title, via="digest:collection") for title, _ in lists[len(shown) :]]
            candidates = [pid for pid, _ in trend] + [p for _, ids in lists for p in ids]
            self._load_first_seen(s, candidates)
            seen = self._first_seen
            trend_ids = [
                pid for pid, score in trend if pid in seen and (score > 0 or seen[pid] > since)
            ]
            fresh = [
                (title, [p for p in ids if p in seen and seen[p] > since]) for title, ids in lists
            ]
            # Reader sections hold new papers only (they are built from them).
            for rl in reader.lists if reader is not None else []:
                fresh.append((rl.title, rl.ids))
                shown.append(Section(rl.title, [], rl.via, rl.link, rl.note, rl.reasons))
            # Ask the database about the picks only (usually none was sent before); if some
            # were, exclude every already-sent candidate in one more query and pick again.
            # A reader's papers count whichever section or mail sent them (or a dismissal).
            picked_trend, picked_lists = self._select(sub.max_papers, trend_ids, fresh)
            picks = picked_trend + [p for _, ids in picked_lists for p in ids]

            def sent_of(ids: list[str]) -> set[str]:
                out = ledger_store.sent_paper_ids(s, sub.id, ids)
                return out if user_id is None else out | readers.seen(user_id, ids)

            if sent_of(picks):
                pool = trend_ids + [p for _, ids in fresh for p in ids]
                sent = sent_of(pool)
                picked_trend, picked_lists = self._select(
                    sub.max_papers,
                    [p for p in trend_ids if p not in sent],
                    [(t, [p for p in ids if p not in sent]) for t, ids in fresh],
                )
                picks = picked_trend + [p for _, ids in picked_lists for p in ids]
            papers = self._load_papers(s, picks)
        label = "Trending this week" if window == "week" else "Trending today"
        sections = [Section(label, [papers[p] for p in picked_trend if p in papers])]
        sections[0].via = "digest:trending"
        for sec, (_title, ids) in zip(shown, picked_lists, strict=True):
            sec.papers = [papers[p] for p in ids if p in papers]
            sec.reasons = {p: why for p, why in sec.reasons.items() if p in ids}
            sections.append(sec)
        digest.sections = [sec for sec in sections if sec.papers]
        return digest

    def recompose(self, sub: Subscriber, day: date, paper_ids: list[str]) -> Digest:
        """The digest of an earlier attempt again, from the papers the ledger recorded (a
        resend must carry what the first attempt carried, not the next batch)."""
        digest = Digest(sub, day, period_key(sub.frequency, day))
        digest.reader_id = self.readers().account(sub.email)
        with self.db.session() as s:
            papers = self._load_papers(s, paper_ids)
        found = [papers[p] for p in paper_ids if p in papers]
        digest.sections = [Section("Your papers", found)] if found else []
        return digest

    @staticmethod
    def _select(
        limit: int, trend: list[str], lists: list[tuple[str, list[str]]]
    ) -> tuple[list[str], list[tuple[str, list[str]]]]:
        """Apply the quotas of the module docstring; no id is picked twice."""
        used: set[str] = set()
        has_lists = any(ids for _, ids in lists)
        quota = max(1, limit // 3) if has_lists else limit
        picked_trend: list[str] = []
        for pid in trend:
            if len(picked_trend) >= quota:
                break
            picked_trend.append(pid)
            used.add(pid)
        picked: list[list[str]] = [[] for _ in lists]
        cursors = [0] * len(lists)
        total = len(picked_trend)
        progress = True
        while total < limit and progress:  # round-robin, one paper per list per turn
            progress = False
            for i, (_title, ids) in enumerate(lists):
                while cursors[i] < len(ids) and ids[cursors[i]] in used:
                    cursors[i] += 1
                if cursors[i] < len(ids) and total < limit:
                    pid = ids[cursors[i]]
                    picked[i].append(pid)
                    used.add(pid)
                    total += 1
                    progress = True
        for pid in trend:  # room left: more trending
            if total >= limit:
                break
            if pid not in used:
                picked_trend.append(pid)
                used.add(pid)
                total += 1
        return picked_trend, [(t, picked[i]) for i, (t, _ids) in enumerate(lists)]
