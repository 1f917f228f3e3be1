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
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


class _OnnxruntimeBeforeUsearch(importlib.abc.MetaPathFinder):
    """Imports onnxruntime just before usearch is first imported, by anyone.

    With the installed wheels importing onnxruntime after usearch crashes the process
    (see :mod:`papersift.search`). papersift.search imports onnxruntime first itself; this
    keeps the order also for a script that imports papersift, then usearch on its own,
    without making ``import papersift`` load onnxruntime (0.4 s) when nothing needs it.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "usearch" and "onnxruntime" not in sys.modules:
            importlib.import_module("onnxruntime")
        return None  # the ordinary finders import the module itself


if not any(isinstance(f, _OnnxruntimeBeforeUsearch) for f in sys.meta_path):
    sys.meta_path.insert(0, _OnnxruntimeBeforeUsearch())

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
