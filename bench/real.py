"""The real corpus for the scale benchmarks: ../shared/corpora/arxiv-236k.jsonl.gz.

Embedding all 236,579 abstracts with MiniLM on these 2 shared cores takes hours, so a
fixed random sample (``REAL_SAMPLE``, seed 5) gets real MiniLM embeddings of its abstract
(cached in ``bench/.cache/real_arxiv_<n>.npy``, resumable in chunks) and every other paper
gets a stand-in vector calibrated on that sample (see ``stand_ins``). Which papers have
which is recorded per row (``real_vector``), so the benchmark can say it.

Usage: python bench/real.py [--sample 20000]   (embeds the sample; prints abstracts/s)
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "arxiv-236k.jsonl.gz"
CACHE = Path(__file__).resolve().parent / ".cache"
REAL_SAMPLE = 8_000
CHUNK = 1_000


@dataclass
class RealDoc:
    id: str
    title: str
    abstract: str
    authors: list[str]
    categories: list[str]
    published: date | None


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def load(limit: int | None = None) -> list[RealDoc]:
    """The corpus in file order (``limit``: only the first papers; a parsed copy is
    kept in bench/.cache, since parsing 382 MB of JSON takes minutes on a busy machine)."""
    import pickle

    cached = CACHE / "arxiv_docs.pickle"
    if limit is None and cached.is_file():
        with cached.open("rb") as fh:
            return pickle.load(fh)
    out: list[RealDoc] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out.append(
                RealDoc(
                    rec["id"],
                    rec["title"],
                    rec["abstract"],
                    list(rec.get("authors") or []),
                    list(rec.get("categories") or []),
                    _date(rec.get("published")),
                )
            )
            if limit is not None and len(out) >= limit:
                break
    if limit is None:
        CACHE.mkdir(exist_ok=True)
        with cached.open("wb") as fh:
            pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return out


def sample_rows(n_docs: int, size: int = REAL_SAMPLE, seed: int = 5) -> np.ndarray:
    """Row numbers (sorted) of the papers that get real embeddings."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_docs, size=min(size, n_docs), replace=False))


def text(doc: RealDoc) -> str:
    return f"{doc.title}. {doc.abstract}"


def real_vectors(docs: list[RealDoc], rows: np.ndarray, *, quiet: bool = False) -> np.ndarray:
    """MiniLM embeddings of ``docs[rows]`` (f32), embedded once and cached chunk by chunk."""
    from papersift.search.embedder import get_embedder

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"real_arxiv_{len(rows)}.npy"
    if path.is_file():
        return np.load(path).astype(np.float32)
    embedder = get_embedder()
    parts: list[np.ndarray] = []
    t0 = time.perf_counter()
    for start in range(0, len(rows), CHUNK):
        part_path = CACHE / f"real_arxiv_{len(rows)}.part{start // CHUNK:04d}.npy"
        if part_path.is_file():
            parts.append(np.load(part_path))
            continue
        t1 = time.perf_counter()
        chunk = [text(docs[int(i)]) for i in rows[start : start + CHUNK]]
        vecs = embedder.encode(chunk).astype(np.float16)
        np.save(part_path, vecs)
        (CACHE / f"real_arxiv_{len(rows)}.part{start // CHUNK:04d}.json").write_text(
            json.dumps({"seconds": time.perf_counter() - t1, "n": len(chunk)})
        )
        parts.append(vecs)
        if not quiet:
            print(
                f"embedded {start + len(chunk):,}/{len(rows):,} "
                f"({len(chunk) / (time.perf_counter() - t1):.1f}/s)",
                flush=True,
            )
    matrix = np.vstack(parts)
    np.save(path, matrix)
    (CACHE / f"real_arxiv_{len(rows)}.json").write_text(
        json.dumps({"seconds": time.perf_counter() - t0, "n": len(rows)})
    )
    return matrix.astype(np.float32)


def embedded_so_far(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(rows, f32 vectors, seconds spent) of the sample's chunks embedded so far: the run
    that embeds the whole sample may have been stopped (it takes hours on a busy machine)."""
    full = CACHE / f"real_arxiv_{len(rows)}.npy"
    if full.is_file():
        info = json.loads((CACHE / f"real_arxiv_{len(rows)}.json").read_text())
        return rows, np.load(full).astype(np.float32), float(info["seconds"])
    parts, seconds = [], 0.0
    for i in range(0, len(rows), CHUNK):
        part = CACHE / f"real_arxiv_{len(rows)}.part{i // CHUNK:04d}.npy"
        if not part.is_file():
            break
        parts.append(np.load(part).astype(np.float32))
        info = part.with_suffix(".json")
        seconds += json.loads(info.read_text())["seconds"] if info.is_file() else float("nan")
    if not parts:
        raise SystemExit("no real embeddings yet: run `python bench/real.py` first")
    n = sum(len(x) for x in parts)
    return rows[:n], np.vstack(parts), seconds


def synthetic(docs: list[RealDoc], n: int, seed: int = 17) -> list[RealDoc]:
    """``n`` synthetic papers from the real ones' sentences: a real title with a few
    words swapped, 4-9 real sentences from random papers; categories and date copied
    from a random real paper (so filters keep their share)."""
    import re

    rng = np.random.default_rng(seed)
    sentences: list[str] = []
    for d in docs[:: max(1, len(docs) // 50_000)]:
        sentences.extend(
            x for x in re.split(r"(?<=[.!?])\s+(?=[A-Z])", d.abstract) if 20 <= len(x) <= 600
        )
    vocab = [w for d in docs[:20_000] for w in d.title.split() if len(w) > 3]
    out = []
    for i in range(n):
        src = docs[int(rng.integers(len(docs)))]
        words = src.title.split()
        for _ in range(int(rng.integers(0, 3))):
            words[int(rng.integers(len(words)))] = vocab[int(rng.integers(len(vocab)))]
        picks = rng.integers(0, len(sentences), size=int(rng.integers(4, 10)))
        out.append(
            RealDoc(
                f"synth.{i:07d}",
                " ".join(words),
                " ".join(sentences[int(j)] for j in picks),
                [],
                src.categories,
                src.published,
            )
        )
    return out


def stand_ins(
    docs: list[RealDoc], rows: np.ndarray, real: np.ndarray, noise: float | None = None
) -> np.ndarray:
    """Vectors for every paper: real ones for ``rows``, stand-ins for the rest.

    A stand-in is a random convex mix (Dirichlet weights) of the real vectors of four
    sampled papers of the paper's primary category, plus Gaussian noise, normalized; the
    noise (``NOISE``) was set so that the mean cosine of a stand-in to its nearest real
    vector and the mean pairwise cosine come near the real sample's (``calibrate``
    prints both). Papers of a category with no sampled paper draw from the whole sample.
    """
    sigma = NOISE if noise is None else noise
    rng = np.random.default_rng(13)
    out = np.zeros((len(docs), real.shape[1]), dtype=np.float32)
    out[rows] = real
    by_cat: dict[str, list[int]] = {}
    for j, i in enumerate(rows.tolist()):
        by_cat.setdefault(docs[i].categories[0] if docs[i].categories else "", []).append(j)
    pools = {c: np.array(v) for c, v in by_cat.items() if len(v) >= 4}
    every = np.arange(len(rows))
    is_real = np.zeros(len(docs), dtype=bool)
    is_real[rows] = True
    rest = np.flatnonzero(~is_real)
    for start in range(0, len(rest), 50_000):
        idx = rest[start : start + 50_000]
        picks = np.empty((len(idx), 4), dtype=np.int64)
        for j, i in enumerate(idx.tolist()):
            pool = pools.get(docs[i].categories[0] if docs[i].categories else "", every)
            picks[j] = pool[rng.integers(0, len(pool), size=4)]
        weights = rng.dirichlet(np.full(4, 0.5), size=len(idx)).astype(np.float32)
        mix = np.einsum("nk,nkd->nd", weights, real[picks])
        mix += rng.normal(0, sigma, size=mix.shape).astype(np.float32)
        out[idx] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    return out


NOISE = 0.03


def calibrate(real: np.ndarray, fake: np.ndarray, n: int = 2000) -> dict[str, float]:
    """Similarity statistics of real and stand-in vectors (to compare the two)."""
    rng = np.random.default_rng(0)
    r = real[rng.choice(len(real), min(n, len(real)), replace=False)]
    f = fake[rng.choice(len(fake), min(n, len(fake)), replace=False)]

    def stats(m: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
        sims = m @ ref.T
        np.fill_diagonal(sims, np.nan) if m is ref else None
        return float(np.nanmean(sims)), float(np.nanmean(np.nanmax(sims, axis=1)))

    rm, rnn = stats(r, r)
    fm, fnn = stats(f, f)
    return {"real_mean": rm, "real_nn": rnn, "stand_in_mean": fm, "stand_in_nn": fnn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=REAL_SAMPLE)
    args = parser.parse_args()
    docs = load()
    rows = sample_rows(len(docs), args.sample)
    real_vectors(docs, rows)
    print(json.loads((CACHE / f"real_arxiv_{len(rows)}.json").read_text()))


if __name__ == "__main__":
    # Run through the module's own name, so the cached pickle refers to ``real.RealDoc``
    # (the benchmarks that import this module cannot find ``__main__.RealDoc``).
    import real as module

    module.main()
