"""The relevance floor: below it a paper is not shown as a match.

A ranking always has a first result, even for ``zzqxv blorptang``; a floor says when the
first result is not a match at all. Two kinds of evidence count:

- **a shared word**: a paper the lexical side found (BM25 > 0: it has a query term, after
  stemming and stop words) is a match, as in any keyword search;
- **meaning**: a paper whose cosine similarity to the query reaches the model's
  ``MEANING_FLOORS`` value (all-MiniLM-L6-v2: 0.18). Calibrated on the four evaluation
  collections (CISI, Cranfield, LISA, NPL; every judged query): of the judged-relevant
  papers the dense side ranks in its top 100, the cut removes none on CISI, LISA and NPL
  and costs Cranfield 0.003 Recall@100 (0.20 would cost 0.005, 0.25 0.007).
- When no word of the query is in any paper (nonsense, or every word misspelled), meaning
  alone must reach ``UNKNOWN_FLOORS`` (0.55): 1,000 random letter-string queries against
  those collections and the seed corpus reached at most 0.51 with any paper (99th
  percentile 0.44), so such a query shows nothing and the spelling suggestion takes over.

Semantic mode shows the papers above the floor; hybrid those with either kind of evidence;
lexical mode every match. Models other than the calibrated one get no cosine floor, so
nothing is hidden on a scale nobody measured.

**Digest mode** (``digest_keep``) is the same floor made stricter, for mail: a digest topic
is a standing interest, and one shared common word ("structure" in "protein structure") is
not a match worth mailing. Of the papers the floor keeps, a digest keeps those that

- contain at least ``DIGEST_COVERAGE`` of the topic's idf weight (``coverage``: the summed
  idf of the topic's words the paper has over that of all the topic's words; so a paper
  with only the common word of a two-word topic falls short, one with the rare word
  passes), or
- reach the model's ``DIGEST_MEANINGS`` cosine (an abstract about the topic in other words).

Calibrated by ``tools/calibrate_digest_floor.py`` on the four evaluation collections'
topic-like queries (at most eight distinct index terms): the pair maximizing per-query F1 of
the kept set against the judged-relevant papers, averaged with each collection weighted
equally, and checked by leaving each collection out in turn (README, "Digests").
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence

import numpy as np

from papersift.search.lexical import LexicalIndex

# Cosine floors by embedding model (a substring of the embedder's model id, lower case).
MEANING_FLOORS = {"all-minilm-l6-v2": 0.18}
UNKNOWN_FLOORS = {"all-minilm-l6-v2": 0.55}
# Digest mode (see the module docstring): share of the topic's idf weight, and the cosine
# that counts without it. Other models: coverage only (no cosine bar anybody measured).
DIGEST_COVERAGE = 0.5
DIGEST_MEANINGS = {"all-minilm-l6-v2": 0.525}
# Semantic mode fetches at least this many nearest papers (or the page's end) and counts
# the matches among them; when all are matches the total is a lower bound ("N+"), as for a
# broad keyword query. Counting among a thousand made every query walk the graph with an
# expansion of 1,000 instead of the index's own (768 by default).
SEMANTIC_FETCH = 100


def cosine_floor(model_id: str | None, known_words: bool = True) -> float:
    """The calibrated cosine floor of this model (-1: not calibrated, nothing cut);
    ``known_words`` False: no word of the query is in the corpus."""
    name = (model_id or "").lower()
    table = MEANING_FLOORS if known_words else UNKNOWN_FLOORS
    for key, value in table.items():
        if key in name:
            return value
    return -1.0


def has_known_word(lexical: LexicalIndex, text: str) -> bool:
    """Whether some word of ``text`` (or an author name) is in some paper."""
    terms = lexical.analyze(text)
    if any(share > 0 for share in lexical.doc_shares(terms).values()):
        return True
    weights = lexical.bag_weights(text, title_weight=0.0)
    searcher = lexical.index.searcher()
    return any(searcher.doc_freq(f, t) > 0 for f, t in weights if f == "authors")


def above(sims: Sequence[float] | np.ndarray, floor: float) -> int:
    """How many of these descending similarities reach the floor."""
    values = np.asarray(sims, dtype=np.float64)
    if not len(values):
        return 0
    return int(np.searchsorted(-values, -floor, side="right"))


def keep(dense: np.ndarray, lexical_match: np.ndarray, floor: float) -> np.ndarray:
    """Mask of the hybrid candidates that are matches: a shared word or enough meaning."""
    return lexical_match | (dense >= floor)


def digest_cosine(model_id: str | None) -> float:
    """The cosine at which meaning alone makes a digest match (inf: model not calibrated)."""
    name = (model_id or "").lower()
    for key, value in DIGEST_MEANINGS.items():
        if key in name:
            return value
    return float("inf")


def idf(share: float, docs: int) -> float:
    """BM25's idf of a term found in ``share`` of ``docs`` documents (as the lexical side)."""
    n = share * docs
    return math.log(1.0 + (docs - n + 0.5) / (n + 0.5))


def topic_weights(shares: Mapping[str, float], docs: int) -> dict[str, float]:
    """idf of each topic term. A word no paper has weighs most (as in BM25): it is still
    part of the reader's interest, so "medieval manuscripts" is not matched by a thesis
    calling itself a manuscript when no paper says "medieval"."""
    return {t: idf(share, docs) for t, share in shares.items()}


def coverage(weights: Mapping[str, float], doc_terms: Container[str]) -> float:
    """Share of the topic's idf weight found among a paper's terms (0 when it has none)."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(w for t, w in weights.items() if t in doc_terms) / total


def digest_keep(
    dense: np.ndarray, covered: np.ndarray, model_id: str | None, known_words: bool = True
) -> np.ndarray:
    """Mask of the papers a digest counts as matches: the floor's matches that cover the
    topic's rarer words or are close in meaning (see the module docstring)."""
    base = keep(dense, covered > 0, cosine_floor(model_id, known_words))
    strict = (covered >= DIGEST_COVERAGE) | (dense >= digest_cosine(model_id))
    return base & strict
