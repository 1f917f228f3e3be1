"""Hybrid ranking: per-query weighted z-score fusion of BM25 and dense cosine, then feedback.

The method (the default search mode):

1. **Candidates.** The top ``POOL`` (200) documents of BM25 (a title word counts
   ``1 + TITLE_WEIGHT``) and of the dense index. Every candidate gets its *exact* cosine from
   its stored vector (NaN without one: it is then ranked by its lexical side alone). A
   candidate missing from the lexical list scores 0, or, if the list was cut at ``POOL``, the
   lowest listed score (an upper bound of its true score).

2. **Fusion.** Each signal is standardised by the mean and standard deviation of its own
   top ``Z_DEPTH`` (100) scores. The two z-scores are weighted *per query* by how confident
   each side is (:func:`peak`: how far its best ``PEAK_TOP`` scores stand above its top
   100), ``dense weight = ALPHA peak_d^p / (ALPHA peak_d^p + (1 - ALPHA) peak_l^p)``, p =
   ``PEAK_POWER``. Why: which side is right varies by query, and the side whose scores are
   flat cannot tell its candidates apart; on all four collections the difference of the two
   peaks correlates with which side wins a query (0.13-0.31), while a fixed weight fitted
   to one collection loses on another (LISA's paragraph queries, where the dense side is
   weak, against CISI, where it is strong).

3. **Feedback** from the ``FEEDBACK_DOCS`` best fused documents (softmax weights): RM3
   adds the ``FEEDBACK_TERMS`` most likely terms of their relevance model at weight
   ``FEEDBACK_LAMBDA`` (terms in more than ``MAX_DOC_SHARE`` of the documents skipped), and
   the query vector moves towards their weighted mean vector (Rocchio, ``DENSE_FEEDBACK``).
   The best ``FEEDBACK_RESCORE`` candidates are re-scored and fused again with the first
   pass's weights and z-scales (BM25 is linear in term weights, so only the expansion terms
   are scored: ``LexicalIndex.scores_among``). RM3 alone helps CISI and Cranfield and
   costs LISA and NPL; Rocchio alone the reverse; at these moderate weights the two together
   gain on all four. The feedback documents' index terms are stored with the index (see
   catalog.py) and their distributions cached per open index.

Numbers for every candidate tried, on CISI, Cranfield, LISA and NPL, are in the README
(Search); ``tests/test_search_eval.py`` holds the bar (peer RRF + 0.01, never below the own
lexical and semantic modes) and checks that one-setting changes still beat the peer RRF.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, repeat

import numpy as np

POOL = 200
Z_DEPTH = 100
ALPHA = 0.5  # prior weight of the dense z-score, before each side's confidence
PEAK_TOP = 5  # a side's confidence: how far its best PEAK_TOP stand above its top Z_DEPTH
PEAK_POWER = 3.0  # weights follow confidence ** PEAK_POWER
FEEDBACK_DOCS = 10
FEEDBACK_TERMS = 20
FEEDBACK_LAMBDA = 0.25  # weight of the relevance model's terms in the expanded query
MAX_DOC_SHARE = 0.1  # feedback ignores terms in more than a tenth of the documents
DENSE_FEEDBACK = 0.5  # weight of the feedback documents' mean vector added to the query
FEEDBACK_RESCORE = 200  # feedback re-scores at most this many best candidates
# A title word counts 1.25x, as in lexical mode (see the module docstring for the numbers).
TITLE_WEIGHT = 0.25


def z_params(scores: Sequence[float] | np.ndarray, depth: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation of the best ``depth`` scores (std floored to stay finite)."""
    depth = Z_DEPTH if depth is None else depth
    values = np.sort(np.asarray(scores, dtype=np.float64))[::-1][:depth]
    if not len(values):
        return 0.0, 1.0
    # (plain sums: np.mean/np.std's generic reductions cost more than the arithmetic here)
    mean = float(values.sum()) / len(values)
    std = float(np.sqrt(np.dot(values - mean, values - mean) / len(values)))
    return mean, std if std > 1e-9 else 1.0


def peak(scores: Sequence[float] | np.ndarray, top: int | None = None, pad: bool = False) -> float:
    """How far a ranking's best ``top`` scores stand above its best ``Z_DEPTH``, in their
    standard deviations: high when a few documents are clearly ahead (a confident side),
    low when the scores are flat (the side cannot tell its candidates apart). ``pad``: a
    list shorter than ``Z_DEPTH`` is all there is (BM25: every other document scores 0),
    so it is filled up with zeros; a query matching a handful of papers is confident."""
    top = PEAK_TOP if top is None else top
    values = np.sort(np.asarray(scores, dtype=np.float64))[::-1][:Z_DEPTH]
    if pad and len(values) < Z_DEPTH:
        values = np.concatenate([values, np.zeros(Z_DEPTH - len(values))])
    if len(values) < 2:
        return 0.0
    mean, std = z_params(values)
    return max(float(values[:top].mean() - mean) / std, 0.0)


def dense_weight(lex_ref: Sequence[float], dense_ref: Sequence[float]) -> float:
    """This query's weight of the dense side: the prior ``ALPHA`` shifted towards the side
    whose own score distribution is more peaked (confidence ** ``PEAK_POWER``)."""
    lex_conf = max(peak(lex_ref, pad=True), 1e-3) ** PEAK_POWER * (1.0 - ALPHA)
    dense_conf = max(peak(dense_ref), 1e-3) ** PEAK_POWER * ALPHA
    return dense_conf / (lex_conf + dense_conf)


def fuse(
    lex: np.ndarray | None,
    lex_ref: Sequence[float],
    dense: np.ndarray | None,
    dense_ref: Sequence[float],
    alpha: float | None = None,
) -> np.ndarray:
    """Fused scores of candidates from their lexical and dense scores.

    ``lex`` and ``dense`` are aligned with the candidates (None = signal unavailable);
    ``*_ref`` are the score lists that set each signal's z-score scale; ``alpha`` is the
    dense weight (default: from the two distributions, see :func:`dense_weight`).
    """
    if alpha is None:
        alpha = dense_weight(lex_ref, dense_ref) if len(lex_ref) and len(dense_ref) else ALPHA
    parts: list[tuple[float, np.ndarray]] = []
    if lex is not None and len(lex_ref):
        mean, std = z_params(lex_ref)
        parts.append((1.0 - alpha, (lex - mean) / std))
    if dense is not None and len(dense_ref):
        mean, std = z_params(dense_ref)
        parts.append((alpha, (dense - mean) / std))
    if not parts:
        size = len(lex) if lex is not None else len(dense) if dense is not None else 0
        return np.zeros(size)
    # A candidate without a value on one side (no vector yet: NaN) is ranked by the other.
    weights = np.vstack([np.where(np.isnan(z), 0.0, w) for w, z in parts])
    values = np.vstack([np.nan_to_num(z, nan=0.0) for _w, z in parts])
    total = weights.sum(axis=0)
    return np.where(total > 0, (weights * values).sum(axis=0) / np.maximum(total, 1e-12), 0.0)


def term_distribution(terms: Sequence[str]) -> dict[str, float]:
    """P(term | document): each index term's share of the document's terms."""
    return count_distribution(Counter(terms))


def count_distribution(counts: Mapping[str, int]) -> dict[str, float]:
    """P(term | document) from the document's term counts."""
    total = sum(counts.values())
    if not total:
        return {}
    share = 1.0 / total
    return {term: count * share for term, count in counts.items()}


def relevance_model(
    feedback: Iterable[tuple[Mapping[str, float] | Sequence[str], float]],
    n_terms: int | None = None,
    doc_share: Callable[[str], float] | None = None,
) -> dict[str, float]:
    """RM1 term weights from (document, document weight); top ``n_terms``, sum 1.

    A document is its term distribution (see :func:`term_distribution`) or its list of terms.
    ``doc_share(term)`` (fraction of the collection containing the term) drops terms found in
    more than ``MAX_DOC_SHARE`` of all documents before the cut.
    """
    n_terms = FEEDBACK_TERMS if n_terms is None else n_terms
    model: dict[str, float] = {}
    get = model.get
    for doc, weight in feedback:
        dist = doc if isinstance(doc, Mapping) else term_distribution(doc)
        for term, p in dist.items():
            model[term] = get(term, 0.0) + weight * p
    top: list[tuple[str, float]] = []
    # doc_share is a lookup: ask only until the model is full. The best few times the terms
    # wanted are nearly always enough (sorting every term of ten papers cost more than the
    # rest); heapq.nlargest orders ties as the full sort does.
    ranked = heapq.nlargest(min(len(model), 4 * n_terms), model, key=model.__getitem__)
    for ordered in (ranked, sorted(model, key=model.__getitem__, reverse=True)):
        top = []
        for term in ordered:
            if len(top) >= n_terms:
                break
            if doc_share is None or doc_share(term) <= MAX_DOC_SHARE:
                top.append((term, model[term]))
        if len(top) >= n_terms or len(ranked) == len(model):
            break
    total = sum(w for _t, w in top)
    return {t: w / total for t, w in top} if total > 0 else {}


def feedback_weights(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Softmax of fused scores: how much each feedback document speaks for the query."""
    values = np.asarray(scores, dtype=np.float64)
    if not len(values):
        return values
    exp = np.exp(values - values.max())
    return exp / exp.sum()


def merge_candidates(*lists: Iterable[int]) -> list[int]:
    """Keys of several ranked lists, first occurrence order, no duplicates."""
    return list(dict.fromkeys(chain.from_iterable(lists)))


def lookup(scores: Mapping[int, float], keys: Sequence[int], missing: float) -> np.ndarray:
    """``scores`` of ``keys`` in order, ``missing`` for a key without one."""
    values = map(scores.get, keys, repeat(missing))
    return np.fromiter(values, dtype=np.float64, count=len(keys))


def query_length(clauses: Mapping[tuple[str, str], float]) -> int:
    """How many words a bag-of-words query has: its summed ``text`` weights (at least 1)."""
    return max(1, int(sum(w for (f, _t), w in clauses.items() if f == "text")))


def splice_rescored(fused: np.ndarray, head: np.ndarray, rescored: np.ndarray) -> np.ndarray:
    """Fused scores with the ``head`` candidates replaced by their feedback scores and every
    other candidate kept in its order just below the lowest of them."""
    final = fused.copy()
    final[head] = rescored
    tail = np.ones(len(fused), dtype=bool)
    tail[head] = False
    if tail.any():
        final[tail] = fused[tail] - (fused[tail].max() - rescored.min()) - 1e-6
    return final
