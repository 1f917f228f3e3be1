"""Author and category pages (their papers, newest first) and their Atom feeds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from papersift.store import daily as daily_store
from papersift.store.daily import PaperPage
from papersift.store.db import Session
from papersift.web.deps import DbDep, RenderDep, SettingsDep, VisitorDep
from papersift.web.resources import cards, clean_ref, page_number
from papersift.web.routes.feeds import FEED_SIZE, _papers, _respond, atom
from papersift.web.templating import author_url, category_url

router = APIRouter(include_in_schema=False)

PEOPLE_PAGE = 30
MAX_PAGES = 1000


def _name(raw: str, what: str) -> str:
    """A path value that could be an author or category name, or a 404."""
    cleaned = clean_ref(raw)
    if cleaned is None:
        raise HTTPException(404, f"No papers for this {what}.")
    return " ".join(cleaned.split())


def _by_author(session: Session, name: str, limit: int, offset: int) -> PaperPage:
    return daily_store.papers_by_author(session, name, limit=limit, offset=offset)


def _in_category(session: Session, name: str, limit: int, offset: int) -> PaperPage:
    return daily_store.papers_in_category(session, name, limit=limit, offset=offset)


def _list_page(
    render: RenderDep,
    db: DbDep,
    visitor: VisitorDep,
    kind: str,
    name: str,
    page: str | None,
) -> Response:
    number = page_number(page, last=MAX_PAGES)
    query = _by_author if kind == "author" else _in_category
    with db.session() as session:
        found = query(session, name, PEOPLE_PAGE, (number - 1) * PEOPLE_PAGE)
        if found.total == 0:
            raise HTTPException(404, f"No papers for this {kind}.")
        if not found.ids:
            raise HTTPException(400, "page must be within range: this one has no papers")
        items = cards(session, found.ids, visitor)
    pages = -(-found.total // PEOPLE_PAGE) if found.total is not None else 0
    url = author_url(name) if kind == "author" else category_url(name)
    context: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "items": items,
        "total": found.total,
        "page": number,
        "pages": pages,
        "more": found.more,
        "counted_up_to": daily_store.SMALL_LIST,
        "feed_url": f"/feeds/{kind}/{url.rsplit('/', 1)[1]}.atom",
    }
    return render("people.html", context)


@router.get("/authors/{name:path}")
def author_page(
    render: RenderDep, db: DbDep, visitor: VisitorDep, name: str, page: str | None = None
) -> Response:
    """An author's papers, newest first (names match exactly, ignoring case)."""
    return _list_page(render, db, visitor, "author", _name(name, "author"), page)


@router.get("/categories/{name:path}")
def category_page(
    render: RenderDep, db: DbDep, visitor: VisitorDep, name: str, page: str | None = None
) -> Response:
    """A category's papers (arXiv categories such as cs.CL), newest first."""
    return _list_page(render, db, visitor, "category", _name(name, "category"), page)


async def _feed(db: DbDep, base: str, kind: str, name: str) -> Response:
    def build() -> Response:
        query = _by_author if kind == "author" else _in_category
        with db.session() as session:
            found = query(session, name, FEED_SIZE, 0)
        if not found.ids:
            raise HTTPException(404, f"No papers for this {kind}.")
        page = author_url(name) if kind == "author" else category_url(name)
        self_path = f"/feeds/{kind}/{page.rsplit('/', 1)[1]}.atom"
        title = f"papersift: papers by {name}" if kind == "author" else f"papersift: {name}"
        return _respond(atom(base, title, self_path, page, _papers(db, found.ids)))

    return await run_in_threadpool(build)


@router.get("/feeds/author/{name:path}.atom")
async def author_feed(db: DbDep, settings: SettingsDep, name: str) -> Response:
    return await _feed(db, settings.base_url, "author", _name(name, "author"))


@router.get("/feeds/category/{name:path}.atom")
async def category_feed(db: DbDep, settings: SettingsDep, name: str) -> Response:
    return await _feed(db, settings.base_url, "category", _name(name, "category"))
