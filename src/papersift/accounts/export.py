"""Everything papersift holds about a reader, as one JSON-ready dict.

Each area registers an exporter for its own per-user data when its module is imported
(``register_exporter("library", export_library)``); ``export_account`` imports the known
areas' modules first, so the export is complete whichever modules a process loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from papersift.store.db import Database

Exporter = Callable[[Session, int], Any]
_EXPORTERS: dict[str, Exporter] = {}

# The modules that register exporters (each area adds its own line here).
AREA_MODULES: list[str] = [
    "papersift.accounts.own_data",
    "papersift.comments.service",
    "papersift.rank.foryou",
    "papersift.library.service",
]


def register_exporter(name: str, fn: Exporter) -> None:
    """Add ``fn(session, user_id)`` under ``name`` in every account export."""
    _EXPORTERS[name] = fn


def export_account(db: Database, user_id: int) -> dict[str, Any]:
    """One dict: the account and every registered area's data, read in one transaction."""
    for module in AREA_MODULES:
        importlib.import_module(module)
    with db.session() as session:
        return {name: fn(session, user_id) for name, fn in sorted(_EXPORTERS.items())}


Eraser = Callable[[Session, int], None]
_ERASERS: dict[str, Eraser] = {}


def register_eraser(name: str, fn: Eraser) -> None:
    """Add ``fn(session, user_id)`` to account deletion: it deletes the area's rows of the
    user explicitly (the foreign keys' ON DELETE CASCADE is the second line)."""
    _ERASERS[name] = fn


def erase_account(session: Session, user_id: int) -> None:
    """Run every registered area's eraser in the caller's transaction."""
    for module in AREA_MODULES:
        importlib.import_module(module)
    for _name, fn in sorted(_ERASERS.items()):
        fn(session, user_id)
