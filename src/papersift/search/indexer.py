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

from papersift.search.catalog import Catalog, paper_key
from papersift.search.embedder import Embedder
from papersift.search.generations import Generations, Meta
from papersift.search.lexical import LexicalIndex
from papersift.search.spelling import Vocabulary
from papersift.search.types import IndexReport, Progress, SearchError
from papersift.search.vectors import VectorIndex
from papersift.store import papers as paper_store
from papersift.store import search_docs
from papersift.store.db import Database
from papersift.store.search_docs import PaperDoc

EMBED_BATCH = 1024  # papers embedded (and written to the database) per step
EMBED_LIMIT = 20_000  # more changed papers than this: ingest leaves embedding to `index`


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


class Indexer:
    """Brings the indexes of one home in step with its database (one writer at a time)."""

    def __init__(
        self, db: Database, generations: Generations, embedder: Callable[[], Embedder]
    ) -> None:
        self.db = db
        self.generations = generations
        self._embedder = embedder  # called only when a run needs the model

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
            emb = self._embedder()
            name = f"v{time.time_ns()}"
            folder = gens.new_folder(name)
            try:
                lexical = LexicalIndex(folder / "lexical")
                catalog = Catalog(folder / "catalog.sqlite")
                vectors = VectorIndex(emb.dim, gens.params)
                vocab = Vocabulary()
                with self.db.session() as s:
                    missing = search_docs.count_unembedded(s, emb.model_id)
                embed = embed_limit is None or missing <= embed_limit
                run = _Embedding(progress, missing)

                def papers() -> Iterator[PaperDoc]:
                    """Stream papers to tantivy; vectors and catalog follow batch by batch."""
                    with self.db.session() as s:
                        for batch in search_docs.iter_paper_docs(s):
                            vecs = self._vectors_for(batch, run) if embed else self._stored(batch)
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
                            yield from batch

                lexical.write(papers(), fresh=True)
                vocab.save(folder)
                vectors.save(folder)
                report.embedded = run.done
                n_vectors = len(vectors)
                report.pending_vectors = report.indexed - n_vectors
                catalog.close()
                old = gens.read_meta() or {}
                gens.write_meta(
                    {
                        "dir": name,
                        "gen": int(old.get("gen", 0)) + 1,
                        "docs": report.indexed,
                        "vectors": n_vectors,
                        "model": emb.model_id,
                        "dim": emb.dim,
                        "updated": time.time(),
                    }
                )
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            gens.drop_old(keep=name)
        gens.forget()
        report.seconds = time.monotonic() - started
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
        if gens.current() is None:
            return self.rebuild(progress=progress, embed_limit=embed_limit)
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
            live.lexical.write(batch, delete_ids=gone_ids)
            vocab = Vocabulary.load(live.folder)
            if vocab is not None:  # (no file: the first suggestion builds it)
                vocab.add_texts(d.text for d in batch)
                vocab.save(live.folder)
            stored = self._stored(batch) if batch else {}
            missing = sum(1 for d in batch if d.id not in stored)
            embed = embed_limit is None or missing <= embed_limit
            vectors = live.vectors or VectorIndex(emb.dim, gens.params)
            run = _Embedding(progress, missing)
            vec_hash: dict[str, str | None] = {d.id: None for d in batch}
            vecs = self._vectors_for(batch, run, stored) if embed else stored
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
            gens.write_meta(meta)
            report.indexed, report.removed = len(batch), len(gone)
            report.embedded = run.done
            report.pending_vectors = n_docs - n_vec
        gens.forget()
        report.seconds = time.monotonic() - started
        return report

    def sync(self, *, progress: Progress | None = None) -> IndexReport:
        """Bring the indexes in step with the database, looking at content hashes only."""
        started = time.monotonic()
        live = self.generations.current()
        if live is None:
            return self.rebuild(progress=progress)
        self._check_model(live.meta, "run `papersift index --rebuild` to re-embed every paper")
        changed: list[str] = []
        seen = 0
        with self.db.session() as s:
            for batch in search_docs.iter_hashes(s):
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
                    present = paper_store.existing_ids(s, [pid for _k, pid in rows])
                    gone.extend(pid for _k, pid in rows if pid not in present)
        report = self.index_papers(changed + gone, progress=progress)
        report.seconds = time.monotonic() - started
        return report
