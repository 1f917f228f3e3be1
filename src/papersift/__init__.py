"""papersift: a self-hostable research-paper discovery service.

One core (store, ingest, search, rank, digest) serves a CLI and a web app. For scripts,
the package exports a small API (see :mod:`papersift.api`)::

    import papersift

    with papersift.Library(home="~/papers") as lib:
        lib.ingest(["listing.txt"])
        results = lib.search("sparse attention", k=5)

The API names are loaded on first use, so importing a part of papersift (the web app, one
CLI command) does not load the search stack with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from papersift.api import CollectionInfo, IngestReport, Library, LibraryError
    from papersift.model import Paper
    from papersift.search import SearchError, SearchFilters, SearchHit, SearchResults

_EXPORTS = {
    "Library": "papersift.api",
    "LibraryError": "papersift.api",
    "IngestReport": "papersift.api",
    "CollectionInfo": "papersift.api",
    "Paper": "papersift.model",
    "SearchError": "papersift.search",
    "SearchFilters": "papersift.search",
    "SearchHit": "papersift.search",
    "SearchResults": "papersift.search",
}

__all__ = [
    "CollectionInfo",
    "IngestReport",
    "Library",
    "LibraryError",
    "Paper",
    "SearchError",
    "SearchFilters",
    "SearchHit",
    "SearchResults",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'papersift' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
