"""Search benchmark: ranking quality against the peers, then speed and memory at scale.

Quality, on every BEIR collection in ../shared/eval: papersift's lexical, semantic and hybrid
modes (through ``papersift.search.eval.run_eval``, the same code path as ``papersift eval``)
next to the peers of BASELINES.md, recomputed in this run: bm25s (BM25, Snowball stemmer,
English stop words), exact MiniLM cosine (numpy over the same vectors) and RRF (k=60) of the
two. All scored by ``papersift.search.metrics``.

Scale, at 10k / 100k / 1M synthetic papers (``bench/synth.py``, built from the seed pages'
sentences): a real papersift home (SQLite + indexes) is built and queried through
``SearchService.search``, the code path of the CLI and web app, including the query
embedding (the query cache is cleared before every mode, so each query is embedded). Peers on
the same documents and queries: bm25s (1 thread, top 100) and brute-force numpy cosine (f32,
top 100, query embedding included). Document embeddings are real MiniLM vectors at 10k and a
cheap stand-in above (each paper's vector is the normalized sum of the real MiniLM vectors of
its title and sentences: see ``synth.stand_in_vectors``); the tables say which.

Usage: python bench/search.py [--sizes 10000,100000,1000000] [--queries 300] [--no-quality]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
import synth

from papersift.search import eval as search_eval
from papersift.search.embedder import get_embedder
from papersift.search.metrics import evaluate
from papersift.search.service import SearchService
from papersift.settings import load_settings
from papersift.store import search_docs as docstore
from papersift.store.db import Database
from papersift.store.papers import bare_row, content_hash, insert_rows

EVAL_ROOT = report.ROOT.parent / "shared" / "eval"
CACHE = Path(__file__).resolve().parent / ".cache"
REAL_EMBEDDINGS_UP_TO = 10_000


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


# -- scale -----------------------------------------------------------------------------------


def make_queries(n: int, seed: int = 3) -> list[str]:
    """Title-length queries: 2-6 consecutive words of seed titles, plus a few questions."""
    text = synth.load_seed_text()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = text.titles[int(rng.integers(len(text.titles)))].split()
        length = int(rng.integers(2, 7))
        start = int(rng.integers(0, max(1, len(words) - length + 1)))
        out.append(" ".join(words[start : start + length]))
    return out


def _vectors(docs: list[synth.SynthDoc], real: bool) -> np.ndarray:
    embedder = get_embedder()
    if real:
        cache = CACHE / f"real_{len(docs)}.npy"
        if cache.is_file():
            return np.load(cache).astype(np.float32)
        vecs = embedder.encode([f"{d.title}. {d.abstract}" for d in docs], batch_size=64)
        CACHE.mkdir(exist_ok=True)
        np.save(cache, vecs.astype(np.float16))
        return vecs
    seeds = CACHE / "seed_vectors.npz"
    if seeds.is_file():
        data = np.load(seeds)
        sv, tv = data["sentences"], data["titles"]
    else:
        text = synth.load_seed_text()
        sv = embedder.encode(text.sentences, batch_size=64)
        tv = embedder.encode(text.titles, batch_size=64)
        CACHE.mkdir(exist_ok=True)
        np.savez(seeds, sentences=sv, titles=tv)
    return synth.stand_in_vectors(docs, sv, tv)


def _lat(fn, queries: list[str]) -> tuple[float, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    arr = np.array(times) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def scale(
    n: int, n_queries: int, workdir: Path, *, reuse: bool = False, build_only: bool = False
) -> dict | None:
    """Build (or, with ``reuse``, re-open a kept build of) n papers and measure them."""
    print(f"--- {n:,} papers", flush=True)
    out: dict = {"n": n, "embeddings": "MiniLM" if n <= REAL_EMBEDDINGS_UP_TO else "stand-in"}
    home = workdir / f"home_{n}"
    built = home / "built.json"
    docs = list(synth.generate(n))
    settings = load_settings(home=home, db_url=f"sqlite:///{home / 'papersift.db'}")
    if reuse and built.is_file():
        out.update(json.loads(built.read_text()))
        print(f"re-using the build in {home}", flush=True)
        return _measure(out, docs, settings, n_queries)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    db = Database(settings.db_url)
    # Rows go straight into the papers table: ingest speed is bench/ingest.py's subject (a
    # million-record snapshot takes over two minutes there), index building is this one's.
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    for start in range(0, n, 20_000):
        rows = [
            bare_row(d.id, d.title, d.abstract, source="bench", now=now, arxiv_id=d.id)
            for d in docs[start : start + 20_000]
        ]
        with db.session() as s:
            insert_rows(s, rows)
    out["load_s"] = time.perf_counter() - t0

    matrix = _vectors(docs, real=n <= REAL_EMBEDDINGS_UP_TO)
    embedder = get_embedder()
    hashes = {d.id: content_hash(d.title, d.abstract) for d in docs}
    first = {d.id: i for i, d in enumerate(docs)}
    for start in range(0, len(first), 20_000):
        chunk = list(first.items())[start : start + 20_000]
        part = [(pid, hashes[pid], matrix[i]) for pid, i in chunk]
        if part:
            with db.session() as s:
                docstore.save_embeddings(s, part, embedder.model_id)
    print(f"stored {len(first):,} embeddings", flush=True)

    service = SearchService(settings, db, embedder=embedder, view=False)
    t0 = time.perf_counter()
    service.rebuild()
    out["build_s"] = time.perf_counter() - t0
    out["index_disk_mb"] = report.dir_mb(settings.index_dir)
    del service
    db.dispose()
    gc.collect()
    built.write_text(json.dumps(out))
    if build_only:
        return None
    return _measure(out, docs, settings, n_queries, matrix)


def _measure(
    out: dict,
    docs: list[synth.SynthDoc],
    settings,
    n_queries: int,
    matrix: np.ndarray | None = None,
) -> dict:
    """Query latency, memory and recall of a built home, and the peers on the same data."""
    n = out["n"]
    db = Database(settings.db_url)
    embedder = get_embedder()
    if matrix is None:
        matrix = _vectors(docs, real=n <= REAL_EMBEDDINGS_UP_TO)
    first = {d.id: i for i, d in enumerate(docs)}

    queries = make_queries(n_queries)
    # Serving process view: open the built index read-only (memory-mapped graph) and query.
    before = report.rss_mb()
    service = SearchService(settings, db, embedder=embedder, view=True)
    service.search("warm up the index", k=10)
    for q in queries[:20]:
        service.search(q + " warm", k=10, mode="hybrid")
    for mode in ("lexical", "semantic", "hybrid"):
        embedder._cache.clear()
        p50, p99 = _lat(lambda q, m=mode: service.search(q, k=10, mode=m), queries)
        out[f"{mode}_p50"], out[f"{mode}_p99"] = p50, p99
        print(f"{mode}: p50 {p50:.1f} ms p99 {p99:.1f} ms", flush=True)
    out["service_rss_mb"] = report.rss_mb() - before

    # HNSW (or exact) recall@100 against exact search over the same vectors.
    live = service._current()
    qvecs = [embedder.encode_query(q) for q in queries[:200]]
    from papersift.search.catalog import paper_key

    keys = np.array([paper_key(pid) for pid in first], dtype=np.uint64)
    mat = matrix[list(first.values())]
    recalls = []
    for qv in qvecs:
        got, _ = live.vectors.search(qv, 100)
        sims = mat @ qv
        top = keys[np.argpartition(-sims, 99)[:100]]
        recalls.append(len(set(got.tolist()) & set(top.tolist())) / 100)
    out["vector_recall@100"] = float(np.mean(recalls))
    out["vector_index"] = "usearch HNSW" if live.vectors.is_hnsw else "exact numpy"

    # Peers on the same documents and queries.
    embedder._cache.clear()

    def brute(q: str) -> None:
        sims = mat @ embedder.encode_query(q)
        top = np.argpartition(-sims, 99)[:100]
        top[np.argsort(-sims[top])]

    out["numpy_p50"], out["numpy_p99"] = _lat(brute, queries)
    qv0 = qvecs[0]
    out["numpy_search_only_p50"], _ = _lat(lambda q: np.argpartition(-(mat @ qv0), 99), queries)
    out["numpy_mb"] = mat.nbytes / 1e6
    matrix = mat = None  # free them (closures above are done)
    gc.collect()

    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    before = report.rss_mb()
    t0 = time.perf_counter()
    retriever = bm25s.BM25()
    tokens = bm25s.tokenize(
        [f"{d.title}. {d.abstract}" for d in docs],
        stopwords="en",
        stemmer=stemmer,
        show_progress=False,
    )
    retriever.index(tokens, show_progress=False)
    del tokens
    gc.collect()
    out["bm25s_build_s"] = time.perf_counter() - t0
    out["bm25s_rss_mb"] = report.rss_mb() - before

    def bm(q: str) -> None:
        tok = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)
        if tok.vocab:
            retriever.retrieve(tok, k=100, show_progress=False, n_threads=1)

    out["bm25s_p50"], out["bm25s_p99"] = _lat(bm, queries)
    retriever = docs = None
    db.dispose()
    gc.collect()
    print(json.dumps(out), flush=True)
    return out


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
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the built homes here (default: a temporary folder)",
    )
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="build the homes in --workdir and stop (measure later with --reuse)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="measure the homes --build-only left in --workdir"
    )
    args = parser.parse_args()
    quality_rows = [] if args.no_quality else quality()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="papersift-bench-"))
    scale_rows = []
    try:
        for n in [int(x) for x in args.sizes.split(",") if x]:
            row = scale(n, args.queries, workdir, reuse=args.reuse, build_only=args.build_only)
            if row is not None:
                scale_rows.append(row)
            if args.workdir is None:
                shutil.rmtree(workdir / f"home_{n}", ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.build_only:
        return
    lines = render(quality_rows, scale_rows)
    print("\n".join(lines))
    if not args.no_write:
        report.write_section("bench/search.py", lines)


if __name__ == "__main__":
    main()
