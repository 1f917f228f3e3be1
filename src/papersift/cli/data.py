"""Data commands: ingest, harvest, stats, show, export."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.export import to_bibtex, to_jsonl
from papersift.ingest.pipeline import FileResult, IngestSummary, expand_paths, ingest_file
from papersift.store import collections as coll_store
from papersift.store import papers as paper_store
from papersift.store.schema import PaperRow


def run_ingest(paths: list[str], *, quiet: bool = False) -> IngestSummary:
    """Ingest with a progress bar (on stderr) and return the summary."""
    db = state.db()
    files, missing = expand_paths(paths)
    summary = IngestSummary(files=list(missing))
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
    with progress:
        task = progress.add_task("ingesting", total=len(files), records=0)
        for path in files:
            progress.update(task, description=f"ingesting {path.name}")

            def advance(n: int) -> None:
                progress.update(task, records=progress.tasks[task].fields["records"] + n)

            summary.files.append(ingest_file(db, path, progress=advance))
            progress.advance(task)
        progress.update(task, description="ingested")
    update_search_index(summary.changed_ids, quiet=quiet)
    return summary


def update_search_index(paper_ids: list[str], *, quiet: bool = False) -> None:
    """Keep the search index in step after papers were committed (ingest, harvest).

    The papers are stored whatever happens here, so a failure is reported as a warning
    with the command that catches up, not as a failed ingest.
    """
    if not paper_ids:
        return
    try:
        from papersift.search.service import index_changed
    except ImportError:  # the search layer is optional for ingest
        return
    try:
        index_changed(state.settings, state.db(), paper_ids, quiet=quiet)
    except Exception as exc:
        err_console.print(
            f"[yellow]warning:[/] papers are stored but the search index was not updated "
            f"({escape(f'{exc.__class__.__name__}: {exc}')}); run `papersift index`",
            highlight=False,
            soft_wrap=True,
        )


def print_summary(summary: IngestSummary) -> None:
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
        f"{summary.total('added'):,}",
        f"{summary.total('updated'):,}",
        f"{summary.total('unchanged'):,}",
        f"{len(summary.files) - len(summary.failed)} ok, {len(summary.failed)} failed",
    )
    console.print(table)
    for f in summary.failed:
        # soft_wrap: one line per failure, never folded inside a path; escape: file names
        # and titles quoted in errors may contain [brackets] that are not markup.
        err_console.print(
            f"[bold red]failed:[/] {escape(f.error or '')}", highlight=False, soft_wrap=True
        )


def _result_dict(f: FileResult) -> dict:
    return {
        "path": f.path,
        "format": f.format,
        "added": f.added,
        "updated": f.updated,
        "unchanged": f.unchanged,
        "collection": f.collection,
        "error": f.error,
    }


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or glob patterns.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Ingest listing pages, arXiv API/OAI-PMH XML, arXiv snapshots, JSONL and CSV.

    Formats are detected from content. Each file is one transaction: a bad file changes
    nothing and the others still go in. Exit status 1 if any file failed.

    Example: papersift ingest data/sample/ 'feeds/*.xml' arxiv-metadata-oai-snapshot.json
    """
    summary = run_ingest(paths, quiet=quiet or json_out)
    if json_out:
        print_json(
            {
                "files": [_result_dict(f) for f in summary.files],
                "added": summary.total("added"),
                "updated": summary.total("updated"),
                "unchanged": summary.total("unchanged"),
                "failed": len(summary.failed),
            }
        )
    else:
        print_summary(summary)
    if summary.failed or not summary.files:
        raise typer.Exit(1)


def gather_stats() -> dict:
    db = state.db()
    with db.session() as s:
        papers = paper_store.count_papers(s)
        colls = coll_store.collection_sizes(s)
        sources: Counter[str] = Counter()
        with_code = 0
        for srcs, has_code in s.execute(select(PaperRow.sources, PaperRow.has_code)):
            sources.update(srcs or [])
            with_code += bool(has_code)
    return {
        "papers": papers,
        "with_code": with_code,
        "collections": {name: size for name, _origin, size in colls},
        "sources": dict(sources.most_common()),
    }


@app.command()
def stats(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of papers, collections (with sizes) and sources.

    Example: papersift stats --json | tail -1 | jq .collections
    """
    data = gather_stats()
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{data['papers']:,}[/] papers ({data['with_code']:,} with code)")
    table = Table("collection", "entries", title="collections", title_justify="left")
    for name, size in data["collections"].items():
        table.add_row(name, f"{size:,}")
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
    db = state.db()
    with db.session() as s:
        paper = paper_store.get_paper(s, paper_id)
        colls = coll_store.collections_of_paper(s, paper.id) if paper else []
    if paper is None:
        fail(f"no paper with id {paper_id!r}")
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
    if fmt not in ("jsonl", "bibtex"):
        fail(f"unknown format {fmt!r}; use jsonl or bibtex")
    render = to_jsonl if fmt == "jsonl" else to_bibtex
    db = state.db()
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        with db.session() as s:
            if collection is not None:
                coll = coll_store.get_collection(s, collection)
                if coll is None:
                    fail(f"no collection named {collection!r}")
                by_id = paper_store.get_papers(s, [e.paper_id for e in coll.entries])
                papers = (by_id[e.paper_id] for e in coll.entries if e.paper_id in by_id)
            else:
                papers = paper_store.iter_papers(s)
            for i, paper in enumerate(papers):
                out.write(("\n" if fmt == "bibtex" and i else "") + render(paper))
    finally:
        if output:
            out.close()
