"""Ingestion: one parser module per source format, and the merge pipeline that stores them.

Parsers turn bytes into :class:`~papersift.ingest.records.PaperRecord` values and never touch
the database; :mod:`papersift.ingest.pipeline` merges records into papers, one transaction
per file.
"""

from papersift.ingest.errors import IngestError
from papersift.ingest.pipeline import FileResult, IngestSummary, ingest_paths

__all__ = ["FileResult", "IngestError", "IngestSummary", "ingest_paths"]
