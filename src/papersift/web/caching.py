"""JSON answers with a strong ETag and Cache-Control, answering 304 on a matching
If-None-Match: clients and proxies revalidate cheaply instead of refetching.

A route opts in with ``dependencies=[cache_control(POLICY)]``; :class:`CachedRoute`
(the route class of the API router) then adds the ETag to its 200 answers.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

P = ParamSpec("P")
R = TypeVar("R")

# Data that changes with votes: always revalidate. Search results change only on ingest.
REVALIDATE = "public, no-cache"
SHORT = "public, max-age=60"


def etag_for(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [part.strip().removeprefix("W/") for part in header.split(",")]
    return etag in candidates


def cache_control(policy: str) -> Any:
    """A route dependency: its successful answers carry ``Cache-Control: policy``."""

    async def set_policy(response: Response) -> None:
        response.headers["Cache-Control"] = policy

    return Depends(set_policy)


class CachedRoute(APIRoute):
    """A route whose 200 GET answers with a Cache-Control policy also carry an ETag."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def with_etag(request: Request) -> Response:
            response = await handle(request)
            if (
                request.method != "GET"
                or response.status_code != 200
                or "cache-control" not in response.headers
            ):
                return response
            etag = etag_for(bytes(response.body))
            headers = {
                "ETag": etag,
                "Cache-Control": response.headers["cache-control"],
                "Vary": "Accept-Encoding",
            }
            if _matches(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers=headers)
            response.headers.update(headers)
            return response

        return with_etag


def in_threadpool(handler: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """A blocking handler as an ``async`` one that runs it in the thread pool.

    FastAPI checks the response model of a plain ``def`` handler in the thread pool as
    well: a second thread hop per request (~0.1 ms measured). Wrapped, the model is checked
    in the event loop. FastAPI reads the handler's parameters through ``__wrapped__``.
    """

    @functools.wraps(handler)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await run_in_threadpool(handler, *args, **kwargs)

    return run
