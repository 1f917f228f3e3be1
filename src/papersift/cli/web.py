"""``papersift serve``: the web app and JSON API under uvicorn."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from typing import Annotated

import typer

from papersift.cli._app import app, console, fail, state
from papersift.logs import log_config
from papersift.settings import worker_environment

MAX_WORKERS = 64
WORKER_PING_SECONDS = 300  # a starved machine took over 2 min to start a worker


def _check_port(host: str, port: int) -> None:
    """Fail with a clear message (not a traceback) when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(f"port {port} on {host} is already in use; pick another with --port")
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def serve_app(host: str, port: int, workers: int = 1, digests: bool = False) -> None:
    """Serve the app for the current --home/--db until interrupted (Ctrl-C); with
    ``digests``, also run the daily digest scheduler in this process."""
    import uvicorn

    from papersift.web.protocol import MAX_HEADER_BYTES

    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535")
    if not 1 <= workers <= MAX_WORKERS:
        fail(f"--workers must be between 1 and {MAX_WORKERS}")
    settings = state.settings
    state.db()  # migrate (or fail clearly) once, before any worker starts
    _check_port(host, port)
    # Workers are separate processes that build the app from the environment.
    # Worker processes already use the cores; ONNX threads inside each would only
    # fight over them (measured: 58 -> 82 hybrid searches/s with 2 workers).
    os.environ.update(worker_environment(settings, config=state.config, single_thread=workers > 1))
    if workers > 1:
        # One scrape of /metrics must add up every worker: prometheus-client's multiprocess
        # mode keeps each worker's figures in files of this folder, emptied at each start.
        metrics_dir = settings.home / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(mode=0o700)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # glibc gives each of a worker's ~40 request threads up to 16 malloc arenas, whose
        # free pages it rarely returns: the soak saw RSS climb for the whole run. Two
        # arenas per worker keep it bounded (the operator's own value wins).
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"serving papersift on [bold]http://{shown}:{port}/[/] (Ctrl-C to stop)", highlight=False
    )
    stop_digests = None
    if digests:  # the digest scheduler lives in the serving process, not in a worker
        from papersift.digest.schedule import start_scheduler

        try:
            stop_digests = start_scheduler(settings, state.db())
        except ValueError as exc:
            fail(str(exc), code=2)
        console.print(
            "digest scheduler on (daily after $PAPERSIFT_DIGEST_HOUR, default 07:00)",
            highlight=False,
        )
    try:
        uvicorn.run(
            "papersift.web.app:create_served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=log_config(settings),
            access_log=True,
            # The app decides whom to believe (forwarded_allow_ips, ProxyHeadersMiddleware);
            # uvicorn's own handling trusts 127.0.0.1 unless told otherwise.
            proxy_headers=False,
            server_header=False,
            http="papersift.web.protocol:GuardedHttpProtocol",  # header deadline, caps
            timeout_keep_alive=settings.keepalive_timeout,
            limit_concurrency=settings.max_connections + 1,  # the protocol refuses first
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            # uvicorn kills a worker that misses a 5 s ping; starting workers on a loaded
            # machine missed it and were restarted forever (the site never came up).
            timeout_worker_healthcheck=WORKER_PING_SECONDS,
        )
    finally:
        if stop_digests is not None:
            stop_digests()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (each has its own caches and rate limits).")
    ] = 1,
    digests: Annotated[
        bool,
        typer.Option(
            "--digests",
            help="Also send the daily email digests from this "
            "process (after $PAPERSIFT_DIGEST_HOUR, default 7).",
        ),
    ] = False,
) -> None:
    """Serve the web app and JSON API (docs at /docs).

    Example: papersift serve --port 8080 --workers 2
    """
    serve_app(host, port, workers, digests)
