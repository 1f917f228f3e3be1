"""What operators watch: readiness, Prometheus metrics, request ids, CORS and compression.

Metrics come from prometheus-client. Request counts and latencies are per worker process;
with several workers ``papersift serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a folder in
the home so a scrape of any worker adds up every worker (prometheus-client's multiprocess
mode). Figures that live in the database (documents, embedding backlog, outbox, digests)
are read when scraped, so every host reports the same truth.

Request ids come from asgi-correlation-id: an incoming ``X-Request-ID`` is kept (when it is a
UUID), otherwise one is made; it is in the response header and in every log line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from papersift.jobs.queue import JobQueue
from papersift.search import MODES
from papersift.store import ledger as ledger_store
from papersift.store import outbox as outbox_store
from papersift.store import search_docs
from papersift.store.db import Database, StoreError

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SEARCH_ROUTES = {"/api/v1/search", "/search", "/feeds/search.atom"}

REQUESTS = Counter(
    "papersift_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "papersift_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
SEARCH_LATENCY = Histogram(
    "papersift_search_duration_seconds",
    "Time to answer a search request, by mode",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
SHED = Counter("papersift_shed_requests", "Search requests turned away while busy (503)")


def _route_of(scope: Scope) -> str:
    """The route's path template (``/papers/{paper_id}``), never the raw path: raw paths
    would make one time series per paper and let any client grow the metrics."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"


def _mode_of(scope: Scope) -> str:
    raw = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("mode", [""])[0]
    return raw if raw in MODES else "hybrid"


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_of(scope)
            method = scope.get("method", "GET")
            REQUESTS.labels(method, route, str(status[0])).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if route in SEARCH_ROUTES and status[0] == 200:
                SEARCH_LATENCY.labels(_mode_of(scope)).observe(elapsed)


class DatabaseFigures(Collector):
    """Gauges read from the database and the index when Prometheus scrapes."""

    def __init__(
        self,
        db: Database,
        index_status: Callable[[], dict[str, Any]],
        model_id: Callable[[], str],
        jobs: Callable[[], JobQueue] | None = None,
    ) -> None:
        self.db = db
        self.index_status = index_status
        self.model_id = model_id
        self.jobs = jobs

    def collect(self) -> Iterable[Metric]:
        status = self.index_status()
        docs = GaugeMetricFamily("papersift_index_documents", "Papers in the live index")
        docs.add_metric([], float(status.get("docs", 0)))
        vectors = GaugeMetricFamily("papersift_index_vectors", "Vectors in the live index")
        vectors.add_metric([], float(status.get("vectors", 0)))
        generation = GaugeMetricFamily("papersift_index_generation", "Live index generation")
        generation.add_metric([], float(status.get("gen", 0)))
        age = GaugeMetricFamily("papersift_index_age_seconds", "Seconds since the index changed")
        updated = status.get("updated")
        age.add_metric([], time.time() - float(updated) if updated else float("nan"))
        yield from (docs, vectors, generation, age)
        try:
            with self.db.session() as session:
                backlog = search_docs.count_unembedded(session, self.model_id())
                outbox = outbox_store.counts(session)
                digests = ledger_store.counts(session)
        except StoreError:
            return  # the database is away: /readyz says so; metrics stay scrapeable
        pending = GaugeMetricFamily(
            "papersift_embedding_backlog", "Papers whose embedding is missing or stale"
        )
        pending.add_metric([], float(backlog))
        queue = GaugeMetricFamily(
            "papersift_outbox_mails", "Mails in the outbox", labels=["status"]
        )
        for name, count in sorted(outbox.items()):
            queue.add_metric([name], float(count))
        sent = GaugeMetricFamily(
            "papersift_digests", "Digests in the ledger by state", labels=["status"]
        )
        for name, count in sorted(digests.items()):
            sent.add_metric([name], float(count))
        yield from (pending, queue, sent)
        yield from self._jobs()

    def _jobs(self) -> Iterable[Metric]:
        """Queue depth (jobs waiting, per queue) and jobs per state."""
        if self.jobs is None:
            return
        try:
            jobs = self.jobs()
            depth, counts = jobs.depth(), jobs.counts()
        except (StoreError, OSError):
            return
        waiting = GaugeMetricFamily(
            "papersift_queue_depth", "Background jobs waiting to run", labels=["queue"]
        )
        for name, count in sorted(depth.items()):
            waiting.add_metric([name], float(count))
        states = GaugeMetricFamily("papersift_jobs", "Background jobs by state", labels=["status"])
        for name, count in sorted(counts.items()):
            states.add_metric([name], float(count))
        yield from (waiting, states)


def metrics_registry(extra: Collector) -> CollectorRegistry:
    """The registry one scrape reads: all workers' request metrics plus the database's."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in (REQUESTS, LATENCY, SEARCH_LATENCY, SHED):
            registry.register(metric)
    registry.register(extra)
    return registry


def readiness(
    db: Database,
    index_status: Callable[[], dict[str, Any]],
    jobs: Callable[[], JobQueue] | None = None,
    warmed: Callable[[], bool] | None = None,
) -> tuple[bool, dict]:
    """Whether this process can serve searches now, with the reason for each check (the
    job queue: reachable; a missing worker is a warning, searches do not need one; warm:
    the model and indexes are loaded, so the first search is not a cold one)."""
    checks: dict[str, Any] = {}
    ready = True
    if warmed is not None:
        if warmed():
            checks["warm"] = {"ok": True}
        else:
            ready = False
            checks["warm"] = {"ok": False, "reason": "loading the model and the indexes"}
    try:
        with db.session() as session:
            session.connection().exec_driver_sql("SELECT 1")
        checks["database"] = {"ok": True}
    except StoreError as exc:
        ready = False
        checks["database"] = {"ok": False, "reason": str(exc).splitlines()[0][:200]}
    status = index_status()
    if status.get("built"):
        updated = status.get("updated")
        checks["index"] = {
            "ok": True,
            "generation": status.get("gen"),
            "documents": status.get("docs"),
            "age_seconds": round(time.time() - float(updated), 1) if updated else None,
        }
    else:
        ready = False
        checks["index"] = {"ok": False, "reason": "no index generation is loaded yet"}
    if jobs is not None:
        try:
            checks["queue"] = jobs().check()
        except (StoreError, OSError) as exc:
            checks["queue"] = {"ok": False, "reason": str(exc).splitlines()[0][:200]}
        ready = ready and bool(checks["queue"].get("ok"))
    return ready, checks


def install(
    app: FastAPI,
    db: Database,
    index_status: Callable[[], dict[str, Any]],
    *,
    model_id: Callable[[], str],
    cors_origins: list[str],
    jobs: Callable[[], JobQueue] | None = None,
    warmed: Callable[[], bool] | None = None,
) -> None:
    """Add /readyz and /metrics, request ids, metrics, CORS for the API and compression."""
    registry = metrics_registry(DatabaseFigures(db, index_status, model_id, jobs))

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        ready, checks = readiness(db, index_status, jobs, warmed)
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        headers = {"Cache-Control": "no-store"}
        if not ready:
            headers["Retry-After"] = "5"
        return JSONResponse(body, status_code=200 if ready else 503, headers=headers)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return Response(
            generate_latest(registry),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )

    # Outermost last: compression wraps everything, request ids are set before any log line.
    app.add_middleware(MetricsMiddleware)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match"],
            expose_headers=["ETag", "X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
