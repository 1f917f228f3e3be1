"""What goes into one subscriber's digest, and the message that carries it.

For a subscriber and a period (a day, or an ISO week for weekly subscribers):

1. Trending papers of the period (``papersift.rank.trending``) that are actually news:
   they had votes or views in the window, or were first seen since the last digest.
   Without that filter an idle site would mail its whole back catalogue, one day at a time.
2. Papers first seen since the subscriber's last digest that match a topic (hybrid search:
   the top 3 hits and any hit one standard deviation above the pool, see
   ``MIN_TOPIC_SCORE``) or sit in a followed collection.

No paper appears twice in a mail, no paper already mailed to the subscriber (table
``sent_papers``) comes back, and at most ``max_papers`` go out: with topics or collections,
trending takes a third of the room, matches fill the rest round-robin, and trending fills
whatever room the matches leave.

``Composer`` caches everything that does not depend on the subscriber (trending lists,
search hits per topic, collection members, paper rows) for the length of one run, so
composing for thousands of subscribers costs one indexed lookup of their sent papers each.
"""

from __future__ import annotations

import hashlib
import logging
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from papersift.digest import mail, tokens
from papersift.digest.subscriptions import Subscriber, as_utc
from papersift.model import Paper
from papersift.rank.trending import WINDOWS, trending
from papersift.settings import Settings
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.store.schema import CollectionEntryRow, CollectionRow, PaperRow, SentPaperRow

log = logging.getLogger(__name__)

TRENDING_POOL = 200  # trending candidates fetched per window and run
HITS_PER_TOPIC = 100  # search hits fetched per topic, before the "new since" filter
# Hybrid scores are z-scores over the search's candidate pool: a hit is kept when it stands
# at least one standard deviation above that pool, and the top few are always kept (they
# carry the topic even when the scale is a plain cosine, as on the dense-only path).
MIN_TOPIC_SCORE = 1.0
ALWAYS_TOP = 3
MAX_LOOKBACK = timedelta(days=30)  # a subscriber back from a long pause gets a month
SNIPPET = 300


def period_key(frequency: str, day: date) -> str:
    """Ledger period: the ISO date for daily digests, the ISO week (``2024-W18``) for weekly."""
    if frequency == "weekly":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return day.isoformat()


def window_of(frequency: str) -> str:
    return "week" if frequency == "weekly" else "day"


def period_end(day: date) -> datetime:
    """The end of ``day`` in local time, as UTC: 'now' for a digest of a past day."""
    return datetime.combine(day + timedelta(days=1), time.min).astimezone().astimezone(UTC)


@dataclass
class Section:
    title: str
    papers: list[Paper] = field(default_factory=list)


@dataclass
class Digest:
    """One subscriber's mail for one period (possibly empty)."""

    subscriber: Subscriber
    day: date
    period: str
    sections: list[Section] = field(default_factory=list)

    @property
    def paper_ids(self) -> list[str]:
        return [p.id for s in self.sections for p in s.papers]

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
        search: Any | None = None,
        use_search: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.now = as_utc(now) if now else datetime.now(UTC)
        self._search = search
        self._use_search = use_search
        self._trending: dict[str, list[tuple[str, float]]] = {}
        self._topic_hits: dict[str, list[str]] = {}
        self._collections: dict[str, list[str]] = {}
        self._first_seen: dict[str, datetime] = {}
        self._papers: dict[str, Paper] = {}
        self.warnings: list[str] = []

    # -- shared, cached inputs ----------------------------------------------------------
    def _trending_for(self, s: Session, window: str) -> list[tuple[str, float]]:
        if window not in self._trending:
            self._trending[window] = trending(s, window, limit=TRENDING_POOL, now=self.now)
        return self._trending[window]

    def _service(self) -> Any | None:
        if self._search is None and self._use_search:
            try:
                from papersift.search.service import get_service
            except ImportError:
                self._use_search = False
                self.warnings.append("search is not installed: topics are not matched")
                return None
            self._search = get_service(self.settings, self.db)
        return self._search

    def _topic(self, topic: str) -> list[str]:
        key = topic.casefold()
        if key in self._topic_hits:
            return self._topic_hits[key]
        ids: list[str] = []
        service = self._service()
        if service is not None:
            try:
                results = service.search(topic, k=HITS_PER_TOPIC, mode="hybrid")
                ids = [
                    h.paper_id
                    for i, h in enumerate(results.hits)
                    if h.score >= MIN_TOPIC_SCORE or (i < ALWAYS_TOP and h.score > 0)
                ]
            except Exception as exc:
                self.warnings.append(f"topic {topic!r} could not be searched: {exc}")
                log.warning("digest topic %r: search failed: %s", topic, exc)
        self._topic_hits[key] = ids
        return ids

    def _collection(self, s: Session, name: str) -> list[str]:
        if name not in self._collections:
            self._collections[name] = list(
                s.scalars(
                    select(CollectionEntryRow.paper_id)
                    .join(CollectionRow, CollectionEntryRow.collection_id == CollectionRow.id)
                    .where(CollectionRow.name == name)
                    .order_by(CollectionEntryRow.rank)
                )
            )
        return self._collections[name]

    def _load_first_seen(self, s: Session, ids: Iterable[str]) -> None:
        missing = [i for i in dict.fromkeys(ids) if i not in self._first_seen]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            for pid, seen in s.execute(
                select(PaperRow.id, PaperRow.first_seen).where(PaperRow.id.in_(chunk))
            ):
                self._first_seen[pid] = as_utc(seen) or self.now

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
        with self.db.session() as s:
            trend = self._trending_for(s, window)
            lists: list[tuple[str, list[str]]] = [
                (f'New on "{t}"', self._topic(t)) for t in sub.topics
            ]
            lists += [(f"New in {c}", self._collection(s, c)) for c in sub.collections]
            candidates = [pid for pid, _ in trend] + [p for _, ids in lists for p in ids]
            self._load_first_seen(s, candidates)
            seen = self._first_seen
            trend_ids = [
                pid for pid, score in trend if pid in seen and (score > 0 or seen[pid] > since)
            ]
            fresh = [
                (title, [p for p in ids if p in seen and seen[p] > since]) for title, ids in lists
            ]
            # Ask the database about the picks only (usually none was sent before); if some
            # were, exclude every already-sent candidate in one more query and pick again.
            picked_trend, picked_lists = self._select(sub.max_papers, trend_ids, fresh)
            picks = picked_trend + [p for _, ids in picked_lists for p in ids]
            if self._already_sent(s, sub.id, picks):
                pool = trend_ids + [p for _, ids in fresh for p in ids]
                sent = self._already_sent(s, sub.id, pool)
                picked_trend, picked_lists = self._select(
                    sub.max_papers,
                    [p for p in trend_ids if p not in sent],
                    [(t, [p for p in ids if p not in sent]) for t, ids in fresh],
                )
                picks = picked_trend + [p for _, ids in picked_lists for p in ids]
            papers = self._load_papers(s, picks)
        label = "Trending this week" if window == "week" else "Trending today"
        sections = [Section(label, [papers[p] for p in picked_trend if p in papers])]
        sections += [Section(t, [papers[p] for p in ids if p in papers]) for t, ids in picked_lists]
        digest.sections = [sec for sec in sections if sec.papers]
        return digest

    def recompose(self, sub: Subscriber, day: date, paper_ids: list[str]) -> Digest:
        """The digest of an earlier attempt again, from the papers the ledger recorded (a
        resend must carry what the first attempt carried, not the next batch)."""
        digest = Digest(sub, day, period_key(sub.frequency, day))
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
        picked_trend = []
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

    @staticmethod
    def _already_sent(s: Session, subscriber_id: int, ids: list[str]) -> set[str]:
        unique = list(dict.fromkeys(ids))
        out: set[str] = set()
        conn = s.connection()  # Core, not ORM: this runs once or twice per subscriber
        for i in range(0, len(unique), 500):
            out.update(
                conn.execute(
                    select(SentPaperRow.paper_id).where(
                        SentPaperRow.subscriber_id == subscriber_id,
                        SentPaperRow.paper_id.in_(unique[i : i + 500]),
                    )
                ).scalars()
            )
        return out


# -- the message ---------------------------------------------------------------------------
def paper_url(settings: Settings, paper_id: str) -> str:
    return f"{settings.base_url}/papers/{quote(paper_id, safe='/')}"


def _authors(names: list[str]) -> str:
    if len(names) > 3:
        return ", ".join(names[:3]) + " et al."
    return ", ".join(names)


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= SNIPPET:
        return text
    cut = text[:SNIPPET].rsplit(" ", 1)[0]
    return cut.rstrip(",.;:") + "..."  # ASCII keeps the text part unencoded (7bit)


def _item(settings: Settings, paper: Paper) -> dict:
    meta = []
    if paper.published:
        meta.append(paper.published.isoformat())
    if paper.categories:
        meta.append(", ".join(paper.categories[:3]))
    snippet = _snippet(paper.abstract)
    return {
        "id": paper.id,
        "title": " ".join(paper.title.split()),
        "url": paper_url(settings, paper.id),
        "authors": _authors(paper.authors),
        "meta": " | ".join(meta),
        "snippet": snippet,
        "snippet_lines": textwrap.wrap(snippet, 74, break_on_hyphens=False),
        "pdf_url": paper.pdf_url if (paper.pdf_url or "").startswith("http") else None,
        "code_url": paper.code_url if (paper.code_url or "").startswith("http") else None,
    }


def message_id(settings: Settings, digest: Digest) -> str:
    """Deterministic per (subscriber, period): a resend after an uncertain delivery carries
    the same Message-ID, which many receivers use to drop the duplicate."""
    sub = digest.subscriber
    tag = hashlib.blake2b(sub.email.encode(), digest_size=4).hexdigest()
    return f"<digest.{digest.period}.{sub.id}.{tag}@{mail.mail_domain(settings)}>"


def subject_of(digest: Digest) -> str:
    kind = "weekly" if digest.subscriber.frequency == "weekly" else "daily"
    ids = digest.paper_ids
    if not ids:
        return f"papersift {kind}: nothing new this time"
    first = " ".join(digest.sections[0].papers[0].title.split())
    if len(first) > 70:
        first = first[:69].rstrip() + "\u2026"
    more = f" (+{len(ids) - 1} more)" if len(ids) > 1 else ""
    return f"papersift {kind}: {first}{more}"


def heading_of(digest: Digest) -> str:
    if digest.subscriber.frequency == "weekly":
        monday = digest.day - timedelta(days=digest.day.weekday())
        return f"Your papers for the week of {monday.day} {monday:%B %Y}"
    return f"Your papers for {digest.day:%A}, {digest.day.day} {digest.day:%B %Y}"


class MessageBuilder:
    """Builds digest messages for one run. A paper's HTML and text fragments are rendered
    once and reused for every subscriber who gets it: most papers go to many."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fragments: dict[str, tuple[Markup, str, str]] = {}

    def _fragment(self, paper: Paper) -> tuple[Markup, str, str]:
        """(HTML, text, title) of one paper's entry."""
        hit = self._fragments.get(paper.id)
        if hit is None:
            item = _item(self.settings, paper)
            hit = (
                Markup(mail.render("_item.html", item=item)),
                mail.render("_item.txt", item=item),
                item["title"],
            )
            if len(self._fragments) < 100_000:
                self._fragments[paper.id] = hit
        return hit

    def build(self, digest: Digest, *, now: datetime | None = None) -> EmailMessage:
        """The multipart/alternative mail for a digest, with list headers and a stable id."""
        settings = self.settings
        sub = digest.subscriber
        unsubscribe = tokens.unsubscribe_url(settings, sub.id, sub.email)
        sections = []
        titles: list[str] = []
        for sec in digest.sections:
            frags = [self._fragment(p) for p in sec.papers]
            titles += [f[2] for f in frags]
            sections.append(
                {"title": sec.title, "html": [f[0] for f in frags], "text": [f[1] for f in frags]}
            )
        subject = subject_of(digest)
        ctx = {
            "subject": subject,
            "heading": heading_of(digest),
            "sections": sections,
            "preheader": "; ".join(titles[:3])[:140] if titles else "Nothing new this time",
            "email": sub.email,
            "frequency": sub.frequency,
            "base_url": settings.base_url,
            "manage_url": tokens.manage_url(settings, sub.id, sub.email),
            "unsubscribe_url": unsubscribe,
        }
        msg = mail.new_message(
            settings,
            sub.email,
            subject,
            mail.render("digest.txt", **ctx),
            mail.render("digest.html", **ctx),
            message_id=message_id(settings, digest),
            date=now,
        )
        mail.add_list_headers(msg, settings, unsubscribe)
        return msg


def build_message(
    settings: Settings, digest: Digest, *, now: datetime | None = None
) -> EmailMessage:
    """One digest message (a run uses one ``MessageBuilder`` for all of them)."""
    return MessageBuilder(settings).build(digest, now=now)
