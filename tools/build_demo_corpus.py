"""Build the demo corpus that ships in the package (src/papersift/data/).

Takes the most recent announced days of the real arXiv corpus (whole days, newest first,
until about --papers papers, each with authors and a listing date), adds the corpus
records of the seed papers (so the five seed pages show their real metadata), writes them
as gzipped JSON lines, then ingests them with the seed pages into a throw-away home
exactly as ``papersift demo`` does, embeds them with papersift's own model and writes
the stored vectors (float16) with the model id and each paper's content hash.

    .venv/bin/python tools/build_demo_corpus.py [--source ../shared/corpora/arxiv-236k.jsonl.gz]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
OUT = ROOT / "src" / "papersift" / "data"


def _records(source: Path) -> list[dict]:
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def select(records: list[dict], seed_ids: set[str], target: int) -> tuple[list[dict], list[str]]:
    """The newest whole announced days with about ``target`` papers, plus the seed papers."""
    listed = [r for r in records if r.get("announced") and r.get("authors")]
    per_day = Counter(r["announced"] for r in listed)
    days: list[str] = []
    total = 0
    for day in sorted(per_day, reverse=True):
        if total >= target:
            break
        days.append(day)
        total += per_day[day]
    chosen = set(days)
    picked = [r for r in listed if r["announced"] in chosen]
    have = {r["id"] for r in picked}
    picked += [r for r in records if r["id"] in seed_ids and r["id"] not in have]
    picked.sort(key=lambda r: (r.get("announced") or "", r["id"]), reverse=True)
    return picked, sorted(days)


def write_corpus(records: list[dict], path: Path) -> None:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz,
    ):
        for rec in records:
            line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"
            gz.write(line.encode("utf-8"))


def embed(out: Path) -> tuple[str, int, float]:
    """Ingest the packaged demo into a temporary home, index it, export its vectors."""
    from papersift import Library
    from papersift.ingest.demo import MANIFEST_FILE, VECTORS_FILE, demo_paths
    from papersift.store import papers as paper_store
    from papersift.store import search_docs

    with tempfile.TemporaryDirectory() as tmp, Library(home=tmp) as lib:
        report = lib.ingest(demo_paths(), index=False)
        if report.failed:
            sys.exit(f"ingest failed: {[f.error for f in report.failed]}")
        started = time.perf_counter()
        lib.index(rebuild=True)
        seconds = time.perf_counter() - started
        emb = lib.search_service.embedder
        with lib.db.session() as s:
            ids = [p.id for p in paper_store.iter_papers(s)]
            hashes = paper_store.content_hashes(s, ids)
            vecs = search_docs.load_embeddings(s, hashes, emb.model_id, emb.dim)
        ids = [pid for pid in ids if pid in vecs]
        matrix = np.stack([vecs[pid] for pid in ids]).astype("<f2")
        np.save(out / VECTORS_FILE, matrix, allow_pickle=False)
        manifest = {
            "model_id": emb.model_id,
            "dim": int(matrix.shape[1]),
            "dtype": "float16",
            "papers": [[pid, hashes[pid]] for pid in ids],
        }
        (out / MANIFEST_FILE).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        return emb.model_id, len(ids), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED / "arxiv-236k.jsonl.gz")
    parser.add_argument("--seed-matches", type=Path, default=SHARED / "seed_matches.tsv")
    parser.add_argument("--papers", type=int, default=3800, help="papers from recent days")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-embed", action="store_true", help="write the corpus only")
    args = parser.parse_args()

    from papersift.ingest.demo import CORPUS_FILE

    with args.seed_matches.open(encoding="utf-8") as fh:
        seed_ids = {row["arxiv_id"] for row in csv.DictReader(fh, delimiter="\t")}
    seed_ids.discard("")
    picked, days = select(_records(args.source), seed_ids, args.papers)
    write_corpus(picked, args.out / CORPUS_FILE)
    print(f"{len(picked):,} papers, announced {days[0]} to {days[-1]} ({len(days)} days)")
    if not args.skip_embed:
        model_id, count, seconds = embed(args.out)
        print(f"{count:,} vectors by {model_id} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
