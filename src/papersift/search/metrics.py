"""Retrieval metrics with their standard (trec_eval / ranx) definitions.

nDCG uses graded gains as given in the qrels (linear gain, log2 discount), the ideal ranking
is built from all judged documents of the query; only documents with a positive judgement
count as relevant for recall and MRR. Queries without any positive judgement are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]  # query id -> ranked doc ids, best first


def ndcg_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(
        judged.get(doc, 0) / math.log2(rank + 2)
        for rank, doc in enumerate(ranked[:k])
        if judged.get(doc, 0) > 0
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranked[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the queries with a relevant document."""
    qids = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    if not qids:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "queries": 0}
    totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for qid in qids:
        ranked = list(run.get(qid, []))
        judged = qrels[qid]
        totals["ndcg@10"] += ndcg_at(ranked, judged, 10)
        totals["recall@100"] += recall_at(ranked, judged, 100)
        totals["mrr@10"] += mrr_at(ranked, judged, 10)
    out: dict[str, float] = {key: value / len(qids) for key, value in totals.items()}
    out["queries"] = len(qids)
    return out
