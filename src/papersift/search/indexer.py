"""Writing the indexes: full rebuilds, incremental updates, and syncs by content hash.

Stored embeddings are re-used whenever a paper's text is unchanged (its content hash), so
a rebuild after deleting the index folder embeds nothing, and an interrupted ``papersift
index`` resumes where it stopped (each batch of new embeddings is committed at once).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from papersift.search.catalog import PROVISIONAL, Catalog, paper_key
from papersift.search.embedder import Embedder, EmbedderError
from papersift.search.generations import Generation, Generations, Meta
from papersift.search.lexical import LexicalIndex
from papersift.search.spelling import Vocabulary
from papersift.search.textwork import TextWork, term_rows
from papersift.search.types import IndexReport, Progress, SearchError
from papersift.search.vectors import VectorIndex
from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store.db import Database
from papersift.store.search_docs import PaperDoc

EMBED_BATCH = 1024  # papers embedded (and written to the database) per step
EMBED_LIMIT = 20_000  # more changed papers than this: ingest leaves embedding to `index`
VECTOR_CHUNK = 8192  # papers given vectors per saved, live step (a killed run keeps the rest)
# From this many papers to embed in one update, their titles are embedded first (a title is
# a twentieth of an abstract's tokens): searchable by meaning in about a second, their full
# vectors replace the title ones as the abstracts are embedded. Title vectors are marked
# provisional in the catalog, so a killed run leaves them pending, never taken for done.
TITLE_FIRST = 256


class _Embedding:
    """Counts papers embedded during one run and reports them to ``progress``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def step(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def _save_vectors(
    gens: Generations,
    live: Generation,
    vectors: VectorIndex,
    meta: Meta,
    vec_hashes: dict[str, str],
) -> None:
    """Write the vector file, then record in the catalog which texts it now holds (the
    hash each paper's vector was made from), then publish the new count: in that order,
    so a crash never claims vectors not on disk."""
    vectors.save(live.folder)
    live.catalog.upsert((paper_key(pid), pid, None, vec) for pid, vec in vec_hashes.items())
    meta.update(
        gen=int(meta.get("gen", 0)) + 1,
        vectors=live.catalog.count_vectors(),
        updated=time.time(),
    )
    gens.write_meta(meta)


class Indexer:
    """Brings the indexes of one home in step with its database (one writer at a time)."""

    def __init__(
        self, db: Database, generations: Generations, embedder: Callable[[], Embedder]
    ) -> None:
        self.db = db
        self.generations = generations
        self._embedder = embedder  # called only when a run needs the model

    def _optional_embedder(self) -> Embedder | None:
        """The model, or None when it cannot load: keyword search never waits for it."""
        try:
            return self._embedder()
        except EmbedderError:
            return None

    # -- vectors ---------------------------------------------------------------------------

    def _stored(self, docs: Sequence[PaperDoc]) -> dict[str, np.ndarray]:
        """Stored vectors of the docs whose text is unchanged."""
        emb = self._embedder()
        with self.db.session() as s:
            return search_docs.load_embeddings(
                s, {d.id: d.content_hash for d in docs}, emb.model_id, emb.dim
            )

    def _vectors_for(
        self,
        docs: Sequence[PaperDoc],
        run: _Embedding,
        stored: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Vectors of docs: stored ones when the text is unchanged (``stored``, if read
        already), new ones otherwise."""
        emb = self._embedder()
        out = dict(self._stored(docs) if stored is None else stored)
        todo = [d for d in docs if d.id not in out]
        for start in range(0, len(todo), EMBED_BATCH):
            part = todo[start : start + EMBED_BATCH]
            vecs = emb.encode([d.text for d in part], progress=run.step)
            rows = [(d.id, d.content_hash, v) for d, v in zip(part, vecs, strict=True)]
            with self.db.session() as s:
                search_docs.save_embeddings(s, rows, emb.model_id)
            out.update((d.id, v) for d, v in zip(part, vecs, strict=True))
        return out

    def _check_model(self, meta: Meta, hint: str) -> None:
        model = self._embedder().model_id
        if meta.get("model") != model:
            raise SearchError(
                f"the index was built with model {meta.get('model')}, not {model}: {hint}"
            )

    # -- runs ------------------------------------------------------------------------------

    def rebuild(
        self,
        *,
        progress: Progress | None = None,
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
        gens = self.generations
        with gens.write_lock():
            if only_if_missing and gens.read_meta() is not None:
                return report
            emb = self._optional_embedder()  # None: a keyword-only index, vectors later
            name = f"v{time.time_ns()}"
            folder = gens.new_folder(name)
            try:
                lexical = LexicalIndex(folder / "lexical")
                catalog = Catalog(folder / "catalog.sqlite")
                vectors = VectorIndex(emb.dim if emb else 1, gens.params)
                vocab = Vocabulary()
                missing = 0
                if emb is not None:
                    with self.db.session() as s:
                        missing = search_docs.count_unembedded(s, emb.model_id)
                # Keyword search first: the new generation goes live with the stored
                # vectors only; missing ones are embedded afterwards in resumable batches.
                run = _Embedding(progress, missing)

                # Stored vectors are gathered while tantivy indexes (f16: 0.8 GB at 1M) and
                # the graph is built afterwards in a few calls that use every core.
                chunks: list[tuple[np.ndarray, np.ndarray]] = []

                def papers() -> Iterator[PaperDoc]:
                    """Stream papers to tantivy; the catalog follows batch by batch."""
                    with self.db.session() as s:
                        for batch in search_docs.iter_paper_docs(s):
                            vecs: dict[str, np.ndarray] = {}
                            if emb is not None:
                                vecs = self._stored(batch)
                            if vecs:
                                chunks.append(
                                    (
                                        np.array([paper_key(p) for p in vecs], dtype=np.uint64),
                                        np.vstack(list(vecs.values())).astype(np.float16),
                                    )
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
                            analysed = work.submit([(d.id, d.content_hash, d.text) for d in batch])
                            for rows, words in analysed:
                                catalog.put_terms(rows)
                                vocab.add_counts(words)
                            yield from batch
                    for rows, words in work.finish():
                        catalog.put_terms(rows)
                        vocab.add_counts(words)

                work = TextWork()
                try:
                    lexical.write(papers(), fresh=True)
                finally:
                    work.close()
                vocab.save(folder)
                if emb is not None:
                    vectors.add_many(chunks)
                    chunks.clear()
                    vectors.save(folder)
                report.embedded = run.done
                n_vectors = len(vectors)
                report.pending_vectors = report.indexed - n_vectors
                catalog.keep_counts()
                catalog.close()
                old = gens.read_meta() or {}
                gens.write_meta(
                    {
                        "dir": name,
                        "gen": int(old.get("gen", 0)) + 1,
                        "docs": report.indexed,
                        "vectors": n_vectors,
                        "model": emb.model_id if emb else None,
                        "dim": emb.dim if emb else None,
                        "updated": time.time(),
                    }
                )
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # a failed write leaves nothing
                raise
            gens.drop_old(keep=name)
        gens.forget()
        if emb is not None and missing and (embed_limit is None or missing <= embed_limit):
            more = self.embed_pending(progress=progress)
            report.embedded += more.embedded
            report.pending_vectors = more.pending_vectors
        report.seconds = time.monotonic() - started
        return report

    def embed_pending(
        self, *, progress: Progress | None = None, chunk: int = VECTOR_CHUNK
    ) -> IndexReport:
        """Give vectors to the indexed papers that lack one, ``chunk`` papers at a time:
        each chunk is saved and made live before the next, so a killed run keeps what it
        did (and the embeddings themselves are stored in the database batch by batch)."""
        report = IndexReport()
        gens = self.generations
        emb = self._optional_embedder()
        if emb is None:
            return report
        with gens.write_lock():
            meta = gens.read_meta()
            if meta is None or meta.get("model") != emb.model_id:
                return report
            live = gens.open(meta, gens.stamp(), writable=True)
            vectors = live.vectors or VectorIndex(emb.dim, gens.params)
            total = live.catalog.count_pending_vectors()
            run = _Embedding(progress, total)
            after = -1
            try:
                while True:
                    rows = live.catalog.without_vectors(after, chunk)
                    if not rows:
                        break
                    after = rows[-1][0]
                    with self.db.session() as s:
                        docs = search_docs.paper_docs(s, [pid for _k, pid in rows])
                    batch = list(docs.values())
                    vecs = self._vectors_for(batch, run)
                    keys = [paper_key(pid) for pid in vecs]
                    vectors.remove(keys)
                    if vecs:
                        vectors.add(keys, np.vstack(list(vecs.values())))
                    _save_vectors(
                        gens, live, vectors, meta, {pid: docs[pid].content_hash for pid in vecs}
                    )
                    report.embedded = run.done
            finally:
                report.pending_vectors = live.catalog.count_pending_vectors()
                live.catalog.close()
                gens.forget()
        return report

    def index_papers(
        self,
        paper_ids: list[str],
        *,
        progress: Progress | None = None,
        embed_limit: int | None = None,
    ) -> IndexReport:
        """Add or update these papers (ids no longer in the database are removed)."""
        started = time.monotonic()
        report = IndexReport()
        ids = list(dict.fromkeys(paper_ids))
        if not ids:
            return report
        gens = self.generations
        live_now = gens.current()
        if live_now is None or (
            live_now.meta.get("model") is None and self._optional_embedder() is not None
        ):  # no index yet, or a keyword-only one and the model is here now
            return self.rebuild(progress=progress, embed_limit=embed_limit)
        if live_now.meta.get("model") is None:
            return self._index_keywords(ids, started)
        with gens.write_lock():
            meta = gens.read_meta()
            if meta is None:  # deleted under us: start over
                return self.rebuild(progress=progress, embed_limit=embed_limit)
            live = gens.open(meta, gens.stamp(), writable=True)
            emb = self._embedder()
            self._check_model(meta, "run `papersift index --rebuild`")
            with self.db.session() as s:
                docs = search_docs.paper_docs(s, ids)
            gone_ids = [i for i in ids if i not in docs]
            gone = [paper_key(i) for i in gone_ids]
            batch = list(docs.values())
            self._write_lexical(live, batch, gone_ids, vocabulary=False)
            meta.update(
                gen=int(meta.get("gen", 0)) + 1,
                docs=len(live.catalog),
                vectors=live.catalog.count_vectors(),
                updated=time.time(),
            )
            gens.write_meta(meta)  # keyword-searchable now; vectors follow
            vectors = live.vectors or VectorIndex(emb.dim, gens.params)
            vectors.remove(gone + [paper_key(d.id) for d in batch])
            stored = self._stored(batch) if batch else {}
            missing = sum(1 for d in batch if d.id not in stored)
            embed = embed_limit is None or missing <= embed_limit
            run = _Embedding(progress, missing)
            if embed and missing >= TITLE_FIRST:
                self._titles_first(live, vectors, meta, [d for d in batch if d.id not in stored])
                run.step(0)  # searchable by meaning now: say so before the abstracts' turn
            for start in range(0, len(batch), VECTOR_CHUNK):
                part = batch[start : start + VECTOR_CHUNK]
                have = {d.id: stored[d.id] for d in part if d.id in stored}
                vecs = self._vectors_for(part, run, have) if embed else have
                if vecs:
                    vectors.add([paper_key(pid) for pid in vecs], np.vstack(list(vecs.values())))
                _save_vectors(
                    gens, live, vectors, meta, {pid: docs[pid].content_hash for pid in vecs}
                )
            if not batch:
                vectors.save(live.folder)
            self._add_to_vocabulary(live, batch)
            n_docs, n_vec = len(live.catalog), live.catalog.count_vectors()
            live.catalog.close()
            meta.update(
                gen=int(meta.get("gen", 0)) + 1, docs=n_docs, vectors=n_vec, updated=time.time()
            )
            gens.write_meta(meta)
            report.indexed, report.removed = len(batch), len(gone)
            report.embedded = run.done
            report.pending_vectors = n_docs - n_vec
        gens.forget()
        report.seconds = time.monotonic() - started
        return report

    def _titles_first(
        self, live: Generation, vectors: VectorIndex, meta: Meta, docs: list[PaperDoc]
    ) -> None:
        """Give ``docs`` provisional vectors of their titles and make them live."""
        emb = self._embedder()
        vectors.add(
            [paper_key(d.id) for d in docs], emb.encode_provisional([d.title for d in docs])
        )
        provisional = {d.id: PROVISIONAL + d.content_hash for d in docs}
        _save_vectors(self.generations, live, vectors, meta, provisional)

    @staticmethod
    def _write_lexical(
        live: Generation,
        batch: Sequence[PaperDoc],
        gone_ids: list[str],
        *,
        vocabulary: bool = True,
    ) -> None:
        """Update the lexical index so that it never holds a paper the catalog lacks (every
        hit it counts can be returned) and the catalog never claims what it lacks.

        The catalog marks the papers "not indexed" first, tantivy commits, then the marks
        become content hashes; the papers that left go from tantivy before the catalog. A
        kill anywhere leaves marks that the next sync redoes. A failed write (a full disk)
        rolls tantivy back and deletes the segment files it had written.
        """
        live.catalog.put((paper_key(d.id), d.id, None, None) for d in batch)
        try:
            live.lexical.write(batch, delete_ids=gone_ids)
        except BaseException:
            live.lexical.collect_garbage()
            raise
        live.catalog.remove([paper_key(i) for i in gone_ids])
        live.catalog.upsert((paper_key(d.id), d.id, d.content_hash, None) for d in batch)
        live.catalog.put_terms(term_rows([(d.id, d.content_hash, d.text) for d in batch]))
        if vocabulary:
            Indexer._add_to_vocabulary(live, batch)

    @staticmethod
    def _add_to_vocabulary(live: Generation, batch: Sequence[PaperDoc]) -> None:
        """Count the batch's words for spelling suggestions: a file of every word, read and
        rewritten whole (0.5-1 s at a million papers), so an update does it after its
        papers are searchable; a lost count only shades a suggestion."""
        vocab = Vocabulary.load(live.folder)
        if vocab is not None:  # (no file: the first spelling suggestion builds it)
            vocab.add_texts(d.text for d in batch)
            vocab.save(live.folder)

    def _index_keywords(self, ids: list[str], started: float) -> IndexReport:
        """Update a keyword-only index (no model could be loaded when it was built)."""
        report = IndexReport()
        gens = self.generations
        with gens.write_lock():
            meta = gens.read_meta()
            if meta is None:
                return self.rebuild()
            live = gens.open(meta, gens.stamp(), writable=True)
            with self.db.session() as s:
                docs = search_docs.paper_docs(s, ids)
            gone_ids = [i for i in ids if i not in docs]
            batch = list(docs.values())
            self._write_lexical(live, batch, gone_ids)
            n_docs = len(live.catalog)
            live.catalog.close()
            meta.update(gen=int(meta.get("gen", 0)) + 1, docs=n_docs, updated=time.time())
            gens.write_meta(meta)
            report.indexed, report.removed = len(batch), len(gone_ids)
            report.pending_vectors = n_docs
        gens.forget()
        report.seconds = time.monotonic() - started
        return report

    def sync(
        self,
        *,
        progress: Progress | None = None,
        also: Sequence[str] = (),
        embed_limit: int | None = None,
    ) -> IndexReport:
        """Bring the indexes in step with the database, looking at content hashes only:
        whatever an interrupted run left undone (papers committed but never indexed, marks
        of a killed update, missing vectors) is found here. ``also``: ids just changed."""
        started = time.monotonic()
        live = self.generations.current()
        keywords_only = live is not None and live.meta.get("model") is None
        if live is None or (keywords_only and self._optional_embedder() is not None):
            return self.rebuild(progress=progress, embed_limit=embed_limit)
        if not keywords_only:
            self._check_model(live.meta, "run `papersift index --rebuild` to re-embed every paper")
        changed: list[str] = list(also)
        seen = 0
        with self.db.session() as s:
            for batch in search_docs.iter_hashes(s):
                known = live.catalog.hashes_of_batch([pid for pid, _h in batch])
                seen += len(batch)
                changed.extend(pid for pid, chash in batch if known.get(pid, (None,))[0] != chash)
        changed = list(dict.fromkeys(changed))
        gone: list[str] = []
        if len(live.catalog) + len(changed) > seen:  # some indexed papers left the database
            with self.db.session() as s:
                for rows in live.catalog.iter_ids():
                    present = paper_store.existing_ids(s, [pid for _k, pid in rows])
                    gone.extend(pid for _k, pid in rows if pid not in present)
        report = IndexReport()
        if changed or gone:
            report = self.index_papers(changed + gone, progress=progress, embed_limit=embed_limit)
        if not keywords_only:
            live = self.generations.current()
            pending = live.catalog.count_pending_vectors() if live is not None else 0
            if pending and (embed_limit is None or pending <= embed_limit):
                more = self.embed_pending(progress=progress)
                report.embedded += more.embedded
                report.pending_vectors = more.pending_vectors
            else:
                report.pending_vectors = pending
        report.seconds = time.monotonic() - started
        return report
