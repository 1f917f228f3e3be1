"""Data commands: ingest, stats, show, export (through the public API, papersift.api)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from papersift.api import IngestReport, Library, LibraryError
from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.cli.search import embedding_progress
from papersift.ingest.pipeline import FileResult, ProgressFn


def library() -> Library:
    """The library of this invocation's --home/--db (exit 2 if its database cannot open)."""
    return Library(settings=state.settings, db=state.db())


def run_ingest(
    paths: list[str],
    *,
    quiet: bool = False,
    collection_title: str | None = None,
    index: bool = True,
) -> IngestReport:
    """Ingest with a progress bar (on stderr), update the search index (unless ``index`` is
    False: the caller indexes), return the report."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[records]:,} records"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
    task = progress.add_task("ingesting", total=None, records=0)

    def on_files(files: list[Path]) -> None:
        progress.update(task, total=len(files))

    def on_file_start(path: Path) -> ProgressFn:
        progress.update(task, description=f"ingesting {path.name}")

        def advance(n: int) -> None:
            progress.update(task, records=progress.tasks[task].fields["records"] + n)

        return advance

    def on_file_done(_result: FileResult) -> None:
        progress.advance(task)

    lib = library()
    with progress:
        try:
            report = lib.ingest(
                paths,
                index=False,
                on_files=on_files,
                on_file_start=on_file_start,
                on_file_done=on_file_done,
                collection_title=collection_title,
            )
        except LibraryError as exc:
            progress.stop()
            fail(f"--collection-title: {exc}", code=2)
        progress.update(task, description="ingested")
    if index:
        update_search_index(report.changed_ids, quiet=quiet, lib=lib)
    return report


def update_search_index(
    paper_ids: list[str], *, quiet: bool = False, lib: Library | None = None
) -> None:
    """Keep the search index in step after papers were committed (ingest, harvest).

    The papers are stored whatever happens here, so a failure is reported as a warning
    with the command that catches up, not as a failed ingest.
    """
    lib = lib or library()
    if not paper_ids and not lib.search_service.status().get("built"):
        return  # nothing changed and no index to catch up (the first search builds one)
    try:
        with embedding_progress(quiet) as on_embed:
            report = lib.update_index(paper_ids, on_embed=on_embed)
    except Exception as exc:
        err_console.print(
            f"[yellow]warning:[/] papers are stored but the search index was not updated "
            f"({escape(f'{exc.__class__.__name__}: {exc}')}); run `papersift index`",
            highlight=False,
            soft_wrap=True,
        )
        return
    if report is not None and report.pending_vectors and not quiet:
        err_console.print(
            f"{report.pending_vectors:,} papers are searchable by keyword only for now: run "
            "`papersift index` to embed them for semantic and hybrid search.",
            highlight=False,
            soft_wrap=True,
        )


def print_summary(summary: IngestReport) -> None:
    table = Table(title="ingest summary", title_justify="left")
    for col in ("file", "format", "added", "updated", "unchanged", "status"):
        table.add_column(
            col, justify="right" if col in ("added", "updated", "unchanged") else "left"
        )
    for f in summary.files:
        status = "[green]ok[/]" if f.ok else "[red]failed[/]"
        table.add_row(
            Path(f.path).name,
            f.format or "-",
            f"{f.added:,}",
            f"{f.updated:,}",
            f"{f.unchanged:,}",
            status,
        )
    table.add_row(
        "[bold]total",
        "",
        f"{summary.added:,}",
        f"{summary.updated:,}",
        f"{summary.unchanged:,}",
        f"{len(summary.files) - len(summary.failed)} ok, {len(summary.failed)} failed",
    )
    console.print(table)
    for f in summary.failed:
        # soft_wrap: one line per failure, never folded inside a path; escape: file names
        # and titles quoted in errors may contain [brackets] that are not markup.
        err_console.print(
            f"[bold red]failed:[/] {escape(f.error or '')}", highlight=False, soft_wrap=True
        )


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or glob patterns.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    collection_title: Annotated[
        str | None,
        typer.Option(
            "--collection-title", metavar="TITLE", help="Title of the listing pages' collection."
        ),
    ] = None,
) -> None:
    """Ingest listing pages, arXiv API/OAI-PMH XML, arXiv snapshots and collected listings,
    .abs files, JSONL and CSV.

    Formats are detected from content. Each file is one transaction: a bad file changes
    nothing and the others still go in. Exit status 1 if any file failed.

    Example: papersift ingest pages/ 'feeds/*.xml' arxiv-236k.jsonl.gz
    """
    report = run_ingest(paths, quiet=quiet or json_out, collection_title=collection_title)
    if json_out:
        print_json(report.to_dict())
    else:
        print_summary(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def stats(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of papers, collections (with sizes) and sources.

    Example: papersift stats --json | tail -1 | jq .collections
    """
    data = library().stats()
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{data['papers']:,}[/] papers ({data['with_code']:,} with code)")
    table = Table("collection", "title", "entries", title="collections", title_justify="left")
    for name, size in data["collections"].items():
        table.add_row(escape(name), escape(data["collection_titles"][name]), f"{size:,}")
    console.print(table)
    src = Table("source", "papers", title="sources", title_justify="left")
    for name, count in list(data["sources"].items())[:30]:
        src.add_row(name, f"{count:,}")
    console.print(src)


@app.command()
def show(
    paper_id: Annotated[str, typer.Argument(metavar="ID", help="Paper id, arXiv id or DOI.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the paper as JSON.")] = False,
) -> None:
    """Show one paper.

    Example: papersift show 2106.09685
    """
    lib = library()
    paper = lib.paper(paper_id)
    if paper is None:
        fail(f"no paper with id {paper_id!r}")
    colls = lib.collections_of(paper.id)
    if json_out:
        data = paper.to_dict()
        data["collections"] = [{"name": n, "rank": r} for n, r in colls]
        print_json(data)
        return
    console.print(paper.title, style="bold", highlight=False, markup=False)
    meta = [paper.id]
    if paper.published:
        meta.append(paper.published.isoformat())
    if paper.categories:
        meta.append(", ".join(paper.categories))
    console.print(" · ".join(meta), style="dim", highlight=False)
    if paper.authors:
        console.print(", ".join(paper.authors), highlight=False, markup=False)
    console.print()
    console.print(paper.abstract, highlight=False, markup=False)
    for label, url in (
        ("abstract", paper.abs_url),
        ("pdf", paper.pdf_url),
        ("code", paper.code_url),
    ):
        if url:
            console.print(f"{label}: {url}", highlight=False, markup=False)
    for name, rank in colls:
        console.print(f"in collection {name} at #{rank}", style="dim", highlight=False)


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or bibtex.")] = "jsonl",
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only this collection, in its order.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export papers as JSON lines or BibTeX.

    Example: papersift export --format bibtex --collection 000_e3b0215ea9dd5350 > refs.bib
    """
    try:
        chunks = library().export(fmt, collection)
    except LibraryError as exc:
        fail(str(exc))
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        out.writelines(chunks)
    finally:
        if output:
            out.close()


collections_app = typer.Typer(
    name="collections", help="List collections and give them readable titles.", no_args_is_help=True
)
app.add_typer(collections_app)


@collections_app.command("list")
def collections_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Every collection: name (the key for --collection and URLs), title and size.

    Example: papersift collections list
    """
    rows = library().collections()
    if json_out:
        print_json({"collections": [vars(c) for c in rows]})
        return
    table = Table("name", "title", "entries", title="collections", title_justify="left")
    for c in rows:
        table.add_row(escape(c.name), escape(c.title), f"{c.size:,}")
    console.print(table)


@collections_app.command("rename")
def collections_rename(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The collection's name.")],
    title: Annotated[str, typer.Argument(metavar="TITLE", help="Its new readable title.")],
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="A sentence or two about it.")
    ] = None,
) -> None:
    """Give a collection a readable title (its name, used in URLs and filters, stays).

    Example: papersift collections rename 004_221a856607130bf5 "Causal inference"
    """
    try:
        library().rename_collection(name, title, description)
    except LibraryError as exc:
        fail(str(exc), code=1 if str(exc).startswith("no collection") else 2)
    console.print(f"{escape(name)}: {escape(title.strip())}", highlight=False)
