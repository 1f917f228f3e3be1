"""Atom 1.0 feeds: trending papers per window, and any search query.

Built with ElementTree (which escapes text); characters that XML 1.0 forbids, such as
control characters from a hostile query, are removed first so the feed always parses.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from papersift.model import Paper
from papersift.rank.trending import WINDOWS
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.web.deps import DbDep, SearchDep, SettingsDep, TrendingDep
from papersift.web.searching import parse_params
from papersift.web.templating import paper_url, with_query

router = APIRouter(include_in_schema=False)

ATOM = "http://www.w3.org/2005/Atom"
FEED_SIZE = 30
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str | None) -> str:
    return _XML_BAD.sub("", text or "")


def _stamp(paper: Paper) -> str:
    day = paper.updated or paper.published
    if day is not None:
        return datetime.combine(day, time(), tzinfo=UTC).isoformat()
    seen = paper.first_seen or datetime.now(UTC)
    return (seen if seen.tzinfo else seen.replace(tzinfo=UTC)).isoformat()


def atom(base: str, title: str, self_path: str, alt_path: str, papers: list[Paper]) -> bytes:
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(feed, f"{{{ATOM}}}title").text = _clean(title)
    ET.SubElement(feed, f"{{{ATOM}}}id").text = _clean(base + self_path)
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=_clean(base + self_path))
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", href=_clean(base + alt_path))
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = datetime.now(UTC).isoformat()
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    ET.SubElement(author, f"{{{ATOM}}}name").text = "papersift"
    for paper in papers:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        url = base + paper_url(paper.id)
        ET.SubElement(entry, f"{{{ATOM}}}id").text = _clean(url)
        ET.SubElement(entry, f"{{{ATOM}}}title").text = _clean(paper.title)
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", href=_clean(url))
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = _stamp(paper)
        for name in paper.authors[:20]:
            ET.SubElement(
                ET.SubElement(entry, f"{{{ATOM}}}author"), f"{{{ATOM}}}name"
            ).text = _clean(name)
        ET.SubElement(entry, f"{{{ATOM}}}summary").text = _clean(paper.abstract)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _respond(body: bytes) -> Response:
    return Response(
        body,
        media_type="application/atom+xml; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


def _papers(db: Database, ids: list[str]) -> list[Paper]:
    with db.session() as session:
        found = paper_store.get_papers(session, ids)
    return [found[i] for i in ids if i in found]


@router.get("/feeds/trending.atom")
def trending_feed(
    db: DbDep, settings: SettingsDep, trending: TrendingDep, window: str = "day"
) -> Response:
    if window not in WINDOWS:
        raise HTTPException(400, "window must be day, week or month")
    ranked = trending.get(window, FEED_SIZE)
    body = atom(
        settings.base_url,
        f"papersift: trending ({window})",
        f"/feeds/trending.atom?window={window}",
        f"/trending?window={window}",
        _papers(db, [i for i, _ in ranked]),
    )
    return _respond(body)


@router.get("/feeds/search.atom")
async def search_feed(
    request: Request, db: DbDep, settings: SettingsDep, search: SearchDep
) -> Response:
    params = parse_params(dict(request.query_params))
    if params.errors:
        raise HTTPException(400, "; ".join(params.errors))
    params.page, params.k = 1, FEED_SIZE

    def feed() -> Response:
        ids = [h.paper_id for h in search.run(params).hits] if params.q.strip() else []
        query = with_query(params.as_query())
        body = atom(
            settings.base_url,
            f"papersift: {params.q[:200]}",
            "/feeds/search.atom" + query,
            "/search" + query,
            _papers(db, ids),
        )
        return _respond(body)

    return await run_in_threadpool(feed)
