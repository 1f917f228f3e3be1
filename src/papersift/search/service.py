"""Search service: the one entry point the CLI, the web app and the digest use for search.

A facade over three parts: :mod:`~papersift.search.generations` (which indexes are live),
:mod:`~papersift.search.indexer` (writing them) and :mod:`~papersift.search.execute`
(answering queries). Modes: ``lexical`` (BM25), ``semantic`` (MiniLM cosine), ``hybrid``
(default; see :mod:`papersift.search.hybrid` for the method and its measured quality).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from papersift.search import feedback, identifiers, spelling
from papersift.search import floor as relevance
from papersift.search import indexer as indexing
from papersift.search.catalog import paper_key
from papersift.search.embedder import Embedder, EmbedderError, get_embedder
from papersift.search.execute import TERM_CACHE, Executor
from papersift.search.generations import Generation, Generations, IndexUnavailable
from papersift.search.query import clean_query
from papersift.search.types import (
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_SORT,
    MAX_K,
    NO_FILTERS,
    IndexReport,
    Progress,
    SearchError,
    SearchFilters,
    SearchHit,
    SearchRequest,
    SearchResults,
)
from papersift.search.vectors import VectorParams
from papersift.settings import Settings
from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store.db import Database

log = logging.getLogger(__name__)


class SearchService:
    """Hybrid search over one database; thread-safe for searching.

    ``embedder`` is the model to use; without one, ``load_embedder`` (by default the
    model of ``settings.model_dir``) is called the first time a search or an index run
    needs it, so a service that only serves keyword searches never loads the model.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        embedder: Embedder | None = None,
        load_embedder: Callable[[], Embedder] | None = None,
        params: VectorParams | None = None,
        view: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.root = Path(settings.index_dir)
        self.params = params or VectorParams.from_env()
        self._embedder = embedder
        self._load_embedder = load_embedder or (lambda: get_embedder(settings.model_dir))
        self._embedder_lock = threading.Lock()
        self._preloading: threading.Thread | None = None
        self.generations = Generations(self.root, self.params, view=view)
        self.repair_in_background = False  # the web app sets it: requests never wait
        self.follows_snapshots = False  # the web app sets it with snapshot_url: never builds
        self._repair: threading.Thread | None = None
        self._repair_lock = threading.Lock()
        self.indexer = indexing.Indexer(db, self.generations, self._get_embedder)
        self.executor = Executor(db, self._get_embedder)
        # Writing is the indexer's: rebuild(), index_papers(ids) and sync(), each taking an
        # optional progress callback and returning an IndexReport.
        self.rebuild = self.indexer.rebuild
        self.index_papers = self.indexer.index_papers
        self.sync = self.indexer.sync

    @property
    def embedder(self) -> Embedder:
        """The embedding model (loaded on first use)."""
        return self._get_embedder()

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            with self._embedder_lock:  # loaded once, whichever thread asks first
                if self._embedder is None:
                    self._embedder = self._load_embedder()
        return self._embedder

    def _preload_embedder(self) -> None:
        """Load the model in a thread while the index opens: faiss reads the vector file
        without holding the GIL (0.2-0.4 s at a million papers), and a new process's first
        search by meaning needs both. A failure is left to the search itself to report."""
        if self._embedder is not None or self._preloading is not None:
            return
        self._preloading = threading.Thread(
            target=self._preload_quietly, name="embedder-load", daemon=True
        )
        self._preloading.start()

    def _preload_quietly(self) -> None:
        try:
            self._get_embedder()
        except Exception as exc:  # the search that needs it raises it again, in its thread
            log.debug("loading the embedding model ahead of the index failed: %s", exc)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Let this service's background work end (the model load, the index check, a
        repair) before its folders are removed or the process exits; returns whether all
        of it ended within ``timeout`` seconds each."""
        threads = [t for t in (self._preloading, self._repair) if t is not None]
        for thread in threads:
            thread.join(timeout)
        checked = self.generations.wait_checked(timeout)
        return checked and not any(t.is_alive() for t in threads)

    # -- indexes ---------------------------------------------------------------------------

    def _current(self) -> Generation | None:
        """The open indexes (re-opened if another process switched them)."""
        return self.generations.current()

    def _ready(self) -> Generation | None:
        """Open indexes; builds them first if they are missing and the database has papers.

        A generation that was damaged (set aside by :class:`Generations`) is rebuilt in a
        background thread when ``repair_in_background`` is set (the web app): meanwhile
        :class:`IndexUnavailable` says so, and nothing waits for the rebuild."""
        live = self.generations.current()
        if live is not None:
            return live
        with self.db.session() as s:
            if paper_store.count_papers(s) == 0:
                return None
        if self.follows_snapshots:  # the index comes from the snapshot store, never built here
            raise IndexUnavailable("the search index is being fetched; try again shortly")
        if self.generations.damaged and self.repair_in_background:
            self._start_repair()
            raise IndexUnavailable(
                "the search index was damaged and is being rebuilt; try again shortly"
            )
        self._rebuild_missing()
        return self.generations.current()

    def _rebuild_missing(self) -> None:
        self.indexer.rebuild(embed_limit=indexing.EMBED_LIMIT, only_if_missing=True)
        self.generations.damaged = None

    def _start_repair(self) -> None:
        with self._repair_lock:
            if self._repair is None or not self._repair.is_alive():
                self._repair = threading.Thread(
                    target=self._repair_quietly, name="index-repair", daemon=True
                )
                self._repair.start()

    def _repair_quietly(self) -> None:
        try:
            self._rebuild_missing()
        except OSError as exc:
            # A full disk is the usual cause: one line, and the next search tries again.
            log.warning("rebuilding the damaged search index did not finish: %s", exc)
        except Exception:
            log.exception("rebuilding the damaged search index failed")

    def catch_up(self) -> IndexReport:
        """Bring the indexes in step with the database (at a server's start): papers an
        interrupted ingest committed but never indexed become searchable."""
        return self.indexer.sync(embed_limit=indexing.EMBED_LIMIT)

    def status(self) -> dict[str, Any]:
        """What the current index holds (for ``papersift index`` and the web app)."""
        return self.generations.status()

    def papers_changed(
        self, paper_ids: list[str], *, progress: Progress | None = None
    ) -> IndexReport:
        """After papers were committed: index them at once, with whatever an interrupted
        earlier run left undone (found by content hash), embedding only if there are at
        most ``EMBED_LIMIT`` to embed (a bigger load is left to :meth:`sync`)."""
        return self.indexer.sync(
            progress=progress, also=list(paper_ids), embed_limit=indexing.EMBED_LIMIT
        )

    def warm(self, limit: int = TERM_CACHE) -> int:
        """Fill the feedback term cache with the newest ``limit`` papers (all of a small
        corpus), as search engines run warming queries on a new searcher. Worth it for an
        index built before the catalog stored terms (a miss then reads and analyses the
        paper's text: 7.2 ms of server CPU per hybrid search in the first 3,000 against
        6.7 ms later on the sample corpus); the server no longer runs it at start. Returns
        how many papers are cached."""
        live = self.generations.current()
        if live is None:
            return 0
        with self.db.session() as s:
            ids = paper_store.newest_ids(s, min(limit, TERM_CACHE))
        return self.executor.warm(live, ids)

    # -- searching -------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = DEFAULT_K,
        offset: int = 0,
        mode: str = DEFAULT_MODE,
        filters: SearchFilters | None = None,
        sort: str = DEFAULT_SORT,
        spell: bool = True,
    ) -> SearchResults:
        """Ranked papers for ``query``; bad syntax is simplified, never an exception."""
        text = query if isinstance(query, str) else ""
        request = SearchRequest(text, k, offset, mode, sort, filters or NO_FILTERS)
        return self.run(request, spell=spell)

    def run(self, request: SearchRequest, *, spell: bool = True) -> SearchResults:
        """The results of one request (SearchError if it asks for what is not served).

        Only matches are returned (see floor.py) and ``total`` is how many there are to
        page through. A pasted arXiv id, DOI or paper link returns that paper (``direct``).
        A query with words the corpus lacks gets a ``suggestion``; when it finds (almost)
        nothing, the hits are the suggestion's (``corrected``). ``spell`` False: neither.
        """
        request.validate()
        raw, mode = request.query, request.mode
        clean = clean_query(raw)
        if clean.empty:
            return SearchResults([], 0, raw, mode, "empty query")
        ref = identifiers.identify(raw)
        if ref is not None:
            with self.db.session() as s:
                direct = identifiers.resolve(s, ref)
            if direct is not None:
                return SearchResults([SearchHit(direct, 1.0)], 1, raw, mode, direct=direct)
            clean.notes.append(f"no paper here has the {identifiers.LABELS[ref.kind]} {ref.value}")
        spec, problem = self.executor.filter_spec(request.filters)
        if problem:
            return SearchResults([], 0, raw, mode, problem)
        if mode != "lexical":
            self._preload_embedder()  # (no-op once loaded) overlaps an index being opened
        try:
            live = self._ready()
        except EmbedderError as exc:
            return SearchResults([], 0, raw, mode, f"cannot build the search index: {exc}")
        if live is None:
            return SearchResults([], 0, raw, mode, "no papers yet: run `papersift ingest` first")
        results = self.executor.search(live, request, clean, spec)
        suggestion = spelling.suggest(live, clean.text, self.db) if spell else None
        if suggestion and results.total < spelling.FEW:
            again = self.run(replace(request, query=suggestion), spell=False)
            # The typed query finds nothing, or almost nothing next to the corrected one
            # (totals, not this page: every page of one query makes the same choice).
            if again.total and again.total >= spelling.SWITCH * results.total:
                lead = "nothing matches" if not results.total else "few papers match"
                notes = [f"{lead} {raw.strip()!r}: showing {suggestion!r}"]
                again.message = "; ".join(notes + ([again.message] if again.message else []))
                again.query, again.suggestion, again.corrected = raw, suggestion, True
                return again
        results.suggestion = suggestion
        if not results.hits and request.offset == 0:
            advice = spelling.no_match_advice(spec is not None, results.mode)
            results.message = "; ".join(filter(None, [results.message, advice]))
        return results

    def matches(
        self,
        query: str,
        *,
        paper_ids: Sequence[str] | None = None,
        since: datetime | None = None,
        mode: str = DEFAULT_MODE,
        limit: int = MAX_K,
        digest: bool = False,
    ) -> list[SearchHit]:
        """The papers matching ``query`` (above the relevance floor, best first) among
        ``paper_ids`` and/or the papers first seen since ``since``: for the digest's topics,
        which must find every new match on a big corpus, not only those in the top 100.
        ``digest``: the floor's stricter digest mode (``floor.digest_keep``)."""
        ids = list(paper_ids) if paper_ids is not None else None
        if since is not None:
            with self.db.session() as s:
                recent = paper_store.ids_first_seen_since(s, since)
            fresh = set(recent)
            ids = recent if ids is None else [pid for pid in ids if pid in fresh]
        if ids is not None and not ids:
            return []
        filters = SearchFilters(paper_ids=tuple(ids)) if ids is not None else None
        res = self.search(query, k=min(limit, MAX_K), mode=mode, filters=filters, spell=False)
        return self._digest_matches(query, res.hits) if digest and res.hits else res.hits

    def _digest_matches(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        """The hits that also pass the floor's digest mode: the topic's idf coverage of
        each paper's terms and its exact cosine (none without a model: coverage only)."""
        live = self._current()
        if live is None:
            return []
        clean = clean_query(query)
        lexical = live.lexical
        words = clean.words or clean.semantic
        shares = lexical.doc_shares(set(lexical.analyze(words)))
        weights = relevance.topic_weights(shares, lexical.num_docs)
        ids = [h.paper_id for h in hits]
        with self.db.session() as s:
            texts = search_docs.texts(s, ids)
        covered = np.array(
            [relevance.coverage(weights, set(lexical.analyze(texts.get(p, "")))) for p in ids]
        )
        dense = np.full(len(ids), -1.0)
        model_id: str | None = None
        if clean.semantic and live.vectors is not None:
            try:
                qvec = self.embedder.encode_query(clean.semantic)
                model_id = self.embedder.model_id
            except EmbedderError:
                qvec = None
            if qvec is not None:
                cos = feedback.exact_cosines(live.vectors, [paper_key(p) for p in ids], qvec)
                dense = np.nan_to_num(cos, nan=-1.0)
        known = any(v > 0 for v in shares.values()) or relevance.has_known_word(lexical, words)
        mask = relevance.digest_keep(dense, covered, model_id, known)
        return [h for h, kept in zip(hits, mask, strict=True) if kept]

    def similar(self, paper_id: str, k: int = DEFAULT_K) -> list[SearchHit]:
        """Nearest papers by embedding; the paper itself and its duplicates are left out.

        KeyError if no paper has this id (or arXiv id, or DOI).
        """
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}")
        with self.db.session() as s:
            pid = paper_store.resolve_id(s, paper_id or "")
        if pid is None:
            raise KeyError(paper_id)
        live = self._ready()
        if live is None:
            return []
        return self.executor.similar(live, pid, k)


_SERVICES: dict[tuple[str, str, str], SearchService] = {}
_SERVICES_LOCK = threading.Lock()


def get_service(settings: Settings, db: Database) -> SearchService:
    """One service per (home, database URL, model folder) per process."""
    key = (str(Path(settings.home).resolve()), settings.db_url, settings.model_dir or "")
    with _SERVICES_LOCK:
        service = _SERVICES.get(key)
        if service is None:
            service = SearchService(settings, db)
            _SERVICES[key] = service
        return service


def forget_services() -> None:
    """Drop the per-process services (after the environment they were made in changed)."""
    with _SERVICES_LOCK:
        _SERVICES.clear()
