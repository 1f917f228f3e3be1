"""``papersift settings``: every setting with its effective value, or the docs table."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from papersift.cli._app import app, console, print_json, state
from papersift.settings import documented_fields, env_name, settings_table_markdown

_HIDDEN = {"secret"}


@app.command("settings")
def show_settings(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the documentation table (as in README).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Effective values as JSON.")] = False,
) -> None:
    """Show every setting, its environment variable and the value in effect.

    Values come from --home/--db, then PAPERSIFT_* variables, then the config file
    (--config, $PAPERSIFT_CONFIG or papersift.toml in the home), then defaults.

    Example: PAPERSIFT_SMTP_RATE=2 papersift settings
    """
    if markdown:
        typer.echo(settings_table_markdown(), nl=False)
        return
    settings = state.settings
    values = settings.model_dump(mode="json")
    for name in _HIDDEN:
        if values.get(name):
            values[name] = "(set)"
    if json_out:
        print_json(values)
        return
    table = Table("setting", "variable", "value", box=None)
    for name, _info in documented_fields():
        value = values[name]
        table.add_row(name, env_name(name), "" if value is None else str(value))
    console.print(table)
