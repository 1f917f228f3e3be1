"""Recommendation commands: eval-rec (quality on researchers' libraries)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from papersift.cli._app import app, console, err_console, fail, print_json
from papersift.search.embedder import EmbedderError

METRICS = ("recall@20", "recall@100", "ndcg@20")


@app.command("eval-rec")
def eval_rec_cmd(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="Folder with papers.jsonl and users.jsonl (library, hidden)."
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Last line: one JSON object with the metrics.")
    ] = False,
    references: Annotated[
        bool,
        typer.Option(
            "--references/--no-references",
            help="Also score popularity, a per-user tf-idf SVM and the MiniLM centroid.",
        ),
    ] = True,
    holdout: Annotated[
        bool,
        typer.Option(
            "--holdout",
            help="Score against a held-out fifth of each library instead of 'hidden' "
            "(for choosing a method without touching the hidden papers).",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes scoring readers (default: the cores).")
    ] = min(4, os.cpu_count() or 1),
) -> None:
    """Measure recommendations on readers' libraries: Recall@20, Recall@100, nDCG@20.

    Papers are indexed in a temporary home; every paper outside a reader's library is a
    candidate, the reader's hidden papers are the ones to find. Embeddings are cached under
    $PAPERSIFT_CACHE/eval (default ~/.cache/papersift/eval).

    Example: papersift eval-rec ../shared/eval/rec_citeulike --json
    """
    from papersift.cli.search import embedding_progress
    from papersift.rank.rec_eval import DEFAULT, RecEvalError, run_eval

    try:
        with embedding_progress(json_out) as progress:
            result = run_eval(
                folder,
                references=references,
                split="holdout" if holdout else "hidden",
                embed_progress=progress,
                workers=workers,
            )
    except (RecEvalError, EmbedderError) as exc:
        fail(str(exc))
    for message in result.skipped[:20]:
        err_console.print(message, highlight=False, markup=False)
    if len(result.skipped) > 20:
        err_console.print(f"... and {len(result.skipped) - 20} more skipped or trimmed users")
    if json_out:
        print_json(
            {
                **result.methods[DEFAULT],
                "method": DEFAULT,
                "users": result.users,
                "papers": result.papers,
                "split": "holdout" if holdout else "hidden",
                "methods": result.methods,
                "seconds": result.seconds,
            }
        )
        return
    table = Table(
        "method",
        *METRICS,
        title=f"{folder.name}: {result.users:,} readers, {result.papers:,} papers",
        title_justify="left",
    )
    for name, scores in result.methods.items():
        table.add_row(name, *(f"{scores[m]:.4f}" for m in METRICS))
    console.print(table)
