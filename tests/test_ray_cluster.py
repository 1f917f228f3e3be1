"""``papersift index --ray``: embedding on a real Ray cluster (a head and one worker node on
loopback), the vectors it stores, a killed run resuming, and the GPU provider setting."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from papersift.ingest import ingest_paths
from papersift.search.embedder import Embedder, execution_providers
from papersift.settings import load_settings
from papersift.store import search_docs
from papersift.store.db import Database
from tests.conftest import SHARED

pytest.importorskip("ray")

CORPUS = SHARED / "corpora" / "arxiv-236k.jsonl.gz"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not CORPUS.is_file(), reason="shared corpus not present")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Ray turns 127.0.0.1 into the machine's outward address; other loopback addresses it
# keeps, so the head and the worker node are two hosts on loopback. The cluster asks for
# a token, as a real one should (Ray's token authentication).
HEAD, WORKER = "127.0.0.2", "127.0.0.3"
RAY_ENV = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}


def _ray_start(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """``ray start --block``: the node lives as long as this process (and its group)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
            env=RAY_ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _cluster_cpus(address: str) -> float:
    done = subprocess.run(
        [str(BIN / "ray"), "status", "--address", address],
        env=RAY_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in done.stdout.splitlines():
        if line.strip().endswith(" CPU") and "/" in line:  # "0.0/2.0 CPU"
            return float(line.split("/")[1].split()[0])
    return 0.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A head node and one worker node on two loopback addresses, one CPU each."""
    logs = tmp_path_factory.mktemp("ray-logs")
    port = _free_port()
    address = f"{HEAD}:{port}"
    temp = Path(f"/tmp/psray-{os.getpid()}")  # short: Ray's socket paths have a length limit
    common = ["--num-cpus", "1", "--object-store-memory", "100000000"]
    nodes = [
        _ray_start(
            "--head",
            "--node-ip-address",
            HEAD,
            "--port",
            str(port),
            "--include-dashboard",
            "false",
            "--temp-dir",
            str(temp),
            *common,
            log=logs / "head.log",
        )
    ]
    try:
        deadline = time.monotonic() + 150
        while _cluster_cpus(address) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()[-3000:]
            assert nodes[0].poll() is None, (logs / "head.log").read_text()[-3000:]
            time.sleep(2)
        nodes.append(
            _ray_start(
                "--address",
                address,
                "--node-ip-address",
                "127.0.0.1",
                *common,
                log=logs / "worker.log",
            )
        )
        while _cluster_cpus(address) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
            time.sleep(2)
        yield address
    finally:
        for node in reversed(nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)


def _home_with_backlog(tmp_path: Path, count: int, skip: int = 0) -> tuple[Path, Database]:
    """A home whose database holds ``count`` real papers and no embeddings at all."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    source = tmp_path / "papers.jsonl"
    with gzip.open(CORPUS, "rt", encoding="utf-8") as lines:
        source.write_text("".join(islice(lines, skip, skip + count)), encoding="utf-8")
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    summary = ingest_paths(db, [source])
    assert not summary.failed, summary.failed
    return home, db


def _papersift(home: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    env = RAY_ENV | {"PAPERSIFT_HOME": str(home)}
    env.pop("PAPERSIFT_DB", None)
    return subprocess.run(
        [str(BIN / "papersift"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _unembedded(db: Database, model: str) -> int:
    with db.session() as s:
        return search_docs.count_unembedded(s, model)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_index_on_cluster_stores_the_same_vectors_and_search_finds_them(
    cluster: str, tmp_path: Path, embedder: Embedder
) -> None:
    home, db = _home_with_backlog(tmp_path, 48)
    assert _unembedded(db, embedder.model_id) == 48
    done = _papersift(home, "index", "--ray", cluster, "--workers", "2", "--batch", "8", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cluster"]["backlog"] == 48
    assert report["cluster"]["embedded"] == 48
    assert report["cluster"]["workers"] == 2
    assert _unembedded(db, embedder.model_id) == 0
    assert report["pending_vectors"] == 0

    # the vectors are the ones this process's model makes (stored as float16)
    with db.session() as s:
        ids = [pid for pid, _hash in next(search_docs.iter_hashes(s, batch=8))]
        docs = search_docs.paper_docs(s, ids)
        stored = search_docs.load_embeddings(
            s, {d.id: d.content_hash for d in docs.values()}, embedder.model_id, embedder.dim
        )
    local = embedder.encode([docs[pid].text for pid in ids])
    cosines = [float(np.dot(stored[pid], local[i])) for i, pid in enumerate(ids)]
    assert min(cosines) > 0.999, cosines

    # and semantic search answers from them, with a paper's own title finding it first
    title = docs[ids[0]].title
    found = _papersift(home, "search", title, "--mode", "semantic", "--json", timeout=180)
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout)["hits"][0]["id"] == ids[0]
    db.dispose()


def test_a_killed_cluster_run_keeps_its_finished_batches(
    cluster: str, tmp_path: Path, embedder: Embedder
) -> None:
    home, db = _home_with_backlog(tmp_path, 240, skip=500)  # several blocks of 32
    env = RAY_ENV | {"PAPERSIFT_HOME": str(home)}
    env.pop("PAPERSIFT_DB", None)
    with (tmp_path / "killed.log").open("wb") as log:
        run = subprocess.Popen(
            [str(BIN / "papersift"), "index", "--ray", cluster, "--workers", "1", "--batch", "8"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while _unembedded(db, embedder.model_id) == 240:
            assert run.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no batch was stored in time"
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=60)
    left = _unembedded(db, embedder.model_id)
    assert 0 < left < 240, left  # some batches were stored, not all

    done = _papersift(home, "index", "--ray", cluster, "--workers", "1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cluster"]["backlog"] == left  # only the rest was embedded again
    assert _unembedded(db, embedder.model_id) == 0
    db.dispose()


def test_without_ray_the_cluster_option_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papersift.search import cluster as cluster_module

    monkeypatch.setitem(sys.modules, "ray", None)  # as on an install without the extra
    with pytest.raises(cluster_module.ClusterError, match=r"papersift\[ray\]"):
        cluster_module._ray()


def test_a_gpu_provider_is_chosen_by_setting_and_skipped_where_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime

    monkeypatch.setenv("PAPERSIFT_EMBED_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    assert load_settings().embed_providers.startswith("CUDAExecutionProvider")
    chosen = execution_providers()
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert chosen[0] == "CUDAExecutionProvider"
    else:
        assert chosen == ["CPUExecutionProvider"]
        assert "CUDAExecutionProvider" in caplog.text
    emb = Embedder()  # the model loads on what is there
    assert emb.session.get_providers()[0] == chosen[0]


def test_an_unreachable_cluster_is_a_clear_error_in_seconds(tmp_path: Path) -> None:
    """Nothing listens at the address: `index --ray` says so and exits non-zero within
    seconds (ray.init alone retries for minutes), and the backlog is left as it was."""
    home, db = _home_with_backlog(tmp_path, 8)
    embedder_id = Embedder().model_id
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    done = _papersift(home, "index", "--ray", f"127.0.0.1:{port}", timeout=120)
    took = time.monotonic() - started
    assert done.returncode != 0
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 60, took
    assert _unembedded(db, embedder_id) == 8
    db.dispose()
