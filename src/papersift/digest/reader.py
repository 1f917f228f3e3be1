"""The sections a digest adds for a subscriber whose address has a reader account.

- **A section per tag** ("New for your tag *RL*"): recommendations for that tag's papers
  (``rank.foryou.pick_recommendations``, the measured method) among the papers first seen
  since the reader's last digest: the new papers are the candidates, so a big corpus does
  not bury them. A recommendation goes out only when it is about as close to one of the
  tag's papers as a digest topic match must be to its topic (``floor.digest_cosine``);
  otherwise the method would fill every tag every day.
- **A section per saved search in the digest**: what the search finds among the papers
  first seen since the last digest, through the search page's own query, filters and
  relevance floor (``library.searches.matches``).

Papers the reader was sent before (any section, any mail: ``reader_sent``), dismissed, or
saved already never come back; the composer keeps one paper in one section per mail and
the ledger marks what went out as sent, for the For-you page too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from papersift.library import searches
from papersift.rank.foryou import (
    IndexLookup,
    Saved,
    get_foryou,
    pick_recommendations,
    sample_stats,
)
from papersift.rank.recommend import CorpusStats
from papersift.search import floor as relevance
from papersift.settings import Settings
from papersift.store import feedback as feedback_store
from papersift.store import library as library_store
from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store import users as user_store
from papersift.store.db import Database

if TYPE_CHECKING:
    from papersift.search.generations import Generation
    from papersift.search.service import SearchService

log = logging.getLogger(__name__)

TAG_PICKS = 10  # recommendations asked per tag and digest (the mail's room decides the rest)
SEARCH_HITS = 200  # new matches asked per saved search
VIA_MAX = 32  # reader_sent.via


@dataclass
class ReaderList:
    """One reader section before the composer picks from it."""

    title: str
    ids: list[str]
    via: str  # how ``reader_sent`` names the section
    link: str  # the page the section comes from
    note: str = ""
    reasons: dict[str, str] = field(default_factory=dict)  # paper id -> why, in words


@dataclass
class Reader:
    """A subscriber's account and its sections."""

    user_id: int
    lists: list[ReaderList] = field(default_factory=list)


def via(kind: str, name: str) -> str:
    return f"digest:{kind}:{name}"[:VIA_MAX]


class ReaderSections:
    """Finds the account of a subscriber's address and builds its sections (one per run)."""

    def __init__(
        self, settings: Settings, db: Database, service: Callable[[], SearchService]
    ) -> None:
        self.settings = settings
        self.db = db
        self._service = service
        self.warnings: list[str] = []

    def account(self, email: str) -> int | None:
        """The id of the account with this address, if there is one."""
        with self.db.session() as s:
            row = user_store.user_by_email(s, email)
            return int(row.id) if row is not None else None

    def seen(self, user_id: int, paper_ids: Sequence[str]) -> set[str]:
        """Which of ``paper_ids`` the reader was sent before or dismissed (never again)."""
        with self.db.session() as s:
            out = feedback_store.sent_ids(s, user_id, paper_ids)
            out |= feedback_store.all_dismissed_ids(s, user_id) & set(paper_ids)
        return out

    def reader(self, email: str, since: datetime) -> Reader | None:
        """The account's sections for papers first seen after ``since`` (None: no account)."""
        user_id = self.account(email)
        if user_id is None:
            return None
        out = Reader(user_id)
        with self.db.session() as s:
            tags = [(t.id, t.name) for t in library_store.tags(s, user_id)]
            searches = [(r.id, r.name) for r in library_store.digest_searches(s, user_id)]
            new_ids = paper_store.ids_first_seen_since(s, since) if tags or searches else []
        if not new_ids:
            return out
        for tag_id, name in tags:
            try:
                out.lists.append(self._tag(user_id, tag_id, name, new_ids))
            except Exception as exc:  # one tag's failure leaves the rest of the mail
                self._warn(f"tag {name!r} of reader {user_id}", exc)
        for search_id, name in searches:
            try:
                out.lists.append(self._search(user_id, search_id, name, since))
            except Exception as exc:
                self._warn(f"saved search {name!r} of reader {user_id}", exc)
        return out

    def _warn(self, what: str, exc: Exception) -> None:
        self.warnings.append(f"{what} could not be composed: {exc}")
        log.warning("digest: %s failed: %s", what, exc)

    # -- tags ----------------------------------------------------------------------------------
    def _corpus_stats(self, service: SearchService, live: Generation) -> CorpusStats:
        """The For-you service's statistics of this index (computed once per process)."""
        vectors = live.vectors
        assert vectors is not None
        return get_foryou(self.db, service).stats.get(
            live.folder,
            len(vectors),
            lambda: sample_stats(vectors, lambda: live.catalog.iter_ids(), self._texts),
        )

    def _texts(self, ids: Sequence[str]) -> list[str]:
        with self.db.session() as s:
            found = search_docs.texts(s, list(ids))
        return [found.get(p, "") for p in ids]

    def _tag(self, user_id: int, tag_id: int, name: str, new_ids: list[str]) -> ReaderList:
        base = self.settings.base_url
        section = ReaderList(
            f'New for your tag "{name}"',
            [],
            via("tag", name),
            f"{base}/for-you/{quote(name, safe='')}",
            f"Recommended from the papers you saved under {name}.",
        )
        service = self._service()
        live = service.generations.current()
        if live is None or live.vectors is None:
            return section
        with self.db.session() as s:
            saved_ids = library_store.saved_ids(s, user_id, tag_id)
            positives = feedback_store.positives(s, user_id, tag_id)
            negatives = feedback_store.dismissed_ids(s, user_id, tag_id)
            negatives += feedback_store.dismissed_ids(s, user_id, None)
            everything = set(library_store.saved_ids(s, user_id))
        saved = [Saved(p, name) for p in saved_ids]
        saved += [Saved(p, name, positive=True) for p in positives if p not in set(saved_ids)]
        if not saved:
            return section
        lookup = IndexLookup(live.vectors, self._texts)
        candidates = lookup.present([p for p in new_ids if p not in everything])
        if not candidates:
            return section
        exclude = self.seen(user_id, candidates) | everything
        result = pick_recommendations(
            saved,
            lambda _queries, _count: candidates,  # every new paper is a candidate
            lookup,
            self._corpus_stats(service, live),
            exclude=exclude,
            negatives=negatives,
            k=TAG_PICKS,
        )
        bar = relevance.digest_cosine(service.embedder.model_id)
        for pick in result.picks:
            if not pick.nearest or pick.nearest[0][1] < bar:
                continue
            section.ids.append(pick.paper_id)
            section.reasons[pick.paper_id] = self._why(pick.nearest, pick.terms)
        return section

    def _why(self, nearest: Sequence[tuple[object, float]], terms: Sequence[str]) -> str:
        with self.db.session() as s:
            ids = [getattr(saved, "paper_id", "") for saved, _sim in nearest[:2]]
            papers = paper_store.get_papers(s, ids)
        titles = [" ".join(papers[p].title.split()) for p in ids if p in papers]
        parts = []
        if titles:
            parts.append("near " + "; ".join(f'"{t[:80]}"' for t in titles))
        if terms:
            parts.append("shares " + ", ".join(list(terms)[:4]))
        return "Why: " + ", ".join(parts) if parts else ""

    # -- saved searches ------------------------------------------------------------------------
    def _search(self, user_id: int, search_id: int, name: str, since: datetime) -> ReaderList:
        search = searches.saved_search(self.db, user_id, search_id)
        found = searches.matches(self._service(), self.db, search, since=since, k=SEARCH_HITS)
        return ReaderList(
            f'Saved search "{name}"',
            found,
            via("search", str(search_id)),
            f"{self.settings.base_url}/library/searches/{search_id}",
            f"New matches for {search.query!r}.",
        )
