"""Checksums of index generations (issue 12 item 5): a byte flipped in a vector or tantivy
file of a real generation is found by its sha256 under a real ``papersift serve``; the
generation is set aside and rebuilt while search answers and paper pages stay 200."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from papersift.search import manifest
from papersift.search.generations import Generations
from papersift.search.vectors import VectorIndex, VectorParams

from .digest_support import copy_home

PAPERSIFT = str(Path(sys.executable).with_name("papersift"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(
    home: Path,
    *,
    host: str = "127.0.0.1",
    workers: int = 2,
    env: dict[str, str] | None = None,
    ready_within: float = 120,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`papersift serve` as a subprocess (its log in a file: a pipe would fill and block)."""
    port = free_port(host)
    environ = {k: v for k, v in os.environ.items() if k != "PAPERSIFT_DB"}
    environ.update({"PAPERSIFT_HOME": str(home), **(env or {})})
    log = (home.parent / f"serve-{host}-{port}.log").open("w+")
    cmd = [PAPERSIFT, "serve", "--host", host, "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                log.seek(0)
                pytest.fail("serve did not come up: " + log.read()[-3000:])
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def live_folder(home: Path) -> Path:
    meta = json.loads((home / "index" / "CURRENT").read_text())
    return home / "index" / meta["dir"]


def flip_byte(path: Path) -> None:
    """One byte in the middle of the file changes; the size stays (a bad sector)."""
    with path.open("r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x55]))


def victim(folder: Path, kind: str) -> Path:
    if kind == "vectors":
        return next(p for p in (folder / n for n in VectorIndex.FILES) if p.exists())
    return max((folder / "lexical").glob("*.pos"), key=lambda p: p.stat().st_size)


def test_a_generation_records_its_files(web_home: Path) -> None:
    folder = live_folder(web_home)
    listed = manifest.read(folder)
    assert listed is not None
    assert "lexical/meta.json" in listed["files"] and listed["sqlite"] == ["catalog.sqlite"]
    for rel, entry in listed["files"].items():
        assert entry["sha256"] == manifest.sha256_file(folder / rel)
        assert entry["size"] == (folder / rel).stat().st_size
    assert not (web_home / "index" / ".writing").exists()


@pytest.mark.parametrize("kind", ["vectors", "tantivy"])
def test_flipped_byte_is_set_aside_and_rebuilt(web_home: Path, tmp_path: Path, kind: str) -> None:
    home = tmp_path / "home"
    copy_home(web_home, home)
    (home / "ratelimit.sqlite").unlink(missing_ok=True)
    folder = live_folder(home)
    damaged = victim(folder, kind)
    flip_byte(damaged)
    with (
        serving(home, workers=1) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        page = client.get("/papers/hep-th/9901001")
        assert page.status_code == 200  # paper pages never depend on the index
        deadline = time.monotonic() + 90
        answers = set()
        while True:
            r = client.get("/api/v1/search", params={"q": "attention", "mode": "lexical"})
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert int(r.headers["Retry-After"]) > 0
            answers.add(r.status_code)
            broken = [p for p in (home / "index").iterdir() if p.name.startswith("broken-")]
            if broken and r.status_code == 200 and r.json()["total"] > 0:
                break
            assert time.monotonic() < deadline, ("not set aside and rebuilt", answers)
            time.sleep(0.3)
        assert client.get("/papers/hep-th/9901001").status_code == 200
    assert [p.name.split("-")[1] for p in broken] == [folder.name]
    rebuilt = live_folder(home)
    assert rebuilt != folder and not folder.exists()
    listed = manifest.read(rebuilt)
    assert listed is not None
    manifest.check_all(rebuilt, listed)  # the new generation matches its own checksums


def test_sizes_are_checked_on_open(web_home: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    copy_home(web_home / "index", index)
    folder = live_folder(tmp_path)
    with (folder / "lexical" / "meta.json").open("a") as fh:
        fh.write(" ")  # still valid JSON, one byte longer
    gens = Generations(index, VectorParams())
    gens.verify_in_background = False
    assert gens.current() is None
    assert gens.damaged and "meta.json" in gens.damaged
    assert any(p.name.startswith("broken-") for p in index.iterdir())


def test_a_dead_writers_leftovers_are_adopted_not_set_aside(web_home: Path, tmp_path: Path) -> None:
    """A writer killed between rewriting a file and its manifest leaves the marker: the
    files are taken as they are (the indexer's catalog marks redo its work), not broken."""
    index = tmp_path / "index"
    copy_home(web_home / "index", index)
    folder = live_folder(tmp_path)
    (index / ".writing").touch()
    meta = folder / "lexical" / "meta.json"
    meta.write_bytes(meta.read_bytes() + b" ")  # changed by the writer that died (still JSON)
    gens = Generations(index, VectorParams())
    gens.verify_in_background = False
    assert gens.current() is not None  # no size check against a manifest under repair
    assert gens.verify()
    assert not (index / ".writing").exists()
    listed = manifest.read(folder)
    assert (
        listed is not None and listed["files"]["lexical/meta.json"]["size"] == meta.stat().st_size
    )
    flip_byte(victim(folder, "tantivy"))  # now real damage: found by the next process
    later = Generations(index, VectorParams())
    later.verify_in_background = False
    assert later.current() is not None  # the sizes match
    assert not later.verify()
    assert later.current() is None and later.damaged and "sha256" in later.damaged


def test_waiting_for_the_background_check(
    web_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check opening a generation starts runs in a thread; ``wait_checked`` is what lets
    a caller remove the folder afterwards without the check's SQLite files reappearing."""
    index = tmp_path / "index"
    copy_home(web_home / "index", index)
    checking = manifest.check_all

    def slow_check(*args: object, **kwargs: object) -> object:
        time.sleep(0.6)
        return checking(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(manifest, "check_all", slow_check)
    gens = Generations(index, VectorParams())
    assert gens.current() is not None
    assert not gens.wait_checked(timeout=0.05)  # still hashing
    assert gens.wait_checked(timeout=30)
    shutil.rmtree(index)  # nothing writes into it any more
    assert not index.exists()
