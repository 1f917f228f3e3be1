"""Search: embedder, lexical and vector indexes, hybrid ranking, the search service.

The package exports the search vocabulary (modes, limits, filters, results) and the
service; front ends import these names from here, not from the modules inside.

onnxruntime is imported here, before anything can import usearch: with the installed wheels
(onnxruntime 1.31, usearch 2.26) importing onnxruntime *after* usearch crashes the process
with a segmentation fault (reproduce: ``python -c "import usearch; import onnxruntime"``);
the other order is fine.
"""

import onnxruntime as _onnxruntime  # noqa: F401  (import order matters, see above)

from papersift.search.embedder import Embedder, EmbedderError
from papersift.search.query import MAX_QUERY_CHARS
from papersift.search.service import SearchService, get_service
from papersift.search.types import (
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_SORT,
    MAX_CATEGORY,
    MAX_COLLECTION_NAME,
    MAX_K,
    MAX_OFFSET,
    MAX_QUERY_LENGTH,
    MODES,
    NO_FILTERS,
    SORTS,
    IndexReport,
    Mode,
    Progress,
    SearchError,
    SearchFilters,
    SearchHit,
    SearchRequest,
    SearchResults,
    Sort,
)

__all__ = [
    "DEFAULT_K",
    "DEFAULT_MODE",
    "DEFAULT_SORT",
    "MAX_CATEGORY",
    "MAX_COLLECTION_NAME",
    "MAX_K",
    "MAX_OFFSET",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_LENGTH",
    "MODES",
    "NO_FILTERS",
    "SORTS",
    "Embedder",
    "EmbedderError",
    "IndexReport",
    "Mode",
    "Progress",
    "SearchError",
    "SearchFilters",
    "SearchHit",
    "SearchRequest",
    "SearchResults",
    "SearchService",
    "Sort",
    "get_service",
]
