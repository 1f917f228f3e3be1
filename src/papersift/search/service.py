"""Search service: the one entry point the CLI and the web app use for search.

Indexes are derived data under ``$PAPERSIFT_HOME/index``: deleting the folder loses nothing,
the next search (or ``papersift index``) rebuilds it from the database, re-using the stored
embeddings. Layout::

    index/CURRENT            {"dir": "v...", "gen": 7, "docs": N, "vectors": M, "model": ...}
    index/v<time>/lexical/   tantivy
    index/v<time>/flat.npz | hnsw.usearch
    index/v<time>/catalog.sqlite

A rebuild writes a new ``v<time>`` folder and switches ``CURRENT`` atomically, so searches
keep working meanwhile. Incremental updates change the live folder and bump ``gen``; every
process re-opens its indexes when it sees ``CURRENT`` change (one ``stat`` per search).
Writers take a file lock, so two ``papersift ingest`` runs cannot corrupt the index.

Modes: ``lexical`` (BM25), ``semantic`` (MiniLM cosine), ``hybrid`` (default; see
:mod:`papersift.search.hybrid` for the method and its measured quality).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

from papersift.search import documents as docstore
from papersift.search import floor as relevance
from papersift.search import hybrid, identifiers, spelling, syntax
from papersift.search.catalog import Catalog, paper_key
from papersift.search.embedder import EmbedderError
from papersift.search.lexical import FilterSpec, LexicalDoc, LexicalIndex
from papersift.search.query import CleanQuery, clean_query
from papersift.search.spelling import Vocabulary
from papersift.search.vectors import VectorIndex, VectorParams
from papersift.settings import Settings
from papersift.store import papers as paper_store
from papersift.store.db import Database

MODES = ("hybrid", "lexical", "semantic")
SORTS = ("relevance", "date")
MAX_K = 1000
MAX_OFFSET = 10_000
DATE_POOL = 200  # sort=date orders the best 200 relevant papers (semantic/hybrid) by date
EMBED_BATCH = 1024  # papers embedded (and written to the database) per step
EMBED_LIMIT = 20_000  # more changed papers than this: ingest leaves embedding to `index`
FILTER_EXACT = 5_000  # narrow filters: exact dense search over the papers that pass
# Term distributions of feedback documents kept per open index (LRU; a few KB each). The top
# documents of related queries repeat, and a miss costs a database read and an analysis.
TERM_CACHE = 4_096

ProgressFn = Callable[[int, int], None]  # (papers embedded so far, papers to embed)


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


class SearchError(ValueError):
    """A request that cannot be served as asked (message is for the user)."""


@dataclass
class SearchFilters:
    date_from: date | None = None
    date_to: date | None = None
    has_code: bool | None = None
    collection: str | None = None
    category: str | None = None
    paper_ids: Sequence[str] | None = None  # only these papers (e.g. a digest's new ones)


@dataclass
class SearchHit:
    paper_id: str
    score: float


@dataclass
class SearchResults:
    hits: list[SearchHit]
    total: int
    query: str
    mode: str
    message: str | None = None
    # The paper a pasted arXiv id, DOI or paper URL names (the web app may go straight there).
    direct: str | None = None
    # "Did you mean" text built from the corpus vocabulary (None when the query looks fine);
    # ``corrected`` says the hits are for the suggestion (the query as typed found nothing).
    suggestion: str | None = None
    corrected: bool = False


@dataclass
class IndexReport:
    """What an index run did."""

    indexed: int = 0
    embedded: int = 0
    removed: int = 0
    pending_vectors: int = 0  # papers left without a vector (too many to embed now)
    seconds: float = 0.0


@dataclass
class _Ranked:
    keys: list[int]
    scores: list[float]
    total: int
    notes: list[str] = field(default_factory=list)


@dataclass
class _Live:
    """The open indexes of one generation."""

    folder: Path
    stamp: tuple
    meta: dict
    lexical: LexicalIndex
    vectors: VectorIndex | None
    catalog: Catalog
    terms: OrderedDict[int, dict[str, float]] = field(default_factory=OrderedDict)
    terms_lock: threading.Lock = field(default_factory=threading.Lock)
    vocab: Vocabulary | None = None  # read on the first query with an unknown word


class SearchService:
    """Hybrid search over one database; thread-safe for searching."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        embedder=None,
        params: VectorParams | None = None,
        view: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.root = Path(settings.index_dir)
        self.params = params or VectorParams.from_env()
        self._embedder = embedder
        self._view = view
        self._live: _Live | None = None
        self._lock = threading.RLock()
        self._writing = threading.RLock()

    # -- model -----------------------------------------------------------------------------

    @property
    def embedder(self):
        if self._embedder is None:
            from papersift.search.embedder import get_embedder

            self._embedder = get_embedder(self.settings.model_dir)
        return self._embedder

    # -- generations -----------------------------------------------------------------------

    @property
    def _current_path(self) -> Path:
        return self.root / "CURRENT"

    def _stamp(self) -> tuple | None:
        try:
            st = self._current_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_meta(self) -> dict | None:
        try:
            meta = json.loads(self._current_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or not (self.root / str(meta.get("dir", ""))).is_dir():
            return None
        return meta

    def _write_meta(self, meta: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".CURRENT.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._current_path)

    def _open(self, meta: dict, stamp: tuple, *, writable: bool = False) -> _Live:
        folder = self.root / meta["dir"]
        vectors = None
        if VectorIndex.exists(folder) and meta.get("dim"):
            vectors = VectorIndex.load(
                folder, int(meta["dim"]), self.params, view=self._view and not writable
            )
        return _Live(
            folder,
            stamp,
            meta,
            LexicalIndex(folder / "lexical"),
            vectors,
            Catalog(folder / "catalog.sqlite"),
        )

    def _current(self) -> _Live | None:
        """The open indexes, re-opened if another process changed them."""
        stamp = self._stamp()
        live = self._live
        if live is not None and live.stamp == stamp:
            return live
        with self._lock:
            stamp = self._stamp()
            if self._live is not None and self._live.stamp == stamp:
                return self._live
            meta = self._read_meta() if stamp else None
            self._live = self._open(meta, stamp) if meta else None
            return self._live

    def _ready(self) -> _Live | None:
        """Open indexes; builds them first if they are missing and the database has papers."""
        live = self._current()
        if live is not None:
            return live
        with self.db.session() as s:
            from papersift.store.papers import count_papers

            if count_papers(s) == 0:
                return None
        self.rebuild(embed_limit=EMBED_LIMIT, only_if_missing=True)
        return self._current()

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Serialise writers within this process and across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._writing, (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def status(self) -> dict:
        """What the current index holds (for ``papersift index`` and the web app)."""
        live = self._current()
        if live is None:
            return {"built": False, "docs": 0, "vectors": 0, "path": str(self.root)}
        return {"built": True, "path": str(live.folder), **live.meta}

    # -- writing ---------------------------------------------------------------------------

    def _vectors_for(
        self,
        docs: Sequence[docstore.PaperDoc],
        progress: ProgressFn | None,
        done: list[int],
        total: int,
    ) -> dict[str, np.ndarray]:
        """Vectors of docs: stored ones when the text is unchanged, new ones otherwise."""
        emb = self.embedder
        with self.db.session() as s:
            out = docstore.load_embeddings(s, docs, emb.model_id, emb.dim)
        todo = [d for d in docs if d.id not in out]
        for start in range(0, len(todo), EMBED_BATCH):
            part = todo[start : start + EMBED_BATCH]

            def step(n: int) -> None:
                done[0] += n
                if progress:
                    progress(done[0], total)

            vecs = emb.encode([d.text for d in part], progress=step)
            rows = [(d.id, d.content_hash, v) for d, v in zip(part, vecs, strict=True)]
            with self.db.session() as s:
                docstore.save_embeddings(s, rows, emb.model_id)
            out.update((d.id, v) for d, v in zip(part, vecs, strict=True))
        return out

    def _missing_embeddings(self, docs: Sequence[docstore.PaperDoc]) -> int:
        emb = self.embedder
        with self.db.session() as s:
            have = docstore.load_embeddings(s, docs, emb.model_id, emb.dim)
        return sum(1 for d in docs if d.id not in have)

    @staticmethod
    def _lexdoc(d: docstore.PaperDoc) -> LexicalDoc:
        return LexicalDoc(
            key=paper_key(d.id),
            paper_id=d.id,
            title=d.title,
            abstract=d.abstract,
            authors=d.authors,
            published=d.published,
            has_code=d.has_code,
            categories=d.categories,
        )

    def rebuild(
        self,
        *,
        progress: ProgressFn | None = None,
        embed_limit: int | None = None,
        only_if_missing: bool = False,
    ) -> IndexReport:
        """Build fresh indexes from the database and switch to them atomically.

        Papers whose stored embedding is missing or stale are embedded, unless there are more
        than ``embed_limit`` of them: then only the lexical index covers them for now.
        ``only_if_missing``: do nothing if another thread or process built one meanwhile.
        """
        started = time.monotonic()
        report = IndexReport()
        with self._write_lock():
            if only_if_missing and self._read_meta() is not None:
                return report
            emb = self.embedder
            name = f"v{time.time_ns()}"
            folder = self.root / name
            folder.mkdir(parents=True)
            try:
                lexical = LexicalIndex(folder / "lexical")
                catalog = Catalog(folder / "catalog.sqlite")
                vectors = VectorIndex(emb.dim, self.params)
                vocab = Vocabulary()
                with self.db.session() as s:
                    missing = docstore.count_unembedded(s, emb.model_id)
                embed = embed_limit is None or missing <= embed_limit
                done = [0]

                def papers() -> Iterator[LexicalDoc]:
                    """Stream papers to tantivy; vectors and catalog follow batch by batch."""
                    with self.db.session() as s:
                        for batch in docstore.iter_paper_docs(s):
                            vecs = (
                                self._vectors_for(batch, progress, done, missing)
                                if embed
                                else self._stored(batch)
                            )
                            if vecs:
                                vectors.add(
                                    [paper_key(pid) for pid in vecs], np.vstack(list(vecs.values()))
                                )
                            catalog.upsert(
                                (
                                    paper_key(d.id),
                                    d.id,
                                    d.content_hash,
                                    d.content_hash if d.id in vecs else None,
                                )
                                for d in batch
                            )
                            report.indexed += len(batch)
                            vocab.add_texts(d.text for d in batch)
                            yield from (self._lexdoc(d) for d in batch)

                lexical.write(papers(), fresh=True)
                vocab.save(folder)
                vectors.save(folder)
                report.embedded = done[0]
                n_vectors = len(vectors)
                report.pending_vectors = report.indexed - n_vectors
                catalog.close()
                meta = self._meta_after(name, report.indexed, n_vectors)
                self._write_meta(meta)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._drop_old(keep=name)
        with self._lock:
            self._live = None
        report.seconds = time.monotonic() - started
        return report

    def _stored(self, batch: Sequence[docstore.PaperDoc]) -> dict[str, np.ndarray]:
        emb = self.embedder
        with self.db.session() as s:
            return docstore.load_embeddings(s, batch, emb.model_id, emb.dim)

    def _meta_after(self, name: str, docs: int, vectors: int) -> dict:
        old = self._read_meta() or {}
        emb = self.embedder
        return {
            "dir": name,
            "gen": int(old.get("gen", 0)) + 1,
            "docs": docs,
            "vectors": vectors,
            "model": emb.model_id,
            "dim": emb.dim,
            "updated": time.time(),
        }

    def _drop_old(self, keep: str) -> None:
        for child in self.root.iterdir():
            if child.is_dir() and child.name.startswith("v") and child.name != keep:
                shutil.rmtree(child, ignore_errors=True)

    def index_papers(
        self,
        paper_ids: list[str],
        *,
        progress: ProgressFn | None = None,
        embed_limit: int | None = None,
    ) -> IndexReport:
        """Add or update these papers (ids no longer in the database are removed)."""
        started = time.monotonic()
        report = IndexReport()
        ids = list(dict.fromkeys(paper_ids))
        if not ids:
            return report
        if self._current() is None:
            return self.rebuild(progress=progress, embed_limit=embed_limit)
        with self._write_lock():
            meta = self._read_meta()
            if meta is None:  # deleted under us: start over
                return self.rebuild(progress=progress, embed_limit=embed_limit)
            live = self._open(meta, self._stamp(), writable=True)
            emb = self.embedder
            if meta.get("model") != emb.model_id:
                raise SearchError(
                    f"the index was built with model {meta.get('model')}, not {emb.model_id}: "
                    "run `papersift index --rebuild`"
                )
            with self.db.session() as s:
                docs = docstore.paper_docs(s, ids)
            gone_ids = [i for i in ids if i not in docs]
            gone = [paper_key(i) for i in gone_ids]
            batch = list(docs.values())
            live.lexical.write([self._lexdoc(d) for d in batch], delete_ids=gone_ids)
            vocab = Vocabulary.load(live.folder)
            if vocab is not None:  # (no file: the first suggestion builds it)
                vocab.add_texts(d.text for d in batch)
                vocab.save(live.folder)
            missing = self._missing_embeddings(batch) if batch else 0
            embed = embed_limit is None or missing <= embed_limit
            vectors = live.vectors or VectorIndex(emb.dim, self.params)
            done = [0]
            vec_hash: dict[str, str | None] = {d.id: None for d in batch}
            vecs = (
                self._vectors_for(batch, progress, done, missing) if embed else self._stored(batch)
            )
            stale = [paper_key(d.id) for d in batch if d.id not in vecs]
            vectors.remove(gone + stale)
            if vecs:
                vectors.add([paper_key(pid) for pid in vecs], np.vstack(list(vecs.values())))
                for pid in vecs:
                    vec_hash[pid] = docs[pid].content_hash
            vectors.save(live.folder)
            live.catalog.remove(gone)
            live.catalog.upsert(
                (paper_key(d.id), d.id, d.content_hash, vec_hash[d.id]) for d in batch
            )
            n_docs, n_vec = len(live.catalog), live.catalog.count_vectors()
            live.catalog.close()
            meta.update(
                gen=int(meta.get("gen", 0)) + 1, docs=n_docs, vectors=n_vec, updated=time.time()
            )
            self._write_meta(meta)
            report.indexed, report.removed = len(batch), len(gone)
            report.embedded = done[0]
            report.pending_vectors = n_docs - n_vec
        with self._lock:
            self._live = None
        report.seconds = time.monotonic() - started
        return report

    def sync(self, *, progress: ProgressFn | None = None) -> IndexReport:
        """Bring the indexes in step with the database, looking at content hashes only."""
        started = time.monotonic()
        live = self._current()
        if live is None:
            return self.rebuild(progress=progress)
        model = self.embedder.model_id
        if live.meta.get("model") != model:
            raise SearchError(
                f"the index was built with model {live.meta.get('model')}, not {model}: "
                "run `papersift index --rebuild` to re-embed every paper"
            )
        changed: list[str] = []
        seen = 0
        with self.db.session() as s:
            for batch in docstore.iter_hashes(s):
                known = live.catalog.hashes([pid for pid, _h in batch])
                seen += len(batch)
                for pid, chash in batch:
                    lex, vec = known.get(pid, (None, None))
                    if lex != chash or vec != chash:
                        changed.append(pid)
        gone: list[str] = []
        if len(live.catalog) + len(changed) > seen:  # some indexed papers left the database
            with self.db.session() as s:
                for rows in live.catalog.iter_ids():
                    present = docstore.existing(s, [pid for _k, pid in rows])
                    gone.extend(pid for _k, pid in rows if pid not in present)
        report = self.index_papers(changed + gone, progress=progress)
        report.seconds = time.monotonic() - started
        return report

    # -- searching -------------------------------------------------------------------------

    def _spec(self, filters: SearchFilters | None) -> tuple[FilterSpec | None, str | None]:
        if filters is None:
            return None, None
        if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
            raise SearchError("the start date is after the end date")
        spec = FilterSpec(
            date_from=filters.date_from,
            date_to=filters.date_to,
            has_code=filters.has_code,
            category=filters.category or None,
            paper_ids=list(filters.paper_ids) if filters.paper_ids is not None else None,
        )
        if filters.collection:
            from papersift.store.collections import get_collection

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

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        offset: int = 0,
        mode: str = "hybrid",
        filters: SearchFilters | None = None,
        sort: str = "relevance",
        spell: bool = True,
    ) -> SearchResults:
        """Ranked papers for ``query``; bad syntax is simplified, never an exception.

        Only matches are returned (see floor.py), and ``total`` is how many there are to
        page through. A query with words the corpus does not have gets a ``suggestion``;
        if it matched nothing, the hits are the suggestion's (``corrected``). ``spell``
        False turns both off.
        """
        if mode not in MODES:
            raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if sort not in SORTS:
            raise SearchError(f"unknown sort {sort!r}; use relevance or date")
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}")
        if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
            raise SearchError(f"offset must be between 0 and {MAX_OFFSET:,}")
        raw = query if isinstance(query, str) else ""
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
        spec, problem = self._spec(filters)
        if problem:
            return SearchResults([], 0, raw, mode, problem)
        try:
            live = self._ready()
        except EmbedderError as exc:
            return SearchResults([], 0, raw, mode, f"cannot build the search index: {exc}")
        if live is None:
            return SearchResults([], 0, raw, mode, "no papers yet: run `papersift ingest` first")
        notes = list(clean.notes)
        mode_used = mode
        if mode != "lexical":
            problem = self._vector_problem(live)
            if problem:
                notes.append(f"{problem}: keyword results only")
                mode_used = "lexical"
        fq = live.lexical.filter_query(spec) if spec else None
        need = offset + k
        by_date = sort == "date"
        if mode_used == "lexical":
            ranked = self._lexical(live, clean, need, fq, by_date)
        elif mode_used == "semantic":
            ranked = self._semantic(live, clean, max(need, DATE_POOL) if by_date else need, fq, k)
        else:
            # (candidates depend on the page size, not the offset: every page of one
            # query ranks the same candidates, so the total is what can be paged through)
            ranked = self._hybrid(live, clean, max(k, DATE_POOL) if by_date else k, fq)
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
        pending = int(live.meta.get("docs", 0)) - int(live.meta.get("vectors", 0))
        if mode_used != "lexical" and pending > 0:
            notes.append(f"{pending:,} papers are not embedded yet: run `papersift index`")
        # The count is what can be paged through: a short page is the last one.
        total = max(ranked.total, offset + len(hits))
        if len(hits) < k:
            total = min(total, offset + len(hits)) if hits or offset == 0 else total
        suggestion = spelling.suggest(live, clean.text, self.db) if spell else None
        if suggestion and total < spelling.FEW:
            again = self.search(
                suggestion, k=k, offset=offset, mode=mode, filters=filters, sort=sort, spell=False
            )
            # The typed query finds nothing, or almost nothing next to the corrected one
            # (totals, not this page: every page of one query makes the same choice).
            if again.total and again.total >= spelling.SWITCH * total:
                lead = "nothing matches" if not total else "few papers match"
                again.message = "; ".join(
                    [f"{lead} {raw.strip()!r}: showing {suggestion!r}"]
                    + ([again.message] if again.message else [])
                )
                again.query, again.suggestion, again.corrected = raw, suggestion, True
                return again
        if not hits and offset == 0:
            notes.append(spelling.no_match_advice(bool(spec), mode_used))
        message = "; ".join(dict.fromkeys(notes)) or None
        return SearchResults(hits, total, raw, mode, message, suggestion=suggestion)

    def matches(
        self,
        query: str,
        *,
        paper_ids: Sequence[str] | None = None,
        since: datetime | None = None,
        mode: str = "hybrid",
        limit: int = MAX_K,
    ) -> list[SearchHit]:
        """The papers matching ``query`` (above the relevance floor, best first) among
        ``paper_ids`` and/or the papers first seen since ``since``; for the digest's topics,
        which must find every new match on a big corpus, not only those in the top 100."""
        ids = list(paper_ids) if paper_ids is not None else None
        if since is not None:
            with self.db.session() as s:
                recent = paper_store.ids_first_seen_since(s, since)
            ids = recent if ids is None else [pid for pid in ids if pid in set(recent)]
        if ids is not None and not ids:
            return []
        filters = SearchFilters(paper_ids=ids) if ids is not None else None
        res = self.search(query, k=min(limit, MAX_K), mode=mode, filters=filters, spell=False)
        return res.hits

    def _vector_problem(self, live: _Live) -> str | None:
        """Why semantic search cannot run on these indexes now (None if it can)."""
        if live.vectors is None or not len(live.vectors):
            return "no embeddings yet (run `papersift index`)"
        try:
            model = self.embedder.model_id
        except EmbedderError as exc:
            return f"the embedding model cannot be loaded ({exc})"
        if live.meta.get("model") != model:
            return (
                f"the index was built with model {live.meta.get('model')}, not {model} "
                "(run `papersift index --rebuild`)"
            )
        return None

    def _lexical(self, live: _Live, clean: CleanQuery, need: int, fq, by_date: bool) -> _Ranked:
        query, simplified = live.lexical.build_query(clean)
        notes = ["query simplified to plain words"] if simplified else []
        if query is None:
            return _Ranked([], [], 0, notes + ["no searchable words in the query"])
        res = live.lexical.search(
            query, limit=need, filters=[fq], count=True, order_by_date=by_date
        )
        return _Ranked(res.keys, res.scores, res.total, notes)

    def _dense(
        self, live: _Live, qvec: np.ndarray, count: int, fq
    ) -> tuple[list[int], list[float], int]:
        """Nearest (keys, sims) passing the filters, and how many papers pass them."""
        vectors = live.vectors
        assert vectors is not None
        if fq is None:
            keys, sims = vectors.search(qvec, count)
            return [int(k) for k in keys], sims.tolist(), len(vectors)
        allowed = live.lexical.count(fq)
        if allowed == 0:
            return [], [], 0
        if allowed <= FILTER_EXACT:
            keys, sims = vectors.search_among(qvec, live.lexical.filtered_keys(fq, allowed), count)
            return [int(k) for k in keys], sims.tolist(), allowed
        # Broad filter: over-fetch in proportion to how many papers pass, then keep those.
        share = allowed / max(len(vectors), 1)
        fetch = min(len(vectors), int(count / share * 1.5) + count, 50 * count + 1000)
        keys, sims = vectors.search(qvec, fetch)
        passing = live.lexical.keep_passing(keys.tolist(), fq)
        kept = [(int(k), float(s)) for k, s in zip(keys, sims, strict=True) if int(k) in passing]
        kept = kept[:count]
        return [k for k, _ in kept], [s for _, s in kept], allowed

    def _semantic(self, live: _Live, clean: CleanQuery, need: int, fq, k: int) -> _Ranked:
        text = clean.semantic or clean.text
        qvec = self.embedder.encode_query(text)
        fetch = max(k, relevance.SEMANTIC_COUNT)  # the same for every page of the query
        keys, sims, _allowed = self._dense(live, qvec, fetch, fq)
        # Only papers above the relevance floor are matches (and counted as results).
        known = relevance.has_known_word(live.lexical, clean.words or text)
        shown = relevance.above(sims, relevance.cosine_floor(self.embedder.model_id, known))
        return _Ranked(keys[: min(shown, need)], sims[: min(shown, need)], shown)

    def _hybrid(self, live: _Live, clean: CleanQuery, need: int, fq) -> _Ranked:
        lexical = live.lexical
        query, simplified = syntax.ranking_query(lexical, clean, hybrid.TITLE_WEIGHT)
        notes = ["query simplified to plain words"] if simplified else []
        fq = syntax.combine(fq, syntax.constraint_filter(lexical, clean))
        if not clean.semantic:  # e.g. only `author:` clauses: nothing to embed
            ranked = self._lexical(live, clean, need, fq, False)
            ranked.notes = notes + ranked.notes
            return ranked
        pool = max(hybrid.POOL, need)

        def dense_side() -> tuple[np.ndarray, tuple[list[int], list[float], int]]:
            qvec = self.embedder.encode_query(clean.semantic)
            return qvec, self._dense(live, qvec, pool, fq)

        with _HYBRID_RUNNING.enter() as busy:
            if busy or _CORES < 2:
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
                        # will be feedback documents (off the critical path at scale).
                        self._term_distributions(live, lex.keys[: hybrid.FEEDBACK_DOCS])
                finally:
                    qvec, (d_keys, d_sims, _allowed) = pending.result()
        cos_floor = relevance.cosine_floor(self.embedder.model_id)
        if lex is None or not lex.keys:  # no paper shares a word: meaning only
            known = relevance.has_known_word(lexical, clean.words)
            shown = relevance.above(d_sims, relevance.cosine_floor(self.embedder.model_id, known))
            return _Ranked(d_keys[: min(shown, need)], d_sims[: min(shown, need)], shown, notes)
        # Syntax has filtered both sides (see syntax.py): every candidate keeps its meaning.
        cands = hybrid.merge_candidates(lex.keys, d_keys)
        dense = self._exact_dense(live, cands, qvec, d_sims, dict(zip(d_keys, d_sims, strict=True)))
        lex_scores = dict(zip(lex.keys, lex.scores, strict=True))
        floor = min(lex.scores) if len(lex.keys) >= pool else 0.0
        lex_vec = hybrid.lookup(lex_scores, cands, floor)
        d_ref = d_sims or dense.tolist()
        alpha = hybrid.dense_weight(lex.scores, d_ref)
        fused = hybrid.fuse(lex_vec, lex.scores, dense, d_ref, alpha)
        fused = self._feedback(
            live,
            clean,
            cands,
            fused,
            dense,
            d_sims,
            alpha,
            (lex_vec, lex.scores, lex.keys),
            qvec,
            d_keys,
        )
        order = np.argsort(-fused, kind="stable")
        # Matches only: a paper that shares a query word or is close enough in meaning.
        shared = np.fromiter((key in lex_scores for key in cands), dtype=bool, count=len(cands))
        matched = relevance.keep(dense, shared, cos_floor)
        order = order[matched[order]]
        return _Ranked([cands[i] for i in order], fused[order].tolist(), len(order), notes)

    def _exact_dense(
        self,
        live: _Live,
        cands: list[int],
        qvec: np.ndarray,
        ref: list[float],
        known: dict[int, float] | None = None,
    ) -> np.ndarray:
        """Cosine of every candidate from its stored vector (NaN if it has none yet: the
        fusion then ranks it by its lexical score alone).

        ``known`` are similarities the vector search already computed against the same
        stored vectors; only the other candidates' vectors are read.
        """
        known = known or {}
        out = np.full(len(cands), np.nan, dtype=np.float64)
        rest = [i for i, key in enumerate(cands) if key not in known]
        for i, key in enumerate(cands):
            if key in known:
                out[i] = known[key]
        if rest:
            found, vecs = live.vectors.get([cands[i] for i in rest])
            if len(vecs):
                out[np.asarray(rest)[found]] = vecs @ qvec
        return out

    def _feedback(
        self,
        live: _Live,
        clean: CleanQuery,
        cands: list[int],
        fused: np.ndarray,
        dense: np.ndarray,
        d_sims: list[float],
        alpha: float,
        first: tuple[np.ndarray, list[float], list[int]],
        qvec: np.ndarray | None = None,
        d_keys: Sequence[int] = (),
    ) -> np.ndarray:
        """RM3 on the fused top documents, re-scoring the candidates (see hybrid.py)."""
        top = np.argsort(-fused, kind="stable")[: hybrid.FEEDBACK_DOCS]
        if len(top) < 2:
            return fused
        top_keys = [cands[i] for i in top]
        dists = self._term_distributions(live, top_keys)
        doc_weights = hybrid.feedback_weights(fused[top].tolist())
        # (the cached distributions hold no common terms: see _rare_terms)
        model = hybrid.relevance_model(
            (dists.get(key, {}), w) for key, w in zip(top_keys, doc_weights, strict=True)
        )
        if not model:
            return fused
        lexical = live.lexical
        lam = hybrid.FEEDBACK_LAMBDA
        # Expanded query = (1 - lam) x original (per query term) + lam x relevance model.
        # BM25 is linear in the query's term weights, so its score is (1 - lam) / n x the
        # first pass's score plus lam x the score of the relevance model's terms alone:
        # only the latter is computed, and the first pass's scores (and its bound for
        # candidates below its cut) are kept, so lam = 0 ranks exactly as no feedback.
        if clean.has_syntax:
            n_terms = max(1, len(lexical.analyze(clean.words or clean.text)))
        else:
            original = lexical.bag_weights(clean.text, title_weight=hybrid.TITLE_WEIGHT)
            n_terms = max(1, int(sum(w for (f, _t), w in original.items() if f == "text")))
        weights: dict[tuple[str, str], float] = {}
        for term, w in model.items():
            weights["text", term] = w
            if hybrid.TITLE_WEIGHT:
                weights["title", term] = w * hybrid.TITLE_WEIGHT
        # Re-score the best FEEDBACK_RESCORE candidates; the rest keep their order below them.
        head = np.argsort(-fused, kind="stable")[: hybrid.FEEDBACK_RESCORE]
        head_keys = [cands[i] for i in head]
        first_vec, first_ref, first_keys = first
        ref_keys = first_keys[: hybrid.Z_DEPTH]
        scores = lexical.scores_among(weights, hybrid.merge_candidates(head_keys, ref_keys))
        share = (1 - lam) / n_terms
        lex2 = share * first_vec[head] + lam * hybrid.lookup(scores, head_keys, 0.0)
        ref = share * np.asarray(first_ref[: hybrid.Z_DEPTH]) + lam * hybrid.lookup(
            scores, ref_keys, 0.0
        )
        dense_head, dense_ref = dense[head], d_sims or dense.tolist()
        if hybrid.DENSE_FEEDBACK > 0 and qvec is not None and live.vectors is not None:
            _found, vecs = live.vectors.get(top_keys)
            if len(vecs) == len(top_keys):
                q2 = qvec + hybrid.DENSE_FEEDBACK * (doc_weights @ vecs)
                q2 = (q2 / np.linalg.norm(q2)).astype(np.float32)
                # Re-scored: the head and the first pass's dense list (its new scale), from
                # their stored vectors; no second vector search.
                keys2 = hybrid.merge_candidates(head_keys, d_keys)
                sims2 = dict(zip(keys2, self._exact_dense(live, keys2, q2, []), strict=True))
                dense_head = hybrid.lookup(sims2, head_keys, np.nan)
                dense_ref = [v for v in hybrid.lookup(sims2, d_keys, np.nan) if v == v]
        rescored = hybrid.fuse(lex2, ref.tolist(), dense_head, dense_ref, alpha)
        final = fused.copy()
        final[head] = rescored
        tail = np.ones(len(cands), dtype=bool)
        tail[head] = False
        if tail.any():
            final[tail] = fused[tail] - (fused[tail].max() - rescored.min()) - 1e-6
        return final

    def warm(self, limit: int = TERM_CACHE, *, chunk: int = 256) -> int:
        """Fill the feedback term cache with the newest ``limit`` papers (all of a small
        corpus), as search engines run warming queries on a new searcher: without it the
        first few thousand searches after a start each read and analyse papers' text
        (measured on the sample corpus: 7.2 ms of server CPU per hybrid search in the first
        3,000 against 6.7 ms later). Returns how many papers are cached."""
        live = self._current()
        if live is None:
            return 0
        with self.db.session() as s:
            ids = docstore.newest_ids(s, min(limit, TERM_CACHE))
        indexed = live.catalog.ids([paper_key(pid) for pid in ids])  # not the unindexed
        keys = list(indexed)
        for start in range(0, len(keys), chunk):
            self._term_distributions(live, keys[start : start + chunk])
        return len(keys)

    def _term_distributions(self, live: _Live, keys: list[int]) -> dict[int, dict[str, float]]:
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
        ids = live.catalog.ids(missing)
        with self.db.session() as s:
            texts = docstore.texts(s, list(ids.values()))
        fresh = {
            key: self._rare_terms(
                live,
                hybrid.term_distribution(live.lexical.analyze(texts.get(ids.get(key, ""), ""))),
            )
            for key in missing
        }
        with live.terms_lock:
            for key, dist in fresh.items():
                live.terms[key] = dist
            while len(live.terms) > TERM_CACHE:
                live.terms.popitem(last=False)
        out.update(fresh)
        return out

    @staticmethod
    def _rare_terms(live: _Live, dist: dict[str, float]) -> dict[str, float]:
        """``dist`` without the terms feedback skips (in over ``MAX_DOC_SHARE`` of the
        papers): dropped once when cached instead of looked up in every query's relevance
        model. The shares stay the whole document's, so the model is unchanged."""
        shares = live.lexical.doc_shares(dist)
        return {t: p for t, p in dist.items() if shares[t] <= hybrid.MAX_DOC_SHARE}

    def _order_by_date(
        self, live: _Live, keys: list[int], scores: list[float]
    ) -> tuple[list[int], list[float]]:
        ids = live.catalog.ids(keys)
        with self.db.session() as s:
            dates = docstore.published_dates(s, list(ids.values()))

        def when(i: int) -> int:
            pub = dates.get(ids.get(keys[i], ""))
            return -pub.toordinal() if pub else 0

        order = sorted(range(len(keys)), key=lambda i: (when(i), i))
        return [keys[i] for i in order], [scores[i] for i in order]

    # -- similar ---------------------------------------------------------------------------

    def similar(self, paper_id: str, k: int = 10) -> list[SearchHit]:
        """Nearest papers by embedding; the paper itself and its duplicates are left out."""
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}")
        from papersift.store.papers import resolve_id

        with self.db.session() as s:
            pid = resolve_id(s, paper_id or "")
            if pid is None:
                raise KeyError(paper_id)
            source = docstore.paper_docs(s, [pid])[pid]
            same = docstore.duplicate_keys(s, [pid])[pid]
        live = self._ready()
        if live is None or live.vectors is None or not len(live.vectors):
            return []
        found, vecs = live.vectors.get([paper_key(pid)])
        if len(vecs):
            qvec = vecs[0]
        elif self._vector_problem(live):
            return []
        else:  # not indexed yet: embed it now
            qvec = self.embedder.encode([source.text])[0]
        keys, sims = live.vectors.search(qvec, k + 25)
        ids = live.catalog.ids(keys.tolist())
        cand = [
            (ids[int(key)], float(sim))
            for key, sim in zip(keys, sims, strict=True)
            if int(key) in ids and ids[int(key)] != pid
        ]
        with self.db.session() as s:
            info = docstore.duplicate_keys(s, [c for c, _ in cand])
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


def index_changed(
    settings: Settings, db: Database, paper_ids: list[str], quiet: bool = False
) -> None:
    """Called by ``papersift ingest`` after it commits: make the changed papers searchable.

    The lexical index is updated at once. Embeddings are computed here (with a progress bar
    unless ``quiet``) when there are at most ``EMBED_LIMIT`` papers to embed; for a bigger
    load (e.g. a full arXiv snapshot, hours of CPU) ingest does not block: it says so, and
    ``papersift index`` embeds the rest, resumable, since finished embeddings are stored.
    """
    if not paper_ids:
        return
    service = get_service(settings, db)
    try:
        with _progress(quiet) as progress:
            report = service.index_papers(
                list(paper_ids), progress=progress, embed_limit=EMBED_LIMIT
            )
    except (SearchError, EmbedderError) as exc:  # the data is in; only the index lags
        print(f"search index not updated: {exc}", file=sys.stderr)
        return
    if report.pending_vectors and not quiet:
        print(
            f"{report.pending_vectors:,} papers are searchable by keyword only for now: run "
            "`papersift index` to embed them for semantic and hybrid search.",
            file=sys.stderr,
        )


@contextmanager
def _progress(quiet: bool) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr fed by (done, total) callbacks."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("embedding", total=total)
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
