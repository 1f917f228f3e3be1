"""The FastAPI application factory: settings, database, templates, middleware, routers."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from papersift import __version__
from papersift.ingest.staging import finish_interrupted
from papersift.keys import signing_key
from papersift.rank import trending as trending_mod
from papersift.search import get_service
from papersift.settings import Settings, load_settings
from papersift.store.db import Database, Timeouts
from papersift.web import observability, problems
from papersift.web.problems import PROBLEM_TYPE
from papersift.web.ratelimit import VOTE_LIMITS, Limit, RateLimiter, ViewCounter, bucket_store
from papersift.web.routes import (
    accounts,
    admin,
    api,
    comments,
    daily,
    docs,
    feeds,
    foryou,
    pages,
    people,
    search,
    subscriptions,
)
from papersift.web.routes.library import UPLOAD_LIMITS, include_library
from papersift.web.schemas import Problem
from papersift.web.searching import ResultCache, SearchGate, WebSearch
from papersift.web.security import (
    HostCheckMiddleware,
    ProxyHeadersMiddleware,
    SecurityMiddleware,
    Signers,
    allowed_hosts,
)
from papersift.web.shedding import SearchShedder
from papersift.web.state import WebState, attach, web_state
from papersift.web.templating import STATIC_DIR, make_templates

log = logging.getLogger("papersift.web")

TRENDING_TTL = 10.0  # seconds; votes invalidate it at once


class CachedStatic(StaticFiles):
    """Static files with long-lived caching: templates link them with a ?v=<hash>."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"cache-control", b"public, max-age=31536000, immutable"),
                ]
            await send(message)

        await super().__call__(scope, receive, send_cached)


def _warm_search(app: FastAPI, freeze_gc: bool = False) -> None:
    """Load the search service (model, indexes) in the background so the first visitors do
    not wait for it; failures only mean search loads on first use. (The feedback cache is
    not filled here any more: a miss reads the terms the catalog stores, 0.03 ms a paper,
    while finding the newest 4,096 papers to fill it with took 40 s at a million.)

    With ``freeze_gc`` (served processes), everything alive afterwards (modules, model,
    indexes, caches: ~130k objects) moves to the collector's permanent generation. A full
    collection scanned them all again while every request waited: measured 80 ms pauses
    under load on the sample corpus, none in 40 s at 80 searches/s after freezing.
    """
    try:
        finish_interrupted(web_state(app).db)  # revert a file a killed ingest left behind
    except Exception:
        log.warning("interrupted ingest not reverted yet", exc_info=True)
    state = web_state(app)
    service = None
    try:
        service = get_service(state.settings, state.db)
        service.search("warm up", k=1)
    except Exception:
        log.info("search warm-up skipped", exc_info=True)
    if freeze_gc:
        gc.collect()  # what is garbage now should not be frozen
        gc.freeze()
    state.warmed.set()
    # Ready first: the current index answers meanwhile. Comparing every paper's hash with
    # the index takes 48 s at a million papers and finds work only after a killed ingest.
    if service is not None and not state.settings.snapshot_url:  # (a follower's comes
        try:  # from the snapshot store)
            service.catch_up()  # papers an interrupted ingest left unindexed
        except Exception:
            log.warning("catching up with the database failed", exc_info=True)


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    warm_search: bool = True,
    freeze_gc: bool = False,
    vote_limits: tuple[Limit, Limit] = VOTE_LIMITS,
    search_concurrency: int = 2,
    search_wait: float = 0.5,
    max_searches_in_flight: int = 8,
) -> FastAPI:
    """A ready app for ``settings`` (default: from the environment); ``db`` shares an open
    database, ``freeze_gc`` is for served processes (see ``_warm_search``), ``vote_limits``
    are (per visitor, per IP) token buckets, and at most ``search_concurrency`` searches run
    at once (others wait ``search_wait`` s, then 503);
    more than ``max_searches_in_flight`` search requests get 503 at once."""
    settings = settings or load_settings()
    database = db or Database(
        settings.db_url,
        timeouts=Timeouts.for_requests(
            settings.db_busy_timeout, settings.db_connect_timeout, settings.db_statement_timeout
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_search:
            threading.Thread(target=_warm_search, args=(app, freeze_gc), daemon=True).start()
        else:  # nothing to wait for: search loads on first use
            web_state(app).warmed.set()
        following = threading.Event()
        if settings.snapshot_url:  # follow the published index (other hosts build it)
            from papersift.search.follow import follow_forever

            follower = get_service(settings, database)
            follower.follows_snapshots = True
            follow_forever(settings, follower.generations, following)
        yield
        following.set()
        web_state(app).close_jobs()
        if db is None:
            database.dispose()

    app = FastAPI(
        title="papersift",
        version=__version__,
        description="Search, browse and upvote research papers. Errors are "
        "application/problem+json (RFC 9457).",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # Operation ids are the handlers' names (`api_search`), stable across releases, for
        # clients generated from /openapi.json (FastAPI's default appends path and method).
        generate_unique_id_function=lambda route: route.name,
    )

    def compute(window: str, limit: int) -> trending_mod.Ranking:
        with database.session() as session:
            return trending_mod.ranking(session, window, limit=limit)

    swagger = docs.swagger_dir()
    attach(
        app,
        WebState(
            settings=settings,
            db=database,
            signers=Signers(signing_key(settings, database)),
            templates=make_templates(),
            search=WebSearch(
                settings,
                database,
                cache=ResultCache(),
                gate=SearchGate(search_concurrency, search_wait),
            ),
            paper_cache=ResultCache(size=4096),
            trending=trending_mod.TrendingCache(compute, ttl=TRENDING_TTL),
            vote_limiter=RateLimiter(
                *vote_limits,
                store=bucket_store(settings.home, database, redis_url=settings.redis_url),
                scope="votes",
            ),
            views=ViewCounter(signing_key(settings, database), redis_url=settings.redis_url),
            swagger_available=swagger is not None,
        ),
    )

    problems.install(app)
    observability.install(
        app,
        database,
        lambda: get_service(settings, database).status(),
        model_id=lambda: get_service(settings, database).embedder.model_id,
        cors_origins=settings.cors_origin_list,
        jobs=lambda: web_state(app).jobs(),
        warmed=lambda: web_state(app).warmed.is_set(),
    )
    app.add_middleware(SearchShedder, max_in_flight=max_searches_in_flight)
    app.add_middleware(
        HostCheckMiddleware, hosts=allowed_hosts(settings.trusted_hosts, settings.base_url)
    )
    app.add_middleware(
        SecurityMiddleware,
        secure_cookies=settings.base_url.startswith("https://"),
        body_timeout=settings.body_timeout,
        upload_limits=UPLOAD_LIMITS,
    )
    app.add_middleware(ProxyHeadersMiddleware, allow=settings.forwarded_allow_ips)
    app.mount("/static", CachedStatic(directory=STATIC_DIR), name="static")
    if swagger is not None:
        app.mount("/docs/assets", CachedStatic(directory=swagger), name="swagger")
    app.include_router(daily.router)  # before pages: /papers/date/... is not a paper id
    app.include_router(comments.router)
    app.include_router(comments.api_router)
    app.include_router(foryou.router)
    app.include_router(foryou.api_router)
    app.include_router(people.router)
    app.include_router(pages.router)
    app.include_router(search.router)
    app.include_router(feeds.router)
    app.include_router(docs.router)
    app.include_router(api.router)
    app.include_router(daily.api_router)
    app.include_router(subscriptions.router)
    app.include_router(admin.router)
    app.include_router(accounts.router)
    app.include_router(accounts.api_router)
    include_library(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness on the event loop: never waits for the database or the thread pool."""
        return {"status": "ok"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema()
            _problem_everywhere(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_served_app() -> FastAPI:
    """The app as ``papersift serve`` runs it in each worker process.

    One BLAS thread: a request's matrix products are small, and OpenBLAS's extra threads
    spin between them. Measured with bench/web.py on the demo corpus, 2 workers: hybrid
    search took 32.6 ms of CPU a request at 60/s with the default threads and 12.2 ms with
    one (p99 68 -> 18 ms), and at 200/s 1,633 of 3,000 were answered against 2,968."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1, user_api="blas")
    return create_app(freeze_gc=True)


def _problem_everywhere(schema: dict[str, Any]) -> None:
    """FastAPI documents 422 as application/json HTTPValidationError; ours is a problem.
    Operations with a body can also answer 400 (unparsable body) and 413 (too large)."""
    ref = {"$ref": "#/components/schemas/Problem"}

    def entry(description: str) -> dict[str, Any]:
        return {"description": description, "content": {PROBLEM_TYPE: {"schema": ref}}}

    for operations in schema.get("paths", {}).values():
        for op in operations.values():
            responses = op.get("responses", {})
            if "422" in responses:
                responses["422"] = entry("invalid parameters")
            if "requestBody" in op:
                responses.setdefault("400", entry("the body cannot be read (not UTF-8)"))
                responses.setdefault("413", entry("the body is too large"))
