"""Index snapshots (issue 16), for real: one PostgreSQL database shared by two homes, host A
ingests and publishes (`index --publish`), host B (`papersift serve` with snapshot_url, no
command run on it) finds the new paper within 60 s; a shared folder and a real S3 API on
loopback (moto's server); B killed with -9 during a download recovers on restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from papersift.ingest import ingest_paths
from papersift.search.service import forget_services
from papersift.search.snapshots import Store, publish_snapshot
from papersift.settings import load_settings
from papersift.store.db import Database

from .conftest import PG_ADMIN_URL, SEEDS, _pg_available
from .test_index_checksum import PAPERSIFT, serving

TOKEN = "zyglophant"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of each test's own (both homes use it): a test's papers and
    publications must not carry over into the next one."""
    if problem := _pg_available():
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"papersift_snap_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real S3 API (moto's server) on 127.0.0.1, with a bucket ``snaps``."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="snaps")
    try:
        yield endpoint
    finally:
        server.stop()


AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def run_cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PAPERSIFT_HOME": str(home), **env}
    return subprocess.run(
        [PAPERSIFT, *args], env=environ, capture_output=True, text=True, timeout=600
    )


def write_paper(path: Path, n: int) -> Path:
    record = {
        "id": f"snap-{n}-{uuid.uuid4().hex[:6]}",
        "title": f"A {TOKEN}{n} study of snapshot following",
        "abstract": f"The {TOKEN}{n} method moves new papers to every host as a small delta.",
        "authors": ["Ada Host"],
    }
    path.write_text(json.dumps(record) + "\n")
    return path


def found(base: str, word: str) -> bool:
    r = httpx.get(f"{base}/api/v1/search", params={"q": word, "mode": "lexical"}, timeout=30)
    return r.status_code == 200 and r.json()["total"] > 0


def wait_for(check, seconds: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, what
        time.sleep(0.5)
    return time.monotonic() - started


def current(home: Path) -> dict:
    path = home / "index" / "CURRENT"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def host_a(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Home A, the indexer: the seed corpus in the test's database."""
    home = tmp_path_factory.mktemp("host-a") / "home"
    db = Database(pg_url)
    assert not ingest_paths(db, [SEEDS]).failed
    db.dispose()
    return home


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_b_follows_what_a_publishes(
    kind: str,
    host_a: Path,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if kind == "file":
        url, env = f"file://{tmp_path / 'shared-snapshots'}", {}
    else:
        endpoint = request.getfixturevalue("moto_url")
        url = f"s3://snaps/{uuid.uuid4().hex[:8]}"
        env = {**AWS, "PAPERSIFT_SNAPSHOT_ENDPOINT_URL": endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings_a = load_settings(host_a, pg_url).replace(
        snapshot_url=url, snapshot_endpoint_url=env.get("PAPERSIFT_SNAPSHOT_ENDPOINT_URL")
    )
    db = Database(pg_url)
    forget_services()
    first = publish_snapshot(settings_a, db)
    assert "base" in first, first
    base_name = current(host_a)["dir"]

    home_b = tmp_path / "host-b" / "home"
    home_b.mkdir(parents=True)
    env_b = {
        **env,
        "PAPERSIFT_DB": pg_url,
        "PAPERSIFT_SNAPSHOT_URL": url,
        "PAPERSIFT_SNAPSHOT_POLL_SECONDS": "1",
    }
    with serving(home_b, workers=1, env=env_b) as (base_b, _proc):
        wait_for(lambda: found(base_b, "attention"), 90, "B never adopted A's base")
        assert current(home_b)["dir"] == base_name

        # Host A: a new paper, then `index --publish`; nothing is run on host B.
        paper = write_paper(tmp_path / "new.jsonl", 1)
        env_a = {**env, "PAPERSIFT_DB": pg_url, "PAPERSIFT_SNAPSHOT_URL": url}
        ingest = run_cli(host_a, "ingest", str(paper), **env_a)
        assert ingest.returncode == 0, ingest.stderr
        published = run_cli(host_a, "index", "--publish", "--json", **env_a)
        assert published.returncode == 0, published.stderr
        assert "delta 1 (1 changed" in json.loads(published.stdout)["published"]
        took = wait_for(lambda: found(base_b, f"{TOKEN}1"), 60, "B never found the new paper")
        print(f"{kind}: the new paper was searchable on B {took:.1f} s after publishing")
        assert current(home_b)["snapshot"]["deltas"] == 1
        assert current(home_b)["dir"] == base_name  # the delta, not a new base

    store = Store(url, env.get("PAPERSIFT_SNAPSHOT_ENDPOINT_URL"))
    sizes = {p: store.fs.size(p) for p in store.fs.find(store.path(base_name))}
    delta = sum(v for p, v in sizes.items() if "/delta-000001/" in p)
    vectors = sum(v for p, v in sizes.items() if p.endswith(("/base/flat.npz", ".usearch")))
    assert delta < vectors / 20, (delta, vectors)  # new papers move, not the vector file
    db.dispose()
    forget_services()


def test_b_killed_during_a_download_recovers(
    host_a: Path, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{tmp_path / 'shared-snapshots'}"
    settings_a = load_settings(host_a, pg_url).replace(snapshot_url=url)
    db = Database(pg_url)
    forget_services()
    publish_snapshot(settings_a, db)
    base_name = current(host_a)["dir"]
    home_b = tmp_path / "host-b" / "home"
    home_b.mkdir(parents=True)
    env_b = {
        "PAPERSIFT_DB": pg_url,
        "PAPERSIFT_SNAPSHOT_URL": url,
        "PAPERSIFT_SNAPSHOT_POLL_SECONDS": "1",
        "PAPERSIFT_SNAPSHOT_DOWNLOAD_RATE": "0.05",  # 50 kB/s: the download takes a while
    }
    incoming = home_b / "index" / f".incoming-{base_name}"
    with serving(home_b, workers=1, env=env_b) as (_base, proc):
        wait_for(lambda: any(incoming.rglob("*.part")), 60, "B never started downloading")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not current(home_b)  # nothing was adopted half-way
    assert any(incoming.rglob("*.part"))
    env_b["PAPERSIFT_SNAPSHOT_DOWNLOAD_RATE"] = "0"
    with serving(home_b, workers=1, env=env_b) as (base_b, _proc):
        wait_for(lambda: found(base_b, "attention"), 90, "B did not recover")
    assert current(home_b)["dir"] == base_name
    assert not incoming.exists()
    db.dispose()
    forget_services()
