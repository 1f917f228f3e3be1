"""Recommendation quality on a folder of users' libraries (CiteULike layout).

``papers.jsonl`` holds ``{"id", "title", "abstract"}`` per line and ``users.jsonl`` holds
``{"user", "library": [ids], "hidden": [ids]}``. Every paper not in a user's library is a
candidate; the hidden papers are the ones the ranking should find.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from papersift.model import paper_text
from papersift.rank.recommend import (
    ArrayPapers,
    CorpusStats,
    LibraryCooccurrence,
    corpus_stats,
    recommend,
)
from papersift.search.eval import cached_embeddings, json_objects
from papersift.settings import load_settings
from papersift.store import papers as paper_store
from papersift.store.db import Database

if TYPE_CHECKING:
    pass

ProgressFn = Callable[[int, int], None]


class RecEvalError(ValueError):
    """The folder is not a usable libraries dataset (message says what is wrong)."""


@dataclass
class User:
    user: str
    library: list[str]
    hidden: list[str]


@dataclass
class Dataset:
    name: str
    ids: list[str]
    titles: list[str]
    abstracts: list[str]
    users: list[User]
    skipped: list[str] = field(default_factory=list)  # one message per skipped user

    def texts(self) -> list[str]:
        return [paper_text(t, a) for t, a in zip(self.titles, self.abstracts, strict=True)]


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise RecEvalError(f"{path.parent} is not a libraries folder: {path.name} is missing")
    return json_objects(path, RecEvalError)


def _id_list(value: object, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise RecEvalError(f"{where}: {key!r} must be a list of paper ids")
    return [str(v) for v in value]


def load_dataset(folder: Path) -> Dataset:
    """Read papers.jsonl and users.jsonl; users with nothing to learn from or to find are
    skipped with a message, unknown ids dropped with a message."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RecEvalError(f"{folder} is not a folder")
    ids: list[str] = []
    titles: list[str] = []
    abstracts: list[str] = []
    seen: set[str] = set()
    papers_path = folder / "papers.jsonl"
    for n, item in _jsonl(papers_path):
        pid = item.get("id")
        if not isinstance(pid, str | int) or str(pid) == "":
            raise RecEvalError(f"{papers_path}:{n}: expected an object with an id")
        if str(pid) in seen:
            continue
        seen.add(str(pid))
        ids.append(str(pid))
        titles.append(str(item.get("title") or ""))
        abstracts.append(str(item.get("abstract") or ""))
    if not ids:
        raise RecEvalError(f"{papers_path} holds no papers")
    users: list[User] = []
    skipped: list[str] = []
    users_path = folder / "users.jsonl"
    for n, item in _jsonl(users_path):
        where = f"{users_path}:{n}"
        name = str(item.get("user") or f"line {n}")
        library = _id_list(item.get("library", []), where, "library")
        hidden = _id_list(item.get("hidden", []), where, "hidden")
        unknown = [p for p in library + hidden if p not in seen]
        if unknown:
            skipped.append(f"{where}: user {name}: {len(unknown)} unknown paper ids ignored")
        library = [p for p in dict.fromkeys(library) if p in seen]
        lib_set = set(library)
        hidden = [p for p in dict.fromkeys(hidden) if p in seen and p not in lib_set]
        if not library:
            skipped.append(f"{where}: user {name} skipped: empty library")
            continue
        if not hidden:
            skipped.append(f"{where}: user {name} skipped: nothing hidden to find")
            continue
        users.append(User(name, library, hidden))
    if not users:
        raise RecEvalError(f"{users_path} holds no user with both a library and hidden papers")
    return Dataset(folder.name, ids, titles, abstracts, users, skipped)


def _rows(data: Dataset) -> list[dict]:
    now = datetime.now(UTC)
    source = f"eval:{data.name}"
    return [
        paper_store.bare_row(pid, title, abstract, source=source, now=now)
        for pid, title, abstract in zip(data.ids, data.titles, data.abstracts, strict=True)
    ]


def index_dataset(data: Dataset, progress: ProgressFn | None = None) -> np.ndarray:
    """Load the papers and their embeddings into a temporary home through the store, and read
    the vectors back from it (the path a deployment's papers take); rows in ``data.ids`` order."""
    from papersift.search.embedder import get_embedder
    from papersift.store import search_docs as docstore

    with tempfile.TemporaryDirectory(prefix="papersift-rec-eval-") as tmp:
        settings = load_settings(home=tmp, db_url=f"sqlite:///{Path(tmp) / 'eval.db'}")
        db = Database(settings.db_url)
        try:
            embedder = get_embedder(settings.model_dir)
            rows = _rows(data)
            matrix = cached_embeddings(rows, embedder, progress)
            hashes = {r["id"]: r["content_hash"] for r in rows}
            with db.session() as s:
                for start in range(0, len(rows), 1000):
                    paper_store.insert_rows(s, rows[start : start + 1000])
                docstore.save_embeddings(
                    s,
                    [(r["id"], r["content_hash"], v) for r, v in zip(rows, matrix, strict=True)],
                    embedder.model_id,
                )
            with db.session() as s:
                stored = docstore.load_embeddings(s, hashes, embedder.model_id, embedder.dim)
        finally:
            db.dispose()
    missing = [pid for pid in data.ids if pid not in stored]
    if missing:
        raise RecEvalError(f"{len(missing)} papers lost their embeddings in the store")
    return np.vstack([stored[pid] for pid in data.ids]).astype(np.float32)


# -- metrics ---------------------------------------------------------------------------------


def user_metrics(ranked: Sequence[str], hidden: Collection[str]) -> dict[str, float]:
    """Recall@20, Recall@100 (hits / hidden papers) and binary nDCG@20 of one ranking."""
    hits = [pid in hidden for pid in ranked[:100]]
    n = len(hidden)
    dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits[:20]) if hit)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(n, 20)))
    return {
        "recall@20": sum(hits[:20]) / n,
        "recall@100": sum(hits) / n,
        "ndcg@20": dcg / ideal,
    }


def mean_metrics(per_user: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = ("recall@20", "recall@100", "ndcg@20")
    if not per_user:
        return dict.fromkeys(keys, 0.0)
    return {k: round(sum(m[k] for m in per_user) / len(per_user), 4) for k in keys}


def top_ids(ids: Sequence[str], scores: np.ndarray, banned: Collection[int], k: int) -> list[str]:
    """The ``k`` best-scored ids, leaving out the rows in ``banned``."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[list(banned)] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [ids[i] for i in top if np.isfinite(scores[i])]


# -- held-out split of the libraries themselves ------------------------------------------------


def holdout(data: Dataset, fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The same readers with a random ``fraction`` of each library moved to ``hidden`` (the
    real hidden papers dropped): what method choices are made on, never the hidden papers."""
    rng = np.random.default_rng(seed)
    users = []
    for u in data.users:
        if len(u.library) < 2:
            continue
        perm = list(rng.permutation(len(u.library)))
        cut = max(1, round(fraction * len(u.library)))
        users.append(
            User(
                u.user,
                [u.library[i] for i in sorted(perm[cut:])],
                [u.library[i] for i in sorted(perm[:cut])],
            )
        )
    return Dataset(data.name, data.ids, data.titles, data.abstracts, users, [])


# -- the reference methods ---------------------------------------------------------------------


def _sklearn() -> tuple[Any, Any]:
    try:
        from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]
            TfidfVectorizer,
        )
        from sklearn.svm import LinearSVC  # type: ignore[import-untyped]
    except ImportError:
        raise RecEvalError(
            "the tf-idf SVM reference needs scikit-learn: pip install scikit-learn "
            "(or pass --no-references)"
        ) from None
    return TfidfVectorizer, LinearSVC


class TfidfSVM:
    """arxiv-sanity-lite's recommender: a linear SVM per reader over tf-idf of every paper
    (its vectorizer settings: 1-2-grams, sublinear tf, English stop words; C = 0.1)."""

    def __init__(self, texts: Sequence[str], c: float = 0.1) -> None:
        vectorizer_cls, self._svm = _sklearn()
        big = len(texts) >= 5000  # arxiv-sanity-lite's df cut-offs assume a large corpus
        vectorizer = vectorizer_cls(
            strip_accents="unicode",
            lowercase=True,
            analyzer="word",
            stop_words="english",
            token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
            ngram_range=(1, 2),
            max_df=0.1 if big else 1.0,
            min_df=5 if big else 1,
            sublinear_tf=True,
        )
        self.matrix = vectorizer.fit_transform(texts)
        self.c = c

    def scores(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        y = np.zeros(self.matrix.shape[0], dtype=np.int8)
        y[list(rows)] = 1
        svm = self._svm(class_weight="balanced", max_iter=10000, tol=1e-6, C=self.c)
        svm.fit(self.matrix, y)
        return np.asarray(svm.decision_function(self.matrix), dtype=np.float64)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class EvalRun:
    methods: dict[str, dict[str, float]]  # method -> mean metrics
    users: int
    papers: int
    skipped: list[str]
    seconds: dict[str, float]


DEFAULT = "papersift"
NO_COSAVED = "papersift (no co-saved)"
POPULARITY = "popularity"
SVM = "tf-idf SVM"
CENTROID = "MiniLM centroid"


@dataclass
class _Context:
    """What every reader's scoring reads (shared with worker processes by fork)."""

    data: Dataset
    papers: ArrayPapers
    stats: CorpusStats
    cosaved: LibraryCooccurrence
    popularity: np.ndarray | None
    svm: TfidfSVM | None


_CONTEXT: _Context | None = None


def _score_user(index: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Every method's metrics for one reader, and the seconds each method took."""
    ctx = _CONTEXT
    assert ctx is not None
    u = ctx.data.users[index]
    hidden = set(u.hidden)
    provider = ctx.papers.every_paper()
    out: dict[str, dict[str, float]] = {}
    secs: dict[str, float] = {}
    for name, co in ((DEFAULT, ctx.cosaved), (NO_COSAVED, None)):
        started = time.monotonic()
        recs = recommend(
            u.library, provider, ctx.papers, ctx.stats, k=100, cosaved=co, reasons=False
        )
        secs[name] = time.monotonic() - started
        out[name] = user_metrics([r.paper_id for r in recs], hidden)
    if ctx.svm is None or ctx.popularity is None:
        return out, secs
    rows = ctx.papers.rows(u.library)
    banned = set(rows.tolist())
    matrix = ctx.papers.matrix
    for name, score in (
        (POPULARITY, lambda: ctx.popularity),
        (CENTROID, lambda: matrix @ matrix[rows].mean(axis=0)),
        (SVM, lambda: ctx.svm.scores(rows) if ctx.svm else None),
    ):
        started = time.monotonic()
        ranked = top_ids(ctx.data.ids, np.asarray(score()), banned, 100)
        secs[name] = time.monotonic() - started
        out[name] = user_metrics(ranked, hidden)
    return out, secs


def evaluate_methods(
    data: Dataset,
    vectors: np.ndarray,
    *,
    references: bool = True,
    progress: ProgressFn | None = None,
    workers: int = 1,
) -> EvalRun:
    """Every method's metrics over every reader; all candidates are all unsaved papers.

    ``workers`` > 1 scores readers in that many forked processes (same numbers, less time).
    """
    global _CONTEXT
    papers = ArrayPapers(data.ids, vectors, data.texts())
    stats = corpus_stats(papers.matrix, data.texts())
    stats.solver()
    seconds: dict[str, float] = {}
    svm = popularity = None
    if references:
        popularity = np.zeros(len(data.ids))
        for u in data.users:
            popularity[papers.rows(u.library)] += 1
        started = time.monotonic()
        svm = TfidfSVM(data.texts())
        seconds[SVM] = time.monotonic() - started
    cosaved = LibraryCooccurrence(u.library for u in data.users)
    _CONTEXT = _Context(data, papers, stats, cosaved, popularity, svm)
    per: dict[str, list[dict[str, float]]] = {}
    results: Iterator[tuple[dict[str, dict[str, float]], dict[str, float]]]
    try:
        if workers > 1:
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(workers)
            results = pool.imap(_score_user, range(len(data.users)), chunksize=8)
        else:
            pool = None
            results = map(_score_user, range(len(data.users)))
        for n, (metrics, secs) in enumerate(results, start=1):
            for name, m in metrics.items():
                per.setdefault(name, []).append(m)
                seconds[name] = seconds.get(name, 0.0) + secs[name]
            if progress:
                progress(n, len(data.users))
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        _CONTEXT = None
    return EvalRun(
        {name: mean_metrics(rows) for name, rows in per.items()},
        len(data.users),
        len(data.ids),
        list(data.skipped),
        {name: round(s, 2) for name, s in seconds.items()},
    )


def run_eval(
    folder: Path,
    *,
    references: bool = True,
    split: str = "hidden",
    progress: ProgressFn | None = None,
    embed_progress: ProgressFn | None = None,
    workers: int = 1,
) -> EvalRun:
    """Load ``folder``, index it in a temporary home and evaluate every method.

    ``split="holdout"`` scores against a held-out fifth of each library instead of ``hidden``.
    """
    data = load_dataset(folder)
    if split == "holdout":
        data = holdout(data)
    elif split != "hidden":
        raise RecEvalError(f"unknown split {split!r} (hidden or holdout)")
    vectors = index_dataset(data, embed_progress)
    return evaluate_methods(
        data, vectors, references=references, progress=progress, workers=workers
    )
