"""Visitor identity, CSRF tokens and the security middleware of the web app.

- A visitor is an opaque random id in a cookie signed with ``Settings.secret_key()``
  (itsdangerous); forged or tampered cookies are ignored and a fresh id is issued.
- A CSRF token is the visitor id signed with a timestamp under another salt: a form post
  is accepted when its token unsigns, is younger than ``CSRF_MAX_AGE`` and names the
  visitor of the cookie sent with it (a double-submit scheme without server state).
- ``SecurityMiddleware`` (pure ASGI, so it adds no per-request task): refuses bodies over
  ``MAX_BODY`` bytes with 413, adds CSP and the other security headers to every response,
  and sets the visitor cookie when a handler issued a new id.
"""

from __future__ import annotations

import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

VISITOR_COOKIE = "ps_visitor"
VISITOR_MAX_AGE = 2 * 365 * 24 * 3600
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 7 * 24 * 3600
MAX_BODY = 64 * 1024
DRAIN_LIMIT = 4 * 1024 * 1024  # bytes read and dropped before a 413 (then just close)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (served from the local swagger-ui-bundle package) draws icons from data: URLs.
DOCS_CSP = CSP.replace("img-src 'self'", "img-src 'self' data:")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
]


class Signers:
    """The app's signing keys, derived once from the settings' secret."""

    def __init__(self, secret: str) -> None:
        self.visitor = URLSafeSerializer(secret, salt="papersift.visitor")
        self.csrf = URLSafeTimedSerializer(secret, salt="papersift.csrf")


def _signers(conn: HTTPConnection) -> Signers:
    signers: Signers = conn.app.state.web.signers
    return signers


def visitor_id(conn: HTTPConnection, *, create: bool = True) -> str | None:
    """The visitor's id from the signed cookie; a new one (cookie set on the way out) if
    there is none and ``create`` is true."""
    state = conn.scope.setdefault("state", {})
    if "visitor_id" in state:
        return state["visitor_id"]
    raw = conn.cookies.get(VISITOR_COOKIE)
    found: str | None = None
    if raw and len(raw) < 256:
        try:
            value = _signers(conn).visitor.loads(raw)
        except BadSignature:
            value = None
        if isinstance(value, str) and 0 < len(value) <= 64:
            found = value
    if found is None and create:
        found = secrets.token_urlsafe(18)
        state["new_visitor_cookie"] = _signers(conn).visitor.dumps(found)
    if found is not None:
        state["visitor_id"] = found
    return found


def csrf_token(conn: HTTPConnection) -> str:
    """A token for a form on this page, bound to the visitor (issued now if new)."""
    state = conn.scope.setdefault("state", {})
    if "csrf_token" not in state:
        state["csrf_token"] = _signers(conn).csrf.dumps(visitor_id(conn, create=True))
    return state["csrf_token"]


def verify_csrf(conn: HTTPConnection, token: str | None) -> bool:
    """True when ``token`` was issued to the visitor of this request's cookie, recently."""
    if not token or len(token) > 512:
        return False
    visitor = visitor_id(conn, create=False)
    if visitor is None or conn.scope.get("state", {}).get("new_visitor_cookie"):
        return False
    try:
        value = _signers(conn).csrf.loads(token, max_age=CSRF_MAX_AGE)
    except (BadSignature, SignatureExpired):
        return False
    return isinstance(value, str) and secrets.compare_digest(value, visitor)


def same_origin(conn: HTTPConnection) -> bool:
    """False when the browser says the request comes from another site (Fetch Metadata or
    Origin); requests without those headers (curl, scripts) pass."""
    site = conn.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return False
    origin = conn.headers.get("origin")
    if origin and origin != "null":
        host = conn.headers.get("host", "")
        return origin.split("://", 1)[-1] == host
    return origin != "null"


async def _drain(receive: Receive) -> None:
    """Read and drop what the client is still sending, up to DRAIN_LIMIT: answering and
    closing while it writes would make its TCP stack report a reset instead of our 413."""
    drained = 0
    while drained <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; an HTTPException so
    that FastAPI's body parsing re-raises it and the problem handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class SecurityMiddleware:
    """Body size limit, security headers and the visitor cookie, for every response."""

    def __init__(
        self, app: ASGIApp, *, max_body: int = MAX_BODY, secure_cookies: bool = False
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path: str = scope.get("path", "")
        is_api = path.startswith("/api/")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                await self._reject_size(scope, receive, send, is_api)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise BodyTooLarge(self.max_body)
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = list(SECURITY_HEADERS)
                csp = DOCS_CSP if path == "/docs" else CSP
                extra.append((b"content-security-policy", csp.encode()))
                cookie = state.get("new_visitor_cookie")
                if cookie:
                    extra.append((b"set-cookie", self._cookie(cookie).encode()))
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await self._reject_size(scope, receive, send, is_api)
        except Exception as exc:  # answer here so even a 500 carries the security headers
            if started:
                raise
            from starlette.requests import Request

            from papersift.web.problems import server_error

            response = await server_error(Request(scope), exc)
            await response(scope, receive, send_with_headers)

    def _cookie(self, value: str) -> str:
        parts = [
            f"{VISITOR_COOKIE}={value}",
            "Path=/",
            f"Max-Age={VISITOR_MAX_AGE}",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if self.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)

    async def _reject_size(self, scope: Scope, receive: Receive, send: Send, is_api: bool) -> None:
        await _drain(receive)
        detail = f"request body larger than {self.max_body} bytes"
        if is_api:
            from papersift.web.problems import problem_bytes  # (problems needs this module)

            body = problem_bytes(413, detail, title="Content Too Large")
            ctype = b"application/problem+json"
        else:
            body = f"<!doctype html><title>Too large</title><p>{detail}.</p>".encode()
            ctype = b"text/html; charset=utf-8"
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *SECURITY_HEADERS,
            (b"content-security-policy", CSP.encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
