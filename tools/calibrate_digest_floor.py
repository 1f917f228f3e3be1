"""Calibrate the digest mode of the relevance floor (``papersift.search.floor.digest_keep``).

A digest topic is a short standing interest, and a digest is judged by what it mails: every
paper it keeps should be relevant, and no relevant new paper should be missed. So on each
evaluation collection (BEIR layout) this takes the topic-like queries (at most
``MAX_TERMS`` distinct index terms that some document has, and at least one judged-relevant
document), keeps, for a grid of (coverage, cosine) pairs, the documents the digest rule
keeps over the *whole* collection (a digest filters every new paper, not a top 100), and
scores the kept set per query by F1 against the judged-relevant documents.

The pair shipped is the one with the best mean F1, each collection weighted equally (no
collection's size decides). Leaving each collection out in turn shows how far a pair chosen
without it falls from that collection's own best. Run:

    .venv/bin/python tools/calibrate_digest_floor.py ../shared/eval [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from papersift.model import paper_text
from papersift.search import floor
from papersift.search.embedder import get_embedder
from papersift.search.eval import cached_embeddings, load_collection
from papersift.search.lexical import text_analyzer
from papersift.settings import current
from papersift.store import papers as paper_store

COLLECTIONS = ("cisi", "cranfield", "lisa", "npl")
MAX_TERMS = 8  # topic-like: digest topics are a few words (LISA has no such query)
COVERAGES = [round(0.30 + 0.05 * i, 2) for i in range(15)] + [float("inf")]
COSINES = [round(0.30 + 0.025 * i, 3) for i in range(17)] + [float("inf")]


def _prf(tp: np.ndarray, kept: np.ndarray, relevant: int) -> np.ndarray:
    """(precision, recall, F1) stacked on a new first axis."""
    precision = np.divide(tp, kept, out=np.zeros_like(tp, dtype=float), where=kept > 0)
    recall = tp / relevant
    s = precision + recall
    f1 = np.divide(2 * precision * recall, s, out=np.zeros_like(s), where=s > 0)
    return np.stack([precision, recall, f1])


def measure(folder: Path, embedder) -> dict:
    """Per-query F1 over the grid (and the plain floor's numbers) for one collection."""
    coll = load_collection(folder)
    analyzer = text_analyzer()
    topic_like = {
        qid: text
        for qid, text in coll.queries.items()
        if len(set(analyzer.analyze(text))) <= MAX_TERMS
        and any(g > 0 for g in coll.qrels.get(qid, {}).values())
    }
    if not topic_like:  # nothing to measure: skip embedding the collection
        return {"name": coll.name, "queries": 0, "docs": len(coll.docs)}
    first: dict[str, dict] = {}
    now = datetime.now(UTC)
    for doc_id, title, text in coll.docs:
        first.setdefault(
            doc_id, paper_store.bare_row(doc_id, title, text, source=f"eval:{coll.name}", now=now)
        )
    rows = list(first.values())
    ids = [r["id"] for r in rows]
    matrix = cached_embeddings(rows, embedder)
    postings: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        for term in set(analyzer.analyze(paper_text(r["title"], r["abstract"]))):
            postings.setdefault(term, []).append(i)
    docs = len(rows)
    grid = np.zeros((3, len(COVERAGES), len(COSINES)))  # precision, recall, F1
    base = {"f1": 0.0, "kept": 0.0, "recall": 0.0}
    kept_at: list[np.ndarray] = []
    used = 0
    for qid, text in topic_like.items():
        relevant = {d for d, g in coll.qrels.get(qid, {}).items() if g > 0}
        rel_idx = np.array([i for i, d in enumerate(ids) if d in relevant], dtype=int)
        terms = set(analyzer.analyze(text))
        shares = {t: len(postings.get(t, ())) / docs for t in terms}
        weights = floor.topic_weights(shares, docs)
        if not len(rel_idx) or not weights or len(weights) > MAX_TERMS:
            continue
        used += 1
        sims = matrix @ embedder.encode_query(text)
        cov = np.zeros(docs)
        total = sum(weights.values())
        for t, w in weights.items():
            cov[postings.get(t, [])] += w / total
        is_rel = np.zeros(docs, dtype=bool)
        is_rel[rel_idx] = True
        known = any(share > 0 for share in shares.values())
        plain = floor.keep(sims, cov > 0, floor.cosine_floor(embedder.model_id, known))
        f = _prf(np.array([np.sum(plain & is_rel)]), np.array([plain.sum()]), len(rel_idx))
        base["f1"] += float(f[2, 0])
        base["kept"] += float(plain.sum())
        base["recall"] += float(np.sum(plain & is_rel)) / len(rel_idx)
        cov_masks = np.stack([cov >= c for c in COVERAGES])  # (C, D)
        sim_masks = np.stack([sims >= s for s in COSINES])  # (S, D)
        keep = plain[None, None, :] & (cov_masks[:, None, :] | sim_masks[None, :, :])
        tp = (keep & is_rel[None, None, :]).sum(axis=2)
        kept = keep.sum(axis=2)
        grid += _prf(tp, kept, len(rel_idx))
        kept_at.append(kept)
    if used:
        grid /= used
        base = {k: v / used for k, v in base.items()}
    mean_kept = np.mean(kept_at, axis=0) if kept_at else np.zeros_like(grid[2])
    return {
        "name": coll.name,
        "queries": used,
        "docs": docs,
        "grid": grid[2],
        "precision": grid[0],
        "recall": grid[1],
        "kept": mean_kept,
        "base": base,
    }


def _at(c: float, s: float) -> tuple[int, int]:
    return COVERAGES.index(c), COSINES.index(s)


def _best(grid: np.ndarray) -> tuple[float, float, float]:
    i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return COVERAGES[i], COSINES[j], float(grid[i, j])


def report(every: Sequence[dict], shipped: tuple[float, float]) -> dict:
    results = [r for r in every if r["queries"]]  # a collection without such queries
    mean = np.mean([r["grid"] for r in results], axis=0)
    chosen = _best(mean)
    out: dict = {"chosen": {"coverage": chosen[0], "cosine": chosen[1], "mean_f1": chosen[2]}}
    rows = []
    for r in results:
        others = np.mean([o["grid"] for o in results if o is not r], axis=0)
        c, s, _ = _best(others)
        own = _best(r["grid"])
        sc = _at(*shipped)
        rows.append(
            {
                "collection": r["name"],
                "queries": r["queries"],
                "docs": r["docs"],
                "floor_f1": round(r["base"]["f1"], 3),
                "floor_kept": round(r["base"]["kept"], 1),
                "floor_recall": round(r["base"]["recall"], 3),
                "shipped_f1": round(float(r["grid"][sc]), 3),
                "shipped_kept": round(float(r["kept"][sc]), 1),
                "shipped_precision": round(float(r["precision"][sc]), 3),
                "shipped_recall": round(float(r["recall"][sc]), 3),
                "own_best": {"coverage": own[0], "cosine": own[1], "f1": round(own[2], 3)},
                "left_out": {
                    "coverage": c,
                    "cosine": s,
                    "f1": round(float(r["grid"][_at(c, s)]), 3),
                },
                "coverage_only_f1": round(float(r["grid"][sc[0], -1]), 3),
                "cosine_only_f1": round(float(r["grid"][-1, sc[1]]), 3),
            }
        )
    out["collections"] = rows
    out["without_topic_like_queries"] = [r["name"] for r in every if not r["queries"]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", nargs="*", default=list(COLLECTIONS), help="collection folders")
    args = ap.parse_args(argv)
    embedder = get_embedder(current().model_dir)
    results = [measure(args.eval_dir / name, embedder) for name in args.only]
    shipped = (floor.DIGEST_COVERAGE, floor.digest_cosine(embedder.model_id))
    out = report(results, shipped)
    out["shipped"] = {"coverage": shipped[0], "cosine": shipped[1]}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
