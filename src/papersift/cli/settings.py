"""``papersift settings``: every setting with its effective value, or the docs table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import typer
from pydantic.fields import FieldInfo
from rich.table import Table

from papersift.cli._app import app, console, print_json, state
from papersift.settings import Settings, env_name

_HIDDEN = {"secret"}


def documented_fields() -> Iterator[tuple[str, FieldInfo]]:
    """Every setting in declaration order, for the generated docs."""
    yield from Settings.model_fields.items()


def _default_text(name: str, info: FieldInfo) -> str:
    if info.default_factory is not None or name in ("db", "secret"):
        return ""
    if info.default is None:
        return ""
    if isinstance(info.default, bool):
        return "1" if info.default else "0"
    return str(info.default)


def settings_table_markdown() -> str:
    """The README's settings table, generated so the docs cannot drift from the code."""
    rows = [
        "| variable | TOML key | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in documented_fields():
        default = _default_text(name, info)
        rows.append(
            f"| `{env_name(name)}` | `{name}` | {f'`{default}`' if default else ''} "
            f"| {info.description or ''} |"
        )
    return "\n".join(rows) + "\n"


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
