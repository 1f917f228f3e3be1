"""Hybrid's second pass: pseudo-relevance feedback on both sides (method in hybrid.py).

From the best fused candidates: RM3 expansion terms for the lexical side, and a Rocchio move
of the query vector for the dense side. The best ``FEEDBACK_RESCORE`` candidates are
re-scored and fused again with the first pass's weights and on its z-scales, so feedback
changes the order within each side, not how much a side counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from itertools import repeat

import numpy as np

from papersift.search import hybrid
from papersift.search.generations import Generation
from papersift.search.lexical import LexicalIndex
from papersift.search.query import CleanQuery
from papersift.search.vectors import VectorIndex

SPLIT_FROM = 64  # keys to re-score before a second core is worth its hand-off (~0.3 ms)

TermDistributions = Callable[[Generation, list[int]], dict[int, dict[str, float]]]


def exact_cosines(vectors: VectorIndex | None, keys: Sequence[int], qvec: np.ndarray) -> np.ndarray:
    """Cosine of each key's stored vector with ``qvec``; NaN for a key without a vector."""
    out = np.full(len(keys), np.nan, dtype=np.float64)
    if vectors is None or not len(keys):
        return out
    found, vecs = vectors.get(list(keys))
    if len(vecs):
        out[np.asarray(found, dtype=bool)] = vecs @ qvec
    return out


class CandidateVectors:
    """The stored vectors of a query's candidates, read from the index once: fusion and both
    feedback steps take theirs from here (each read of a few hundred costs 0.4-0.6 ms of
    decoding and key lookups at a million papers)."""

    def __init__(self, vectors: VectorIndex | None, keys: Sequence[int]) -> None:
        self._rows: dict[int, int] = {}
        self._matrix = np.zeros((0, 1), dtype=np.float32)
        self.add(vectors, keys)

    def add(self, vectors: VectorIndex | None, keys: Sequence[int]) -> CandidateVectors:
        """Also read the vectors of ``keys`` not read yet (the dense side's candidates,
        once the lexical side's were read while it ran); returns self."""
        rest = [k for k in keys if k not in self._rows]
        if vectors is None or not rest:
            return self
        found, more = vectors.get(rest)
        present = np.asarray(rest, dtype=np.uint64)[np.asarray(found, dtype=bool)]
        start = len(self._rows)
        self._matrix = np.concatenate([self._matrix, more]) if start else more
        self._rows.update(zip(present.tolist(), range(start, start + len(present)), strict=True))
        return self

    def cosines(self, keys: Sequence[int], qvec: np.ndarray) -> np.ndarray:
        """Cosine of each key's vector with ``qvec``; NaN for a key without one."""
        out = np.full(len(keys), np.nan, dtype=np.float64)
        rows = np.fromiter(map(self._rows.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        have = rows >= 0
        if have.any():
            out[have] = self._matrix[rows[have]] @ qvec
        return out

    def matrix(self, keys: Sequence[int]) -> np.ndarray | None:
        """The vectors of ``keys`` in order; None unless every key has one."""
        if not all(k in self._rows for k in keys):
            return None
        return self._matrix[[self._rows[k] for k in keys]]


def scores_among(
    lexical: LexicalIndex,
    weights: Mapping[tuple[str, str], float],
    keys: list[int],
    spare: Executor | None,
) -> dict[int, float]:
    """The expansion terms' BM25 scores of ``keys``; with a ``spare`` core, half the keys
    are scored there at the same time. Each key's score is the same either way: a document's
    BM25 score does not depend on which other documents a query is restricted to.

    tantivy seeks every expansion term to each key in turn (``LexicalIndex.scores_among``),
    so most of the work halves with the keys: about 5 ms a half against 7.6 for all ~250 at
    a million papers (the terms' set-up and the keys' clause do not halve)."""
    if spare is None or len(keys) < SPLIT_FROM:
        return lexical.scores_among(weights, keys)
    theirs = spare.submit(lexical.scores_among, weights, keys[1::2])
    scores = lexical.scores_among(weights, keys[::2])
    scores.update(theirs.result())
    return scores


def rescore(
    live: Generation,
    clean: CleanQuery,
    cands: list[int],
    fused: np.ndarray,
    dense: np.ndarray,
    alpha: float,
    first: tuple[np.ndarray, list[float], list[int]],
    dense_first: tuple[np.ndarray, list[int], list[float]],
    term_distributions: TermDistributions,
    stored: CandidateVectors,
    spare: Executor | None = None,
) -> np.ndarray:
    """Fused scores after feedback. ``first``: the first pass's lexical scores of the
    candidates, its lexical reference list and keys; ``dense_first``: the query vector and
    the dense side's keys and similarities; ``stored``: the candidates' vectors; ``spare``:
    a pool with an idle core, which re-scores half the candidates (None: no idle core)."""
    top = np.argsort(-fused, kind="stable")[: hybrid.FEEDBACK_DOCS]
    if len(top) < 2:
        return fused
    top_keys = [cands[i] for i in top]
    dists = term_distributions(live, top_keys)
    doc_weights = hybrid.feedback_weights(fused[top])
    lexical = live.lexical
    # Common terms are skipped at the cut, so only the model's best terms are looked up.
    model = hybrid.relevance_model(
        ((dists.get(key, {}), w) for key, w in zip(top_keys, doc_weights, strict=True)),
        doc_share=lexical.doc_share,
    )
    if not model:
        return fused
    lam = hybrid.FEEDBACK_LAMBDA
    # Expanded query = (1 - lam) x original (per query term) + lam x relevance model. BM25
    # is linear in the query's term weights, so its score is (1 - lam) / n x the first
    # pass's score plus lam x the score of the relevance model's terms alone: only the
    # latter is computed, and the first pass's scores (and its bound for candidates below
    # its cut) are kept, so lam = 0 ranks exactly as no feedback.
    if clean.has_syntax:
        n_terms = max(1, len(lexical.analyze(clean.words or clean.text)))
    else:
        n_terms = hybrid.query_length(
            lexical.bag_weights(clean.text, title_weight=hybrid.TITLE_WEIGHT)
        )
    # Each expansion term counts in the title too, as the user's words do. Matching it in
    # ``text`` only re-scored 1-2 ms sooner at a million papers but cost Cranfield 0.002
    # and LISA 0.001 nDCG@10 (README, Search), so it was not taken.
    weights: dict[tuple[str, str], float] = {}
    for term, w in model.items():
        weights["text", term] = w
        if hybrid.TITLE_WEIGHT:
            weights["title", term] = w * hybrid.TITLE_WEIGHT
    head = np.argsort(-fused, kind="stable")[: hybrid.FEEDBACK_RESCORE]
    head_keys = [cands[i] for i in head]
    first_vec, first_ref, first_keys = first
    ref_keys = first_keys[: hybrid.Z_DEPTH]
    scores = scores_among(lexical, weights, hybrid.merge_candidates(head_keys, ref_keys), spare)
    share = (1 - lam) / n_terms
    lex2 = share * first_vec[head] + lam * hybrid.lookup(scores, head_keys, 0.0)
    ref = share * np.asarray(first_ref[: hybrid.Z_DEPTH]) + lam * hybrid.lookup(
        scores, ref_keys, 0.0
    )
    qvec, d_keys, d_sims = dense_first
    dense_head, dense_ref = dense[head], d_sims or dense.tolist()
    vecs = stored.matrix(top_keys) if hybrid.DENSE_FEEDBACK > 0 else None
    if vecs is not None:
        q2 = qvec + hybrid.DENSE_FEEDBACK * (doc_weights @ vecs)
        q2 = (q2 / np.linalg.norm(q2)).astype(np.float32)
        # The head and the first pass's dense list (the new scale) re-scored from their
        # stored vectors: no second vector search.
        keys2 = hybrid.merge_candidates(head_keys, d_keys)
        sims2 = dict(zip(keys2, stored.cosines(keys2, q2), strict=True))
        dense_head = hybrid.lookup(sims2, head_keys, np.nan)
        dense_ref = [v for v in hybrid.lookup(sims2, d_keys, np.nan) if v == v]
    rescored = hybrid.fuse(lex2, ref.tolist(), dense_head, dense_ref, alpha)
    return hybrid.splice_rescored(fused, head, rescored)
