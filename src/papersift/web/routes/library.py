"""A reader's library on the web: ``/library`` (every saved paper) and ``/library/<tag>``
with sort and search inside, saving from cards and paper pages, private notes, import of
BibTeX/RIS/CSL-JSON files with a per-entry report, and export of a tag.

Every page and form needs a signed-in account (anonymous: redirect to sign-in); forms
carry the CSRF token. Saved searches are in :mod:`papersift.web.routes.saved_searches`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from papersift.accounts import Account
from papersift.library import LIBRARY_SORTS, LibraryError, NotFound, searches, service
from papersift.library.export import EXPORT_FORMATS, MEDIA_TYPES
from papersift.library.formats import FORMATS, MAX_IMPORT_BYTES
from papersift.search import SearchService
from papersift.store.schema_library import DEFAULT_TAG
from papersift.web.deps import RenderDep, SignedInDep, StateDep
from papersift.web.security import CSRF_FIELD, verify_csrf
from papersift.web.state import WebState, web_state

log = logging.getLogger("papersift.web")
router = APIRouter(include_in_schema=False)

STALE_FORM = "This form has expired or did not come from this site; please submit it again."
IMPORT_PATH = "/library/import"
API_IMPORT_PATH = "/api/v1/library/import"
# The upload routes take a file up to MAX_IMPORT_BYTES (plus the form's own bytes).
UPLOAD_LIMITS = {IMPORT_PATH: MAX_IMPORT_BYTES + 64 * 1024, API_IMPORT_PATH: MAX_IMPORT_BYTES}
PER_PAGE = 50


def library_url(tag: str | None = None) -> str:
    return "/library" if tag is None else "/library/" + quote(tag, safe="")


def _safe_next(value: str | None, default: str) -> str:
    """A local path to return to (never another site)."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value[:2000]
    return default


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def _form(request: Request, *, max_fields: int = 10, max_files: int = 0) -> FormData:
    form = await request.form(max_files=max_files, max_fields=max_fields)
    if not verify_csrf(request, _field(form, CSRF_FIELD)):
        raise HTTPException(403, STALE_FORM)
    return form


def _search(state: WebState) -> SearchService:
    return state.search.service()


SYNC_INDEX = 200  # new papers an import indexes before it answers; more go on in the background


def index_new_papers(state: WebState, ids: list[str]) -> None:
    """Make an import's new papers searchable: at once for a few, else in a background
    thread (embedding thousands takes minutes; the server's start catches up after a crash)."""

    def run() -> None:
        try:
            _search(state).papers_changed(ids)
        except Exception:
            log.warning("indexing %d imported papers failed", len(ids), exc_info=True)
        state.search.cache.clear()

    if len(ids) <= SYNC_INDEX:
        _search(state).papers_changed(ids)
        return
    threading.Thread(target=run, name="library-index", daemon=True).start()


# -- what cards and paper pages show (template globals) -----------------------------------


def _signed_in(context: Context) -> tuple[Account, WebState, dict[Any, Any]] | None:
    account = context.get("account")
    request = context.get("request")
    if not isinstance(account, Account) or request is None:
        return None
    cache = request.scope.setdefault("state", {}).setdefault("library", {})
    return account, web_state(request), cache


@pass_context
def saved_tags(context: Context, paper_id: str) -> list[str] | None:
    """The signed-in reader's tags of a paper ([] if unsaved); None when anonymous."""
    found = _signed_in(context)
    if found is None:
        return None
    account, state, cache = found
    key = ("tags", paper_id)
    if key not in cache:
        cache[key] = service.tags_of(state.db, account.id, [paper_id]).get(paper_id, [])
    value: list[str] = cache[key]
    return value


@pass_context
def library_of(context: Context, paper_id: str) -> dict[str, Any] | None:
    """For the paper page: the reader's tags (all, and this paper's) and their note."""
    found = _signed_in(context)
    if found is None:
        return None
    account, state, _ = found
    return {
        "tags": saved_tags(context, paper_id) or [],
        "all": [t.name for t in service.tags(state.db, account.id)],
        "note": service.note(state.db, account.id, paper_id),
    }


def include_library(app: FastAPI) -> None:
    """Add the library's pages, saved searches and API to ``app`` (after its state is
    attached), and its globals to the app's templates."""
    from papersift.web.routes import library_api, saved_searches

    app.include_router(saved_searches.router)  # before /library/{tag}
    app.include_router(router)
    app.include_router(library_api.router)
    install(web_state(app).templates)


def install(templates: Jinja2Templates) -> None:
    """Give every template the library's globals (the card's save control, the paper
    page's tags and note)."""
    templates.env.globals.update(
        saved_tags=saved_tags, library_of=library_of, library_url=library_url
    )


# -- pages ---------------------------------------------------------------------------------


def _page(
    render: RenderDep, state: WebState, account: Account, request: Request, tag: str | None
) -> Response:
    query = request.query_params
    q = (query.get("q") or "").strip()[:1000]
    sort = query.get("sort") or ("relevance" if q else "added")
    errors: list[str] = []
    try:
        items = service.papers(
            state.db, account.id, tag, sort=sort, query=q, search=lambda: _search(state)
        )
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except LibraryError as exc:
        errors.append(str(exc))
        items = []
    page = query.get("page") or "1"
    number = int(page) if page.isascii() and page.isdecimal() and 0 < len(page) < 5 else 1
    pages = max(1, -(-len(items) // PER_PAGE))
    number = min(number, pages)
    context = {
        "tag": tag,
        "tags": service.tags(state.db, account.id),
        "items": items[(number - 1) * PER_PAGE : number * PER_PAGE],
        "total": len(items),
        "q": q,
        "sort": sort,
        "sorts": (("relevance",) if q else ()) + LIBRARY_SORTS,
        "page": number,
        "pages": pages,
        "base_query": {k: v for k, v in {"q": q, "sort": sort}.items() if v},
        "formats": EXPORT_FORMATS,
        "errors": errors,
        "saved_searches": searches.saved_searches(state.db, account.id),
        "imports_url": IMPORT_PATH,
    }
    return render("library/index.html", context, status_code=400 if errors else 200)


@router.get("/library")
def library_page(
    request: Request, render: RenderDep, state: StateDep, account: SignedInDep
) -> Response:
    return _page(render, state, account, request, None)


@router.get("/library/import")
def import_page(render: RenderDep, state: StateDep, account: SignedInDep) -> Response:
    return render("library/import.html", _import_context(state, account))


def _import_context(state: WebState, account: Account, **extra: Any) -> dict[str, Any]:
    return {
        "tags": service.tags(state.db, account.id),
        "formats": FORMATS,
        "max_mb": MAX_IMPORT_BYTES // (1024 * 1024),
        "report": None,
        "errors": [],
        **extra,
    }


@router.post(IMPORT_PATH)
async def import_upload(
    request: Request, render: RenderDep, state: StateDep, account: SignedInDep
) -> Response:
    form = await _form(request, max_files=1)
    upload = form.get("file")
    tag = _field(form, "tag") or None
    if not isinstance(upload, UploadFile) or not upload.filename:
        context = _import_context(state, account, errors=["Choose a file to import."])
        return render("library/import.html", context, status_code=400)
    data = await upload.read(MAX_IMPORT_BYTES + 1)
    name = upload.filename or ""

    def run() -> Response:
        try:
            outcome = service.import_file(
                state.db,
                account.id,
                data,
                filename=name,
                tag_name=tag,
                index=lambda ids: index_new_papers(state, ids),
            )
        except LibraryError as exc:
            context = _import_context(state, account, errors=[f"{name}: {exc}"])
            return render("library/import.html", context, status_code=400)
        state.search.cache.clear()  # the new papers are searchable now
        return RedirectResponse(f"/library/imports/{outcome.import_id}", status_code=303)

    return await run_in_threadpool(run)


@router.get("/library/imports/{import_id}")
def import_report_page(
    render: RenderDep, state: StateDep, account: SignedInDep, import_id: int
) -> Response:
    try:
        outcome = service.import_report(state.db, account.id, import_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return render("library/import.html", _import_context(state, account, report=outcome))


@router.get("/library/{tag}/export")
def export_tag(state: StateDep, account: SignedInDep, tag: str, format: str = "bibtex") -> Response:
    if format not in EXPORT_FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(EXPORT_FORMATS)}")
    try:
        body = service.export_tag(state.db, account.id, tag, format)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    media, ext = MEDIA_TYPES[format]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)[:60] or "library"
    return Response(
        body,
        media_type=f"{media}; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}.{ext}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/library/{tag}")
def tag_page(
    request: Request, render: RenderDep, state: StateDep, account: SignedInDep, tag: str
) -> Response:
    return _page(render, state, account, request, tag)


# -- forms ---------------------------------------------------------------------------------


def _fail(exc: LibraryError) -> HTTPException:
    return HTTPException(404 if isinstance(exc, NotFound) else 400, str(exc))


@router.post("/library/save")
async def save_form(request: Request, state: StateDep, account: SignedInDep) -> Response:
    """Save a paper into a tag (the chosen one, a new one typed in, or "Saved")."""
    form = await _form(request)
    paper_id = _field(form, "paper_id") or ""
    tag = (_field(form, "new_tag") or "").strip() or _field(form, "tag") or DEFAULT_TAG
    back = _safe_next(_field(form, "next"), library_url(tag))
    try:
        await run_in_threadpool(service.save, state.db, account.id, paper_id, tag)
    except LibraryError as exc:
        raise _fail(exc) from None
    return RedirectResponse(back, status_code=303)


@router.post("/library/remove")
async def remove_form(request: Request, state: StateDep, account: SignedInDep) -> Response:
    """Take a paper out of one tag (``tag``) or out of the library (no tag)."""
    form = await _form(request)
    paper_id = _field(form, "paper_id") or ""
    tag = _field(form, "tag") or None
    back = _safe_next(_field(form, "next"), library_url(tag))
    try:
        await run_in_threadpool(service.remove, state.db, account.id, paper_id, tag)
    except LibraryError as exc:
        raise _fail(exc) from None
    return RedirectResponse(back, status_code=303)


@router.post("/library/note")
async def note_form(request: Request, state: StateDep, account: SignedInDep) -> Response:
    form = await _form(request)
    paper_id = _field(form, "paper_id") or ""
    back = _safe_next(_field(form, "next"), "/library")
    try:
        await run_in_threadpool(
            service.set_note, state.db, account.id, paper_id, _field(form, "text") or ""
        )
    except LibraryError as exc:
        raise _fail(exc) from None
    return RedirectResponse(back, status_code=303)


@router.post("/library/{tag}/rename")
async def rename_form(
    request: Request, state: StateDep, account: SignedInDep, tag: str
) -> Response:
    form = await _form(request)
    try:
        new = await run_in_threadpool(
            service.rename_tag, state.db, account.id, tag, _field(form, "name") or ""
        )
    except LibraryError as exc:
        raise _fail(exc) from None
    return RedirectResponse(library_url(new), status_code=303)


@router.post("/library/{tag}/delete")
async def delete_form(
    request: Request, state: StateDep, account: SignedInDep, tag: str
) -> Response:
    await _form(request)
    try:
        await run_in_threadpool(service.delete_tag, state.db, account.id, tag)
    except LibraryError as exc:
        raise _fail(exc) from None
    return RedirectResponse("/library", status_code=303)
