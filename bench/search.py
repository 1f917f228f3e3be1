"""Search benchmark: ranking quality against the peers, then speed and memory at scale.

Quality, on every BEIR collection in ../shared/eval: papersift's lexical, semantic and hybrid
modes (through ``papersift.search.eval.run_eval``, the same code path as ``papersift eval``)
next to the peers of BASELINES.md, recomputed in this run: bm25s (BM25, Snowball stemmer,
English stop words), exact MiniLM cosine (numpy over the same vectors) and RRF (k=60) of the
two. All scored by ``papersift.search.metrics``.

Scale (``bench/scale.py``): the real arXiv corpus (236,579 papers; a fixed random sample
with real MiniLM embeddings, calibrated stand-in vectors for the rest) and 1M papers (the
real ones plus synthetic papers made of real sentences), a real papersift home queried
through ``SearchService.search`` with the peers interleaved in the same run; written to its
own BENCHMARKS.md section after every size.

Usage: python bench/search.py [--quick] [--sizes 236579,1000000] [--queries 300] [--no-quality]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
import scale

from papersift.search import eval as search_eval
from papersift.search.embedder import get_embedder
from papersift.search.metrics import evaluate

EVAL_ROOT = report.ROOT.parent / "shared" / "eval"


# -- quality ---------------------------------------------------------------------------------


def _bm25s_run(docs: list[tuple[str, str, str]], queries: dict[str, str], k: int) -> dict:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    corpus = [f"{t}. {x}" for _i, t, x in docs]
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(corpus, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    ids = [d[0] for d in docs]
    run = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        if not tokens.vocab:
            run[qid] = []
            continue
        res, _scores = retriever.retrieve(
            tokens, k=min(k, len(ids)), show_progress=False, n_threads=1
        )
        run[qid] = [ids[i] for i in res[0]]
    return run


def _rrf(*runs: dict, k: int = 60, depth: int = 100) -> dict:
    fused: dict[str, list[str]] = {}
    for qid in runs[0]:
        scores: dict[str, float] = {}
        for run in runs:
            for rank, doc in enumerate(run.get(qid, [])[:depth]):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank + 1)
        fused[qid] = sorted(scores, key=lambda d: -scores[d])
    return fused


def quality() -> list[dict]:
    rows = []
    embedder = get_embedder()
    for folder in sorted(p for p in EVAL_ROOT.iterdir() if (p / "corpus.jsonl").is_file()):
        coll = search_eval.load_collection(folder)
        judged = {q: t for q, t in coll.queries.items() if q in coll.qrels}
        paper_rows = search_eval._paper_rows(coll)
        matrix = search_eval.cached_embeddings(paper_rows, embedder, None)
        ids = [r["id"] for r in paper_rows]
        bm = _bm25s_run(coll.docs, judged, 100)
        dense = {}
        for qid, text in judged.items():
            sims = matrix @ embedder.encode_query(text)
            dense[qid] = [ids[i] for i in np.argsort(-sims)[:100]]
        peers = {"bm25s": bm, "MiniLM exact": dense, "RRF k=60 (bm25s, MiniLM)": _rrf(bm, dense)}
        for name, run in peers.items():
            rows.append({"collection": coll.name, "system": name, **evaluate(run, coll.qrels)})
        for mode in ("lexical", "semantic", "hybrid"):
            res = search_eval.run_eval(folder, mode=mode)
            for key in ("run", "runs", "texts", "qrels"):  # per-query data: not for the table
                res.pop(key, None)
            rows.append({"collection": coll.name, "system": f"papersift {mode}", **res})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# -- report ----------------------------------------------------------------------------------


def render(quality_rows: list[dict], scale_rows: list[dict]) -> list[str]:
    lines = [
        "## Search (bench/search.py)",
        "",
        f"Run {date.today().isoformat()} on {report.machine()}.",
        "",
    ]
    if quality_rows:
        lines += [
            "### Ranking quality (all judged queries; peers recomputed in this run)",
            "",
            "| collection | system | nDCG@10 | Recall@100 | MRR@10 |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in quality_rows:
            lines.append(
                f"| {r['collection']} | {r['system']} | {r['ndcg@10']:.3f} | "
                f"{r['recall@100']:.3f} | {r['mrr@10']:.3f} |"
            )
        lines.append("")
    if scale_rows:
        lines += [
            "### Speed and memory at scale (k=10 through `SearchService.search`, query "
            "embedding included; peers top 100)",
            "",
            "| papers | doc vectors | build (s) | index on disk (MB) | service RSS (MB) | "
            "vector index | recall@100 vs exact | lexical p50/p99 (ms) | semantic p50/p99 | "
            "hybrid p50/p99 | bm25s p50/p99 | bm25s build (s) / RSS (MB) | "
            "numpy exact p50/p99 (search only p50) / matrix MB |",
            "| " + " | ".join(["---"] * 13) + " |",
        ]
        for r in scale_rows:
            lines.append(
                f"| {r['n']:,} | {r['embeddings']} | {r['build_s']:.0f} | "
                f"{r['index_disk_mb']:.0f} | {r['service_rss_mb']:.0f} | {r['vector_index']} | "
                f"{r['vector_recall@100']:.3f} | {r['lexical_p50']:.1f} / {r['lexical_p99']:.1f} | "
                f"{r['semantic_p50']:.1f} / {r['semantic_p99']:.1f} | "
                f"{r['hybrid_p50']:.1f} / {r['hybrid_p99']:.1f} | "
                f"{r['bm25s_p50']:.1f} / {r['bm25s_p99']:.1f} | "
                f"{r['bm25s_build_s']:.0f} / {r['bm25s_rss_mb']:.0f} | "
                f"{r['numpy_p50']:.1f} / {r['numpy_p99']:.1f} ({r['numpy_search_only_p50']:.1f})"
                f" / {r['numpy_mb']:.0f} |"
            )
        lines += [
            "",
            "Ratios (papersift hybrid p50 / peer p50): "
            + "; ".join(
                f"{r['n']:,}: vs bm25s {r['hybrid_p50'] / r['bm25s_p50']:.2f}x, "
                f"vs numpy exact {r['hybrid_p50'] / r['numpy_p50']:.2f}x"
                for r in scale_rows
            )
            + ".",
            "",
            "Service RSS is the growth of the process that opens the built index "
            "(graph memory-mapped) and answers all queries; the build itself runs in a "
            "separate phase. Papers are loaded straight into the table; ingest speed is in the "
            "ingest section.",
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="236579,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-bm25s", action="store_true", help="skip the bm25s peer at scale")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about 20 minutes: 50,000 real papers, 150 queries, no quality section",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the built homes here (default: temporary)"
    )
    parser.add_argument("--load", default=None, help="with --render: the run's load average")
    parser.add_argument(
        "--render", type=Path, default=None, help="re-render the scale rows of a run's log"
    )
    args = parser.parse_args()
    if args.render is not None:
        rows = [
            json.loads(line)
            for line in args.render.read_text().splitlines()
            if line.startswith('{"n"')
        ]
        lines = scale.render(rows, args.load or "see the run")
        print("\n".join(lines))
        if not args.no_write:
            report.write_section("bench/search.py scale", lines)
        return
    if args.quick:
        args.sizes, args.queries, args.no_quality = "50000", 150, True
    if not args.no_quality:
        lines = render(quality(), [])
        print("\n".join(lines))
        if not args.no_write:
            report.write_section("bench/search.py", lines)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="papersift-bench-"))
    rows: list[dict] = []
    try:
        for n in [int(x) for x in args.sizes.split(",") if x]:
            out, docs, real_rows, matrix, home = scale.build(n, workdir)
            rows.append(
                scale.measure(
                    out, docs, real_rows, matrix, home, args.queries, bm25s=not args.no_bm25s
                )
            )
            del docs, matrix
            gc.collect()
            if args.workdir is None:
                shutil.rmtree(home, ignore_errors=True)
            load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
            lines = scale.render(rows, load)
            print("\n".join(lines), flush=True)
            if not args.no_write:  # after every size: a long run keeps what it measured
                report.write_section("bench/search.py scale", lines)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
