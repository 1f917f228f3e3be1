"""Start a real `papersift serve` for a test and wait until it answers.

One place for what several tests (and bench/demo.py) each did by hand: a free loopback
port, the server's stderr to a log file (a pipe nobody reads fills and blocks the server),
a bounded wait for a URL to answer 200, and a stop that never leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

PAPERSIFT = str(Path(sys.executable).with_name("papersift"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(home: Path, **env: str) -> dict[str, str]:
    """The environment of a server on ``home`` (and no PAPERSIFT_DB from outside)."""
    environ = {**os.environ, "PAPERSIFT_HOME": str(home), **env}
    if "PAPERSIFT_DB" not in env:
        environ.pop("PAPERSIFT_DB", None)
    return environ


def start_serve(
    port: int,
    env: dict[str, str],
    log: IO,
    *,
    workers: int = 1,
    args: tuple[str, ...] = (),
    out: IO | None = None,
) -> subprocess.Popen[str]:
    """`papersift serve` on ``port`` with stderr to ``log`` and stdout to ``out`` (files,
    never pipes)."""
    return subprocess.Popen(
        [PAPERSIFT, "serve", "--port", str(port), "--workers", str(workers), *args],
        env=env,
        stdout=out if out is not None else subprocess.DEVNULL,
        stderr=log,
        text=True,
    )


def wait_until_up(
    proc: subprocess.Popen, url: str, *, timeout: float = 180, poll: float = 0.2
) -> float | None:
    """Seconds until ``url`` answered 200, or None when the server exited or the time ran out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            return None
        time.sleep(poll)
    return None


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not stop in time."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def served(
    home: Path,
    workers: int = 2,
    *,
    ready_path: str = "/healthz",
    timeout: float = 180,
    **env: str,
) -> Iterator[str]:
    """`papersift serve` on a free loopback port, logging next to ``home``; yields its URL.
    Fails the test (with the log's tail) when it does not come up."""
    import pytest

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (home.parent / f"serve-{port}.log").open("w+") as log:
        proc = start_serve(port, serve_env(home, **env), log, workers=workers)
        try:
            if wait_until_up(proc, base + ready_path, timeout=timeout) is None:
                log.seek(0)
                pytest.fail("serve did not come up: " + log.read()[-2000:])
            yield base
        finally:
            stop(proc)
