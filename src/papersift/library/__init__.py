"""Readers' libraries: tags of saved papers, private notes, imports from and exports to
reference managers (BibTeX, RIS, CSL-JSON), and saved searches.

``service`` and ``searches`` are what the web app, the API and the CLI call; ``formats``
reads exports, ``matching`` finds (or adds) the papers they name, ``export`` writes them.
"""

from papersift.library.formats import FORMATS, MAX_IMPORT_BYTES, MAX_IMPORT_ENTRIES
from papersift.library.service import LIBRARY_SORTS, LibraryError, NotFound

__all__ = [
    "FORMATS",
    "LIBRARY_SORTS",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_ENTRIES",
    "LibraryError",
    "NotFound",
]
