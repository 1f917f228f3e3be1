"""A loopback HTTP server that replays scripted replies, for the harvest tests."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    hold: threading.Event | None = None  # wait for this before answering


@dataclass
class Request:
    at: float
    path: str
    params: dict[str, str]


class Recorder:
    """Scripted replies per request key; the last reply of a script repeats."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.log: list[Request] = []
        self.received: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.url = ""

    def script(self, key: str, *replies: Reply) -> None:
        self.scripts[key] = list(replies)

    def on_request(self, key: str) -> threading.Event:
        return self.received.setdefault(key, threading.Event())

    def reply_for(self, path: str, params: dict[str, str]) -> Reply:
        if "resumptionToken" in params:
            key = params["resumptionToken"]
        elif "start" in params:
            key = f"start={params['start']}"
        else:
            key = "first"
        with self.lock:
            self.log.append(Request(time.monotonic(), path, params))
            self.on_request(key).set()
            script = self.scripts.get(key)
            if not script:
                return Reply(404, b"not scripted")
            return script.pop(0) if len(script) > 1 else script[0]


@contextmanager
def replay_server() -> Iterator[Recorder]:
    """A threaded HTTP server on 127.0.0.1 answering from a :class:`Recorder`'s scripts."""
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            reply = recorder.reply_for(parts.path, params)
            if reply.hold is not None:
                reply.hold.wait(30)
            if reply.drop:
                self.close_connection = True
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            # A held reply released at teardown finds its client gone (it timed out or was
            # interrupted, as the test wanted): not an error worth a traceback on stderr.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{httpd.server_address[1]}/oai"
    try:
        yield recorder
    finally:
        for script in recorder.scripts.values():
            for reply in script:
                if reply.hold is not None:
                    reply.hold.set()
        httpd.shutdown()
        httpd.server_close()
