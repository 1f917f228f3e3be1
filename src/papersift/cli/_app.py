"""The root typer app, its global options and the helpers every command shares."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.segment import Segment

from papersift import __version__
from papersift.model import strip_controls
from papersift.settings import Settings, SettingsError, load_settings
from papersift.store.db import Database, DatabaseError, sqlite_folder

app = typer.Typer(
    name="papersift",
    help="Find the right research paper fast: ingest, search, browse and subscribe.\n\n"
    "Example: papersift ingest ~/papers/*.jsonl && papersift search 'sparse attention'",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


class SafeConsole(Console):
    """A console whose text cannot carry terminal escape sequences: control characters in
    what is printed (a paper's title, a digest) are dropped; rich's own styling, emitted
    afterwards from styles, is kept."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            seg if seg.control else Segment(strip_controls(seg.text), seg.style, seg.control)
            for seg in buffer
        )


console = SafeConsole()
err_console = SafeConsole(stderr=True)


class State:
    """Per-invocation settings, filled in by the root callback."""

    def __init__(self) -> None:
        self.home: Path | None = None
        self.db_url: str | None = None
        self.config: Path | None = None
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.home, self.db_url, self.config)
            except SettingsError as exc:
                fail(str(exc), code=2)
        return self._settings

    def db(self, *, exit_code: int = 2) -> Database:
        """The migrated database; a clear message and ``exit_code`` if it cannot be opened."""
        if self._db is None:
            folder = sqlite_folder(self.settings.db_url)
            if folder is not None and folder != self.settings.home and not folder.is_dir():
                # A database path someone typed: a typo must not become a new folder.
                fail(f"folder {folder} of the --db path does not exist", code=exit_code)
            try:
                self._db = Database(self.settings.db_url)
            except DatabaseError as exc:
                fail(str(exc), code=exit_code)
        return self._db


state = State()


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """One JSON object on one line: the last line of --json output is machine-readable."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        console.print(f"papersift {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLAlchemy URL; default $PAPERSIFT_DB or SQLite in the home.",
            envvar="PAPERSIFT_DB",
            show_envvar=False,
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Data folder; default $PAPERSIFT_HOME or ~/.local/share/papersift.",
            envvar="PAPERSIFT_HOME",
            show_envvar=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML file of settings (see `papersift settings`); default "
            "$PAPERSIFT_CONFIG or papersift.toml in the home.",
            show_envvar=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """papersift: self-hostable research-paper discovery."""
    state.home = home
    state.db_url = db
    state.config = config
    state._settings = None
    state._db = None
