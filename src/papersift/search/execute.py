"""Running a query on an open generation: lexical, semantic and hybrid ranking, feedback,
the feedback term cache, date ordering and similar papers.

The ranking method and its measured quality are described in :mod:`papersift.search.hybrid`;
this module feeds it candidates and scores from the two indexes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import tantivy

from papersift.search import feedback, hybrid, syntax
from papersift.search import floor as relevance
from papersift.search.catalog import paper_key
from papersift.search.embedder import Embedder, EmbedderError
from papersift.search.generations import Generation
from papersift.search.lexical import FilterSpec
from papersift.search.query import CleanQuery
from papersift.search.types import SearchFilters, SearchHit, SearchRequest, SearchResults
from papersift.search.vectors import VectorIndex
from papersift.store import search_docs
from papersift.store.collections import get_collection
from papersift.store.db import Database

DATE_POOL = 200  # sort=date orders the best 200 relevant papers (semantic/hybrid) by date
FILTER_EXACT = 5_000  # narrow filters: exact dense search over the papers that pass
# Term distributions of feedback documents kept per open index (LRU; a few KB each). The top
# documents of related queries repeat, and a miss costs a catalog read (or, for a paper
# without stored terms, a database read and an analysis).
TERM_CACHE = 4_096

# Overlaps a hybrid query's dense side with its lexical search; two workers cover two
# concurrent requests without queueing, more would only compete for the same cores.
_QUERY_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="papersift-embed")


class _Running:
    """Hybrid searches of this process: how many run now, and when the last one ended.

    Overlapping a search's dense side with its lexical side in a second thread shortens
    it when a core is idle, but each hand-off costs CPU (measured 0.6 ms a query). A busy
    process (another search running, or one ended moments ago: requests keep coming) has
    no idle core to gain from, so it runs the two sides one after the other.
    """

    RECENT = 0.02  # seconds: a search that ended this recently means steady traffic

    def __init__(self) -> None:
        self._count = 0
        self._last_end = float("-inf")
        self._lock = threading.Lock()

    @contextmanager
    def enter(self) -> Iterator[bool]:
        """Count this search while the block runs; yields whether the process is busy."""
        with self._lock:
            busy = self._count > 0 or time.monotonic() - self._last_end < self.RECENT
            self._count += 1
        try:
            yield busy
        finally:
            with self._lock:
                self._count -= 1
                self._last_end = time.monotonic()


_HYBRID_RUNNING = _Running()
_CORES = os.cpu_count() or 1

Dense = tuple[list[int], list[float], int]  # nearest keys, their similarities, papers passing


@dataclass
class _Ranked:
    keys: list[int]
    scores: list[float]
    total: int
    notes: list[str] = field(default_factory=list)
    more: bool = False  # ``total`` is a lower bound (a broad query, not counted in full)


def _vectors(live: Generation) -> VectorIndex:
    """The generation's vector index (callers checked ``vector_problem`` first)."""
    if live.vectors is None:
        raise RuntimeError("dense search on a generation without vectors")
    return live.vectors


class Executor:
    """Answers queries against whichever generation it is handed (thread-safe)."""

    def __init__(self, db: Database, embedder: Callable[[], Embedder]) -> None:
        self.db = db
        self._embedder = embedder  # called only when a query needs the model

    # -- preparing -------------------------------------------------------------------------

    def filter_spec(self, filters: SearchFilters | None) -> tuple[FilterSpec | None, str | None]:
        """The filters as the index understands them, or a message why nothing can match."""
        if filters is None or not filters.active:
            return None, None
        filters.validate()
        spec = FilterSpec(
            date_from=filters.date_from,
            date_to=filters.date_to,
            has_code=filters.has_code,
            category=filters.category or None,
            paper_ids=list(filters.paper_ids) if filters.paper_ids is not None else None,
        )
        if filters.collection:
            with self.db.session() as s:
                coll = get_collection(s, filters.collection)
            if coll is None:
                return spec, f"no collection named {filters.collection!r}"
            members = [e.paper_id for e in coll.entries]
            if spec.paper_ids is not None:
                wanted = set(spec.paper_ids)
                members = [pid for pid in members if pid in wanted]
            spec.paper_ids = members
        return (spec if spec.active else None), None

    def vector_problem(self, live: Generation) -> str | None:
        """Why semantic search cannot run on these indexes now (None if it can)."""
        if live.vectors is None or not len(live.vectors):
            return "no embeddings yet (run `papersift index`)"
        try:
            model = self._embedder().model_id
        except EmbedderError as exc:
            return f"the embedding model cannot be loaded ({exc})"
        if live.meta.get("model") != model:
            return (
                f"the index was built with model {live.meta.get('model')}, not {model} "
                "(run `papersift index --rebuild`)"
            )
        return None

    # -- searching -------------------------------------------------------------------------

    def search(
        self, live: Generation, request: SearchRequest, clean: CleanQuery, spec: FilterSpec | None
    ) -> SearchResults:
        """One page of ranked papers for a checked request with a non-empty query."""
        mode, k, offset = request.mode, request.k, request.offset
        notes = list(clean.notes)
        mode_used = mode
        if mode != "lexical":
            problem = self.vector_problem(live)
            if problem:
                notes.append(f"{problem}: keyword results only")
                mode_used = "lexical"
        fq = live.lexical.filter_query(spec) if spec else None
        need = offset + k
        by_date = request.sort == "date"
        if mode_used == "lexical":
            ranked = self._lexical(live, clean, need, fq, by_date)
        elif mode_used == "semantic":
            ranked = self._semantic(live, clean, max(need, DATE_POOL) if by_date else need, fq, k)
        else:
            # (candidates depend on the page size, not the offset: every page of one query
            # ranks the same candidates, so the total is what can be paged through)
            pool = max(hybrid.POOL, k, DATE_POOL if by_date else 0)
            ranked = self._hybrid(live, clean, need, fq, pool)
        notes.extend(ranked.notes)
        keys, scores = ranked.keys, ranked.scores
        if by_date and mode_used != "lexical":
            keys, scores = self._order_by_date(live, keys, scores)
        page_keys = keys[offset : offset + k]
        ids = live.catalog.ids(page_keys)
        hits = [
            SearchHit(ids[key], float(score))
            for key, score in zip(page_keys, scores[offset : offset + k], strict=True)
            if key in ids
        ]
        if mode_used != "lexical" and live.pending_vectors > 0:
            notes.append(
                f"{live.pending_vectors:,} papers are not embedded yet: run `papersift index`"
            )
        # The count is what can be paged through: a short page is the last one.
        total = max(ranked.total, offset + len(hits))
        if len(hits) < k and (hits or offset == 0):
            total = min(total, offset + len(hits))
        message = "; ".join(dict.fromkeys(notes)) or None
        out = SearchResults(hits, total, request.query, mode, message)
        out.more = ranked.more and total == ranked.total
        return out

    def _lexical(
        self,
        live: Generation,
        clean: CleanQuery,
        need: int,
        fq: tantivy.Query | None,
        by_date: bool,
    ) -> _Ranked:
        query, simplified = live.lexical.build_query(clean)
        notes = ["query simplified to plain words"] if simplified else []
        if query is None:
            return _Ranked([], [], 0, notes + ["no searchable words in the query"])
        plain = None if clean.has_syntax or simplified else clean.text
        res, more = live.lexical.search_counted(
            query, plain, limit=need, filters=[fq], order_by_date=by_date
        )
        return _Ranked(res.keys, res.scores, res.total, notes, more)

    def _dense(
        self, live: Generation, qvec: np.ndarray, count: int, fq: tantivy.Query | None
    ) -> Dense:
        """Nearest (keys, sims) passing the filters, and how many papers pass them."""
        vectors = _vectors(live)
        if fq is None:
            keys, sims = vectors.search(qvec, count)
            return [int(k) for k in keys], sims.tolist(), len(vectors)
        passing = live.lexical.passing_keys(fq)  # sorted, remembered per filter
        allowed = len(passing)
        if allowed == 0:
            return [], [], 0
        if allowed <= FILTER_EXACT:
            keys, sims = vectors.search_among(qvec, passing, count)
            return [int(k) for k in keys], sims.tolist(), allowed
        if vectors.subsets.fits(allowed, vectors.ndim):  # a common filter: its vectors kept
            keys, sims = vectors.search_subset(qvec, passing, count)
            return [int(k) for k in keys], sims.tolist(), allowed
        # Broad filter: over-fetch in proportion to how many papers pass, then keep those.
        share = allowed / max(len(vectors), 1)
        fetch = min(len(vectors), int(count / share * 1.5) + count, 50 * count + 1000)
        keys, sims = vectors.search(qvec, fetch)
        keep = np.isin(keys, passing, assume_unique=True)
        keys, sims = keys[keep][:count], sims[keep][:count]
        return [int(k) for k in keys], sims.tolist(), allowed

    def _semantic(
        self, live: Generation, clean: CleanQuery, need: int, fq: tantivy.Query | None, k: int
    ) -> _Ranked:
        text = clean.semantic or clean.text
        qvec = self._embedder().encode_query(text)
        fetch = max(need, relevance.SEMANTIC_FETCH)
        keys, sims, allowed = self._dense(live, qvec, fetch, fq)
        # Only papers above the relevance floor are matches (and counted as results); when
        # every fetched paper is one and more papers pass the filters, the count is a floor.
        known = relevance.has_known_word(live.lexical, clean.words or text)
        shown = relevance.above(sims, relevance.cosine_floor(self._embedder().model_id, known))
        more = shown == len(keys) and len(keys) < allowed
        return _Ranked(keys[: min(shown, need)], sims[: min(shown, need)], shown, [], more)

    def _hybrid(
        self,
        live: Generation,
        clean: CleanQuery,
        need: int,
        fq: tantivy.Query | None,
        pool: int,
    ) -> _Ranked:
        """``need``: results up to the end of the page; ``pool``: candidates per side."""
        lexical = live.lexical
        query, simplified = syntax.ranking_query(lexical, clean, hybrid.TITLE_WEIGHT)
        notes = ["query simplified to plain words"] if simplified else []
        fq = syntax.combine(fq, syntax.constraint_filter(lexical, clean))
        if not clean.semantic:  # e.g. only `author:` clauses: nothing to embed
            ranked = self._lexical(live, clean, need, fq, False)
            ranked.notes = notes + ranked.notes
            return ranked
        semantic = clean.semantic

        def dense_side() -> tuple[np.ndarray, Dense]:
            qvec = self._embedder().encode_query(semantic)
            return qvec, self._dense(live, qvec, pool, fq)

        early: feedback.CandidateVectors | None = None  # vectors read while the dense side ran
        with _HYBRID_RUNNING.enter() as busy:
            spare = None if busy or _CORES < 2 else _QUERY_POOL  # for feedback's re-scoring
            if spare is None:
                # No idle core to gain from: the dense side runs here, after tantivy.
                lex = lexical.search(query, limit=pool, filters=[fq]) if query is not None else None
                qvec, (d_keys, d_sims, _allowed) = dense_side()
            else:
                # A spare core: the dense side (onnxruntime, then usearch or numpy, all
                # release the GIL) runs in another thread while tantivy searches in this one.
                pending = _QUERY_POOL.submit(dense_side)
                try:
                    lex = (
                        lexical.search(query, limit=pool, filters=[fq])
                        if query is not None
                        else None
                    )
                    if lex is not None and not pending.done():
                        # Meanwhile read the terms of the best lexical papers, most of which
                        # will be feedback documents (off the critical path at scale), then
                        # the lexical candidates' vectors.
                        self.term_distributions(live, lex.keys[: hybrid.FEEDBACK_DOCS])
                        if not pending.done():
                            early = feedback.CandidateVectors(live.vectors, lex.keys)
                finally:
                    qvec, (d_keys, d_sims, _allowed) = pending.result()
        model_id = self._embedder().model_id
        if query is None or lex is None or not lex.keys:  # no paper shares a word: meaning only
            known = relevance.has_known_word(lexical, clean.words)
            shown = relevance.above(d_sims, relevance.cosine_floor(model_id, known))
            return _Ranked(d_keys[:shown], d_sims[:shown], shown, notes)
        # Syntax has filtered both sides (see syntax.py): every candidate keeps its meaning.
        cands = hybrid.merge_candidates(lex.keys, d_keys)
        stored = (early or feedback.CandidateVectors(live.vectors, [])).add(live.vectors, cands)
        dense = self._exact_dense(cands, qvec, dict(zip(d_keys, d_sims, strict=True)), stored)
        lex_scores = dict(zip(lex.keys, lex.scores, strict=True))
        floor = min(lex.scores) if len(lex.keys) >= pool else 0.0
        lex_vec = hybrid.lookup(lex_scores, cands, floor)
        d_ref = d_sims or dense.tolist()
        alpha = hybrid.dense_weight(lex.scores, d_ref)
        fused = hybrid.fuse(lex_vec, lex.scores, dense, d_ref, alpha)
        fused = feedback.rescore(
            live,
            clean,
            cands,
            fused,
            dense,
            alpha,
            (lex_vec, lex.scores, lex.keys),
            (qvec, d_keys, d_sims),
            self.term_distributions,
            stored,
            spare,
        )
        order = np.argsort(-fused, kind="stable")
        # Matches only: a paper that shares a query word or is close enough in meaning.
        shared = np.fromiter(map(lex_scores.__contains__, cands), dtype=bool, count=len(cands))
        order = order[relevance.keep(dense, shared, relevance.cosine_floor(model_id))[order]]
        return _Ranked([cands[i] for i in order], fused[order].tolist(), len(order), notes)

    @staticmethod
    def _exact_dense(
        cands: list[int],
        qvec: np.ndarray,
        known: dict[int, float],
        stored: feedback.CandidateVectors,
    ) -> np.ndarray:
        """Cosine of every candidate from its stored vector (NaN if it has none yet: the
        fusion then ranks it by its lexical score alone). ``known`` are similarities the
        vector search already computed and are kept as it computed them."""
        out = hybrid.lookup(known, cands, np.nan)
        have = np.fromiter(map(known.__contains__, cands), dtype=bool, count=len(cands))
        rest = np.flatnonzero(~have)
        if len(rest):
            out[rest] = stored.cosines([cands[i] for i in rest.tolist()], qvec)
        return out

    # -- the feedback term cache -------------------------------------------------------------

    def warm(self, live: Generation, paper_ids: list[str], *, chunk: int = 256) -> int:
        """Cache the term distributions of these papers (those indexed); returns how many."""
        keys = list(live.catalog.ids([paper_key(pid) for pid in paper_ids]))
        for start in range(0, len(keys), chunk):
            self.term_distributions(live, keys[start : start + chunk])
        return len(keys)

    def term_distributions(self, live: Generation, keys: list[int]) -> dict[int, dict[str, float]]:
        """Index-term distributions of these papers, from the cache or the database."""
        out: dict[int, dict[str, float]] = {}
        with live.terms_lock:
            for key in keys:
                dist = live.terms.get(key)
                if dist is not None:
                    live.terms.move_to_end(key)
                    out[key] = dist
        missing = [key for key in keys if key not in out]
        if not missing:
            return out
        # Stored with the index (catalog.py); papers indexed before the catalog kept terms
        # (or whose row is damaged) are read and analysed here.
        stored = live.catalog.terms(missing)
        fresh = {key: hybrid.count_distribution(counts) for key, counts in stored.items()}
        unread = [key for key in missing if key not in stored]
        if unread:
            ids = live.catalog.ids(unread)
            with self.db.session() as s:
                texts = search_docs.texts(s, list(ids.values()))
            for key in unread:
                terms = live.lexical.analyze(texts.get(ids.get(key, ""), ""))
                fresh[key] = hybrid.term_distribution(terms)
        with live.terms_lock:
            for key, dist in fresh.items():
                live.terms[key] = dist
            while len(live.terms) > TERM_CACHE:
                live.terms.popitem(last=False)
        out.update(fresh)
        return out

    def _order_by_date(
        self, live: Generation, keys: list[int], scores: list[float]
    ) -> tuple[list[int], list[float]]:
        ids = live.catalog.ids(keys)
        with self.db.session() as s:
            dates = search_docs.published_dates(s, list(ids.values()))

        def when(i: int) -> int:
            pub = dates.get(ids.get(keys[i], ""))
            return -pub.toordinal() if pub else 0

        order = sorted(range(len(keys)), key=lambda i: (when(i), i))
        return [keys[i] for i in order], [scores[i] for i in order]

    # -- similar papers ----------------------------------------------------------------------

    def similar(self, live: Generation, paper_id: str, k: int) -> list[SearchHit]:
        """Nearest papers to a stored paper by embedding, leaving out the paper itself and
        its duplicates (same title key, arXiv id or text)."""
        with self.db.session() as s:
            source = search_docs.paper_docs(s, [paper_id])[paper_id]
            same = search_docs.duplicate_keys(s, [paper_id])[paper_id]
        if live.vectors is None or not len(live.vectors):
            return []
        found, vecs = live.vectors.get([paper_key(paper_id)])
        if len(vecs):
            qvec = vecs[0]
        elif self.vector_problem(live):
            return []
        else:  # not indexed yet: embed it now
            qvec = self._embedder().encode([source.text])[0]
        keys, sims = live.vectors.search(qvec, k + 25)
        ids = live.catalog.ids(keys.tolist())
        cand = [
            (ids[int(key)], float(sim))
            for key, sim in zip(keys, sims, strict=True)
            if int(key) in ids and ids[int(key)] != paper_id
        ]
        with self.db.session() as s:
            info = search_docs.duplicate_keys(s, [c for c, _ in cand])
        hits = []
        for cid, sim in cand:
            title_key, arxiv_id, chash = info.get(cid, ("", None, ""))
            if (
                (title_key and title_key == same[0])
                or (arxiv_id and arxiv_id == same[1])
                or (chash and chash == same[2])
            ):
                continue
            hits.append(SearchHit(cid, sim))
            if len(hits) == k:
                break
        return hits
