"""Vector index settings at scale, IVF and HNSW side by side: build, memory, search time, recall.

The vector index's defaults (``search/vectors.py``) trade build time against recall and
search time; this study measures that trade on the 1M corpus of ``bench/scale.py`` (236,579
real arXiv papers, 8,000 with real MiniLM embeddings, the rest calibrated stand-ins and
synthetic papers) with 200 real query embeddings. Each configuration is built with usearch
directly (``add`` in chunks on every core, as ``VectorIndex`` builds), then searched one
query at a time (one thread, as a served worker searches) at several ``expansion_search``
values: recall@10 and recall@100 against exact f32 search over all vectors.

``i8`` rows traverse an int8 graph; ``+rescore N`` fetches N candidates and re-ranks them by
exact cosine from full-precision vectors (what a quantized graph needs to keep recall).
``ivf`` rows are papersift's IVF index (``search/ivf.py``, faiss inverted lists of 8-bit
codes), built as ``VectorIndex`` builds it; for them the connectivity column holds the
number of lists and the expansion_search column the lists a query scans.

    python bench/hnsw.py [--n 1000000] [--configs f16:16:128,ivf]
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import report
import scale

EXPANSIONS = (64, 128, 192, 256, 384, 512, 768)
SCANNED = (10_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000)  # ivf: papers a query reads


def build_ivf(matrix: np.ndarray, keys: np.ndarray):
    from papersift.search.ivf import IvfIndex, lists_for, sample_rows

    t0, c0 = time.perf_counter(), time.process_time()
    index = IvfIndex.trained(matrix[sample_rows(len(matrix))], lists_for(len(matrix)), 0.05)
    for start in range(0, len(matrix), CHUNK):
        index.add(keys[start : start + CHUNK], matrix[start : start + CHUNK])
    return index, time.perf_counter() - t0, time.process_time() - c0


def study_ivf(matrix, keys, qvecs, exact, lines: list[str]) -> None:
    from papersift.search.ivf import probes_for

    index, wall, cpu = build_ivf(matrix, keys)
    mem = index.memory_usage / 1e6
    served = probes_for(index.lists, 0.05, len(index))  # what `papersift serve` scans
    per_list = len(index) / index.lists
    counts = sorted({min(index.lists, max(1, round(c / per_list))) for c in SCANNED} | {served})
    for probes in counts:
        index._index.nprobe = probes
        g10, t10 = searched(index, qvecs, 10)
        g100, t100 = searched(index, qvecs, 100)
        label = "ivf sq8 (served default)" if probes == served else "ivf sq8"
        row = (
            f"| {label} | {index.lists} | - | {wall:.0f} ({cpu:.0f}) | {mem:.0f} |"
            f" {probes} (~{probes * per_list:,.0f} papers) |"
            f" {np.percentile(t10, 50):.2f} / {np.percentile(t10, 99):.2f} | "
            f"{recall(g10, exact, 10):.3f} | "
            f"{np.percentile(t100, 50):.2f} / {np.percentile(t100, 99):.2f} | "
            f"{recall(g100, exact, 100):.3f} |"
        )
        print(row, flush=True)
        lines.append(row)


CHUNK = 100_000


def build(matrix: np.ndarray, keys: np.ndarray, dtype: str, m: int, ef_add: int):
    from usearch.index import Index

    index = Index(
        ndim=matrix.shape[1],
        metric="cos",
        dtype=dtype,
        connectivity=m,
        expansion_add=ef_add,
        expansion_search=64,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(matrix), CHUNK):
        index.add(keys[start : start + CHUNK], matrix[start : start + CHUNK], threads=0)
        print(f"  {start + CHUNK:,} added, {time.perf_counter() - t0:.0f} s", flush=True)
    return index, time.perf_counter() - t0, time.process_time() - c0


def searched(index, qvecs: np.ndarray, count: int) -> tuple[list[np.ndarray], list[float]]:
    got, times = [], []
    for v in qvecs:
        t0 = time.perf_counter()
        m = index.search(v, count, threads=1)
        times.append((time.perf_counter() - t0) * 1000)
        got.append(np.asarray(m.keys, dtype=np.uint64))
    return got, times


def rescored(
    index, qvecs: np.ndarray, matrix: np.ndarray, fetch: int, count: int
) -> tuple[list[np.ndarray], list[float]]:
    got, times = [], []
    for v in qvecs:
        t0 = time.perf_counter()
        m = index.search(v, fetch, threads=1)
        cand = np.asarray(m.keys, dtype=np.int64)
        sims = matrix[cand] @ v
        best = cand[np.argsort(-sims)[:count]]
        times.append((time.perf_counter() - t0) * 1000)
        got.append(best.astype(np.uint64))
    return got, times


def recall(got: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    return float(
        np.mean(
            [
                len(set(g[:k].tolist()) & set(t[:k].tolist())) / k
                for g, t in zip(got, truth, strict=True)
            ]
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--configs", default="f16:16:128,f16:24:128,i8:16:128")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    started = time.time()
    load_before = report.load()
    docs, rows, matrix, _ = scale.corpus(args.n)
    texts = scale.queries(docs, args.queries)
    del docs
    gc.collect()
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    keys = np.arange(len(matrix), dtype=np.uint64)
    from papersift.search.embedder import get_embedder

    embedder = get_embedder()
    qvecs = np.stack([embedder.encode_query(t) for t in texts]).astype(np.float32)
    exact = np.stack([np.argsort(-(matrix @ v))[:100] for v in qvecs])
    print(f"{len(matrix):,} vectors ({len(rows):,} real), {len(qvecs)} queries", flush=True)

    lines = [
        "## Vector index settings at scale: IVF and HNSW side by side (bench/hnsw.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} on {report.machine()};"
        f" {load_before} at the start.",
        f"{len(matrix):,} vectors: {len(rows):,} real MiniLM embeddings of real arXiv papers, the"
        " rest calibrated stand-ins (bench/real.py); "
        f"{len(qvecs)} real query embeddings (title fragments, bench/scale.py); recall against"
        " exact f32 search over all vectors. Built with every core; searched one query at a"
        " time on one thread.",
        "",
        "| dtype | connectivity (ivf: lists) | expansion_add | build s (CPU s) | memory MB |"
        " expansion_search (ivf: lists scanned) | top 10 p50 / p99 ms | recall@10 |"
        " top 100 p50 / p99 ms | recall@100 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in args.configs.split(","):
        if config == "ivf":
            study_ivf(matrix, keys, qvecs, exact, lines)
            continue
        dtype, m, ef_add = config.split(":")
        print(f"--- {dtype} M{m} ef_add {ef_add}", flush=True)
        index, wall, cpu = build(matrix, keys, dtype, int(m), int(ef_add))
        mem = index.memory_usage / 1e6
        for ef in EXPANSIONS:
            index.expansion_search = ef
            g10, t10 = searched(index, qvecs, 10)
            g100, t100 = searched(index, qvecs, 100)
            row = (
                f"| {dtype} | {m} | {ef_add} | {wall:.0f} ({cpu:.0f}) | {mem:.0f} | {ef} | "
                f"{np.percentile(t10, 50):.2f} / {np.percentile(t10, 99):.2f} | "
                f"{recall(g10, exact, 10):.3f} | "
                f"{np.percentile(t100, 50):.2f} / {np.percentile(t100, 99):.2f} | "
                f"{recall(g100, exact, 100):.3f} |"
            )
            print(row, flush=True)
            lines.append(row)
            if dtype != "f16" and ef in (128, 256):
                for fetch in (200, 400):
                    g, t = rescored(index, qvecs, matrix, fetch, 100)
                    row = (
                        f"| {dtype} +rescore {fetch} | {m} | {ef_add} | {wall:.0f} ({cpu:.0f}) |"
                        f" {mem:.0f} | {ef} | - | {recall(g, exact, 10):.3f} | "
                        f"{np.percentile(t, 50):.2f} / {np.percentile(t, 99):.2f} | "
                        f"{recall(g, exact, 100):.3f} |"
                    )
                    print(row, flush=True)
                    lines.append(row)
        del index
        gc.collect()
    lines += [
        "",
        f"Load average at the end: {report.load()}; the study took {time.time() - started:.0f} s.",
    ]
    report.write_section("bench/hnsw.py", lines)


if __name__ == "__main__":
    main()
