"""What one web app holds for its whole life: settings, database, caches, limiters.

One typed object per app (``app.state.web``), built by the app factory; handlers get its
parts through the dependencies in ``web.deps``, never by reaching into ``app.state``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.templating import Jinja2Templates

from papersift.jobs.queue import JobQueue, open_queue
from papersift.rank.trending import TrendingCache
from papersift.settings import Settings
from papersift.store.db import Database
from papersift.web.ratelimit import KeyLimiter, Limit, RateLimiter, ViewCounter, bucket_store
from papersift.web.searching import ResultCache, WebSearch
from papersift.web.security import Signers


@dataclass
class WebState:
    """The app-scoped services of one web app."""

    settings: Settings
    db: Database
    signers: Signers
    templates: Jinja2Templates
    search: WebSearch
    paper_cache: ResultCache  # papers shown in result lists
    trending: TrendingCache
    vote_limiter: RateLimiter
    views: ViewCounter = field(default_factory=ViewCounter)
    swagger_available: bool = False
    # Set once the model and indexes are loaded (or their warm-up gave up): /readyz waits
    # for it, so a balancer sends no search to a worker still loading a cold index.
    warmed: threading.Event = field(default_factory=threading.Event)
    _limiters: dict[str, RateLimiter] = field(default_factory=dict)
    _key_limiters: dict[str, KeyLimiter] = field(default_factory=dict)
    _limiter_lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: JobQueue | None = None

    def jobs(self) -> JobQueue:
        """The app's background job queue (PostgreSQL queue or in-process runner, as
        ``jobs.queue`` chooses), made on first use; closed when the app stops."""
        with self._limiter_lock:
            if self._jobs is None:
                self._jobs = open_queue(self.settings, self.db)
            return self._jobs

    def close_jobs(self) -> None:
        with self._limiter_lock:
            if self._jobs is not None:
                self._jobs.close()
                self._jobs = None

    def limiter(self, scope: str, limits: tuple[Limit, Limit]) -> RateLimiter:
        """The app's (per visitor, per IP) limiter for ``scope``, made on first use; its
        buckets are shared by every worker (and, on PostgreSQL, every host)."""
        with self._limiter_lock:
            found = self._limiters.get(scope)
            if found is None:
                found = RateLimiter(
                    *limits,
                    store=bucket_store(
                        self.settings.home, self.db, redis_url=self.settings.redis_url
                    ),
                    scope=scope,
                )
                self._limiters[scope] = found
            return found

    def key_limiter(self, scope: str, limit: Limit) -> KeyLimiter:
        """The app's one-bucket-per-key limiter for ``scope``, shared like ``limiter``."""
        with self._limiter_lock:
            found = self._key_limiters.get(scope)
            if found is None:
                where = bucket_store(self.settings.home, self.db, redis_url=self.settings.redis_url)
                found = KeyLimiter(limit, where, scope)
                self._key_limiters[scope] = found
            return found


def attach(app: Starlette, state: WebState) -> None:
    """Make ``state`` the app's state (the only attribute the app factory sets)."""
    app.state.web = state


def web_state(where: HTTPConnection | Starlette) -> WebState:
    """The state of an app, or of the app serving a request or connection."""
    app = where if isinstance(where, Starlette) else where.app
    state: WebState = app.state.web
    return state
