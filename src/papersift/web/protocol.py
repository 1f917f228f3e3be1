"""uvicorn's HTTP protocol with the limits a server facing slow clients needs.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but sets no deadline
for a request's headers, and its concurrency limit is only checked once headers are
complete: a client trickling header bytes holds a connection (and a file descriptor)
forever, and enough of them made every new connection fail. This protocol, per worker:

- gives a request ``header_timeout`` seconds from its first byte (or from the connection
  being accepted) to complete its headers, then closes the connection;
- refuses headers larger than ``MAX_HEADER_BYTES`` with 431;
- accepts at most ``max_connections`` open connections, and ``max_connections_per_ip``
  from one client address (an IPv6 /64; not counted for the proxies in
  ``forwarded_allow_ips``), answering the others 503 and closing them at once.

The limits come from ``papersift.settings.current()`` in the worker (``papersift serve``
passes the home and config file to its workers); bodies have their own timeout in the app
(``SecurityMiddleware``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from papersift.web.security import ProxyHeadersMiddleware, client_key

MAX_HEADER_BYTES = 128 * 1024  # the request line and headers of one request

_REFUSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 22\r\n\r\ntoo many connections\r\n"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8"
    b"\r\nconnection: close\r\ncontent-length: 25\r\n\r\nrequest headers too large"
)


class Limits:
    """The limits of this worker, read once from the settings."""

    def __init__(self) -> None:
        from papersift.settings import current

        settings = current()
        self.header_timeout = settings.header_timeout
        self.max_connections = settings.max_connections
        self.per_ip = settings.max_connections_per_ip
        self.open: Counter[str] = Counter()  # open connections per client address
        self.proxies = ProxyHeadersMiddleware(None, allow=settings.forwarded_allow_ips)  # type: ignore[arg-type]

    def capped(self, host: str) -> bool:
        """Whether the per-address cap applies: not to a trusted proxy, whose connections
        carry every client's requests."""
        return not (self.proxies.enabled and self.proxies.trusted(host))


_limits: Limits | None = None


def limits() -> Limits:
    global _limits
    if _limits is None:
        _limits = Limits()
    return _limits


class GuardedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a header deadline, a header size cap and connection caps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits()
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = True
        self._counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else "-"
        key = client_key(host)
        lim = self._limits
        over_ip = lim.open[key] >= lim.per_ip and lim.capped(host)
        if len(self.connections) > lim.max_connections or over_ip:
            transport.write(_REFUSE)
            transport.close()
            return
        lim.open[key] += 1
        self._counted = key
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            lim = self._limits
            lim.open[self._counted] -= 1
            if lim.open[self._counted] <= 0:
                del lim.open[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout, self._headers_too_slow
            )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._disarm()
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()
