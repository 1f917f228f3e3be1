"""The ``papersift`` command line: one typer app; each module adds its commands.

Modules here only parse arguments and print; the work happens in the services they call.
"""

from __future__ import annotations

import sys

# isort: off
# Importing a module registers its commands on the shared app, and --help lists
# commands in registration order: keep this order rather than sorting it.
from papersift.cli._app import app
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
from papersift.cli.argv import hoist_global_options
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The console entry point: global options may come before or after the subcommand."""
    app(args=hoist_global_options(sys.argv[1:]), prog_name="papersift")
