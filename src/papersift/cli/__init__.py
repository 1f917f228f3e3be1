"""The ``papersift`` command line: one typer app; each module adds its commands.

Modules here only parse arguments and print; the work happens in the services they call.
"""

from __future__ import annotations

import errno
import sys

from rich.markup import escape

# isort: off
# Importing a module registers its commands on the shared app, and --help lists
# commands in registration order: keep this order rather than sorting it.
from papersift.cli._app import app, err_console
from papersift.cli import data as _data  # noqa: F401  (registers ingest, stats, show, export)
from papersift.cli import demo as _demo  # noqa: F401
from papersift.cli import search as _search  # noqa: F401  (search, similar, eval, index)
from papersift.cli import recommend as _recommend  # noqa: F401  (registers eval-rec)
from papersift.cli import web as _web  # noqa: F401  (registers serve)
from papersift.cli import harvest as _harvest  # noqa: F401
from papersift.cli import digest as _digest  # noqa: F401  (registers subscribers, digest)
from papersift.cli import settings as _settings  # noqa: F401  (registers settings)
from papersift.cli import mail as _mail  # noqa: F401  (registers mail outbox, mail send)
from papersift.cli import daily as _daily  # noqa: F401  (registers daily)
from papersift.cli import jobs as _jobs  # noqa: F401  (registers worker, jobs)
from papersift.cli import users as _users  # noqa: F401  (registers users)
from papersift.cli import library as _library  # noqa: F401  (registers library)
from papersift.cli.argv import hoist_global_options
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The console entry point: global options may come before or after the subcommand."""
    try:
        app(args=hoist_global_options(sys.argv[1:]), prog_name="papersift")
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        err_console.print(
            f"[bold red]error:[/] disk full ({escape(f'{exc.__class__.__name__}: {exc}')}); "
            "nothing half-written was kept: free some space and run the command again",
            highlight=False,
        )
        sys.exit(1)


# How tantivy and usearch (OS error text) and SQLite (SQLITE_FULL) say it.
_FULL = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is "no space left on device", whichever library
    raised it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        message = str(seen)
        if any(m in message for m in _FULL):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
