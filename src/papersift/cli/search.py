"""Search commands: search, similar, eval, index."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as ProgressBar
from rich.table import Table
from rich.text import Text

from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.search import (
    MODES,
    EmbedderError,
    IndexReport,
    Progress,
    SearchError,
    SearchFilters,
    SearchHit,
    get_service,
)
from papersift.search.cluster import BATCH_ROWS, ClusterError, embed_backlog
from papersift.search.compare import QueryDelta
from papersift.search.snapshots import SnapshotError, publish_snapshot
from papersift.store import papers as paper_store

_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?$")


def parse_day(text: str | None, *, end: bool) -> date | None:
    """YYYY, YYYY-MM or YYYY-MM-DD; a partial date means its first (or, for --to, last) day."""
    if not text:
        return None
    match = _DATE.match(text.strip())
    if not match:
        fail(f"not a date: {text!r} (use YYYY, YYYY-MM or YYYY-MM-DD)")
    year = int(match.group(1))
    month = int(match.group(2) or (12 if end else 1))
    try:
        if match.group(3):
            return date(year, month, int(match.group(3)))
        last = calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 0
        return date(year, month, last if end else 1)
    except ValueError:
        fail(f"not a date: {text!r}")


@contextmanager
def embedding_progress(quiet: bool = False) -> Iterator[Progress | None]:
    """A progress bar on stderr for the service's (done, total) embedding callbacks; None
    when ``quiet``. The bar appears with the first callback and is gone afterwards."""
    if quiet:
        yield None
        return
    bar = ProgressBar(
        TextColumn("[bold]embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("embedding", total=total)
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def _hit_rows(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    """Search hits with the paper fields a reader needs."""
    with state.db().session() as s:
        papers = paper_store.get_papers(s, [h.paper_id for h in hits])
    rows = []
    for rank, hit in enumerate(hits, start=1):
        paper = papers.get(hit.paper_id)
        if paper is None:
            continue
        rows.append(
            {
                "rank": rank,
                "id": paper.id,
                "score": round(hit.score, 4),
                "title": paper.title,
                "authors": paper.authors,
                "published": paper.published.isoformat() if paper.published else None,
                "categories": paper.categories,
                "abs_url": paper.abs_url,
                "code_url": paper.code_url,
            }
        )
    return rows


def _print_hits(rows: list[dict[str, Any]]) -> None:
    table = Table("#", "score", "id", "date", "title", title_justify="left", show_lines=False)
    for row in rows:
        table.add_row(  # Text(): titles like "[RE] ..." are not rich markup
            str(row["rank"]),
            f"{row['score']:.3f}",
            Text(row["id"]),
            row["published"] or "",
            Text(row["title"]),
        )
    console.print(table)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words, a question, or query syntax.")],
    k: Annotated[int, typer.Option("-k", "--limit", help="Number of results.")] = 10,
    offset: Annotated[int, typer.Option(help="Skip this many results (paging).")] = 0,
    mode: Annotated[str, typer.Option(help="hybrid, lexical or semantic.")] = "hybrid",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    date_from: Annotated[
        str | None, typer.Option("--from", help="Published on or after (YYYY[-MM[-DD]]).")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Published on or before (YYYY[-MM[-DD]]).")
    ] = None,
    has_code: Annotated[bool, typer.Option("--has-code", help="Only papers with code.")] = False,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only papers in this collection.")
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="Only this arXiv category, e.g. cs.CL.")
    ] = None,
    sort: Annotated[str, typer.Option(help="relevance or date (newest first).")] = "relevance",
) -> None:
    """Search papers: hybrid (keywords + meaning) by default.

    Query syntax: "exact phrase", title:word, author:name, +required, -excluded, AND/OR/NOT.

    Example: papersift search 'sparse attention for long documents' -k 5 --from 2023 --has-code
    """
    filters = SearchFilters(
        date_from=parse_day(date_from, end=False),
        date_to=parse_day(date_to, end=True),
        has_code=True if has_code else None,
        collection=collection,
        category=category,
    )
    service = get_service(state.settings, state.db())
    if mode == "semantic":  # asked for meaning only: no model is an error, not keyword hits
        try:
            service.embedder  # noqa: B018  (loads the model, or says why it cannot)
        except EmbedderError as exc:
            fail(f"semantic search needs the embedding model: {exc}")
    try:
        results = service.search(query, k=k, offset=offset, mode=mode, filters=filters, sort=sort)
    except SearchError as exc:
        fail(str(exc))
    rows = _hit_rows(results.hits)
    if json_out:
        print_json(
            {
                "query": results.query,
                "mode": results.mode,
                "total": results.total,
                "message": results.message,
                "hits": rows,
            }
        )
        return
    if results.message:
        err_console.print(f"[yellow]note:[/] {results.message}", highlight=False)
    if not rows:
        console.print("no results")
        return
    _print_hits(rows)
    shown = f"{offset + 1}-{offset + len(rows)}"
    console.print(f"{shown} of {results.total:,} ({results.mode})", style="dim")


@app.command()
def similar(
    paper_id: Annotated[str, typer.Argument(metavar="ID", help="Paper id, arXiv id or DOI.")],
    k: Annotated[int, typer.Option("-k", "--limit", help="Number of results.")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Papers most similar in meaning to one paper (itself and its duplicates left out).

    Example: papersift similar 2106.09685 -k 5
    """
    service = get_service(state.settings, state.db())
    try:
        hits = service.similar(paper_id, k=k)
    except KeyError:
        fail(f"no paper with id {paper_id!r}")
    except (SearchError, EmbedderError) as exc:
        fail(str(exc))
    rows = _hit_rows(hits)
    if json_out:
        print_json({"id": paper_id, "hits": rows})
        return
    if not rows:
        console.print("no similar papers (is the index built? run `papersift index`)")
        return
    _print_hits(rows)


def build_index(*, rebuild: bool = False, quiet: bool = False) -> IndexReport:
    """Sync (or rebuild) the search indexes with a progress bar; used by index and demo."""
    service = get_service(state.settings, state.db())
    with embedding_progress(quiet) as progress:
        return service.rebuild(progress=progress) if rebuild else service.sync(progress=progress)


def _embed_on_cluster(
    model_id: str, address: str, workers: int | None, threads: int, batch: int, quiet: bool
) -> dict[str, Any]:
    """The cluster pass of ``index --ray``: stores the vectors; the indexer then adds them."""
    with embedding_progress(quiet) as progress:
        report = embed_backlog(
            state.settings,
            state.db(),
            model_id,
            address,
            workers=workers,
            threads=threads,
            batch_rows=batch,
            progress=progress,
        )
    if not quiet and report.backlog:
        err_console.print(
            f"embedded {report.embedded:,} of {report.backlog:,} papers on {report.workers} "
            f"Ray workers in {report.seconds:.1f} s ({report.per_second:.1f}/s)"
        )
    return report.to_dict()


@app.command()
def index(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild from the database from scratch.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Embed what is missing on a Ray cluster (host:port, or 'local' to start "
            "one here) before indexing; needs pip install 'papersift[ray]'.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Model actors on the cluster (default: its CPUs).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="CPUs (model threads) per actor.")] = 1,
    batch: Annotated[
        int, typer.Option(min=1, max=4096, help="Papers per model call on the cluster.")
    ] = BATCH_ROWS,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Then publish the index to snapshot_url (a base, or a delta of what "
            "changed) for the serve hosts that follow it.",
        ),
    ] = False,
) -> None:
    """Bring the search indexes in step with the database (embeds what is missing).

    Indexes live in $PAPERSIFT_HOME/index and are derived data: deleting them loses nothing.
    Stored embeddings are re-used, so an interrupted run resumes where it stopped.

    Example: papersift index            # or: papersift index --rebuild, --ray local
    """
    cluster: dict[str, Any] | None = None
    try:
        # index embeds: without the model that is an error, not a keyword-only index
        embedder = get_service(state.settings, state.db()).embedder
        if ray is not None:
            cluster = _embed_on_cluster(
                embedder.model_id, ray, workers, threads, batch, quiet or json_out
            )
        report = build_index(rebuild=rebuild, quiet=quiet or json_out)
        published = None
        if publish:
            published = publish_snapshot(state.settings, state.db())
    except (SearchError, EmbedderError, ClusterError, SnapshotError) as exc:
        fail(str(exc))
    data: dict[str, Any] = report.to_dict()
    data |= {"cluster": cluster} if cluster is not None else {}
    if published is not None:
        data["published"] = published
        if not json_out:
            console.print(published)
    if json_out:
        print_json(data)
        return
    if not (report.indexed or report.removed):
        status = get_service(state.settings, state.db()).status()
        console.print(f"search index up to date ({status.get('docs', 0):,} papers)")
    else:
        console.print(
            f"indexed {report.indexed:,} papers ({report.embedded:,} embedded, "
            f"{report.removed:,} removed) in {report.seconds:.1f} s"
        )
    if report.pending_vectors:
        err_console.print(f"{report.pending_vectors:,} papers have no embedding yet")


@app.command("eval")
def eval_cmd(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv."
        ),
    ],
    mode: Annotated[str, typer.Option(help="hybrid, lexical or semantic.")] = "hybrid",
    json_out: Annotated[
        bool, typer.Option("--json", help="Last line: one JSON object with the metrics.")
    ] = False,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            metavar="MODE_OR_RUN",
            help="Per-query nDCG@10 differences against another mode or a saved run file.",
        ),
    ] = None,
    save_run: Annotated[
        Path | None, typer.Option("--save-run", metavar="FILE", help="Write the ranked ids.")
    ] = None,
    show: Annotated[int, typer.Option(help="Losses and wins listed with --compare.")] = 10,
) -> None:
    """Measure search quality on a BEIR collection: nDCG@10, Recall@100, MRR@10.

    The corpus is indexed in a temporary home; its embeddings are cached under
    $PAPERSIFT_CACHE/eval (default ~/.cache/papersift/eval).

    Example: papersift eval ../shared/eval/cisi --mode hybrid --compare lexical
    """
    from papersift.search import compare as cmp
    from papersift.search.eval import EvalError, run_eval

    if mode not in MODES:
        fail(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    other_run, other_label = None, compare
    if compare and compare not in MODES:
        if not Path(compare).is_file():
            fail(f"--compare takes a mode ({', '.join(MODES)}) or a saved run file: {compare!r}")
        try:
            other_run, other_label = cmp.load_run(Path(compare))
        except cmp.RunFileError as exc:
            fail(str(exc))
    try:
        with embedding_progress(json_out) as progress:
            extra = (compare,) if compare in MODES else ()
            result = run_eval(folder, mode=mode, progress=progress, modes=extra)
    except EvalError as exc:
        fail(str(exc))
    run, texts, qrels = result.pop("run"), result.pop("texts"), result.pop("qrels")
    runs = result.pop("runs")
    if save_run is not None:
        try:
            cmp.save_run(save_run, run, collection=result["collection"], mode=mode)
        except OSError as exc:
            fail(f"cannot write {save_run}: {exc}")
    deltas = None
    if compare:
        other = runs[compare] if compare in MODES else other_run
        deltas = cmp.per_query(run, other or {}, qrels, texts)
        result["compare"] = {"against": other_label, **cmp.summary(deltas)}
        result["per_query"] = [
            {"query": d.query_id, "ndcg@10": round(d.ndcg, 4), "other": round(d.other, 4)}
            for d in deltas
        ]
    if json_out:
        print_json(result)
        return
    table = Table(
        "metric", "value", title=f"{result['collection']} ({result['mode']})", title_justify="left"
    )
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        table.add_row(key, f"{result[key]:.4f}")
    table.add_row("queries", str(result["queries"]))
    table.add_row("documents", f"{result['documents']:,}")
    table.add_row("ms per query", f"{result['ms_per_query']:.1f}")
    console.print(table)
    if deltas is not None:
        _print_deltas(deltas, result["compare"], mode, str(other_label), show)


def _print_deltas(deltas: list[QueryDelta], stats: dict, mode: str, other: str, show: int) -> None:
    """The biggest per-query losses and wins of ``mode`` against ``other``."""
    console.print(
        f"{mode} against {other}: {stats['wins']} better, {stats['losses']} worse, "
        f"{stats['ties']} equal; mean nDCG@10 difference {stats['mean_delta']:+.4f}"
    )
    losses = [d for d in deltas if d.delta < 0][:show]
    wins = [d for d in reversed(deltas) if d.delta > 0][:show]
    for title, rows in (("worst losses", losses), ("best wins", wins)):
        if not rows:
            continue
        table = Table(
            "query",
            "nDCG@10",
            other[:24],
            "delta",
            "recall@100 delta",
            "text",
            title=title,
            title_justify="left",
        )
        for d in rows:
            table.add_row(
                Text(d.query_id),
                f"{d.ndcg:.3f}",
                f"{d.other:.3f}",
                f"{d.delta:+.3f}",
                f"{d.recall:+.3f}",
                Text(" ".join(d.text.split())[:70]),
            )
        console.print(table)
