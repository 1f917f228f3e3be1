"""What operators watch: /readyz, /metrics (also added up over workers), request ids in
responses and JSON logs, CORS, gzip, and stable OpenAPI operation ids."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from papersift.settings import load_settings
from papersift.web.app import create_app

from .conftest import serve_in_thread
from .digest_support import copy_home
from .server_support import free_port, serve_env, start_serve, stop, wait_until_up

PAPER_ROUTE = "/api/v1/papers/{paper_id:path}"


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _ready(client: httpx.Client, seconds: float = 90) -> httpx.Response:
    """/readyz once the app's warm-up (model, indexes) is done, or its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        ready = client.get("/readyz")
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.2)


def test_readyz_and_metrics_on_the_live_app(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        ready = _ready(client)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["checks"]["database"]["ok"]
        assert body["checks"]["warm"] == {"ok": True}
        assert body["checks"]["index"]["documents"] > 0
        before = _metric(
            client.get("/metrics").text,
            "papersift_http_requests_total",
            route=PAPER_ROUTE,
            status="200",
        )
        for _ in range(3):
            assert client.get("/api/v1/papers/hep-th/9901001").status_code == 200
        assert client.get("/api/v1/search", params={"q": "attention", "mode": "lexical"}).is_success
        text = client.get("/metrics").text
    after = _metric(
        text,
        "papersift_http_requests_total",
        route=PAPER_ROUTE,
        status="200",
    )
    assert after - before == 3
    assert "/api/v1/papers/hep-th/9901001" not in text  # templates, not raw paths
    assert _metric(text, "papersift_search_duration_seconds_count", mode="lexical") >= 1
    assert _metric(text, "papersift_index_documents") > 0
    assert re.search(r"^papersift_embedding_backlog \d", text, re.M)
    assert re.search(r"^papersift_index_age_seconds \d", text, re.M)


def test_readyz_waits_for_the_warm_up(web_home: Path) -> None:
    """A worker still loading its model and indexes is alive but not ready, so a balancer
    sends its first searches elsewhere; once warm it is ready."""
    from papersift.web.state import web_state

    settings = load_settings(web_home, f"sqlite:///{web_home / 'papersift.db'}")
    app = create_app(settings, warm_search=False)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert _ready(client).status_code == 200
        web_state(app).warmed.clear()  # as in a worker whose warm-up is still running
        cold = client.get("/readyz")
        assert cold.status_code == 503 and cold.headers["retry-after"]
        assert cold.json()["checks"]["warm"] == {
            "ok": False,
            "reason": "loading the model and the indexes",
        }
        assert client.get("/healthz").status_code == 200
        web_state(app).warmed.set()
        assert client.get("/readyz").status_code == 200


def test_readyz_is_503_with_a_reason_when_no_index_is_loaded(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "fresh")
    with serve_in_thread(create_app(settings, warm_search=False)) as url:
        answer = httpx.get(f"{url}/readyz", timeout=30)
        health = httpx.get(f"{url}/healthz", timeout=30)
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert "no index" in answer.json()["checks"]["index"]["reason"]
    assert answer.json()["checks"]["database"]["ok"] is True
    assert health.status_code == 200  # alive, just not ready


def test_request_ids_gzip_and_no_cors_by_default(live_server: str) -> None:
    mine = str(uuid.uuid4())
    with httpx.Client(base_url=live_server, timeout=30) as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": mine})
        made = client.get("/healthz", headers={"X-Request-ID": "not-a-uuid; <script>"})
        docs = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
        cross = client.get("/api/v1/collections", headers={"Origin": "https://evil.example"})
    assert echoed.headers["x-request-id"] == mine
    made_id = made.headers["x-request-id"]
    assert made_id != "not-a-uuid; <script>" and uuid.UUID(made_id)
    assert docs.headers.get("content-encoding") == "gzip"
    assert json.loads(docs.content)["openapi"]  # httpx decoded it: a real gzip body
    assert "access-control-allow-origin" not in cross.headers


def test_cors_for_configured_origins_only(web_home: Path) -> None:
    settings = load_settings(web_home).replace(cors_origins="https://lab.example.org")
    with serve_in_thread(create_app(settings, warm_search=False)) as url:
        allowed = httpx.get(
            f"{url}/api/v1/collections", headers={"Origin": "https://lab.example.org"}
        )
        preflight = httpx.options(
            f"{url}/api/v1/search",
            headers={
                "Origin": "https://lab.example.org",
                "Access-Control-Request-Method": "GET",
            },
        )
        other = httpx.get(f"{url}/api/v1/collections", headers={"Origin": "https://x.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://lab.example.org"
    assert preflight.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_bad_cors_origin_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="origin"):
        load_settings(tmp_path).replace(cors_origins="lab.example.org")


def test_operation_ids_are_the_handler_names(live_server: str) -> None:
    spec = httpx.get(f"{live_server}/openapi.json", timeout=30).json()
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert "api_search" in ids or any(i.endswith("search") for i in ids)
    assert not [i for i in ids if re.search(r"_(get|post|delete)$", i)], ids


@pytest.fixture
def two_workers(
    web_home: Path, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """`serve --workers 2` with JSON logs; yields its URL, the process and its log file."""
    home = tmp_path / "home"
    copy_home(web_home, home)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = start_serve(port, serve_env(home, PAPERSIFT_JSON_LOGS="1"), log, workers=2)
        url = f"http://127.0.0.1:{port}"
        try:
            if wait_until_up(proc, f"{url}/healthz", poll=0.3) is None:
                pytest.fail("serve did not come up: " + log_path.read_text()[-2000:])
            yield url, proc, log_path
        finally:
            stop(proc)


def test_workers_start_with_few_malloc_arenas(
    two_workers: tuple[str, subprocess.Popen[str], Path],
) -> None:
    """Each worker runs with glibc's arena cap (the soak's memory stayed flat with it)."""
    _url, proc, _log = two_workers
    kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [pid for pid in kids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2, kids
    for pid in workers:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=2" in env


def test_metrics_add_up_over_workers_and_logs_are_json(
    two_workers: tuple[str, subprocess.Popen[str], Path],
) -> None:
    url, proc, log_path = two_workers
    marker = str(uuid.uuid4())
    with httpx.Client(timeout=30) as client:  # new connections: both workers get some
        for n in range(20):
            headers = {"Connection": "close"}
            if n == 0:
                headers["X-Request-ID"] = marker
            assert client.get(f"{url}/api/v1/papers/hep-th/9901001", headers=headers).is_success
        scrapes = [client.get(f"{url}/metrics", headers={"Connection": "close"}).text for _ in "ab"]
    for text in scrapes:  # whichever worker answers, it reports all 20
        assert _metric(text, "papersift_http_requests_total", route=PAPER_ROUTE) == 20
    stop(proc)
    err = log_path.read_text()
    records = []
    for line in err.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, err[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r.get("correlation_id") == marker for r in access), access[:3]


def test_json_log_lines_survive_hostile_messages(tmp_path: Path) -> None:
    import io
    import logging.config

    from papersift.logs import log_config

    config = log_config(load_settings(tmp_path), stream_is_tty=False)
    stream = io.StringIO()
    config["handlers"]["stderr"] = {**config["handlers"]["stderr"], "stream": stream}
    del config["handlers"]["stderr"]["stream"]
    logging.config.dictConfig(config)
    handler = logging.getLogger("papersift").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger("papersift.test").warning('line one\nline "two" \x1b[31m%s', "red")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"].startswith("line one\nline")
    assert record["level"] == "WARNING" and record["correlation_id"] == "-"
    plain = log_config(load_settings(tmp_path), stream_is_tty=True)
    assert "format" in plain["formatters"]["main"]


def test_a_served_worker_uses_one_blas_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each `serve` worker builds its app with: BLAS limited to one thread (spinning
    OpenBLAS threads tripled the CPU of a hybrid search under load)."""
    from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

    from papersift.web.app import create_served_app

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy here has no BLAS thread pool to limit")
    before = {p["filepath"]: p["num_threads"] for p in blas}
    monkeypatch.setenv("PAPERSIFT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PAPERSIFT_DB", raising=False)
    try:
        create_served_app()
        after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert after and set(after) == {1}
    finally:
        threadpool_limits(limits=max(before.values()), user_api="blas")
