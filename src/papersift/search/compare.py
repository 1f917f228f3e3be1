"""Per-query comparison of two runs on one collection: where a method wins and loses.

A mean hides what a change does: +0.01 nDCG@10 can be ten queries a little better and one
query, the one a user asked, ruined. ``papersift eval DIR --compare OTHER`` lists the
queries by their difference. Saved runs (``--save-run FILE``) are JSON
(``{"collection", "mode", "run": {query id: [doc ids, best first]}}``); a TREC run file
(``qid Q0 doc rank score tag`` per line) is read too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from papersift.search.metrics import Qrels, Run, ndcg_at, recall_at

TIE = 1e-9


class RunFileError(ValueError):
    """A saved run that cannot be read (message says why)."""


@dataclass
class QueryDelta:
    query_id: str
    text: str
    ndcg: float  # this run's nDCG@10
    other: float  # the compared run's nDCG@10
    recall: float  # Recall@100 of this run minus the compared run's

    @property
    def delta(self) -> float:
        return self.ndcg - self.other


def save_run(path: Path, run: Run, *, collection: str, mode: str) -> None:
    """Write a run as JSON (what ``load_run`` reads)."""
    data = {"collection": collection, "mode": mode, "run": {q: list(d) for q, d in run.items()}}
    Path(path).write_text(json.dumps(data), encoding="utf-8")


def load_run(path: Path) -> tuple[dict[str, list[str]], str]:
    """(run, label) from a saved JSON run or a TREC run file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFileError(f"cannot read run file {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RunFileError(f"{path}: not JSON ({exc})") from None
        run = data.get("run") if isinstance(data, dict) else None
        if not isinstance(run, dict) or not all(isinstance(v, list) for v in run.values()):
            raise RunFileError(f"{path}: expected {{'run': {{query id: [doc ids]}}}}")
        label = f"{path.name} ({data.get('mode', '?')})"
        return {str(q): [str(d) for d in docs] for q, docs in run.items()}, label
    ranked: dict[str, list[tuple[float, str]]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 4:
            raise RunFileError(f"{path}:{n}: expected 'qid Q0 doc rank [score tag]' (TREC run)")
        try:
            rank = float(parts[3])
        except ValueError:
            raise RunFileError(f"{path}:{n}: rank {parts[3]!r} is not a number") from None
        ranked.setdefault(parts[0], []).append((rank, parts[2]))
    if not ranked:
        raise RunFileError(f"{path}: no ranked documents")
    return {q: [d for _r, d in sorted(docs)] for q, docs in ranked.items()}, path.name


def per_query(run: Run, other: Run, qrels: Qrels, queries: dict[str, str]) -> list[QueryDelta]:
    """Every judged query with both runs' nDCG@10, worst loss first."""
    out = []
    for qid, judged in qrels.items():
        if not any(g > 0 for g in judged.values()):
            continue
        mine, theirs = list(run.get(qid, [])), list(other.get(qid, []))
        out.append(
            QueryDelta(
                qid,
                queries.get(qid, ""),
                ndcg_at(mine, judged, 10),
                ndcg_at(theirs, judged, 10),
                recall_at(mine, judged, 100) - recall_at(theirs, judged, 100),
            )
        )
    out.sort(key=lambda d: (d.delta, d.query_id))
    return out


def summary(deltas: list[QueryDelta]) -> dict[str, float | int]:
    """Wins, losses, ties and the mean difference."""
    wins = sum(1 for d in deltas if d.delta > TIE)
    losses = sum(1 for d in deltas if d.delta < -TIE)
    mean = sum(d.delta for d in deltas) / len(deltas) if deltas else 0.0
    return {
        "queries": len(deltas),
        "wins": wins,
        "losses": losses,
        "ties": len(deltas) - wins - losses,
        "mean_delta": mean,
    }
