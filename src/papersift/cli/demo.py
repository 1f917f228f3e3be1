"""``papersift demo``: the sample corpus on the embedded default, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from papersift.cli._app import app, console, fail, state
from papersift.cli.data import library, print_summary, run_ingest


def sample_dir() -> Path:
    """The bundled seed pages (package data)."""
    from papersift.ingest.demo import seeds_dir

    folder = seeds_dir()
    if not folder.is_dir():
        fail(f"the sample corpus ({folder}) is missing from the package")
    return folder


@app.command()
def demo(
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the web app after.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for the web app.")] = 8000,
) -> None:
    """Ingest the bundled sample corpus (first run only), index it, then serve it.

    Example: papersift demo --no-serve
    """
    if library().count() == 0:
        console.print(f"ingesting the sample corpus into {state.settings.home}")
        summary = run_ingest([str(sample_dir())])
        print_summary(summary)
        if summary.failed:
            raise typer.Exit(1)
    else:
        console.print(f"sample corpus already in {state.settings.home}")
    from papersift.cli.search import build_index

    report = build_index()
    console.print(f"search index ready ({report.indexed:,} papers updated, {report.seconds:.1f} s)")
    if serve:
        from papersift.cli.web import serve_app

        serve_app("127.0.0.1", port)
