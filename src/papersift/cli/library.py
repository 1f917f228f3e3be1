"""``papersift library save|remove|list|import|export --user EMAIL``: a reader's library
from the command line (the same service the web pages use)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from papersift.accounts import manage
from papersift.cli._app import app, console, err_console, fail, print_json, state
from papersift.library import FORMATS, LIBRARY_SORTS, LibraryError, service
from papersift.library.export import EXPORT_FORMATS
from papersift.library.formats import MAX_IMPORT_BYTES
from papersift.search import get_service

library_app = typer.Typer(
    name="library",
    help="A reader's library: save papers into tags, import and export BibTeX/RIS/CSL-JSON.",
    no_args_is_help=True,
)
app.add_typer(library_app)

UserOpt = Annotated[str, typer.Option("--user", "-u", help="The account's email address.")]
TagOpt = Annotated[str | None, typer.Option("--tag", "-t", help="The tag (folder).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _user(email: str) -> int:
    account = manage.find_account(state.db(), email)
    if account is None:
        fail(f"no account for {email.strip().lower()}")
    return account.id


@library_app.command("save")
def library_save(
    papers: Annotated[list[str], typer.Argument(help="Paper ids, arXiv ids or DOIs.")],
    user: UserOpt,
    tag: TagOpt = None,
) -> None:
    """Save papers into a tag (created if new; default "Saved").

    Example: papersift library save 1706.03762 --tag RL --user me@lab.org
    """
    uid = _user(user)
    for ref in papers:
        try:
            pid, name, added = service.save(state.db(), uid, ref, tag)
        except LibraryError as exc:
            fail(escape(str(exc)))
        console.print(f"{'saved' if added else 'already in'} {name}: {pid}", highlight=False)


@library_app.command("remove")
def library_remove(
    papers: Annotated[list[str], typer.Argument(help="Paper ids.")],
    user: UserOpt,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Only from this tag (default: all).")
    ] = None,
) -> None:
    """Take papers out of a tag, or out of the whole library.

    Example: papersift library remove 2305.12345 --user ada@lab.example.org --tag RL
    """
    uid = _user(user)
    for pid in papers:
        try:
            n = service.remove(state.db(), uid, pid, tag)
        except LibraryError as exc:
            fail(escape(str(exc)))
        console.print(f"removed {pid} from {n} tag{'' if n == 1 else 's'}", highlight=False)


@library_app.command("list")
def library_list(
    user: UserOpt,
    tag: TagOpt = None,
    sort: Annotated[str, typer.Option(help=f"One of {', '.join(LIBRARY_SORTS)}.")] = "added",
    json_out: JsonOpt = False,
) -> None:
    """The tags with their counts; with --tag, that tag's papers.

    Example: papersift library list --user ada@lab.example.org --tag RL
    """
    uid = _user(user)
    db = state.db()
    try:
        if tag is None:
            tags = service.tags(db, uid)
            if json_out:
                print_json({"tags": [{"name": t.name, "count": t.count} for t in tags]})
                return
            for t in tags:
                console.print(f"{t.count:>6}  {escape(t.name)}", highlight=False)
            return
        items = service.papers(db, uid, tag, sort=sort)
    except LibraryError as exc:
        fail(escape(str(exc)))
    if json_out:
        print_json(
            {
                "tag": tag,
                "papers": [
                    {"id": i.paper.id, "title": i.paper.title, "added_at": i.added_at.isoformat()}
                    for i in items
                ],
            }
        )
        return
    for i in items:
        console.print(f"{escape(i.paper.id):<20}  {escape(i.paper.title)}", highlight=False)


@library_app.command("import")
def library_import(
    path: Annotated[Path, typer.Argument(help="A .bib, .ris or .json (CSL-JSON) file.")],
    user: UserOpt,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Into this tag (default: the file's name).")
    ] = None,
    format: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(FORMATS)} (default: detected).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Import a reference manager's export: each entry is matched to a paper by arXiv id,
    DOI or title, or added as a new paper; prints matched / added / failed per entry.

    Example: papersift library import zotero.bib --user me@lab.org
    """
    uid = _user(user)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {escape(str(path))}: {escape(exc.strerror or str(exc))}", code=2)
    db = state.db()
    settings = state.settings
    try:
        outcome = service.import_file(
            db,
            uid,
            data,
            filename=path.name,
            tag_name=tag,
            format=format,
            index=lambda ids: get_service(settings, db).papers_changed(ids),
        )
    except LibraryError as exc:
        fail(f"{escape(path.name)}: {escape(str(exc))}")
    if json_out:
        print_json(outcome.to_dict())
        return
    for e in outcome.entries:
        where = f" -> {e.paper_id}" if e.paper_id else ""
        line = (
            f"{e.n:>5}  {e.status:<8} {escape(e.title[:80])}{escape(where)}  ({escape(e.reason)})"
        )
        console.print(line, highlight=False)
    console.print(
        f"{outcome.count('matched')} matched, {outcome.count('added')} added, "
        f"{outcome.count('failed')} failed; saved into {escape(outcome.tag)}",
        highlight=False,
    )
    if outcome.index_error:
        err_console.print(
            f"warning: the new papers are stored but not searchable yet "
            f"({escape(outcome.index_error)}); run papersift index",
            highlight=False,
        )


@library_app.command("export")
def library_export(
    user: UserOpt,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="This tag (default: the whole library).")
    ] = None,
    format: Annotated[str, typer.Option(help=f"One of {', '.join(EXPORT_FORMATS)}.")] = "bibtex",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Export a tag as BibTeX, RIS or CSL-JSON.

    Example: papersift library export --user ada@lab.example.org --tag RL --format ris -o rl.ris
    """
    uid = _user(user)
    try:
        text = service.export_tag(state.db(), uid, tag, format)
    except LibraryError as exc:
        fail(escape(str(exc)))
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {escape(str(out))}: {escape(exc.strerror or str(exc))}", code=2)
