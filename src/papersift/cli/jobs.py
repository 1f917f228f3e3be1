"""``papersift worker`` and ``papersift jobs [retry|defer]``: the background job queue."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.jobs import tasks
from papersift.jobs.info import STATUSES, JobInfo
from papersift.jobs.queue import INPROCESS, JobQueue, backend, open_queue
from papersift.store.db import StoreError

IN_PROCESS_NOTE = (
    "jobs run in process (SQLite, or queue = inprocess): inside the serve or CLI process that "
    "asks for them, so none is queued between processes; a PostgreSQL database gets a queue "
    "that `papersift worker` runs"
)


def _queue() -> JobQueue:
    settings, db = state.settings, state.db()
    try:
        return open_queue(settings, db)
    except ValueError as exc:
        fail(str(exc), code=2)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=64, help="Jobs at once (worker_concurrency).")
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Only jobs of this queue (mail, default); repeatable."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is waiting, then exit (no periodic jobs).")
    ] = False,
    no_periodic: Annotated[
        bool,
        typer.Option(
            "--no-periodic", help="Do not defer the clock's jobs (daily, digests, outbox)."
        ),
    ] = False,
) -> None:
    """Run background jobs from the PostgreSQL queue until stopped (SIGTERM or Ctrl-C let
    running jobs finish): mail, digests, the index catch-up, snapshot publishing, and the
    daily job on its schedule (queue_daily_cron). Run one or more per deployment, on any
    host; each job runs once, failures are retried with backoff.

    Example: PAPERSIFT_DB=postgresql://papersift@db/papersift papersift worker
    """
    settings, db = state.settings, state.db()
    if backend(settings, db) == INPROCESS:
        fail(f"papersift worker needs the PostgreSQL queue: {IN_PROCESS_NOTE}", code=2)
    from papersift.jobs.pgqueue import run_worker

    logging.getLogger("procrastinate").setLevel(logging.INFO)
    err_console.print(
        f"worker: running jobs from {escape(db.engine.url.render_as_string(hide_password=True))}",
        highlight=False,
    )
    try:
        run_worker(
            settings, db, concurrency=concurrency, queues=queue, wait=not once,
            periodic=not no_periodic,
        )  # fmt: skip
    except tasks.JobFailed as exc:
        fail(str(exc), code=2)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


jobs_app = typer.Typer(
    name="jobs",
    help="Background jobs: list them with counts, retry a failed one, defer one.",
    invoke_without_command=True,
)
app.add_typer(jobs_app)


def _when(info: JobInfo) -> str:
    at = info.finished_at or info.started_at or info.scheduled_at
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""


@jobs_app.callback()
def jobs_list(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help=f"Only these: {', '.join(STATUSES)}; repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N jobs.")] = 30,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List jobs, newest first, with counts per status (queued, running, failed,
    succeeded).

    Example: papersift jobs --status failed
    """
    if ctx.invoked_subcommand is not None:
        return
    for name in status or []:
        if name not in STATUSES:
            fail(f"--status must be one of {', '.join(STATUSES)}, got {name!r}", code=2)
    queue = _queue()
    try:
        counts = queue.counts()
        items = queue.jobs(status or None, limit=limit)
        check = queue.check()
    except StoreError as exc:
        fail(f"the job queue cannot be read: {str(exc).splitlines()[0]}", code=1)
    finally:
        queue.close()
    if json_out:
        print_json(
            {
                "queue": queue.kind,
                "check": check,
                "counts": counts,
                "jobs": [j.to_dict() for j in items],
            }
        )
        return
    if queue.kind == INPROCESS:
        err_console.print(IN_PROCESS_NOTE, style="yellow", highlight=False)
    elif check.get("warning"):
        err_console.print(str(check["warning"]), style="yellow", highlight=False)
    console.print(
        "jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts), highlight=False
    )
    if not items:
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "task", "status", "tries", "when (UTC)", "arguments / last error"):
        table.add_column(column, overflow="fold")
    for info in items:
        detail = json.dumps(info.args, default=str) if info.args else ""
        if info.error:
            detail = f"{detail} {info.error}".strip()
        table.add_row(
            str(info.id), info.task, info.status, str(info.attempts), _when(info), escape(detail)
        )
    console.print(table)


@jobs_app.command("retry")
def jobs_retry(job_id: Annotated[int, typer.Argument(help="The failed job's id.")]) -> None:
    """Queue a failed job again, to run now (its tries start over).

    Example: papersift jobs retry 42
    """
    queue = _queue()
    if queue.kind == INPROCESS:
        fail(f"nothing to retry here: {IN_PROCESS_NOTE}", code=2)
    try:
        info = queue.retry(job_id)
    except LookupError as exc:
        fail(str(exc), code=1)
    finally:
        queue.close()
    console.print(f"job {info.id} ({info.task}) is {info.status} again", highlight=False)


def _kwargs(pairs: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            fail(f"--arg must be NAME=VALUE, got {pair!r}", code=2)
        try:
            found[key] = json.loads(raw)
        except json.JSONDecodeError:
            found[key] = raw
    return found


@jobs_app.command("defer")
def jobs_defer(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(tasks.JOBS)}.")],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", help="A keyword argument NAME=VALUE (JSON or text); repeatable."),
    ] = None,
) -> None:
    """Ask for a job now (a worker runs it; on SQLite it runs here, before exiting).

    Example: papersift jobs defer index.sync
    """
    if name not in tasks.JOBS:
        fail(f"unknown job {name!r} (known: {', '.join(sorted(tasks.JOBS))})", code=2)
    kwargs = _kwargs(arg or [])
    queue = _queue()
    try:
        job_id = queue.enqueue(name, **kwargs)
        if queue.kind == INPROCESS and job_id is not None:
            info = queue.job(job_id)
            info.done.wait()
            console.print(f"job {name} {info.status}", highlight=False)
            if info.error:
                err_console.print(escape(info.error), style="red", highlight=False)
            if info.status != "succeeded":
                raise typer.Exit(1)
            return
    finally:
        queue.close()
    if job_id is None:
        console.print(f"a {name} job is already waiting; not queued again", highlight=False)
    else:
        console.print(f"job {job_id} ({name}) queued", highlight=False)
