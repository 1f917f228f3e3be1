"""Retrieval quality on a BEIR-layout folder, through the real search service.

The corpus is loaded into a temporary home (SQLite database + indexes), so the numbers are
those of the code path users get. Corpus embeddings are cached on disk, keyed by the model and
a hash of the corpus, under ``$PAPERSIFT_CACHE/eval`` (default ``~/.cache/papersift/eval``):
a repeated evaluation skips the embedding, which is nearly all of its cost.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from papersift.model import paper_text
from papersift.search.embedder import Embedder
from papersift.search.metrics import Qrels, evaluate
from papersift.settings import Settings, load_settings
from papersift.settings import current as current_settings
from papersift.store import papers as paper_store
from papersift.store import search_docs as docstore
from papersift.store.db import Database

if TYPE_CHECKING:
    from papersift.search.service import SearchService


class EvalError(ValueError):
    """The folder is not a usable BEIR collection (message says what is wrong)."""


@dataclass
class Collection:
    name: str
    docs: list[tuple[str, str, str]]  # (id, title, text)
    queries: dict[str, str]
    qrels: Qrels


def cache_dir() -> Path:
    return current_settings().cache / "eval"


def json_objects(path: Path, error: type[Exception]) -> list[tuple[int, dict]]:
    """The JSON objects of a JSON-lines file with their line numbers (blank lines skipped);
    ``error`` with the file and line for anything else (evaluation data of every kind)."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(item, dict):
                raise error(f"{path}:{n}: expected a JSON object")
            out.append((n, item))
    return out


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for n, item in json_objects(path, EvalError):
        if "_id" not in item:
            raise EvalError(f"{path}:{n}: expected an object with an _id")
        out.append(item)
    return out


def load_collection(folder: Path, split: str = "test") -> Collection:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""
    folder = Path(folder)
    paths = {
        "corpus": folder / "corpus.jsonl",
        "queries": folder / "queries.jsonl",
        "qrels": folder / "qrels" / f"{split}.tsv",
    }
    for label, path in paths.items():
        if not path.is_file():
            raise EvalError(f"{folder} is not a BEIR folder: {label} file {path} is missing")
    docs = [
        (str(d["_id"]), str(d.get("title") or ""), str(d.get("text") or ""))
        for d in _read_jsonl(paths["corpus"])
    ]
    queries = {str(q["_id"]): str(q.get("text") or "") for q in _read_jsonl(paths["queries"])}
    qrels: dict[str, dict[str, int]] = {}
    with paths["qrels"].open(encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or (n == 1 and not row[-1].lstrip("-").isdigit()):
                continue  # header
            if len(row) < 3 or not row[-1].lstrip("-").isdigit():
                raise EvalError(f"{paths['qrels']}:{n}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[-1])
    if not docs:
        raise EvalError(f"{paths['corpus']} holds no documents")
    return Collection(folder.name, docs, queries, qrels)


def _paper_rows(coll: Collection) -> list[dict]:
    now = datetime.now(UTC)
    source = f"eval:{coll.name}"
    return [
        paper_store.bare_row(doc_id, title, text, source=source, now=now)
        for doc_id, title, text in coll.docs
    ]


def cached_embeddings(
    rows: list[dict], embedder: Embedder, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """Corpus vectors from the evaluation cache, or computed once and cached (float16 on
    disk), keyed by the model and every row's id and content hash (search and
    recommendation evaluations share it)."""
    digest = hashlib.sha1(embedder.model_id.encode())
    for row in rows:
        digest.update(f"{row['id']}\t{row['content_hash']}\n".encode())
    path = cache_dir() / f"{digest.hexdigest()[:20]}.npy"
    if path.is_file():
        matrix = np.load(path)
        if matrix.shape == (len(rows), embedder.dim):
            return matrix.astype(np.float32)
    texts = [paper_text(r["title"], r["abstract"]) for r in rows]
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(texts))

    matrix = embedder.encode(texts, progress=step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, matrix.astype(np.float16))
    os.replace(tmp, path)
    return np.asarray(matrix, dtype=np.float32)


def load_collection_into(
    coll: Collection,
    settings: Settings,
    db: Database,
    embedder: Embedder,
    progress: Callable[[int, int], None] | None = None,
) -> SearchService:
    """Store a collection's documents and their (cached) embeddings in ``db`` and build its
    index: the real ingest-to-search path, without re-embedding on every run."""
    from papersift.search.service import SearchService  # the service imports this package

    first: dict[str, dict] = {}
    for row in _paper_rows(coll):
        first.setdefault(row["id"], row)  # the first of each id, in order
    rows = list(first.values())
    matrix = cached_embeddings(rows, embedder, progress)
    with db.session() as s:
        for start in range(0, len(rows), 1000):
            paper_store.insert_rows(s, rows[start : start + 1000])
        docstore.save_embeddings(
            s,
            [(r["id"], r["content_hash"], v) for r, v in zip(rows, matrix, strict=True)],
            embedder.model_id,
        )
    service = SearchService(settings, db, embedder=embedder, view=False)
    service.rebuild()
    return service


def run_eval(
    folder: Path,
    *,
    mode: str = "hybrid",
    k: int = 100,
    progress: Callable[[int, int], None] | None = None,
    modes: tuple[str, ...] = (),
) -> dict:
    """Index the collection in a temporary home and score every judged query.

    The result carries the ranked ids per query (``run``), the judged query texts
    (``texts``) and the qrels (``qrels``) for per-query comparisons; ``modes`` are further
    modes run on the same index, their runs in ``runs``.
    """
    from papersift.search.embedder import get_embedder

    coll = load_collection(folder)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="papersift-eval-") as tmp:
        settings = load_settings(home=tmp, db_url=f"sqlite:///{Path(tmp) / 'eval.db'}")
        db = Database(settings.db_url)
        try:
            embedder = get_embedder(settings.model_dir)
            service = load_collection_into(coll, settings, db, embedder, progress)
            indexed = time.monotonic()
            judged = {q: text for q, text in coll.queries.items() if q in coll.qrels}

            def one_run(which: str) -> dict[str, list[str]]:
                out: dict[str, list[str]] = {}
                for qid, text in judged.items():
                    res = service.search(text, k=k, mode=which)
                    out[qid] = [h.paper_id for h in res.hits]
                return out

            run = one_run(mode)
            searched = time.monotonic()
            runs = {other: one_run(other) for other in modes if other != mode}
            runs[mode] = run
        finally:
            db.dispose()
    scores = evaluate(run, coll.qrels)
    return {
        "collection": coll.name,
        "mode": mode,
        "documents": len(coll.docs),
        "queries": int(scores.pop("queries")),
        **scores,
        "index_seconds": round(indexed - started, 2),
        "ms_per_query": round(1000 * (searched - indexed) / max(len(run), 1), 2),
        "run": run,
        "runs": runs,
        "texts": judged,
        "qrels": coll.qrels,
    }
