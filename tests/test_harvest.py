"""Harvesting against a real HTTP server on 127.0.0.1 that replays hand-written responses.

Covers OAI-PMH resumption tokens, arXiv API paging, 503 + Retry-After, 5xx and dropped
connections, a broken page (kept pages, clear error, resume), and a harvest killed
mid-way (SIGKILL) that resumes at the next page without duplicates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from papersift.cli import app
from papersift.ingest.harvest import (
    HarvestConfig,
    HarvestError,
    harvest_arxiv,
    harvest_oai,
    oai_key,
)
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.store.schema import HarvestStateRow, PaperRow

from .harvest_support import Recorder, Reply, replay_server
from .test_ingest_bad_input import dump

pytestmark = pytest.mark.timeout(90)

RECORDED = Path(__file__).parent / "fixtures" / "harvest"
FAST = HarvestConfig(delay=0.0, retries=3, backoff=0.01, timeout=5.0, page_size=2)


def page(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


@pytest.fixture
def server() -> Iterator[Recorder]:
    with replay_server() as recorder:
        yield recorder


def script_oai(server: Recorder) -> None:
    server.script("first", Reply(body=page("oai_page1.xml")))
    server.script("tok-2", Reply(body=page("oai_page2.xml")))
    server.script("tok-3", Reply(body=page("oai_page3.xml")))


def arxiv_ids(db: Database) -> list[str]:
    with db.session() as s:
        return sorted(s.scalars(select(PaperRow.arxiv_id)))


def state_row(db: Database, key: str) -> HarvestStateRow | None:
    with db.session() as s:
        return s.get(HarvestStateRow, key)


OAI_IDS = [f"2405.1000{i}" for i in range(1, 6)]
API_IDS = [f"2406.2000{i}" for i in range(1, 6)]


def test_oai_follows_resumption_tokens(db, server):
    script_oai(server)
    since = date(2024, 1, 1)
    result = harvest_oai(db, server.url, set_spec="cs", from_date=since, config=FAST)
    assert (result.pages, result.records, result.added, result.deleted) == (3, 5, 5, 1)
    assert result.done and not result.resumed
    assert arxiv_ids(db) == OAI_IDS
    first, second, third = (r.params for r in server.log)
    assert first == {
        "verb": "ListRecords",
        "metadataPrefix": "arXiv",
        "set": "cs",
        "from": "2024-01-01",
    }
    assert second == {"verb": "ListRecords", "resumptionToken": "tok-2"}
    assert third == {"verb": "ListRecords", "resumptionToken": "tok-3"}
    state = state_row(db, oai_key(server.url, "arXiv", "cs", since))
    assert state.done and state.resumption_token is None and state.records == 5
    with db.session() as s:
        paper = paper_store.get_paper(s, "2405.10003")
    assert paper.sources == [f"oai:{urlsplit(server.url).netloc}"]
    assert paper.code_urls == ["https://github.com/hybrid/rrf"]

    # a finished harvest is not repeated; --restart harvests again and changes nothing
    before = dump(db)
    again = harvest_oai(db, server.url, set_spec="cs", from_date=since, config=FAST)
    assert again.already_done and len(server.log) == 3
    redo = harvest_oai(db, server.url, set_spec="cs", from_date=since, config=FAST, restart=True)
    assert (redo.pages, redo.added, redo.updated, redo.unchanged) == (3, 0, 0, 5)
    after = dump(db)
    assert after["papers"] == before["papers"]


@pytest.mark.parametrize(
    ("prefix", "fixture", "expected"),
    [("arXivRaw", "oai_arxivraw.xml", ["2303.11111"]), ("oai_dc", "oai_dc.xml", ["2304.05555"])],
)
def test_oai_other_metadata_prefixes(db, server, prefix, fixture, expected):
    server.script("first", Reply(body=(RECORDED.parent / fixture).read_bytes()))
    result = harvest_oai(db, server.url, prefix=prefix, config=FAST)
    assert result.done and result.deleted == 1
    assert server.log[0].params["metadataPrefix"] == prefix
    assert arxiv_ids(db) == expected


def test_503_with_retry_after_is_honoured(db, server):
    busy = Reply(503, b"busy", {"Retry-After": "1"})
    server.script("first", busy, Reply(body=page("oai_page1.xml")))
    server.script("tok-2", Reply(body=page("oai_page2.xml")))
    server.script("tok-3", Reply(body=page("oai_page3.xml")))
    messages: list[str] = []
    result = harvest_oai(db, server.url, config=FAST, log=messages.append)
    assert result.done and result.retries == 1
    assert arxiv_ids(db) == OAI_IDS
    refused, accepted = server.log[0], server.log[1]
    assert refused.params == accepted.params
    # backoff alone would have waited 0.01 s: the gap is the server's Retry-After
    assert accepted.at - refused.at >= 0.95
    assert messages and "HTTP 503" in messages[0]


def test_5xx_and_dropped_connections_are_retried(db, server):
    server.script(
        "first",
        Reply(500, b"oops"),
        Reply(drop=True),
        Reply(502, b"bad gateway"),
        Reply(body=page("oai_page1.xml")),
    )
    server.script("tok-2", Reply(body=page("oai_page2.xml")))
    server.script("tok-3", Reply(body=page("oai_page3.xml")))
    result = harvest_oai(db, server.url, config=FAST)
    assert result.retries == 3 and result.done
    assert arxiv_ids(db) == OAI_IDS


def test_retries_run_out_with_a_clear_error_and_no_writes(db, server):
    server.script("first", Reply(500, b"down"))
    before = dump(db)
    with pytest.raises(HarvestError, match=r"HTTP 500 .*gave up after 4 attempts"):
        harvest_oai(db, server.url, config=FAST)
    assert len(server.log) == 4
    assert dump(db) == before


def test_client_errors_are_not_retried(db, server):
    server.script("first", Reply(400, b"bad request"))
    with pytest.raises(HarvestError, match="HTTP 400"):
        harvest_oai(db, server.url, config=FAST)
    assert len(server.log) == 1


def test_requests_are_spaced_by_the_delay(db, server):
    script_oai(server)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    config = HarvestConfig(delay=0.3, backoff=0.01, timeout=5, sleep=sleep)
    harvest_oai(db, server.url, config=config)
    gaps = [b.at - a.at for a, b in zip(server.log, server.log[1:], strict=False)]
    # The harvester spaces the starts of its requests; where they arrive also depends on
    # how fast a loaded machine schedules the server's threads, hence the margin.
    assert len(waits) == 2 and all(0 < w <= 0.3 for w in waits)
    assert len(gaps) == 2 and min(gaps) >= 0.25


def test_broken_page_keeps_earlier_pages_and_resumes(db, server):
    good = page("oai_page2.xml")
    server.script("first", Reply(body=page("oai_page1.xml")))
    server.script("tok-2", Reply(body=good[: len(good) // 2]), Reply(body=good))
    server.script("tok-3", Reply(body=page("oai_page3.xml")))
    with pytest.raises(HarvestError) as err:
        harvest_oai(db, server.url, config=FAST)
    message = str(err.value)
    assert "page 2 (resumptionToken=tok-2)" in message and "broken XML" in message
    assert "line " in message and "1 page(s) before it were kept" in message
    assert arxiv_ids(db) == OAI_IDS[:2]
    state = state_row(db, oai_key(server.url, "arXiv", None, None))
    assert state.resumption_token == "tok-2" and not state.done and state.records == 2

    result = harvest_oai(db, server.url, config=FAST)
    assert result.resumed and result.done
    assert server.log[2].params == {"verb": "ListRecords", "resumptionToken": "tok-2"}
    assert [r.params.get("metadataPrefix") for r in server.log[2:]] == [None, None]
    assert arxiv_ids(db) == OAI_IDS
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(PaperRow)) == 5


def test_database_error_on_a_page_rolls_that_page_back_and_resumes(db, server, tmp_path):
    """A real constraint violation (an extra unique index) while committing page 2."""
    script_oai(server)
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "2301.99999", "title": "Hybrid Search Without Tuning"}\n')
    from papersift.ingest import ingest_paths

    assert not ingest_paths(db, [other]).failed
    with db.engine.begin() as conn:
        conn.execute(text("CREATE UNIQUE INDEX test_only_title ON papers (title_key)"))
    try:
        with pytest.raises(HarvestError, match="database error on page 2"):
            harvest_oai(db, server.url, config=FAST)
        assert arxiv_ids(db) == sorted(["2301.99999", *OAI_IDS[:2]])
        state = state_row(db, oai_key(server.url, "arXiv", None, None))
        assert state.resumption_token == "tok-2" and state.records == 2
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP INDEX test_only_title"))
    result = harvest_oai(db, server.url, config=FAST)
    assert result.resumed and result.done and result.pages == 2
    assert arxiv_ids(db) == sorted(["2301.99999", *OAI_IDS])


def test_a_repeated_resumption_token_stops_the_harvest(db, server):
    looping = page("oai_page2.xml").replace(b">tok-3<", b">tok-2<")
    server.script("first", Reply(body=page("oai_page1.xml")))
    server.script("tok-2", Reply(body=looping))
    with pytest.raises(HarvestError, match="sent back the resumption token"):
        harvest_oai(db, server.url, config=FAST)
    assert len(server.log) == 2 and arxiv_ids(db) == OAI_IDS[:2]


def test_oai_until_bounds_the_request_and_is_a_harvest_of_its_own(db, server):
    script_oai(server)
    since, until = date(2024, 1, 1), date(2024, 1, 31)
    result = harvest_oai(db, server.url, from_date=since, until_date=until, config=FAST)
    assert result.done and result.records == 5
    assert server.log[0].params == {
        "verb": "ListRecords",
        "metadataPrefix": "arXiv",
        "from": "2024-01-01",
        "until": "2024-01-31",
    }
    assert state_row(db, oai_key(server.url, "arXiv", None, since, until)).done
    assert state_row(db, oai_key(server.url, "arXiv", None, since)) is None  # another range
    with pytest.raises(HarvestError, match="before"):
        harvest_oai(db, server.url, from_date=until, until_date=since, config=FAST)
    assert len(server.log) == 3  # refused before any request


def test_oai_no_records_match_is_a_finished_empty_harvest(db, server):
    body = (
        b'<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        b"<responseDate>2024-06-01T08:00:00Z</responseDate><request>x</request>"
        b'<error code="noRecordsMatch">nothing</error></OAI-PMH>'
    )
    server.script("first", Reply(body=body))
    result = harvest_oai(db, server.url, from_date=date(2030, 1, 1), config=FAST)
    assert result.done and result.records == 0


def test_killed_harvest_resumes_at_the_next_page(db, server, tmp_path):
    """A real process killed with SIGKILL while waiting for page 3, then run again."""
    release = threading.Event()
    server.script("first", Reply(body=page("oai_page1.xml")))
    server.script("tok-2", Reply(body=page("oai_page2.xml")))
    server.script("tok-3", Reply(body=page("oai_page3.xml"), hold=release))
    cmd = [
        sys.executable, "-c", "from papersift.cli import main; main()", "--db", db.url, "harvest",
        "--oai", server.url, "--delay", "0", "--quiet",
    ]  # fmt: skip
    env = dict(os.environ, PAPERSIFT_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.on_request("tok-3").wait(30), proc.communicate(timeout=5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    release.set()
    assert arxiv_ids(db) == OAI_IDS[:4]
    key = oai_key(server.url, "arXiv", None, None)
    assert state_row(db, key).resumption_token == "tok-3"

    server.script("tok-3", Reply(body=page("oai_page3.xml")))
    runner = CliRunner()
    args = ["--db", db.url, "harvest", "--oai", server.url, "--delay", "0", "--json"]
    out = runner.invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert server.log[-1].params == {"verb": "ListRecords", "resumptionToken": "tok-3"}
    assert sum(1 for r in server.log if "metadataPrefix" in r.params) == 1
    assert arxiv_ids(db) == OAI_IDS
    assert '"resumed": true' in out.stdout and '"done": true' in out.stdout


def test_ctrl_c_stops_cleanly_and_keeps_committed_pages(db, server, tmp_path):
    release = threading.Event()
    server.script("first", Reply(body=page("oai_page1.xml")))
    server.script("tok-2", Reply(body=page("oai_page2.xml"), hold=release))
    # Ctrl-C as a terminal delivers it: with Python's own handler, whatever disposition the
    # test process inherited (a server started by an earlier test may ignore SIGINT).
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from papersift.cli import main; main()"
    )
    cmd = [
        sys.executable, "-c", code, "--db", db.url,
        "harvest", "--oai", server.url, "--delay", "0", "--quiet",
    ]  # fmt: skip
    env = dict(os.environ, PAPERSIFT_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.on_request("tok-2").wait(30)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=90)  # generous: CI machines may be loaded
    finally:
        if proc.poll() is None:
            proc.kill()
        release.set()
    assert proc.returncode == 130, err.decode(errors="replace")[-2000:]
    assert b"interrupted: committed pages are kept; rerun to resume" in err
    assert b"Traceback" not in err
    assert arxiv_ids(db) == OAI_IDS[:2]
    assert state_row(db, oai_key(server.url, "arXiv", None, None)).resumption_token == "tok-2"


def script_api(server: Recorder) -> None:
    for start, name in ((0, "atom_page1.xml"), (2, "atom_page2.xml"), (4, "atom_page3.xml")):
        server.script(f"start={start}", Reply(body=page(name)))


def test_arxiv_api_pages_with_start_and_max_results(db, server):
    script_api(server)
    result = harvest_arxiv(db, "cat:cs.CL", url=server.url, config=FAST)
    assert (result.pages, result.records, result.added, result.total) == (3, 5, 5, 5)
    assert result.done
    assert [(r.params["start"], r.params["max_results"]) for r in server.log] == [
        ("0", "2"),
        ("2", "2"),
        ("4", "2"),
    ]
    assert server.log[0].params["search_query"] == "cat:cs.CL"
    assert server.log[0].params["sortBy"] == "submittedDate"
    assert arxiv_ids(db) == API_IDS
    with db.session() as s:
        legal = paper_store.get_paper(s, "2406.20003")
    assert legal.code_urls == ["https://huggingface.co/legal/xlt"]
    assert legal.sources == ["arxiv-api"]


def test_arxiv_api_max_and_resume(db, server):
    script_api(server)
    first = harvest_arxiv(db, "cat:cs.CL", max_results=4, url=server.url, config=FAST)
    assert first.records == 4 and not first.done and first.limit_reached
    assert len(server.log) == 2
    assert arxiv_ids(db) == API_IDS[:4]
    # a larger limit continues where the last run stopped
    more = harvest_arxiv(db, "cat:cs.CL", max_results=10, url=server.url, config=FAST)
    assert more.resumed and more.done and more.pages == 1 and not more.limit_reached
    assert server.log[-1].params["start"] == "4"
    assert arxiv_ids(db) == API_IDS


def test_arxiv_api_error_page_stops_with_a_clear_error(db, server):
    server.script("start=0", Reply(body=page("atom_page1.xml")))
    server.script("start=2", Reply(body=(RECORDED.parent / "arxiv_api_error.xml").read_bytes()))
    with pytest.raises(HarvestError, match="start=2 .*arXiv API error: incorrect id format"):
        harvest_arxiv(db, "cat:cs.CL", url=server.url, config=FAST)
    assert arxiv_ids(db) == API_IDS[:2]


def test_arxiv_api_empty_page_mid_way_is_retried(db, server):
    empty = page("atom_page2.xml")
    empty = empty[: empty.index(b"<entry>")] + b"</feed>\n"
    server.script("start=0", Reply(body=page("atom_page1.xml")))
    server.script("start=2", Reply(body=empty), Reply(body=page("atom_page2.xml")))
    server.script("start=4", Reply(body=page("atom_page3.xml")))
    result = harvest_arxiv(db, "cat:cs.CL", url=server.url, config=FAST)
    assert result.done and result.retries == 1
    assert arxiv_ids(db) == API_IDS


def _cli(db: Database, *args: str):
    return CliRunner().invoke(app, ["--db", db.url, *args], catch_exceptions=False)


def test_cli_harvest_summary_and_errors(db, server, home):
    script_api(server)
    out = _cli(
        db, "harvest", "--arxiv-query", "cat:cs.CL", "--arxiv-url", server.url,
        "--page-size", "2", "--delay", "0",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "harvest complete" in out.stdout and "5 records" in " ".join(out.stdout.split())

    server.script("first", Reply(500, b"down"))
    out = _cli(
        db, "harvest", "--oai", server.url, "--delay", "0", "--retries", "1", "--backoff", "0"
    )
    assert out.exit_code == 1 and "gave up after 2 attempts" in out.stderr

    both = _cli(db, "harvest", "--oai", server.url, "--arxiv-query", "x")
    assert both.exit_code == 2 and "exactly one" in both.stderr
    bad_date = _cli(db, "harvest", "--oai", server.url, "--from", "2023-02-30")
    assert bad_date.exit_code == 2 and "--from" in bad_date.stderr
    bad_until = _cli(db, "harvest", "--oai", server.url, "--until", "May 5")
    assert bad_until.exit_code == 2 and "--until" in bad_until.stderr
    backwards = _cli(
        db, "harvest", "--oai", server.url, "--from", "2024-05-02", "--until", "2024-05-01"
    )
    assert backwards.exit_code == 2 and "before --from" in backwards.stderr
    not_oai = _cli(db, "harvest", "--arxiv-query", "x", "--until", "2024-05-01")
    assert not_oai.exit_code == 2 and "--oai" in not_oai.stderr
    bad_prefix = _cli(db, "harvest", "--oai", server.url, "--prefix", "marc")
    assert bad_prefix.exit_code == 2
    for bad_url in ("ftp://127.0.0.1/oai", "not a url", "http://"):
        started = time.monotonic()
        out = _cli(db, "harvest", "--oai", bad_url, "--delay", "0")
        assert out.exit_code == 1 and "not an http(s) URL" in out.stderr
        assert time.monotonic() - started < 5  # refused at once, not retried
    empty = _cli(db, "harvest", "--arxiv-query", " ", "--arxiv-url", server.url)
    assert empty.exit_code == 1 and "query is empty" in empty.stderr


def test_retries_wait_at_least_the_polite_delay(db, server):
    server.script(
        "first", Reply(503, b"busy", {"Retry-After": "0"}), Reply(body=page("oai_page3.xml"))
    )
    harvest_oai(db, server.url, config=HarvestConfig(delay=0.4, backoff=0.01, timeout=5))
    refused, accepted = server.log
    assert accepted.at - refused.at >= 0.39
