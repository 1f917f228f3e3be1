"""``papersift harvest``: fetch papers from an OAI-PMH endpoint or the arXiv API."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.cli.data import update_search_index
from papersift.ingest.harvest import (
    ARXIV_API,
    PREFIXES,
    HarvestConfig,
    HarvestError,
    HarvestResult,
    PageEvent,
    harvest_arxiv,
    harvest_oai,
)

# The options of how to harvest, shared by `harvest` and `daily` (defaults: 100, 3.0, 5, 2.0).
PageSize = Annotated[
    int, typer.Option("--page-size", min=1, max=2000, help="arXiv API results per request.")
]
Delay = Annotated[
    float, typer.Option("--delay", min=0.0, help="Seconds between requests (arXiv asks 3).")
]
Retries = Annotated[int, typer.Option("--retries", min=0, help="Retries per page.")]
Backoff = Annotated[
    float, typer.Option("--backoff", min=0.0, help="First retry wait in seconds; doubles.")
]


def parse_day(value: str | None, option: str) -> date | None:
    """The date an option names (None when absent), or exit 2 saying what a date is."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a date like 2024-01-31, not {value!r}", code=2)


def _summary(result: HarvestResult, json_out: bool) -> None:
    data = {
        "key": result.key,
        "pages": result.pages,
        "records": result.records,
        "added": result.added,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "deleted": result.deleted,
        "retries": result.retries,
        "resumed": result.resumed,
        "done": result.done or result.already_done,
        "limit_reached": result.limit_reached,
    }
    if json_out:
        print_json(data)
        return
    if result.already_done:
        console.print(
            f"already harvested ({result.records:,} records); use --restart to harvest again",
            highlight=False,
        )
        return
    how = "resumed; " if result.resumed else ""
    if result.done:
        state_text = "complete"
    elif result.limit_reached:
        state_text = "stopped at --max (run again with a larger --max to continue)"
    else:
        state_text = "stopped before the end (rerun to continue)"
    console.print(
        f"harvest {state_text}: {how}{result.pages} page(s) fetched, "
        f"{result.records:,} records harvested in total; "
        f"this run added {result.added:,}, updated {result.updated:,}, "
        f"unchanged {result.unchanged:,}, deleted skipped {result.deleted:,}, "
        f"retries {result.retries}",
        highlight=False,
    )


@app.command()
def harvest(
    oai: Annotated[str | None, typer.Option("--oai", help="OAI-PMH base URL.")] = None,
    set_spec: Annotated[str | None, typer.Option("--set", help="OAI set, e.g. cs.")] = None,
    from_date: Annotated[
        str | None, typer.Option("--from", help="OAI: records changed on or after YYYY-MM-DD.")
    ] = None,
    until_date: Annotated[
        str | None, typer.Option("--until", help="OAI: records changed on or before YYYY-MM-DD.")
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", help=f"OAI metadata format: {', '.join(PREFIXES)}.")
    ] = "arXiv",
    arxiv_query: Annotated[
        str | None, typer.Option("--arxiv-query", help="arXiv API search_query, e.g. cat:cs.CL.")
    ] = None,
    max_results: Annotated[
        int | None,
        typer.Option("--max", min=1, help="arXiv API: stop after this many results in total."),
    ] = None,
    arxiv_url: Annotated[str, typer.Option("--arxiv-url", help="arXiv API endpoint.")] = ARXIV_API,
    page_size: PageSize = 100,
    delay: Delay = 3.0,
    retries: Retries = 5,
    backoff: Backoff = 2.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Request timeout, s.")
    ] = 60.0,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the saved position and start over.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Harvest papers from an OAI-PMH endpoint or an arXiv API search.

    Each page is committed with the harvest position, so an interrupted harvest resumes
    where it stopped when run again with the same options.

    Example: papersift harvest --oai https://oaipmh.arxiv.org/oai --set cs --from 2024-05-01

    Example: papersift harvest --oai https://oaipmh.arxiv.org/oai --set cs --until 2024-05-31

    Example: papersift harvest --arxiv-query 'cat:cs.CL AND ti:retrieval' --max 500
    """
    if (oai is None) == (arxiv_query is None):
        fail("give exactly one of --oai URL or --arxiv-query QUERY", code=2)
    if prefix not in PREFIXES:
        fail(f"--prefix must be one of {', '.join(PREFIXES)}", code=2)
    since = parse_day(from_date, "--from")
    until = parse_day(until_date, "--until")
    if since and until and until < since:
        fail("--until must not be before --from", code=2)
    if (since or until) and oai is None:
        fail("--from and --until apply to --oai harvests", code=2)
    config = HarvestConfig(
        delay=delay, retries=retries, backoff=backoff, timeout=timeout, page_size=page_size
    )
    db = state.db()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("page {task.fields[page]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet or json_out,
    )

    def log(message: str) -> None:
        if not quiet:
            err_console.print(f"[yellow]{message}[/]", highlight=False)

    with progress:
        task = progress.add_task("harvesting", total=None, page=0)

        def on_page(event: PageEvent) -> None:
            progress.update(task, completed=event.harvested, total=event.total, page=event.page)

        try:
            if oai is not None:
                result = harvest_oai(
                    db, oai, prefix=prefix, set_spec=set_spec, from_date=since,
                    until_date=until, config=config, restart=restart, progress=on_page, log=log,
                )  # fmt: skip
            else:
                result = harvest_arxiv(
                    db, arxiv_query or "", max_results=max_results, url=arxiv_url,
                    config=config, restart=restart, progress=on_page, log=log,
                )  # fmt: skip
        except HarvestError as exc:
            progress.stop()
            fail(str(exc))
        except KeyboardInterrupt:
            progress.stop()
            err_console.print("interrupted: committed pages are kept; rerun to resume")
            raise typer.Exit(130) from None
    update_search_index(result.changed_ids, quiet=quiet or json_out)
    _summary(result, json_out)
