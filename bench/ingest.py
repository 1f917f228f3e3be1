"""Ingest throughput: synthetic arXiv snapshots and generic JSONL into SQLite and PostgreSQL.

Measures ``ingest_paths`` alone (parse, merge, write, commit). ``papersift ingest`` also
updates the search index afterwards (``index_changed``); that cost belongs to the search
benchmark and is deliberately not included here.

Papers are built from the seed pages' real titles and sentences, with arXiv-like ids,
authors, categories, dates, code links on some, and a few percent duplicates (newer
versions in the snapshot, re-cased titles in the generic file), so the merge path is
exercised too. Every run uses a fresh database (PostgreSQL: created on 127.0.0.1:5432
and dropped afterwards).

Then one arXiv snapshot of ``--large`` records (default a million, 0 to skip) goes into
SQLite once, in the one transaction ``papersift ingest`` uses for a file: what a user
ingesting arXiv's metadata snapshot waits for.

Usage: python bench/ingest.py [--sizes 10000,100000] [--large 1000000] [--no-postgres]
       [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import report  # noqa: E402  (bench/report.py: machine line, BENCHMARKS.md sections)

from papersift.ingest import ingest_paths  # noqa: E402
from papersift.store.db import Database  # noqa: E402
from papersift.store.papers import count_papers  # noqa: E402

SAMPLE = ROOT / "src" / "papersift" / "data" / "seeds"

FIRST = "Ada Alan Grace Emmy Marie Kurt Hedy Ravi Mei Jonas Clara Ines Omar Lin Petra Bruno".split()
LAST = "Lovelace Turing Hopper Noether Curie Goedel Lamarr Iyer Tanaka Berg Wolf Duarte".split()
CATS = "cs.CL cs.LG cs.AI cs.IR cs.CV stat.ML cs.NE cs.SE q-bio.BM eess.AS".split()
HOSTS = ["https://github.com", "https://gitlab.com", "https://huggingface.co"]


def seed_text() -> tuple[list[str], list[str]]:
    """Titles and abstract sentences of the seed pages."""
    titles: list[str] = []
    sentences: list[str] = []
    for path in sorted(SAMPLE.glob("*.txt")):
        lines = [ln for ln in path.read_text(encoding="utf-8").split("\n")[2:] if ln.strip()]
        lines[0] = lines[0].removeprefix("Subscribe")
        for title, abstract in zip(lines[::2], lines[1::2], strict=False):
            titles.append(title.strip())
            sentences += [s for s in re.split(r"(?<=\.)\s+", abstract) if len(s) > 30]
    return titles, sentences


def papers(n: int, rnd: random.Random) -> Iterator[dict]:
    """``n`` synthetic records; about 3% repeat an earlier paper."""
    titles, sentences = seed_text()
    words = [w for t in titles for w in t.split() if len(w) > 3]
    made: list[dict] = []
    for i in range(n):
        if made and rnd.random() < 0.03:
            old = rnd.choice(made)
            yield {**old, "dup": True, "abstract": old["abstract"] + " We add experiments."}
            continue
        base = rnd.choice(titles).split()
        for _ in range(rnd.randint(1, 3)):
            base[rnd.randrange(len(base))] = rnd.choice(words)
        abstract = " ".join(rnd.sample(sentences, rnd.randint(4, 9)))
        if rnd.random() < 0.2:
            host = rnd.choice(HOSTS)
            abstract += f" Code: {host}/{rnd.choice(FIRST).lower()}/{rnd.choice(words).lower()}."
        day = dt.date(2019, 1, 1) + dt.timedelta(days=rnd.randrange(5 * 365))
        paper = {
            "id": f"{day:%y%m}.{i % 100000:05d}",
            "title": " ".join(base) + f" ({i})" * (rnd.random() < 0.001),
            "abstract": abstract,
            "authors": [
                f"{rnd.choice(FIRST)} {rnd.choice(LAST)}" for _ in range(rnd.randint(1, 6))
            ],
            "categories": rnd.sample(CATS, rnd.randint(1, 3)),
            "date": day,
            "dup": False,
        }
        made.append(paper)
        yield paper


def write_snapshot(path: Path, rows: Iterable[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for p in rows:
            day = p["date"] + dt.timedelta(days=40 if p["dup"] else 0)
            created = p["date"].strftime("%a, %d %b %Y 10:00:00 GMT")
            obj = {
                "id": p["id"],
                "submitter": p["authors"][0],
                "authors": ", ".join(p["authors"]),
                "title": p["title"],
                "comments": None,
                "journal-ref": None,
                "doi": None,
                "report-no": None,
                "categories": " ".join(p["categories"]),
                "license": None,
                "abstract": p["abstract"],
                "versions": [{"version": "v1", "created": created}],
                "update_date": day.isoformat(),
                "authors_parsed": [[a.split()[1], a.split()[0], ""] for a in p["authors"]],
            }
            fh.write(json.dumps(obj) + "\n")


def write_generic(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for n, p in enumerate(rows):
            obj = {
                "title": p["title"].upper() if p["dup"] else p["title"],
                "summary": p["abstract"],
                "authors": p["authors"],
                "published": p["date"].isoformat(),
            }
            if n % 2:  # half carry an arXiv link, half are matched by title only
                obj["url"] = f"https://arxiv.org/abs/{p['id']}"
            fh.write(json.dumps(obj) + "\n")


def run_one(url: str, path: Path) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds, papers stored) for one ingest."""
    db = Database(url)  # migrations run here, outside the timed part
    try:
        start, cpu = time.perf_counter(), time.process_time()
        summary = ingest_paths(db, [path])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if summary.failed:
            raise SystemExit(f"ingest failed: {summary.failed[0].error}")
        with db.session() as s:
            stored = count_papers(s)
        return seconds, cpu, stored
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; best is kept")
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="one big snapshot into SQLite (0: skip)"
    )
    parser.add_argument("--no-write", action="store_true", help="don't touch BENCHMARKS.md")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the PostgreSQL database is still dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()[0]
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[tuple[int, str, str, float, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="papersift-bench-") as tmp:
        for n in sizes:
            rows = list(papers(n, random.Random(n)))
            files = {
                "arXiv snapshot": Path(tmp) / f"snap-{n}.json",
                "generic JSONL": Path(tmp) / f"gen-{n}.jsonl",
            }
            write_snapshot(files["arXiv snapshot"], rows)
            write_generic(files["generic JSONL"], rows)
            for fmt, path in files.items():
                backends = ["SQLite"] + ([] if args.no_postgres else ["PostgreSQL"])
                for backend in backends:
                    runs = []
                    for _ in range(args.repeat):
                        if backend == "SQLite":
                            url = f"sqlite:///{tmp}/b-{uuid.uuid4().hex}.db"
                            drop = lambda: None  # noqa: E731 - the temp dir goes as a whole
                        else:
                            url, drop = report.fresh_pg()
                        try:
                            runs.append(run_one(url, path))
                        finally:
                            drop()
                    seconds, cpu, stored = min(runs)  # the least disturbed run
                    results.append((n, fmt, backend, seconds, cpu, stored))
                    print(
                        f"{n:>7,} {fmt:<15} {backend:<10} {seconds:7.2f} s "
                        f"{n / seconds:9,.0f} records/s  {n / cpu:9,.0f} per CPU-s  "
                        f"({stored:,} papers stored)",
                        flush=True,
                    )
        if args.large:
            n = args.large
            path = Path(tmp) / f"snap-{n}.json"
            write_snapshot(path, papers(n, random.Random(n)))  # streamed: no list of n rows
            seconds, cpu, stored = run_one(f"sqlite:///{tmp}/large.db", path)
            results.append((n, "arXiv snapshot, one run", "SQLite", seconds, cpu, stored))
            print(f"{n:>9,} snapshot SQLite {seconds:7.1f} s {n / seconds:9,.0f} records/s")
    lines = [
        "## Ingest (`bench/ingest.py`)",
        "",
        f"Run {dt.date.today().isoformat()} on {report.machine()}; 1-minute load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the machine "
        "is shared with other work, so treat small differences as noise).",
        "",
        "Times `ingest_paths` alone on one file (parse, merge duplicates, write, commit) into "
        "a fresh database; the search-index update that `papersift ingest` runs afterwards "
        "is measured by the search benchmark, not here. Records are synthetic papers built "
        "from the seed pages' titles and sentences; about 3% are duplicates (a newer "
        "version in the snapshot, a re-cased title in the generic file), and half of the "
        "generic records have no arXiv id, so they are merged by title. Target: at least "
        "5,000 papers/s into SQLite. Each case runs "
        f"{args.repeat} time(s) on a fresh database and the fastest run is shown (the "
        "large snapshot at the end runs once, as one file in one transaction); "
        "'records per client CPU-s' divides by this process's CPU time, which other "
        "load on the machine disturbs less than wall time (for PostgreSQL the server's "
        "own CPU time is not in it).",
        "",
        "What profiling (cProfile) found and what was done: one id-collision query per new "
        "paper (now one query per batch of 2,000); the case-insensitive code-link regex run "
        "over every abstract (now only when the text contains '://'); SQLAlchemy's per-row "
        "parameter handling, which cost more than SQLite's own inserts (the INSERT is now "
        "compiled once and sent as one DBAPI executemany through the same bind "
        "processors); PostgreSQL planning sequential scans for identity lookups in a table "
        "filled inside the running transaction, which made a first 100k ingest quadratic "
        "(450 records/s; now `SET LOCAL enable_seqscan = off` for the ingest transaction); "
        "SQLite's 2 MB page cache spilling index pages mid-transaction (64 MB during "
        "ingest). What remains is about half parsing (JSON decoding, text and title "
        "normalization) and half merging and writing.",
        "",
        "| records | format | database | seconds | records/s | records per client CPU-s "
        "| papers stored |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for n, fmt, backend, seconds, cpu, stored in results:
        lines.append(
            f"| {n:,} | {fmt} | {backend} | {seconds:.2f} | {n / seconds:,.0f} "
            f"| {n / cpu:,.0f} | {stored:,} |"
        )
    if not args.no_write:
        report.write_section("bench/ingest.py", lines)
        print(f"wrote the ingest section of {report.BENCH_MD}")


if __name__ == "__main__":
    main()
