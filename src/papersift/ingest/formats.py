"""Format detection and the dispatch from a file to its parser.

Detection looks at content first (XML root, JSON keys) and the file name second, so a
mis-named file still goes to the right parser, and a binary file is refused early.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from papersift.ingest import abs as abs_files
from papersift.ingest import arxiv_jsonl, arxiv_xml, generic, listing, snapshot
from papersift.ingest.errors import IngestError
from papersift.ingest.records import PaperRecord, ParsedCollection

MAX_XML_BYTES = 512 * 1024 * 1024


@dataclass
class ParsedSource:
    """A file's format, its records (lazily, for big files) and its collection if any."""

    format: str
    records: Iterator[PaperRecord]
    collection: ParsedCollection | None = None
    deleted: int = 0  # OAI-PMH records marked deleted: skipped, but not "no papers"


def _open_bytes(path: Path) -> gzip.GzipFile | io.BufferedReader:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _check_text(head: bytes, name: str) -> None:
    if not head.strip():
        raise IngestError("empty file: no papers in it", source=name)
    if b"\x00" in head:
        raise IngestError("binary file: not a paper listing, feed or data file", source=name)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut by the read is fine
            raise IngestError(
                f"not UTF-8 text (bad byte at offset {exc.start}); binary file?", source=name
            ) from None


def detect_format(path: Path) -> str:
    """One of listing, atom, oai, snapshot, arxiv-jsonl, jsonl, csv, abs; IngestError for
    unusable files."""
    name = str(path)
    try:
        with _open_bytes(path) as fh:
            head = fh.read(65536)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"cannot read file ({exc})", source=name) from None
    _check_text(head, name)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<"):
        kind = arxiv_xml.root_kind(stripped)
        if kind == "unknown":
            raise IngestError(
                "XML file is neither an Atom feed nor an OAI-PMH response", source=name
            )
        return kind
    base = path.name.removesuffix(".gz").lower()
    if stripped.startswith(b"{"):
        first = stripped.split(b"\n", 1)[0]
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            obj = {}
        if isinstance(obj, dict) and snapshot.looks_like_snapshot(obj):
            return "snapshot"
        if isinstance(obj, dict) and arxiv_jsonl.looks_like_arxiv_jsonl(obj):
            return "arxiv-jsonl"
        return "jsonl"
    if abs_files.looks_like_abs(stripped[:4096].decode("utf-8", "replace")):
        return "abs"
    if base.endswith((".csv", ".tsv")):
        return "csv"
    if base.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "listing"


def _text_lines(path: Path) -> Iterator[str]:
    with _open_bytes(path) as raw:
        reader = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        number = 0
        try:
            for number, line in enumerate(reader, start=1):  # noqa: B007
                yield line
        except UnicodeDecodeError:
            raise IngestError("not UTF-8 text", location=f"line {number + 1}") from None


def _read_text(path: Path) -> str:
    try:
        with _open_bytes(path) as fh:
            return fh.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"not UTF-8 text (bad byte at offset {exc.start})") from None


def _read_xml(path: Path) -> bytes:
    with _open_bytes(path) as fh:
        data = fh.read(MAX_XML_BYTES + 1)
    if len(data) > MAX_XML_BYTES:
        raise IngestError("XML response larger than 512 MB; split it")
    return data


def open_source(path: Path, fmt: str | None = None) -> ParsedSource:
    """The parser output for ``path``; records are produced as the caller iterates."""
    fmt = fmt or detect_format(path)
    name = str(path)
    if fmt == "listing":
        text = _read_text(path)
        coll_name = path.name.removesuffix(".gz").removesuffix(".txt")
        collection = ParsedCollection(name=coll_name, origin=path.name)
        return ParsedSource(fmt, listing.parse_listing(text, name), collection)
    if fmt == "atom":
        return ParsedSource(fmt, iter(arxiv_xml.parse_atom(_read_xml(path)).records))
    if fmt == "oai":
        page = arxiv_xml.parse_oai(_read_xml(path))
        return ParsedSource(fmt, iter(page.records), deleted=page.deleted)
    if fmt == "snapshot":
        return ParsedSource(fmt, snapshot.parse_snapshot(_text_lines(path), name))
    if fmt == "arxiv-jsonl":
        return ParsedSource(fmt, arxiv_jsonl.parse_arxiv_jsonl(_text_lines(path), name))
    if fmt == "abs":
        return ParsedSource(fmt, iter([abs_files.parse_abs(_read_text(path), name)]))
    if fmt == "jsonl":
        return ParsedSource(fmt, generic.parse_jsonl(_text_lines(path), name))
    if fmt == "csv":
        return ParsedSource(fmt, generic.parse_csv(_read_text(path), name))
    raise IngestError(f"unknown format {fmt!r}", source=name)
