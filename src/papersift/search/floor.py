"""The relevance floor: below it a paper is not shown as a match.

A ranking always has a first result, even for ``zzqxv blorptang``; a floor says when the
first result is not a match at all. Two kinds of evidence count:

- **a shared word**: a paper the lexical side found (BM25 > 0: it has a query term, after
  stemming and stop words) is a match, as in any keyword search;
- **meaning**: a paper whose cosine similarity to the query reaches ``COSINE_FLOOR`` of
  the embedding model. Calibrated on the four evaluation collections (CISI, Cranfield,
  LISA, NPL: 429 queries, see README): almost no judged-relevant paper that the dense
  side ranks in its top 100 lies below it, while nonsense and off-topic queries
  (``zzqxv blorptang``, ``how to bake bread`` on a machine-learning corpus) reach at most
  0.22 with any paper.

Semantic mode shows the papers above the cosine floor; hybrid those with either kind of
evidence; lexical mode every match. Models other than the calibrated one get no cosine
floor (every paper counts as a meaning match), so nothing is hidden on a scale nobody
measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Cosine floors by embedding model (a substring of the embedder's model id).
COSINE_FLOORS = {"all-minilm-l6-v2": 0.25}
SEMANTIC_COUNT = 1000  # semantic mode counts the matches among this many nearest papers


def cosine_floor(model_id: str | None) -> float:
    """The calibrated cosine floor of this model (-1: not calibrated, nothing cut)."""
    name = (model_id or "").lower()
    for key, value in COSINE_FLOORS.items():
        if key in name:
            return value
    return -1.0


def above(sims: Sequence[float] | np.ndarray, floor: float) -> int:
    """How many of these descending similarities reach the floor."""
    values = np.asarray(sims, dtype=np.float64)
    if not len(values):
        return 0
    return int(np.searchsorted(-values, -floor, side="right"))


def keep(dense: np.ndarray, lexical_match: np.ndarray, floor: float) -> np.ndarray:
    """Mask of the hybrid candidates that are matches: a shared word or enough meaning."""
    return lexical_match | (dense >= floor)
