"""Visitor identity, CSRF tokens and the security middleware of the web app.

- A visitor is an opaque random id in a cookie signed with ``Settings.secret_key()``
  (itsdangerous); forged or tampered cookies are ignored and a fresh id is issued.
- A CSRF token is the visitor id signed with a timestamp under another salt: a form post
  is accepted when its token unsigns, is younger than ``CSRF_MAX_AGE`` and names the
  visitor of the cookie sent with it (a double-submit scheme without server state).
- ``SecurityMiddleware`` (pure ASGI, so it adds no per-request task): refuses bodies over
  ``MAX_BODY`` bytes with 413, adds CSP and the other security headers to every response,
  and sets the visitor cookie when a handler issued a new id; a request body that stalls
  for ``body_timeout`` seconds gets 408, and a redirect never names the request's ``Host``.
- ``ProxyHeadersMiddleware``: ``X-Forwarded-For``/``-Proto`` are believed only from the
  peers in ``forwarded_allow_ips`` (none by default), so a client cannot choose its address.
- ``HostCheckMiddleware``: ``Host`` headers outside ``trusted_hosts`` get 400.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("papersift.web")

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


def seen_visitor(conn: HTTPConnection) -> str | None:
    """The visitor of a valid cookie issued on an earlier request, or None: a vote needs
    one, so a script that never loaded a page cannot vote, and an id minted on the vote
    itself does not count."""
    if conn.scope.get("state", {}).get("new_visitor_cookie"):
        return None
    return visitor_id(conn, create=False)


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


class BodyTimeout(HTTPException):
    """The client stopped sending its request body for ``body_timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        super().__init__(408, f"request body not received within {timeout:g} s")


def _local_location(
    headers: Sequence[tuple[bytes, bytes]], host: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The response headers with an absolute ``Location`` on the request's own ``Host``
    made relative (the router's trailing-slash redirect builds it from the Host header,
    which the client chose)."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name.lower() == b"location" and host and b"://" in value[:10]:
            parts = urlsplit(value.decode("latin-1"))
            if parts.netloc.encode("latin-1").lower() == host.lower():
                local = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                if local.startswith("//"):
                    local = "/" + local.lstrip("/")
                value = local.encode("latin-1")
        out.append((name, value))
    return out


class SecurityMiddleware:
    """Body size limit, security headers and the visitor cookie, for every response."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = MAX_BODY,
        secure_cookies: bool = False,
        body_timeout: float = 20.0,
        upload_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        # Paths that take a file upload (a library import) and their own, larger limit.
        self.upload_limits = dict(upload_limits or {})
        self.secure_cookies = secure_cookies
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path: str = scope.get("path", "")
        is_api = path.startswith("/api/")
        limit = self.upload_limits.get(path, self.max_body)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = True
            if too_big:
                await self._reject_size(scope, receive, send, is_api, limit)
                return

        received = 0
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later receives wait for the disconnect: no deadline on those
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                raise BodyTimeout(self.body_timeout) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise BodyTooLarge(limit)
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
                message["headers"] = [
                    *_local_location(message.get("headers", []), headers.get(b"host")),
                    *extra,
                ]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await self._reject_size(scope, receive, send, is_api, limit)
        except BodyTimeout as exc:
            if not started:
                timeout = PlainTextResponse(
                    exc.detail, 408, headers={"connection": "close", "content-security-policy": CSP}
                )
                await timeout(scope, receive, send)
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

    async def _reject_size(
        self, scope: Scope, receive: Receive, send: Send, is_api: bool, limit: int
    ) -> None:
        await _drain(receive)
        detail = f"request body larger than {limit} bytes"
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


# -- client address and host ---------------------------------------------------------------
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[bool, list[Network]]:
    """(any address, networks) from a ``forwarded_allow_ips`` value."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    return "*" in items, [ipaddress.ip_network(v, strict=False) for v in items if v != "*"]


def client_key(ip: str) -> str:
    """The address a limit counts: an IPv4 address, or the /64 of an IPv6 one (one
    household or host gets a whole /64, so counting single IPv6 addresses counts nothing)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64] or "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class ProxyHeadersMiddleware:
    """Take the client address and scheme from ``X-Forwarded-For``/``-Proto`` when, and only
    when, the TCP peer is a trusted proxy. The address is the right-most hop that is not
    itself a trusted proxy: what the nearest untrusted party sent is all that can be known.
    ``papersift serve`` turns uvicorn's own handling off, so this is the one rule."""

    def __init__(self, app: ASGIApp, *, allow: str = "") -> None:
        self.app = app
        self.any, self.networks = parse_networks(allow)
        self.enabled = self.any or bool(self.networks)

    def trusted(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client and self.trusted(client[0]):
                headers = dict(scope.get("headers") or [])
                forwarded = headers.get(b"x-forwarded-for")
                if forwarded:
                    hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
                    chosen = hops[0] if hops else client[0]
                    for hop in reversed(hops):
                        if not self.trusted(hop):
                            chosen = hop
                            break
                    scope["client"] = (chosen[:64], 0)
                proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
                if proto in ("http", "https"):
                    scope["scheme"] = proto
        await self.app(scope, receive, send)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "testserver")


def allowed_hosts(trusted_hosts: str, base_url: str) -> list[str]:
    """The ``trusted_hosts`` setting as a list; empty: the host of ``base_url`` and the
    loopback names (``testserver`` is Starlette's test client; no public DNS name is
    single-label, so no one can point a browser at it)."""
    items = [h for h in trusted_hosts.split(",") if h]
    if items:
        return items
    host = urlsplit(base_url).hostname or "127.0.0.1"
    return list(dict.fromkeys([host.lower(), *LOOPBACK_NAMES]))


class HostCheckMiddleware(TrustedHostMiddleware):
    """Starlette's trusted-host check with a message that says which setting to change."""

    def __init__(self, app: ASGIApp, *, hosts: list[str]) -> None:
        super().__init__(app, allowed_hosts=hosts, www_redirect=False)
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        name = host.split(":")[0] if not host.startswith("[") else host[1:].split("]")[0]
        name = name.lower()
        for pattern in self.allowed_hosts:
            if name == pattern or (pattern.startswith("*") and name.endswith(pattern[1:])):
                await self.app(scope, receive, send)
                return
        log.warning("refused Host %r (set PAPERSIFT_TRUSTED_HOSTS to serve it)", host[:100])
        response = PlainTextResponse(
            "Invalid host header: this server answers for "
            f"{', '.join(self.hosts)} (PAPERSIFT_TRUSTED_HOSTS, PAPERSIFT_BASE_URL).",
            400,
        )
        await response(scope, receive, send)
