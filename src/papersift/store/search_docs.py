"""What search reads from and writes to the database: papers as documents, stored embeddings.

Embeddings are kept in the ``embeddings`` table keyed by (paper id, model id) with the
content hash of the text they were made from, as float16 (half the bytes of float32; cosine
similarities change by less than 1e-3, far below any ranking difference we can measure).

Papers are read as :class:`PaperDoc`, a flat projection of the fields the indexes need
(columns straight from the table, no ORM objects): a full rebuild streams every paper
through here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any, cast

import numpy as np
from sqlalchemy import ColumnElement, Select, Table, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from papersift.model import paper_text
from papersift.store.papers import _chunks
from papersift.store.schema import EmbeddingRow, PaperRow

_PAPERS = cast(Table, PaperRow.__table__)
_EMBEDDINGS = cast(Table, EmbeddingRow.__table__)


@dataclass(slots=True)
class PaperDoc:
    """A paper as the search indexes read it.

    The fields of :class:`papersift.model.Paper` that are indexed (same names and types),
    plus two columns the store derives from a paper: ``has_code`` and ``content_hash``.
    """

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    published: date | None = None
    categories: list[str] = field(default_factory=list)
    has_code: bool = False
    content_hash: str = ""

    @property
    def text(self) -> str:
        """The indexed and embedded text (:func:`papersift.model.paper_text`)."""
        return paper_text(self.title, self.abstract)


DOC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PaperDoc))
# The columns of a PaperDoc, in field order (names are the column names).
_DOC_COLUMNS = tuple(_PAPERS.c[name] for name in DOC_FIELDS)


def _doc(row: Sequence[Any]) -> PaperDoc:
    """A PaperDoc from a row of ``_DOC_COLUMNS`` (NULL text and lists become empty)."""
    return PaperDoc(
        row[0],
        row[1] or "",
        row[2] or "",
        list(row[3] or []),
        row[4],
        list(row[5] or []),
        bool(row[6]),
        row[7] or "",
    )


def paper_docs(session: Session, ids: Sequence[str]) -> dict[str, PaperDoc]:
    """Docs by id; ids not in the database are absent."""
    out: dict[str, PaperDoc] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        for row in session.execute(select(*_DOC_COLUMNS).where(_PAPERS.c.id.in_(chunk))):
            out[row[0]] = _doc(row)
    return out


def iter_paper_docs(session: Session, batch: int = 2000) -> Iterator[list[PaperDoc]]:
    """Every paper in id order, in batches (keyset pagination: constant memory)."""
    last = ""
    while True:
        rows = session.execute(
            select(*_DOC_COLUMNS).where(_PAPERS.c.id > last).order_by(_PAPERS.c.id).limit(batch)
        ).all()
        if not rows:
            return
        yield [_doc(r) for r in rows]
        last = rows[-1][0]


def iter_hashes(session: Session, batch: int = 5000) -> Iterator[list[tuple[str, str]]]:
    """(id, content_hash) of every paper in id order, in batches."""
    last = ""
    while True:
        rows = session.execute(
            select(PaperRow.id, PaperRow.content_hash)
            .where(PaperRow.id > last)
            .order_by(PaperRow.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield [(r[0], r[1] or "") for r in rows]
        last = rows[-1][0]


def duplicate_keys(session: Session, ids: Sequence[str]) -> dict[str, tuple[str, str | None, str]]:
    """(title key, arXiv id, content hash) by paper id: what makes two papers the same."""
    out: dict[str, tuple[str, str | None, str]] = {}
    stmt = select(PaperRow.id, PaperRow.title_key, PaperRow.arxiv_id, PaperRow.content_hash)
    for chunk in _chunks(list(dict.fromkeys(ids))):
        for pid, title_key, arxiv_id, chash in session.execute(stmt.where(PaperRow.id.in_(chunk))):
            out[pid] = (title_key or "", arxiv_id, chash or "")
    return out


def published_dates(session: Session, ids: Sequence[str]) -> dict[str, date | None]:
    """Publication date (None if unknown) by paper id."""
    out: dict[str, date | None] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        stmt = select(PaperRow.id, PaperRow.published).where(PaperRow.id.in_(chunk))
        out.update((pid, pub) for pid, pub in session.execute(stmt))
    return out


def texts(session: Session, ids: Sequence[str]) -> dict[str, str]:
    """The indexed text (:func:`papersift.model.paper_text`) by paper id."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        stmt = select(PaperRow.id, PaperRow.title, PaperRow.abstract).where(PaperRow.id.in_(chunk))
        for pid, title, abstract in session.execute(stmt):
            out[pid] = paper_text(title, abstract)
    return out


def _unembedded(model: str) -> ColumnElement[bool]:
    """Papers with no stored embedding for ``model``, or one made from an older text (over
    ``papers`` outer-joined to ``embeddings`` by :func:`_with_embeddings`)."""
    return or_(EmbeddingRow.paper_id.is_(None), EmbeddingRow.content_hash != PaperRow.content_hash)


def _with_embeddings(stmt: Select[Any], model: str) -> Select[Any]:
    return stmt.outerjoin(
        EmbeddingRow, and_(EmbeddingRow.paper_id == PaperRow.id, EmbeddingRow.model == model)
    ).where(_unembedded(model))


def count_unembedded(session: Session, model: str) -> int:
    """Papers with no stored embedding for ``model``, or one made from an older text."""
    stmt = _with_embeddings(select(func.count()).select_from(PaperRow), model)
    return int(session.scalar(stmt) or 0)


def unembedded_ids(session: Session, model: str) -> list[str]:
    """The ids of those papers, in id order (what a cluster run embeds)."""
    stmt = _with_embeddings(select(PaperRow.id), model).order_by(PaperRow.id)
    return list(session.scalars(stmt))


def encode_vector(vector: np.ndarray) -> bytes:
    """The stored form of a vector: little-endian float16."""
    return np.asarray(vector, dtype="<f2").tobytes()


def decode_vector(blob: bytes, dim: int) -> np.ndarray | None:
    """float16 or float32 bytes of a ``dim``-vector; None if the size does not fit."""
    if len(blob) == 2 * dim:
        return np.frombuffer(blob, dtype="<f2").astype(np.float32)
    if len(blob) == 4 * dim:
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return None


def load_embeddings(
    session: Session, hashes: Mapping[str, str], model: str, dim: int
) -> dict[str, np.ndarray]:
    """Stored vectors of the papers (id -> content hash) whose text has not changed since
    they were embedded."""
    out: dict[str, np.ndarray] = {}
    for chunk in _chunks(list(hashes)):
        stmt = select(EmbeddingRow.paper_id, EmbeddingRow.content_hash, EmbeddingRow.vector).where(
            EmbeddingRow.model == model, EmbeddingRow.paper_id.in_(chunk)
        )
        for pid, chash, blob in session.execute(stmt):
            if chash == hashes.get(pid):
                vec = decode_vector(blob, dim)
                if vec is not None:
                    out[pid] = vec
    return out


def save_embeddings(
    session: Session, rows: Sequence[tuple[str, str, np.ndarray]], model: str
) -> None:
    """Replace the stored vectors of (paper id, content hash, vector) rows for ``model``."""
    for chunk in _chunks(list(rows)):
        ids = [pid for pid, _h, _v in chunk]
        session.execute(
            delete(EmbeddingRow).where(EmbeddingRow.model == model, EmbeddingRow.paper_id.in_(ids))
        )
        session.execute(
            _EMBEDDINGS.insert(),
            [
                {
                    "paper_id": pid,
                    "model": model,
                    "content_hash": chash,
                    "vector": encode_vector(vec),
                }
                for pid, chash, vec in chunk
            ],
        )
