"""What the HTML page and the JSON route of one resource share: the lookup and its 404,
the paging, the cards of a paper list, and the writes (votes, views) behind both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request

from papersift.accounts import Account, voter_key
from papersift.comments import service as comment_service
from papersift.model import Collection, CollectionEntry, Paper
from papersift.rank import votes as vote_store
from papersift.rank.trending import WINDOWS, TrendingCache
from papersift.store import collections as collection_store
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.store.web_state import Session
from papersift.web.ratelimit import ClientViews, KeyLimiter, RateLimiter
from papersift.web.searching import ResultCache, parse_page
from papersift.web.state import web_state

MAX_ID = 255  # ids, names and other path values longer than this cannot exist
TRENDING_DEPTH = 1000  # trending lists stop here

T = TypeVar("T")


def clean_ref(value: str) -> str | None:
    """A path value that could name something, or None (too long, control characters)."""
    value = value.strip()
    if not value or len(value) > MAX_ID or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    return value


def _found(ref: str, lookup: Callable[[str], T | None], missing: str) -> T:
    """What ``lookup`` finds for a path value, or a 404 saying ``missing``: a value that
    could name nothing (see ``clean_ref``) is not looked up."""
    cleaned = clean_ref(ref)
    found = lookup(cleaned) if cleaned else None
    if found is None:
        raise HTTPException(404, missing)
    return found


def load_paper(session: Session, ref: str) -> Paper:
    """The paper for an id, arXiv id or DOI, or a 404."""
    return _found(ref, lambda key: paper_store.get_paper(session, key), "No paper with this id.")


@dataclass
class PaperDetail:
    """A paper as its own page and its JSON show it."""

    paper: Paper
    votes: int
    memberships: list[tuple[str, int]]  # (collection name, rank)


def load_paper_detail(session: Session, ref: str) -> PaperDetail:
    """The paper ``ref`` names with its vote count and collections, or a 404."""
    paper = load_paper(session, ref)
    return PaperDetail(
        paper,
        vote_store.vote_count(session, paper.id),
        collection_store.collections_of_paper(session, paper.id),
    )


def load_collection(session: Session, name: str) -> Collection:
    """The collection of this name with its entries in order, or a 404."""
    return _found(
        name,
        lambda key: collection_store.get_collection(session, key),
        "No collection with this name.",
    )


def check_window(raw: str | None) -> str:
    """A trending window from a query value (day when absent), or a 400."""
    if raw in WINDOWS:
        return raw
    if raw:
        raise HTTPException(400, "window must be day, week or month")
    return "day"


def page_number(raw: str | None, last: int = 10_000) -> int:
    """A 1-based page number from a query value (1 when absent), or a 400."""
    if raw is None or raw == "":
        return 1
    value = parse_page(raw, last)
    if value is None:
        raise HTTPException(400, f"page must be a number from 1 to {last}")
    return value


def start_of(offset: int, k: int, page: int | None) -> int:
    """Where a page starts: ``page`` (1-based, of ``k`` items) wins over ``offset``."""
    return (page - 1) * k if page else offset


def collection_entries(found: Collection, start: int, size: int) -> list[CollectionEntry]:
    """One page of a collection's entries."""
    return found.entries[start : start + size]


def trending_slice(
    trending: TrendingCache, window: str, start: int, size: int
) -> tuple[list[tuple[str, float]], bool]:
    """(paper id, score) from ``start`` on, at most ``size``, and whether more follow."""
    if start > TRENDING_DEPTH:
        raise HTTPException(400, f"trending lists stop at {TRENDING_DEPTH} papers")
    ranked = trending.get(window, start + size + 1)
    return ranked[start : start + size], len(ranked) > start + size


@dataclass
class Card:
    """A paper as a list item shows it."""

    paper: Paper
    votes: int = 0
    voted: bool = False
    score: float | None = None
    comments: int = 0


def papers_by_id(
    session: Session, ids: list[str], cache: ResultCache | None = None
) -> dict[str, Paper]:
    """Papers for list pages, through ``cache`` when given (missing ids are absent).

    Lists (search results, similar papers) show the same popular papers again and again;
    reading them costs more than the search on a small corpus. A cached paper is at most
    the cache's ttl old, like the cached search results that name it; paper pages always
    read the database.
    """
    if cache is None:
        return paper_store.get_papers(session, ids)
    found: dict[str, Paper] = {}
    missing = []
    for paper_id in ids:
        paper = cache.get(("paper", paper_id))
        if paper is None:
            missing.append(paper_id)
        else:
            found[paper_id] = paper
    if missing:
        for paper_id, paper in paper_store.get_papers(session, missing).items():
            cache.put(("paper", paper_id), paper)
            found[paper_id] = paper
    return found


def cards(
    session: Session,
    ids: list[str],
    visitor: str | None,
    scores: dict[str, float] | None = None,
    *,
    cache: ResultCache | None = None,
) -> list[Card]:
    """Cards for ids in their order (unknown ids dropped); vote counts are always fresh."""
    papers = papers_by_id(session, ids, cache)
    counts = vote_store.vote_counts(session, list(papers))
    mine = vote_store.voted_by(session, visitor, list(papers))
    talk = comment_service.counts(session, list(papers))
    return [
        Card(papers[i], counts.get(i, 0), i in mine, (scores or {}).get(i), talk.get(i, 0))
        for i in ids
        if i in papers
    ]


def check_rate(limiter: RateLimiter, visitor: str | None, ip: str, message: str) -> None:
    """A 429 with Retry-After when this visitor or IP has used up its budget."""
    wait = limiter.check(visitor, ip)
    if wait:
        raise HTTPException(429, message, headers={"Retry-After": str(wait)})


@dataclass
class Voting:
    """Upvotes for one request: rate limited per visitor and IP, trending refreshed."""

    db: Database
    trending: TrendingCache
    limiter: RateLimiter
    ip: str
    per_paper: KeyLimiter | None = None  # votes one address gives one paper, per day
    account: Account | None = None  # signed in: the vote is the account's
    anonymous: bool = True  # whether visitors without an account may vote

    def cast(self, visitor: str, paper_ref: str, *, undo: bool) -> tuple[str, bool, int]:
        """Vote (or undo) for the paper ``paper_ref`` names: (its id, voted, vote count).
        A signed-in reader votes as the account (one vote per paper, whichever browser);
        an anonymous visitor only where ``anonymous_votes`` allows (else 401)."""
        if self.account is not None:
            visitor = voter_key(self.account.id)
        elif not self.anonymous:
            raise HTTPException(401, "Sign in to vote: votes here are accounts' votes.")
        check_rate(self.limiter, visitor, self.ip, "Too many votes; try again shortly.")
        with self.db.session() as session:
            paper = load_paper(session, paper_ref)
            if undo:
                vote_store.remove_vote(session, paper.id, visitor)
            else:
                if not vote_store.voted_by(session, visitor, [paper.id]) and self.per_paper:
                    from papersift.web.security import client_key

                    wait = self.per_paper.take(f"{client_key(self.ip)}|{paper.id}")
                    if wait:
                        raise HTTPException(
                            429,
                            "This paper has all the votes it can take from your network today.",
                            headers={"Retry-After": str(wait)},
                        )
                vote_store.upvote(session, paper.id, visitor)
            count = vote_store.vote_count(session, paper.id)
        self.trending.invalidate()
        return paper.id, not undo, count


def count_view(session: Session, views: ClientViews, viewer: str, paper_id: str) -> None:
    """Count a view of the paper once per viewer and day, within the address's daily cap
    (see ``ratelimit.ViewCounter``)."""
    views.count(session, viewer, paper_id)


def next_page(request: Request, start: int, k: int, total: int) -> str | None:
    """The next page's URL (see ``next_link``) when ``total`` goes past this page of ``k``."""
    return next_link(request, start + k) if start + k < total else None


def next_link(request: Request, offset: int) -> str:
    """The absolute URL of a list's next page: ``base_url`` and the request's path and
    query with ``offset`` set (never the request's Host, which the client chose)."""
    base = web_state(request).settings.base_url
    query = request.url.include_query_params(offset=offset).remove_query_params("page").query
    return f"{base}{request.url.path}?{query}"
