"""A big file goes in through short transactions (staged, then published in chunks) and
still as one logical transaction: a file that fails or is killed leaves nothing, a rerun
ingests everything once, and a real server answers votes while a 50k-record file goes in."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from papersift.ingest import staging
from papersift.ingest.pipeline import ingest_file, ingest_paths, stage_records
from papersift.ingest.records import PaperRecord
from papersift.store.db import Database
from papersift.store.schema import PaperRow
from papersift.store.schema_staging import IngestBatchRow, staged_papers

from .server_support import PAPERSIFT, serve_env, served
from .test_hardening_web import copy_of, from_address
from .test_ingest_bad_input import FIXTURES, dump


def _records(n: int, start: int = 0, *, prefix: str = "2501") -> list[str]:
    return [
        json.dumps(
            {
                "id": f"{prefix}.{i:05d}",
                "title": f"Staged paper number {i} on sparse retrieval",
                "abstract": f"We study staged ingestion, case {i}, with bounded transactions.",
                "authors": "A. Author and B. Author",
            }
        )
        for i in range(start, start + n)
    ]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _seed(db: Database) -> None:
    summary = ingest_paths(db, [FIXTURES / "merge_page.txt", FIXTURES / "snapshot.jsonl"])
    assert not summary.failed


def _count(db: Database, table=PaperRow) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


def test_malformed_record_late_in_a_file_leaves_nothing(db: Database, tmp_path: Path) -> None:
    """Ten batches staged (and no paper written), then a broken line: the file is gone."""
    _seed(db)
    before = dump(db)
    path = _write(
        tmp_path / "late.jsonl", [*_records(1000), '{"title": "broken', *_records(5, 2000)]
    )
    result = ingest_file(db, path, batch_size=100)
    assert not result.ok and "late.jsonl" in (result.error or "")
    assert dump(db) == before  # papers, staged rows and the batch lane all as before


def test_a_failed_publish_is_undone_chunk_by_chunk(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updates of stored papers and new papers are published in many chunks, then a
    constraint refuses the last one: every published chunk is reverted, the stored papers
    get their old rows back, and the same file goes in whole once the constraint is gone."""
    _seed(db)
    monkeypatch.setattr(staging, "PUBLISH_CHUNK", 7)
    with db.session() as s:
        stored = list(s.scalars(select(PaperRow.arxiv_id).where(PaperRow.arxiv_id.is_not(None))))
    assert stored
    newer = [
        json.dumps({"id": a, "title": f"Retitled {a}", "abstract": "New.", "updated": "2030-01-01"})
        for a in stored
    ]
    clash = json.dumps({"id": "9999.99999", "title": "Sparse Retrieval with Learned Term Weights"})
    path = _write(tmp_path / "clash.jsonl", [*newer, *_records(40), clash])
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX test_only_title ON papers (title_key)")
    try:
        before = dump(db)
        result = ingest_file(db, path, batch_size=10)
        assert not result.ok and "database error" in (result.error or "")
        assert dump(db) == before
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX test_only_title")
    again = ingest_file(db, path, batch_size=10)
    assert again.ok and again.added == 41 and again.updated == len(stored)
    assert _count(db, IngestBatchRow) == 0 and _count(db, staged_papers) == 0


def test_a_publish_cut_short_by_a_dead_process_is_reverted_at_next_start(
    db: Database, tmp_path: Path
) -> None:
    """A process that died mid-publish (simulated: two chunks moved, owner a dead pid)
    leaves papers that its file never committed; the next start takes them out."""
    _seed(db)
    before = dump(db)
    records = [
        PaperRecord(title=f"Half published {i}", abstract="x", arxiv_id=f"2502.{i:05d}")
        for i in range(30)
    ]
    with staging.staged_file(db, "file:half.jsonl") as staged:
        stage_records(staged, records, "file:half.jsonl", batch_size=10)
        with db.session() as s:
            staging.staging_store.set_state(s, staged.batch, staging.PUBLISHING, datetime.now(UTC))
        for _ in range(2):
            with db.session() as s:
                assert staging.staging_store.publish_chunk(s, staged.batch, 10)
        assert _count(db) == len(before["papers"]) + 20  # visible, not committed
        with db.session() as s:
            s.execute(update(IngestBatchRow).values(owner=f"{os.uname().nodename}:999999999"))
        assert staging.finish_interrupted(db) == "reverted"
        assert dump(db) == before
    assert dump(db) == before


def _sqlite_count(path: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.mark.timeout(900)
def test_kill_9_mid_file_leaves_nothing_and_a_rerun_ingests_everything_once(
    tmp_path: Path, home: Path
) -> None:
    """`papersift ingest` of 8,000 records killed with SIGKILL while it stages: no paper of
    the file exists; the rerun reverts the leftovers and ingests every record once."""
    env = serve_env(home)
    first = _write(tmp_path / "small.jsonl", _records(50, prefix="2400"))
    subprocess.run(
        [PAPERSIFT, "ingest", "-q", str(first)], env=env, check=True, capture_output=True
    )
    database = home / "papersift.db"
    base = _sqlite_count(database, "SELECT count(*) FROM papers")
    big = _write(tmp_path / "big.jsonl", _records(8_000))
    with (tmp_path / "ingest.log").open("w") as log:
        proc = subprocess.Popen(
            [PAPERSIFT, "ingest", "-q", str(big)], env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 300
        while _sqlite_count(database, "SELECT count(*) FROM ingest_staged") < 2000:
            assert proc.poll() is None and time.monotonic() < deadline, "ingest ended early"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _sqlite_count(database, "SELECT count(*) FROM papers") == base
    rerun = subprocess.run(
        [PAPERSIFT, "ingest", "--json", str(big)], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["files"][0]["added"] == 8_000
    assert _sqlite_count(database, "SELECT count(*) FROM papers") == base + 8_000
    assert _sqlite_count(database, "SELECT count(DISTINCT arxiv_id) FROM papers") == base + 8_000
    assert _sqlite_count(database, "SELECT count(*) FROM ingest_staged") == 0
    assert _sqlite_count(database, "SELECT count(*) FROM ingest_batches") == 0


@pytest.mark.timeout(1800)
def test_votes_get_through_while_a_50k_file_goes_in(web_home: Path, tmp_path: Path) -> None:
    """A real server on a real SQLite home answers votes with 200 while `papersift ingest`
    of 50,000 records runs (it used to hold the write lock for the whole file)."""
    home = copy_of(web_home, tmp_path / "home")
    big = _write(tmp_path / "big.jsonl", _records(50_000, prefix="2503"))
    database = home / "papersift.db"
    with served(home, workers=1) as base:
        ids = [
            p["id"]
            for p in httpx.get(
                f"{base}/api/v1/trending", params={"window": "month", "k": 100}, timeout=30
            ).json()["results"]
        ]
        assert len(ids) >= 40
        clients = [from_address(f"127.0.4.{n}", base_url=base) for n in range(1, 41)]
        for client in clients:  # a vote needs a visitor seen before (a page sets it)
            assert client.get(f"/papers/{ids[0]}").status_code == 200
        results: list[tuple[float, int, float]] = []  # (sent at, status, seconds)
        log = (tmp_path / "ingest.log").open("w")
        proc = subprocess.Popen(
            [PAPERSIFT, "ingest", "-q", str(big)], env=serve_env(home), stdout=log, stderr=log
        )
        seen_batch = False
        t0 = time.monotonic()
        n = 0
        try:
            while time.monotonic() - t0 < 600:
                staged = _sqlite_count(database, "SELECT count(*) FROM ingest_batches")
                seen_batch = seen_batch or staged > 0
                if seen_batch and staged == 0:
                    break  # the file is in
                client = clients[n % len(clients)]
                sent = time.monotonic()
                status = client.post(f"/api/v1/papers/{ids[n % len(ids)]}/upvote").status_code
                results.append((sent - t0, status, time.monotonic() - sent))
                n += 1
                time.sleep(0.2)
        finally:  # the file is in: its indexing afterwards is not what this test is about
            proc.terminate()
            proc.wait(timeout=120)
            log.close()
            for client in clients:
                client.close()
    before = _sqlite_count(web_home / "papersift.db", "SELECT count(*) FROM papers")
    assert _sqlite_count(database, "SELECT count(*) FROM papers") == before + 50_000
    assert seen_batch and len(results) >= 20, results
    during = [status for _, status, _ in results]
    slow = max(seconds for _, _, seconds in results)
    print(f"{len(results)} votes during the ingest: {during.count(200)} 200s, slowest {slow:.2f} s")
    assert during.count(200) >= 0.9 * len(during), results
    assert slow < 10, results
