"""``papersift daily``: the day's job (harvest, index, digests, outbox), once a day."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.cli.harvest import Backoff, Delay, PageSize, Retries, parse_day
from papersift.ingest.harvest import HarvestConfig
from papersift.jobs.daily import DailyBusy, DailyError, DailyReport, run_daily


def _print(report: DailyReport) -> None:
    if report.already_done:
        console.print(f"the daily job for {report.day} already ran; nothing to do")
        return
    how = " (resumed)" if report.resumed else ""
    console.print(f"daily job for {report.day}{how}, papers since {report.since}:")
    for name, step in report.steps.items():
        detail = ", ".join(
            f"{k} {v}" for k, v in step.items() if k not in ("status",) and v not in (None, [])
        )
        console.print(
            f"  {name}: {step.get('status')} ({escape(detail)})", highlight=False, soft_wrap=True
        )


@app.command()
def daily(
    day: Annotated[
        str | None,
        typer.Option("--day", help="Run the job of this day (YYYY-MM-DD, UTC); default today."),
    ] = None,
    delay: Delay = 3.0,
    retries: Retries = 5,
    backoff: Backoff = 2.0,
    page_size: PageSize = 100,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    """Run the day: harvest new papers since the last successful run (daily_source),
    index them, send the due digests, deliver the outbox.

    Safe to run again: a finished day does nothing, an interrupted one resumes at the step
    that did not finish. Warnings (a weekday harvest that returned nothing, mail kept in
    the outbox) go to stderr and the --json `warnings` list; they do not change the exit
    status. A failed step exits 1, another run still in progress exits 75.

    Example: PAPERSIFT_DAILY_SOURCE=oai:https://oaipmh.arxiv.org/oai#cs papersift daily
    """
    the_day = parse_day(day, "--day")
    config = HarvestConfig(delay=delay, retries=retries, backoff=backoff, page_size=page_size)

    def log(message: str) -> None:
        if not quiet:
            err_console.print(f"[yellow]{escape(message)}[/]", highlight=False)

    try:
        report = run_daily(state.settings, state.db(), day=the_day, harvest=config, log=log)
    except DailyBusy as exc:
        fail(str(exc), code=75)
    except DailyError as exc:
        fail(str(exc), code=2)
    if json_out:
        print_json(report.to_dict())
    elif not quiet:
        _print(report)
    if not report.already_done:
        for warning in report.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if not report.ok:
        fail(f"daily job failed at {report.error}; rerun to resume")
