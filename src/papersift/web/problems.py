"""Errors: RFC 9457 problem+json under /api, a plain HTML page elsewhere, never a traceback.

Every exception reaching the app boundary goes through ``install(app)``'s handlers; the
catch-all one logs the traceback server-side and tells the client only "internal error".
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response

log = logging.getLogger("papersift.web")

PROBLEM_TYPE = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_TYPE


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """An RFC 9457 problem document (type about:blank: the status code says it all)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


def wants_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The HTML error page; falls back to bare HTML if templates themselves fail."""
    try:
        templates = request.app.state.templates
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "title": _title(status), "message": message},
            status_code=status,
            headers=headers,
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


async def http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else None
    if detail is None or detail == _title(exc.status_code):
        detail = _FRIENDLY.get(exc.status_code, _title(exc.status_code))
    return _respond(request, exc.status_code, detail, dict(exc.headers or {}) or None)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
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


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, 500, "internal error; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)
