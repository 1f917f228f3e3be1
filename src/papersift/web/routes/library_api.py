"""The library in the JSON API (``/api/v1/library/...``): tags, saved papers, notes,
import and export, saved searches. Every route needs an account: a personal API token
(``Authorization: Bearer``) or the session cookie; a write with the cookie must come from
this site (Fetch Metadata / Origin), as votes must.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from papersift.library import LIBRARY_SORTS, LibraryError, NotFound, searches, service
from papersift.library.export import EXPORT_FORMATS, MEDIA_TYPES
from papersift.library.formats import FORMATS, MAX_IMPORT_BYTES
from papersift.web.caching import in_threadpool
from papersift.web.deps import SignedInDep, StateDep
from papersift.web.routes.library import (
    API_IMPORT_PATH,
    _search,
    index_new_papers,
    library_url,
)
from papersift.web.schemas import PaperOut, paper_fields, problem_responses
from papersift.web.security import same_origin

router = APIRouter(prefix="/api/v1/library", tags=["library"])
_ERRORS = problem_responses(400, 401, 403, 404)


class TagOut(BaseModel):
    name: str
    count: int
    url: str = Field(description="the tag's page on this server")


class SavedPaperOut(PaperOut):
    added_at: datetime
    tags: list[str]


class LibraryOut(BaseModel):
    tag: str | None
    total: int
    results: list[SavedPaperOut]


class SaveIn(BaseModel):
    paper_id: str = Field(max_length=300, description="id, arXiv id or DOI")
    tag: str | None = Field(None, max_length=300, description='default "Saved"')


class SaveOut(BaseModel):
    paper_id: str
    tag: str
    added: bool = Field(description="false if it was in the tag already")


class RemovedOut(BaseModel):
    removed: int


class NoteIn(BaseModel):
    text: str = Field(max_length=service.MAX_NOTE_CHARS, description="empty deletes the note")


class NoteOut(BaseModel):
    paper_id: str
    text: str


class EntryOut(BaseModel):
    n: int
    title: str
    status: str = Field(description="matched, added or failed")
    paper_id: str | None
    reason: str


class ImportOut(BaseModel):
    id: int
    format: str
    tag: str
    filename: str
    matched: int
    added: int
    failed: int
    entries: list[EntryOut]
    index_error: str | None = None


class SavedSearchIn(BaseModel):
    q: str = Field(min_length=1, max_length=10_000)
    name: str | None = Field(None, max_length=200)
    filters: dict[str, str] = Field(
        default_factory=dict, description="mode, sort, date_from, date_to, has_code, ..."
    )
    in_digest: bool = False


class SavedSearchOut(BaseModel):
    id: int
    name: str
    q: str
    filters: dict[str, str]
    in_digest: bool
    created_at: datetime
    last_seen_at: datetime


def _write_check(request: Request) -> None:
    """A cookie-signed-in write must come from this site (a token is not sent by browsers
    on their own, so a Bearer request passes)."""
    bearer = request.headers.get("authorization", "")[:7].lower() == "bearer "
    if not bearer and not same_origin(request):
        raise HTTPException(403, "Cross-site requests cannot change a library.")


def _fail(exc: LibraryError) -> HTTPException:
    return HTTPException(404 if isinstance(exc, NotFound) else 400, str(exc))


def _search_out(s: searches.SavedSearch) -> SavedSearchOut:
    return SavedSearchOut(
        id=s.id,
        name=s.name,
        q=s.query,
        filters=s.filters,
        in_digest=s.in_digest,
        created_at=s.created_at,
        last_seen_at=s.last_seen_at,
    )


@router.get("/tags", response_model=list[TagOut], responses=_ERRORS)
@in_threadpool
def api_library_tags(state: StateDep, account: SignedInDep) -> list[TagOut]:
    """The reader's tags with how many papers each holds."""
    return [
        TagOut(name=t.name, count=t.count, url=library_url(t.name))
        for t in service.tags(state.db, account.id)
    ]


@router.get("", response_model=LibraryOut, responses=_ERRORS)
@in_threadpool
def api_library(
    state: StateDep,
    account: SignedInDep,
    tag: str | None = Query(None, max_length=300),
    sort: str = Query(
        "added", description=f"one of {', '.join(LIBRARY_SORTS)} (or relevance with q)"
    ),
    q: str = Query("", max_length=1000, description="search inside the tag"),
) -> LibraryOut:
    """The papers of one tag (or of the whole library), sorted, optionally searched."""
    try:
        items = service.papers(
            state.db, account.id, tag, sort=sort, query=q, search=lambda: _search(state)
        )
    except LibraryError as exc:
        raise _fail(exc) from None
    results = [
        SavedPaperOut(**paper_fields(i.paper, 0), added_at=i.added_at, tags=i.tags) for i in items
    ]
    return LibraryOut(tag=tag, total=len(results), results=results)


@router.post("/papers", response_model=SaveOut, responses=_ERRORS)
async def api_library_save(
    request: Request, state: StateDep, account: SignedInDep, body: SaveIn
) -> SaveOut:
    """Save a paper into a tag (created if new; default "Saved")."""
    _write_check(request)
    try:
        pid, tag, added = await run_in_threadpool(
            service.save, state.db, account.id, body.paper_id, body.tag
        )
    except LibraryError as exc:
        raise _fail(exc) from None
    return SaveOut(paper_id=pid, tag=tag, added=added)


@router.delete("/papers/{paper_id:path}", response_model=RemovedOut, responses=_ERRORS)
async def api_library_remove(
    request: Request,
    state: StateDep,
    account: SignedInDep,
    paper_id: str,
    tag: str | None = Query(None, max_length=300, description="only from this tag"),
) -> RemovedOut:
    """Take a paper out of one tag, or out of the whole library."""
    _write_check(request)
    try:
        n = await run_in_threadpool(service.remove, state.db, account.id, paper_id, tag)
    except LibraryError as exc:
        raise _fail(exc) from None
    return RemovedOut(removed=n)


@router.get("/notes/{paper_id:path}", response_model=NoteOut, responses=_ERRORS)
@in_threadpool
def api_library_note(state: StateDep, account: SignedInDep, paper_id: str) -> NoteOut:
    """The reader's private note on a paper ("" if none)."""
    return NoteOut(paper_id=paper_id, text=service.note(state.db, account.id, paper_id))


@router.put("/notes/{paper_id:path}", response_model=NoteOut, responses=_ERRORS)
async def api_library_set_note(
    request: Request, state: StateDep, account: SignedInDep, paper_id: str, body: NoteIn
) -> NoteOut:
    """Write the reader's private note on a paper (empty text deletes it)."""
    _write_check(request)
    try:
        await run_in_threadpool(service.set_note, state.db, account.id, paper_id, body.text)
    except LibraryError as exc:
        raise _fail(exc) from None
    return NoteOut(paper_id=paper_id, text=service.note(state.db, account.id, paper_id))


@router.post(
    API_IMPORT_PATH.removeprefix("/api/v1/library"),
    response_model=ImportOut,
    responses=problem_responses(400, 401, 403, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def api_library_import(
    request: Request,
    state: StateDep,
    account: SignedInDep,
    tag: str | None = Query(None, max_length=300, description="default: the file's name"),
    format: str | None = Query(None, description=f"one of {', '.join(FORMATS)}; default: detected"),
    filename: str = Query("", max_length=255),
) -> ImportOut:
    """Import a BibTeX, RIS or CSL-JSON export (the request body is the file, at most
    5 MB): each entry matched by arXiv id, DOI or title, or added as a new paper."""
    _write_check(request)
    data = await request.body()
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"the file is larger than {MAX_IMPORT_BYTES} bytes")

    def run() -> ImportOut:
        outcome = service.import_file(
            state.db,
            account.id,
            data,
            filename=filename,
            tag_name=tag,
            format=format,
            index=lambda ids: index_new_papers(state, ids),
        )
        state.search.cache.clear()
        return ImportOut(**outcome.to_dict())

    try:
        return await run_in_threadpool(run)
    except LibraryError as exc:
        raise _fail(exc) from None


@router.get(
    "/export",
    responses={
        200: {"content": {m: {} for m, _ in MEDIA_TYPES.values()}, "description": "the file"},
        **_ERRORS,
    },
    response_class=Response,
)
@in_threadpool
def api_library_export(
    state: StateDep,
    account: SignedInDep,
    tag: str | None = Query(None, max_length=300, description="default: the whole library"),
    format: str = Query("bibtex", description=f"one of {', '.join(EXPORT_FORMATS)}"),
) -> Response:
    """A tag's papers as BibTeX, RIS or CSL-JSON."""
    try:
        body = service.export_tag(state.db, account.id, tag, format)
    except LibraryError as exc:
        raise _fail(exc) from None
    media, _ = MEDIA_TYPES[format]
    return Response(
        body, media_type=f"{media}; charset=utf-8", headers={"Cache-Control": "private, no-store"}
    )


@router.get("/searches", response_model=list[SavedSearchOut], responses=_ERRORS)
@in_threadpool
def api_saved_searches(state: StateDep, account: SignedInDep) -> list[SavedSearchOut]:
    """The reader's saved searches."""
    return [_search_out(s) for s in searches.saved_searches(state.db, account.id)]


@router.post("/searches", response_model=SavedSearchOut, responses=_ERRORS)
async def api_save_search(
    request: Request, state: StateDep, account: SignedInDep, body: SavedSearchIn
) -> SavedSearchOut:
    """Save a search (query and the search page's filters)."""
    _write_check(request)
    try:
        item = await run_in_threadpool(
            lambda: searches.save_search(
                state.db, account.id, body.q, body.filters, name=body.name, in_digest=body.in_digest
            )
        )
    except LibraryError as exc:
        raise _fail(exc) from None
    return _search_out(item)


@router.delete("/searches/{search_id}", response_model=RemovedOut, responses=_ERRORS)
async def api_delete_search(
    request: Request, state: StateDep, account: SignedInDep, search_id: int
) -> RemovedOut:
    _write_check(request)
    try:
        await run_in_threadpool(searches.delete_search, state.db, account.id, search_id)
    except LibraryError as exc:
        raise _fail(exc) from None
    return RemovedOut(removed=1)
