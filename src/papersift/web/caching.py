"""JSON responses with a strong ETag and Cache-Control, answering 304 on a matching
If-None-Match: clients and proxies revalidate cheaply instead of refetching."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request
from starlette.responses import Response

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


def cached_json(
    request: Request, payload: Any, cache_control: str = SHORT, status_code: int = 200
) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    etag = etag_for(body)
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)
