"""Search: embedder, lexical and vector indexes, hybrid ranking, the search service.

onnxruntime is imported here, before anything can import usearch: with the installed wheels
(onnxruntime 1.31, usearch 2.26) importing onnxruntime *after* usearch crashes the process
with a segmentation fault (reproduce: ``python -c "import usearch; import onnxruntime"``);
the other order is fine.
"""

import onnxruntime as _onnxruntime  # noqa: F401  (import order matters, see above)
