"""The "For you" service: a reader's recommendations, overall or for one tag, with reasons.

The method is :mod:`papersift.rank.recommend` (measured by ``papersift eval-rec``); this
module feeds it from a deployment: candidates from the live search generation's vector index
(IVF or HNSW at scale, exact below ``exact_limit``), or every paper of the last seven listed
days for "new this week"; the reader's saved papers (from the library) plus "more like this"
papers as positives; "not interested" papers as negatives; saved, dismissed and already-sent
papers never come back. Corpus statistics (the covariance behind the profile model) come from
a sample of the index's vectors, once per index generation.

Nothing here knows about the web: the page and the API call :class:`ForYou`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from papersift.rank.recommend import (
    CandidatesProvider,
    CorpusStats,
    CoSaved,
    LibraryCooccurrence,
    Recommendation,
    RecommendError,
    recommend,
    saved_weights,
)
from papersift.search.catalog import paper_key
from papersift.search.service import SearchService
from papersift.search.vectors import VectorIndex
from papersift.settings import current as current_settings
from papersift.store import daily as daily_store
from papersift.store import feedback as feedback_store
from papersift.store import library as library_store
from papersift.store import search_docs
from papersift.store.db import Database

STATS_SAMPLE = 50_000  # papers; the covariance of 384 dimensions settles long before
STATS_MAX_AGE = 6 * 3600.0  # seconds; statistics are recomputed after this or 10 % growth
PER_QUERY = 400  # candidates per query vector (profile, centroid, interest clusters)
WINDOWS = {"all": "All time", "week": "New this week"}
WEEK_LIMIT = 50_000  # papers of the last seven listed days scored exhaustively


def index_candidates(
    index: VectorIndex, ids_of: Callable[[list[int]], Mapping[int, str]]
) -> CandidatesProvider:
    """A provider asking ``index`` for the nearest ``count`` papers of each query vector;
    ``ids_of`` maps index keys to paper ids (the generation's catalog)."""

    def provide(queries: np.ndarray, count: int) -> list[str]:
        keys: dict[int, None] = {}
        for query in np.atleast_2d(queries):
            found, _ = index.search(query, count)
            keys.update(dict.fromkeys(found.tolist()))
        names = ids_of(list(keys))
        return [names[k] for k in keys if k in names]

    return provide


class IndexLookup:
    """Vectors of papers read back from the vector index, texts from ``texts``."""

    def __init__(
        self,
        index: VectorIndex,
        texts: Callable[[Sequence[str]], list[str]],
        *,
        key_of: Callable[[str], int] = paper_key,
    ) -> None:
        self.index = index
        self._texts = texts
        self.key_of = key_of

    def present(self, ids: Sequence[str]) -> list[str]:
        """The ids that have a vector (a paper imported a moment ago may not yet)."""
        if not ids:
            return []
        mask = self.index.contains([self.key_of(p) for p in ids])
        return [p for p, ok in zip(ids, mask.tolist(), strict=True) if ok]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        found, vectors = self.index.get([self.key_of(p) for p in ids])
        if not bool(np.all(found)):
            raise RecommendError("a paper has no vector in the index yet")
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.asarray(vectors / norms, dtype=np.float32)  # (i8/f16 graphs round them)

    def texts(self, ids: Sequence[str]) -> list[str]:
        return self._texts(ids)


def sample_stats(
    index: VectorIndex,
    key_batches: Callable[[], Iterable[list[tuple[int, str]]]],
    texts: Callable[[Sequence[str]], list[str]],
    *,
    sample: int = STATS_SAMPLE,
    seed: int = 0,
) -> CorpusStats:
    """Corpus statistics from up to ``sample`` indexed papers drawn uniformly at random.

    ``key_batches()`` yields lists of (key, paper id), as ``Catalog.iter_ids`` does."""
    pairs: list[tuple[int, str]] = []
    for batch in key_batches():
        pairs.extend(batch)
    if len(pairs) < 2:
        raise RecommendError("the corpus needs at least two papers with embeddings")
    rng = np.random.default_rng(seed)
    if len(pairs) > sample:
        chosen = rng.choice(len(pairs), sample, replace=False)
        pairs = [pairs[i] for i in sorted(chosen.tolist())]
    stats: CorpusStats | None = None
    for start in range(0, len(pairs), 5000):
        chunk = pairs[start : start + 5000]
        found, vectors = index.get([k for k, _ in chunk])
        ids = [pid for (_, pid), ok in zip(chunk, found.tolist(), strict=True) if ok]
        if not ids:
            continue
        if stats is None:
            stats = CorpusStats(vectors.shape[1])
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        stats.add(vectors, texts(ids))
    if stats is None or stats.n < 2:
        raise RecommendError("the corpus needs at least two papers with embeddings")
    stats.solver()
    return stats


@dataclass
class _CachedStats:
    stats: CorpusStats
    size: int
    at: float


class StatsCache:
    """Corpus statistics per index folder; recomputed when the index grew by 10 % or the
    statistics are older than ``STATS_MAX_AGE`` (they drift slowly: a day's papers barely
    move a covariance of a million)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_folder: dict[Path, _CachedStats] = {}

    def get(self, folder: Path, size: int, compute: Callable[[], CorpusStats]) -> CorpusStats:
        with self._lock:
            found = self._by_folder.get(folder)
            fresh = (
                found is not None
                and abs(size - found.size) <= 0.1 * max(found.size, 10)
                and time.monotonic() - found.at < STATS_MAX_AGE
            )
            if found is not None and fresh:
                return found.stats
            stats = compute()
            self._by_folder = {folder: _CachedStats(stats, size, time.monotonic())}
            return stats


class CoSavedCache:
    """The co-saved signal over every reader's library, rebuilt when any library changed
    (one count query per request tells). Off below ``min_readers`` readers with papers: with
    two, a pick "also saved by readers like you" would name what the other one saved."""

    def __init__(self, min_readers: int) -> None:
        self.min_readers = min_readers
        self._lock = threading.Lock()
        self._version: tuple[int, str] | None = None
        self._signal: LibraryCooccurrence | None = None

    def get(self, session: Session) -> LibraryCooccurrence | None:
        if self.min_readers <= 0:
            return None
        version = library_store.libraries_version(session)
        with self._lock:
            if version != self._version:
                libraries = library_store.every_library(session)
                enough = len(libraries) >= self.min_readers
                self._signal = LibraryCooccurrence(libraries) if enough else None
                self._version = version
            return self._signal


@dataclass(frozen=True)
class Saved:
    """A saved paper as the page names it: where it is (tag), and whether it is a "more
    like this" positive rather than a saved paper."""

    paper_id: str
    tag: str
    positive: bool = False


@dataclass
class Pick:
    """One recommendation with its reasons in checkable words."""

    paper_id: str
    score: float
    nearest: list[tuple[Saved, float]]  # 1-3 saved papers it is nearest to, with cosines
    terms: list[str]
    co_saved: bool = False  # readers who saved these papers also saved it


@dataclass
class ForYouResult:
    picks: list[Pick]
    weights: list[tuple[Saved, int]]  # saved papers that explain the most picks
    library_size: int
    message: str = ""
    window: str = "all"
    unindexed: int = 0  # saved papers without a vector yet (not used until indexed)


def pick_recommendations(
    saved: Sequence[Saved],
    provider: CandidatesProvider,
    lookup: IndexLookup,
    stats: CorpusStats,
    *,
    exclude: set[str],
    negatives: Sequence[str],
    k: int = 20,
    window: str = "all",
    cosaved: CoSaved | None = None,
) -> ForYouResult:
    """Recommendations for ``saved`` (positives included) through the measured method."""
    by_id = {s.paper_id: s for s in saved}
    usable = lookup.present(list(by_id))
    if not by_id:
        return ForYouResult([], [], 0, "Save a paper to a tag to get recommendations.", window)
    if not usable:
        return ForYouResult(
            [], [], len(by_id), "Your saved papers are still being indexed.", window, len(by_id)
        )
    known_negatives = lookup.present([p for p in dict.fromkeys(negatives) if p not in by_id])
    recs: list[Recommendation] = recommend(
        usable,
        provider,
        lookup,
        stats,
        k=k,
        exclude=exclude | set(by_id),
        dismissed_ids=known_negatives,
        cosaved=cosaved,
        candidates_per_query=PER_QUERY,
    )
    picks = [
        Pick(
            r.paper_id,
            r.score,
            [(by_id[p], sim) for p, sim in r.reasons.nearest],
            r.reasons.terms,
            r.reasons.co_saved > 0,
        )
        for r in recs
    ]
    weights = [(by_id[p], n) for p, n in saved_weights(recs)[:5]]
    message = "" if picks else "Nothing new to recommend here yet."
    return ForYouResult(picks, weights, len(by_id), message, window, len(by_id) - len(usable))


def _indexed_only(signal: CoSaved | None, lookup: IndexLookup) -> CoSaved | None:
    """The co-saved scores of papers that have a vector (a paper saved a moment ago may
    not yet; scoring needs every candidate's vector)."""
    if signal is None:
        return None

    def scores(library: Sequence[str]) -> dict[str, float]:
        found = signal(library)
        present = set(lookup.present(list(found)))
        return {p: v for p, v in found.items() if p in present}

    return scores


class UnknownTag(KeyError):
    """The reader has no tag of that name."""


def register_account_data() -> None:
    """Put the reader's feedback and sent marks into the account export and deletion."""
    from papersift.accounts.export import register_eraser, register_exporter

    register_exporter("recommendation_feedback", feedback_store.export_feedback)
    register_eraser("recommendation_feedback", feedback_store.delete_user_feedback)


register_account_data()


class ForYou:
    """Recommendations and feedback for one deployment (one database, one search index)."""

    def __init__(self, db: Database, search: SearchService, stats: StatsCache | None = None):
        self.db = db
        self.search = search
        self.stats = stats or StatsCache()
        self.cosaved = CoSavedCache(current_settings().co_saved_readers)

    def _texts(self, ids: Sequence[str]) -> list[str]:
        with self.db.session() as s:
            found = search_docs.texts(s, ids)
        return [found.get(p, "") for p in ids]

    def _tag_id(self, session: Session, user_id: int, tag: str | None) -> int | None:
        if tag is None:
            return None
        row = library_store.tag_by_name(session, user_id, tag)
        if row is None:
            raise UnknownTag(tag)
        return int(row.id)

    def recommendations(
        self, user_id: int, tag: str | None = None, *, window: str = "all", k: int = 20
    ) -> ForYouResult:
        """The best ``k`` papers for the reader (in one tag, or over the whole library)
        that are not saved, dismissed or already sent; UnknownTag for a tag they lack."""
        window = window if window in WINDOWS else "all"
        with self.db.session() as s:
            tag_id = self._tag_id(s, user_id, tag)
            everything = library_store.saved_ids(s, user_id)
            if tag_id is None:
                where = library_store.tags_of(s, user_id, everything)
                saved = [Saved(p, (where.get(p) or [""])[0]) for p in everything]
                more = feedback_store.all_positives(s, user_id)
                negatives = sorted(feedback_store.all_dismissed_ids(s, user_id))
            else:
                saved = [Saved(p, tag or "") for p in library_store.saved_ids(s, user_id, tag_id)]
                more = feedback_store.positives(s, user_id, tag_id)
                negatives = feedback_store.dismissed_ids(s, user_id, tag_id)
                negatives += feedback_store.dismissed_ids(s, user_id, None)
            saved += [Saved(p, tag or "For you", positive=True) for p in more]
            exclude = feedback_store.all_dismissed_ids(s, user_id) | set(everything)
            exclude |= feedback_store.sent_ids(s, user_id)
            recent: list[str] | None = None
            if window == "week":
                latest = daily_store.latest_day(s)
                recent = []
                if latest is not None:
                    first = latest - timedelta(days=6)
                    recent = feedback_store.papers_in_days(s, first, latest, WEEK_LIMIT)
            cosaved = self.cosaved.get(s)
        live = self.search.generations.current()
        if live is None or live.vectors is None or len(live.vectors) < 2:
            note = "Recommendations start once the search index has papers with embeddings."
            return ForYouResult([], [], len(saved), note, window)
        vectors = live.vectors
        lookup = IndexLookup(vectors, self._texts)
        stats = self.stats.get(
            live.folder,
            len(vectors),
            lambda: sample_stats(vectors, lambda: live.catalog.iter_ids(), self._texts),
        )
        if recent is None:
            provider = index_candidates(vectors, live.catalog.ids)
        else:
            fresh = lookup.present([p for p in recent if p not in exclude])
            provider = lambda _queries, _count: fresh  # noqa: E731 (every paper of the week)
        result = pick_recommendations(
            saved,
            provider,
            lookup,
            stats,
            exclude=exclude,
            negatives=negatives,
            k=k,
            window=window,
            cosaved=_indexed_only(cosaved, lookup) if recent is None else None,
        )
        if not result.picks and window == "week" and result.library_size:
            result.message = "Nothing new this week for this library; try all time."
        return result

    def feedback(self, user_id: int, paper_id: str, action: str, tag: str | None = None) -> bool:
        """``dismiss`` ("not interested"), ``more`` ("more like this") or ``undo`` on one
        paper, in the tag's scope or the overall page's; False if nothing changed."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            tag_id = self._tag_id(s, user_id, tag)
            if action == "dismiss":
                return feedback_store.dismiss(s, user_id, paper_id, tag_id, now)
            if action == "more":
                return feedback_store.more_like_this(s, user_id, paper_id, tag_id, now)
            if action == "undo":
                return feedback_store.undo(s, user_id, paper_id, tag_id)
        raise ValueError(f"unknown feedback {action!r}: dismiss, more or undo")

    def reset(self, user_id: int, tag: str | None = None) -> int:
        """Forget the feedback given in one tag (or on the overall page)."""
        with self.db.session() as s:
            return feedback_store.reset(s, user_id, self._tag_id(s, user_id, tag))

    def tags(self, user_id: int) -> list[tuple[str, int]]:
        """The reader's tags with how many papers each holds (the page's tabs)."""
        with self.db.session() as s:
            counts = library_store.tag_counts(s, user_id)
            return [(t.name, counts.get(t.id, 0)) for t in library_store.tags(s, user_id)]


_SERVICES: dict[int, ForYou] = {}
_SERVICES_LOCK = threading.Lock()


def get_foryou(db: Database, search: SearchService) -> ForYou:
    """One service per search service (so the corpus statistics are computed once)."""
    with _SERVICES_LOCK:
        found = _SERVICES.get(id(search))
        if found is None or found.search is not search:
            found = _SERVICES[id(search)] = ForYou(db, search)
        return found
