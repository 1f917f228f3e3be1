"""Recommendations from a reader's saved papers: pure functions over embeddings and texts.

The score of a candidate paper fuses, by z-scores over the candidate set, up to three
signals, each of which a reader can check:

- **profile**: a per-reader linear model that separates the saved papers from the whole
  corpus, in closed form. Least squares with every corpus paper as a negative is Fisher's
  discriminant ``w = (C + eps*I)^-1 (mean(saved) - mean(corpus))`` where ``C`` is the
  corpus covariance of the embeddings; ``C`` is computed once per corpus (it is additive, so
  ingest can keep it current), which makes training per reader one small matrix-vector
  product instead of fitting a classifier over a million papers. Papers marked "not
  interested" move the negative mean towards themselves.
- **nearest**: the mean cosine to the 3 most similar saved papers (a reader with several
  interests is not averaged into one), minus half the cosine to the nearest dismissed paper.
- **co-saved** (only where several readers share a deployment): item-item co-occurrence
  across other readers' libraries, cosine-normalised ("people who saved X also saved Y").

Candidates come from a provider (a vector index at scale, every paper in evaluation), queried
with the profile vector, the library's centroid and its interest clusters; co-saved papers
join the candidates. Reasons name the 1-3 saved papers a recommendation is nearest to and
the terms it shares with them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

# Chosen on a held-out fifth of each CiteULike dev library (never on the hidden papers):
# the relative ridge of the covariance (times its mean eigenvalue; 0.1-0.5 are within 0.003
# R@20) and the fusion weights (nearest 0.5-1.0 and co-saved 0.5-1.0 within 0.015).
RIDGE = 0.25
NEAREST_K = 3
WEIGHT_NEAREST = 1.0
WEIGHT_COSAVED = 0.5
WEIGHT_DISMISSED = 0.5

_WORD = re.compile(r"[a-z][a-z0-9\-]+")
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers him his how i if in into is it its
    itself just me more most my no nor not now of off on once only or other our out over own
    same she should so some such than that the their them then there these they this those
    through to too under until up very was we were what when where which while who whom why
    will with would you your via using use based new towards toward study analysis approach
    method methods results paper data model models case two one""".split()
)


class RecommendError(ValueError):
    """The library or corpus cannot give recommendations (message says why)."""


class Reasons(NamedTuple):
    """Why a paper was picked: the saved papers it is nearest to (id, cosine), shared terms,
    and whether readers who saved the same papers also saved it (its co-saved score)."""

    nearest: list[tuple[str, float]]
    terms: list[str]
    co_saved: float = 0.0


class Recommendation(NamedTuple):
    paper_id: str
    score: float
    reasons: Reasons


class PaperLookup(Protocol):
    """Embedding rows (unit length, float32) and texts of papers by id (the store, or arrays
    in memory)."""

    def vectors(self, ids: Sequence[str]) -> np.ndarray: ...

    def texts(self, ids: Sequence[str]) -> list[str]: ...


CandidatesProvider = Callable[[np.ndarray, int], list[str]]
"""``(query vectors (q, d), how many per query) -> candidate paper ids`` (any order)."""

CoSaved = Callable[[Sequence[str]], dict[str, float]]
"""``library ids -> {paper id: co-occurrence score}`` from other readers' libraries."""


def terms(text: str) -> list[str]:
    """Lower-cased content words of a text (for shared-term reasons)."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2]


@dataclass
class CorpusStats:
    """What the profile model needs from the whole corpus: sums that ingest can keep current."""

    dim: int
    n: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    outer: np.ndarray = field(default_factory=lambda: np.zeros(0))
    df: Counter[str] = field(default_factory=Counter)
    _solver: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.total.size == 0:
            self.total = np.zeros(self.dim, dtype=np.float64)
            self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def add(self, vectors: np.ndarray, texts: Iterable[str] = ()) -> None:
        """Count more papers in (their unit vectors and, for term reasons, their texts)."""
        vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, self.dim)
        self.n += len(vectors)
        self.total += vectors.sum(axis=0)
        self.outer += vectors.T @ vectors
        for text in texts:
            self.df.update(set(terms(text)))
        self._solver = None

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.n, 1)

    def solver(self) -> np.ndarray:
        """``(C + eps*I)^-1`` of the corpus covariance ``C`` (cached until ``add``)."""
        if self._solver is None:
            if self.n < 2:
                raise RecommendError("the corpus needs at least two papers with embeddings")
            mean = self.mean
            cov = self.outer / self.n - np.outer(mean, mean)
            eps = RIDGE * max(float(np.trace(cov)) / self.dim, 1e-9)
            self._solver = np.linalg.inv(cov + eps * np.eye(self.dim))
        return self._solver

    def idf(self, term: str) -> float:
        return float(np.log((1 + self.n) / (1 + self.df.get(term, 0))))


def corpus_stats(vectors: np.ndarray, texts: Sequence[str] = ()) -> CorpusStats:
    stats = CorpusStats(int(np.asarray(vectors).shape[1]))
    for start in range(0, len(vectors), 50_000):
        stats.add(vectors[start : start + 50_000], texts[start : start + 50_000])
    return stats


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-12)


def profile_vector(
    saved: np.ndarray, stats: CorpusStats, dismissed: np.ndarray | None = None
) -> np.ndarray:
    """The reader's linear model (unit vector): Fisher direction saved vs corpus."""
    negative = stats.mean
    if dismissed is not None and len(dismissed):
        negative = (negative + np.asarray(dismissed, np.float64).sum(0)) / (1 + len(dismissed))
    w = stats.solver() @ (np.asarray(saved, np.float64).mean(axis=0) - negative)
    return _unit(w.astype(np.float32))


def interest_clusters(saved: np.ndarray, k: int, iterations: int = 8) -> np.ndarray:
    """Spherical k-means centroids of the saved vectors (deterministic farthest-first start)."""
    saved = np.asarray(saved, dtype=np.float32)
    k = max(1, min(k, len(saved)))
    chosen = [0]
    best = saved @ saved[0]
    for _ in range(1, k):
        chosen.append(int(np.argmin(best)))
        best = np.maximum(best, saved @ saved[chosen[-1]])
    centers = saved[chosen]
    for _ in range(iterations):
        assign = np.argmax(saved @ centers.T, axis=1)
        for c in range(k):
            members = saved[assign == c]
            if len(members):
                centers[c] = members.sum(axis=0)
        centers = _unit(centers)
    return centers


def zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std())
    return (values - values.mean()) / std if std > 1e-12 else np.zeros_like(values)


def nearest_scores(sims: np.ndarray, k: int = NEAREST_K) -> np.ndarray:
    """Mean of the ``k`` largest similarities per row of a (candidates, saved) matrix."""
    k = min(k, sims.shape[1])
    if k == sims.shape[1]:
        return sims.mean(axis=1)
    return np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def score_candidates(
    saved: np.ndarray,
    candidates: np.ndarray,
    stats: CorpusStats,
    *,
    dismissed: np.ndarray | None = None,
    cosaved: np.ndarray | None = None,
    weights: tuple[float, float, float] = (1.0, WEIGHT_NEAREST, WEIGHT_COSAVED),
) -> tuple[np.ndarray, np.ndarray]:
    """Fused scores of candidate rows, and the (candidates, saved) cosine matrix for reasons."""
    w_profile, w_nearest, w_cosaved = weights
    sims = candidates @ saved.T
    near = nearest_scores(sims)
    if dismissed is not None and len(dismissed):
        near = near - WEIGHT_DISMISSED * (candidates @ dismissed.T).max(axis=1)
    score = w_profile * zscore(candidates @ profile_vector(saved, stats, dismissed))
    score += w_nearest * zscore(near)
    if cosaved is not None and w_cosaved and np.any(cosaved):
        score += w_cosaved * zscore(cosaved)
    return score, sims


def shared_terms(
    candidate_text: str, saved_texts: Sequence[str], stats: CorpusStats, limit: int = 3
) -> list[str]:
    """The rarest-in-corpus terms a candidate shares with the given saved papers."""
    wanted = set(terms(candidate_text))
    counts: Counter[str] = Counter()
    for text in saved_texts:
        counts.update(t for t in set(terms(text)) if t in wanted)
    ranked = sorted(counts, key=lambda t: (-counts[t] * stats.idf(t), t))
    return ranked[:limit]


def query_vectors(saved: np.ndarray, stats: CorpusStats, clusters: int) -> np.ndarray:
    """What to ask the vector index for: the profile, the centroid, the interest clusters."""
    rows = [profile_vector(saved, stats), _unit(saved.mean(axis=0))]
    if len(saved) > 1:
        rows.extend(interest_clusters(saved, clusters))
    return np.vstack(rows)


def recommend(
    library_ids: Sequence[str],
    candidates_provider: CandidatesProvider,
    papers: PaperLookup,
    stats: CorpusStats,
    *,
    k: int = 20,
    exclude: Iterable[str] = (),
    dismissed_ids: Sequence[str] = (),
    cosaved: CoSaved | None = None,
    candidates_per_query: int = 400,
    clusters: int = 8,
    reasons: bool = True,
) -> list[Recommendation]:
    """The ``k`` best papers for a library, best first, with their reasons.

    ``exclude`` (already saved, dismissed or sent papers) and the library never come back.
    """
    library = list(dict.fromkeys(library_ids))
    if not library:
        raise RecommendError("the library is empty: save a paper first")
    saved = papers.vectors(library)
    dismissed_list = list(dict.fromkeys(dismissed_ids))
    dismissed = papers.vectors(dismissed_list) if dismissed_list else None
    banned = set(library) | set(exclude) | set(dismissed_list)
    queries = query_vectors(saved, stats, clusters)
    found = candidates_provider(queries, candidates_per_query)
    co = cosaved(library) if cosaved is not None else {}
    if co:  # co-saved papers may lie far from the library in embedding space
        top_co = sorted(co, key=lambda p: -co[p])[: candidates_per_query * 2]
        found = [*found, *top_co]
    ids = [p for p in dict.fromkeys(found) if p not in banned]
    if not ids:
        return []
    vectors = papers.vectors(ids)
    co_arr = np.fromiter((co.get(p, 0.0) for p in ids), np.float64, len(ids)) if co else None
    score, sims = score_candidates(saved, vectors, stats, dismissed=dismissed, cosaved=co_arr)
    top = np.argsort(-score, kind="stable")[:k]
    out = []
    texts = papers.texts([ids[i] for i in top]) if reasons else []
    for rank, i in enumerate(top):
        why = Reasons([], [])
        if reasons:
            near = np.argsort(-sims[i], kind="stable")[:3]
            nearest = [(library[j], round(float(sims[i, j]), 3)) for j in near]
            nearest = [n for n in nearest if n[1] >= nearest[0][1] - 0.1]
            saved_texts = papers.texts([n[0] for n in nearest])
            terms = shared_terms(texts[rank], saved_texts, stats)
            why = Reasons(nearest, terms, float(co.get(ids[i], 0.0)))
        out.append(Recommendation(ids[i], float(score[i]), why))
    return out


def saved_weights(recs: Sequence[Recommendation]) -> list[tuple[str, int]]:
    """Which saved papers weigh most: how often each is named as a nearest saved paper."""
    counts: Counter[str] = Counter(pid for r in recs for pid, _ in r.reasons.nearest)
    return counts.most_common()


class ArrayPapers:
    """Papers held in memory: ids, unit vectors and texts in parallel arrays."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, texts: Sequence[str]) -> None:
        self.ids = list(ids)
        self.matrix = _unit(vectors)
        self._texts = list(texts)
        self.row = {pid: i for i, pid in enumerate(self.ids)}

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        if ids is self.ids:
            return np.arange(len(self.ids))
        try:
            return np.fromiter((self.row[p] for p in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise RecommendError(f"unknown paper id {exc.args[0]!r}") from None

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        return self.matrix[self.rows(ids)]

    def texts(self, ids: Sequence[str]) -> list[str]:
        return [self._texts[i] for i in self.rows(ids)]

    def every_paper(self) -> CandidatesProvider:
        """A provider that offers the whole collection (exhaustive; evaluation, small homes)."""
        return lambda _queries, _count: self.ids


class LibraryCooccurrence:
    """Item-item co-occurrence over readers' libraries, cosine-normalised.

    ``score(j) = sum over saved i of co(i, j) / sqrt(n_i n_j)``, computed through the readers
    who share a saved paper, so no item-item matrix is stored.
    """

    def __init__(self, libraries: Iterable[Sequence[str]]) -> None:
        self.code: dict[str, int] = {}
        libs = []
        for lib in libraries:
            libs.append([self.code.setdefault(p, len(self.code)) for p in dict.fromkeys(lib)])
        self.ids = list(self.code)
        lengths = np.array([len(lib) for lib in libs], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.items = np.array([c for lib in libs for c in lib], dtype=np.int64)
        self.owner = np.repeat(np.arange(len(libs)), lengths)
        self.count = np.bincount(self.items, minlength=len(self.ids)).astype(np.float64)
        order = np.argsort(self.items, kind="stable")  # readers of each item, grouped
        self.readers = self.owner[order]
        self.reader_starts = np.concatenate([[0], np.cumsum(self.count.astype(np.int64))])

    def __call__(self, library: Sequence[str]) -> dict[str, float]:
        codes = [self.code[p] for p in dict.fromkeys(library) if p in self.code]
        if not codes:
            return {}
        weight = np.zeros(len(self.starts) - 1)
        for c in codes:
            readers = self.readers[self.reader_starts[c] : self.reader_starts[c + 1]]
            weight[readers] += 1.0 / np.sqrt(self.count[c])
        sums = np.bincount(self.items, weights=weight[self.owner], minlength=len(self.ids))
        scores = sums.astype(np.float64) / np.sqrt(np.maximum(self.count, 1.0))
        nonzero = np.flatnonzero(scores)
        return dict(zip([self.ids[i] for i in nonzero], scores[nonzero].tolist(), strict=True))
