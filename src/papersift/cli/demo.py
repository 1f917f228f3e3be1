"""``papersift demo``: the packaged demo corpus (real recent arXiv listings and the seed
pages) with its precomputed embeddings, end to end."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from papersift.cli._app import app, console, err_console, fail, state
from papersift.cli.data import library, print_summary, run_ingest
from papersift.ingest.demo import DemoDataError, demo_paths, load_vectors, seeds_dir
from papersift.search import EmbedderError
from papersift.settings import env_name


def sample_dir() -> Path:
    """The bundled seed pages (package data)."""
    folder = seeds_dir()
    if not folder.is_dir():
        fail(f"the sample corpus ({folder}) is missing from the package")
    return folder


def _load_packaged_vectors() -> None:
    """Store the packaged embeddings when the model in use made them (else the index
    embeds the papers itself)."""
    lib = library()
    try:
        model_id = lib.search_service.embedder.model_id
        loaded = load_vectors(lib.db, model_id)
    except EmbedderError as exc:
        err_console.print(f"[yellow]warning:[/] {exc}; keyword search only", highlight=False)
        return
    except DemoDataError as exc:
        err_console.print(f"[yellow]warning:[/] {exc}; embedding the papers", highlight=False)
        return
    if loaded:
        console.print(f"{loaded:,} precomputed embeddings loaded ({model_id})")
    else:
        console.print(f"precomputed embeddings are for another model than {model_id}: embedding")


@app.command()
def demo(
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the web app after.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for the web app.")] = 8000,
) -> None:
    """Ingest the packaged demo corpus (first run only), index it, then serve it.

    The corpus: a few weeks of real arXiv listings (authors, dates, categories) and five
    saved listing pages, with embeddings precomputed by papersift.

    Example: papersift demo --no-serve
    """
    started = time.perf_counter()
    if library().count() == 0:
        try:
            paths = [str(p) for p in demo_paths()]
        except DemoDataError as exc:
            fail(str(exc))
        console.print(f"ingesting the sample corpus into {state.settings.home}")
        summary = run_ingest(paths, index=False)
        print_summary(summary)
        if summary.failed:
            raise typer.Exit(1)
        _load_packaged_vectors()
    else:
        console.print(f"sample corpus already in {state.settings.home}")
    from papersift.cli.search import build_index

    try:
        report = build_index()
    except EmbedderError as exc:
        fail(f"{exc} (keyword search works: papersift search --mode lexical QUERY)")
    console.print(
        f"search index ready ({report.indexed:,} papers updated, "
        f"{time.perf_counter() - started:.1f} s in all)"
    )
    if serve:
        from papersift.cli.web import serve_app

        if "smtp_url" not in state.settings.model_fields_set:
            # No mail server on a demo machine: sign-up mail waits in the outbox
            # (papersift mail outbox) instead of failing against port 25.
            os.environ[env_name("smtp_url")] = "none"
            state._settings = state.settings.replace(smtp_url="none")
            console.print("mail is kept in the outbox: papersift mail outbox", style="dim")
        serve_app("127.0.0.1", port)
