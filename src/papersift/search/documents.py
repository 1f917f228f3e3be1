"""What search reads from and writes to the database: paper fields and stored embeddings.

Embeddings are kept in the ``embeddings`` table keyed by (paper id, model id) with the
content hash of the text they were made from, as float16 (half the bytes of float32; cosine
similarities change by less than 1e-3, far below any ranking difference we can measure).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from papersift.store.schema import EmbeddingRow, PaperRow

_CHUNK = 500


@dataclass
class PaperDoc:
    """The fields of a paper that the indexes need."""

    id: str
    title: str
    abstract: str
    content_hash: str
    authors: list[str] = field(default_factory=list)
    published: date | None = None
    has_code: bool = False
    categories: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The embedded text: same as ``Paper.text``."""
        return f"{self.title}. {self.abstract}" if self.abstract else self.title


_COLUMNS = (
    PaperRow.id,
    PaperRow.title,
    PaperRow.abstract,
    PaperRow.content_hash,
    PaperRow.authors,
    PaperRow.published,
    PaperRow.has_code,
    PaperRow.categories,
)


def _doc(row) -> PaperDoc:
    return PaperDoc(
        id=row[0],
        title=row[1] or "",
        abstract=row[2] or "",
        content_hash=row[3] or "",
        authors=list(row[4] or []),
        published=row[5],
        has_code=bool(row[6]),
        categories=list(row[7] or []),
    )


def chunks(values: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def paper_docs(session: Session, ids: Sequence[str]) -> dict[str, PaperDoc]:
    """Docs by id; ids not in the database are absent."""
    out: dict[str, PaperDoc] = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        for row in session.execute(select(*_COLUMNS).where(PaperRow.id.in_(chunk))):
            out[row[0]] = _doc(row)
    return out


def iter_paper_docs(session: Session, batch: int = 2000) -> Iterator[list[PaperDoc]]:
    """Every paper in id order, in batches (keyset pagination: constant memory)."""
    last = ""
    while True:
        rows = session.execute(
            select(*_COLUMNS).where(PaperRow.id > last).order_by(PaperRow.id).limit(batch)
        ).all()
        if not rows:
            return
        yield [_doc(r) for r in rows]
        last = rows[-1][0]


def iter_hashes(session: Session, batch: int = 5000) -> Iterator[list[tuple[str, str]]]:
    """(id, content_hash) of every paper, in batches."""
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


def existing(session: Session, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for chunk in chunks(list(ids)):
        out.update(session.scalars(select(PaperRow.id).where(PaperRow.id.in_(chunk))))
    return out


def duplicate_keys(session: Session, ids: Sequence[str]) -> dict[str, tuple[str, str | None, str]]:
    """(title key, arXiv id, content hash) by paper id: what makes two papers the same."""
    out: dict[str, tuple[str, str | None, str]] = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        stmt = select(PaperRow.id, PaperRow.title_key, PaperRow.arxiv_id, PaperRow.content_hash)
        for pid, title_key, arxiv_id, chash in session.execute(stmt.where(PaperRow.id.in_(chunk))):
            out[pid] = (title_key or "", arxiv_id, chash or "")
    return out


def published_dates(session: Session, ids: Sequence[str]) -> dict[str, date | None]:
    out: dict[str, date | None] = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        stmt = select(PaperRow.id, PaperRow.published).where(PaperRow.id.in_(chunk))
        out.update((pid, pub) for pid, pub in session.execute(stmt))
    return out


def newest_ids(session: Session, limit: int) -> list[str]:
    """Ids of the ``limit`` most recently published papers (undated ones last)."""
    stmt = (
        select(PaperRow.id)
        .order_by(PaperRow.published.is_(None), PaperRow.published.desc(), PaperRow.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def texts(session: Session, ids: Sequence[str]) -> dict[str, str]:
    """The indexed text (title. abstract) by paper id."""
    out: dict[str, str] = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        stmt = select(PaperRow.id, PaperRow.title, PaperRow.abstract).where(PaperRow.id.in_(chunk))
        for pid, title, abstract in session.execute(stmt):
            out[pid] = f"{title}. {abstract}" if abstract else (title or "")
    return out


def count_unembedded(session: Session, model: str) -> int:
    """Papers with no stored embedding for ``model``, or one made from an older text."""
    stmt = (
        select(func.count())
        .select_from(PaperRow)
        .outerjoin(
            EmbeddingRow, and_(EmbeddingRow.paper_id == PaperRow.id, EmbeddingRow.model == model)
        )
        .where(
            or_(EmbeddingRow.paper_id.is_(None), EmbeddingRow.content_hash != PaperRow.content_hash)
        )
    )
    return int(session.scalar(stmt) or 0)


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f2").tobytes()


def decode_vector(blob: bytes, dim: int) -> np.ndarray | None:
    """float16 or float32 bytes of a ``dim``-vector; None if the size does not fit."""
    if len(blob) == 2 * dim:
        return np.frombuffer(blob, dtype="<f2").astype(np.float32)
    if len(blob) == 4 * dim:
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return None


def load_embeddings(
    session: Session, docs: Sequence[PaperDoc], model: str, dim: int
) -> dict[str, np.ndarray]:
    """Stored vectors of the docs whose text has not changed since they were embedded."""
    wanted = {d.id: d.content_hash for d in docs}
    out: dict[str, np.ndarray] = {}
    for chunk in chunks(list(wanted)):
        stmt = select(EmbeddingRow.paper_id, EmbeddingRow.content_hash, EmbeddingRow.vector).where(
            EmbeddingRow.model == model, EmbeddingRow.paper_id.in_(chunk)
        )
        for pid, chash, blob in session.execute(stmt):
            if chash == wanted.get(pid):
                vec = decode_vector(blob, dim)
                if vec is not None:
                    out[pid] = vec
    return out


def save_embeddings(
    session: Session, rows: Sequence[tuple[str, str, np.ndarray]], model: str
) -> None:
    """Replace the stored vectors of (paper id, content hash, vector) rows for ``model``."""
    for chunk in chunks(list(rows)):
        ids = [pid for pid, _h, _v in chunk]
        session.execute(
            delete(EmbeddingRow).where(EmbeddingRow.model == model, EmbeddingRow.paper_id.in_(ids))
        )
        session.execute(
            EmbeddingRow.__table__.insert(),
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
