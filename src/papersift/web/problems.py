"""Errors: RFC 9457 problem+json under /api, a plain HTML page elsewhere, never a traceback.

Every exception reaching the app boundary goes through ``install(app)``'s handlers: HTTP
errors, invalid parameters, bad search parameters (400), search unavailable (503 with
Retry-After), bad or expired signed links (400, never cached); the catch-all one logs the
traceback server-side and tells the client only "internal error". A page that shows search
errors inside its own form (the search page) says so with :func:`show_search_errors_in`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response

from papersift.digest.tokens import TokenError
from papersift.store.db import StoreError, is_unavailable
from papersift.web.searching import BadParams, SearchUnavailable
from papersift.web.state import web_state
from papersift.web.templating import Renderer

log = logging.getLogger("papersift.web")

PROBLEM_TYPE = "application/problem+json"
RETRY_SOON = {"Retry-After": "1"}
RETRY_LATER = {"Retry-After": "5"}

# Shows a search error (status, message) inside a page; see show_search_errors_in.
SearchErrorView = Callable[[int, str], Response]


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_TYPE


def title_of(status: int) -> str:
    """The reason phrase of a status code ("Error" for codes outside the standard)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An RFC 9457 problem document (type about:blank: the status code says it all)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or title_of(status),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_bytes(status: int, detail: str, **fields: Any) -> bytes:
    """:func:`problem_body` as JSON bytes, for middleware that answers on its own."""
    return json.dumps(problem_body(status, detail, **fields)).encode()


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """A problem+json response."""
    body = problem_body(status, detail, instance=instance, **extra)
    return ProblemResponse(body, status_code=status, headers=headers)


def wants_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The HTML error page; falls back to bare HTML if templates themselves fail."""
    try:
        return Renderer(request, web_state(request).templates)(
            "error.html",
            {"status": status, "title": title_of(status), "message": message},
            status_code=status,
            headers=headers,
            cache_control=None,
        )
    except Exception:
        log.exception("error page failed")
        return HTMLResponse(
            f"<!doctype html><title>{status}</title><p>Error {status}.</p>",
            status_code=status,
            headers=headers,
        )


def _respond(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    if wants_api(request):
        return problem(status, detail, instance=request.url.path, headers=headers, **extra)
    return error_page(request, status, detail, headers)


_FRIENDLY = {
    404: "Nothing here: the page or paper does not exist.",
    405: "This address does not accept that method.",
}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else None
    if detail is None or detail == title_of(exc.status_code):
        detail = _FRIENDLY.get(exc.status_code, title_of(exc.status_code))
    return _respond(request, exc.status_code, detail, dict(exc.headers or {}) or None)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()[:20]
    ]
    if wants_api(request):
        return problem(422, "invalid request parameters", instance=request.url.path, errors=errors)
    fields = ", ".join(e["loc"][-1] for e in errors if e["loc"]) or "request"
    return error_page(request, 400, f"Invalid value for: {fields}.")


def show_search_errors_in(request: Request, view: SearchErrorView) -> None:
    """Let this request's search errors render as ``view(status, message)`` (a page with
    its form and the message) instead of the plain error page."""
    request.state.search_error_view = view


def _search_error(request: Request, status: int, detail: str, headers: dict[str, str]) -> Response:
    view: SearchErrorView | None = getattr(request.state, "search_error_view", None)
    if view is None or wants_api(request):
        return _respond(request, status, detail, headers or None)
    response = view(status, detail)
    response.headers.update(headers)
    return response


async def bad_params(request: Request, exc: Exception) -> Response:
    return _search_error(request, 400, str(exc), {})


async def search_unavailable(request: Request, exc: Exception) -> Response:
    return _search_error(request, 503, str(exc), RETRY_SOON)


async def bad_token(request: Request, exc: Exception) -> Response:
    """A forged, damaged or expired link: 400, and the page is never cached (it answers a
    URL that carries a signed token)."""
    response = _respond(request, 400, str(exc).capitalize() + ".")
    response.headers["Cache-Control"] = "private, no-store"
    return response


async def store_error(request: Request, exc: Exception) -> Response:
    """The database is locked, away or too slow: 503 with Retry-After, never a wait or a
    500 (any other database error is a bug: logged, 500)."""
    if is_unavailable(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _respond(
            request, 503, "The database is busy or unavailable; try again shortly.", RETRY_LATER
        )
    return await server_error(request, exc)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, 500, "internal error; it has been logged")


def install(app: FastAPI) -> None:
    """Register every error handler of the app (once, here)."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(BadParams, bad_params)
    app.add_exception_handler(SearchUnavailable, search_unavailable)
    app.add_exception_handler(TokenError, bad_token)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(Exception, server_error)
