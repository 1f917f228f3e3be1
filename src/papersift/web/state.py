"""What one web app holds for its whole life: settings, database, caches, limiters.

One typed object per app (``app.state.web``), built by the app factory; handlers get its
parts through the dependencies in ``web.deps``, never by reaching into ``app.state``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.templating import Jinja2Templates

from papersift.rank.trending import TrendingCache
from papersift.settings import Settings
from papersift.store.db import Database
from papersift.web.ratelimit import Limit, RateLimiter, store_path
from papersift.web.searching import ResultCache, WebSearch
from papersift.web.security import Signers


class ViewCounter:
    """Counts a paper view at most once per viewer, paper and day (in-process memory)."""

    def __init__(self, max_keys: int = 50_000) -> None:
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self.max_keys = max_keys

    def first_view(self, viewer: str, paper_id: str) -> bool:
        """True the first time today that ``viewer`` sees ``paper_id``."""
        key = (viewer, paper_id, datetime.now(UTC).date().isoformat())
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        return True


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
    _limiters: dict[str, RateLimiter] = field(default_factory=dict)
    _limiter_lock: threading.Lock = field(default_factory=threading.Lock)

    def limiter(self, scope: str, limits: tuple[Limit, Limit]) -> RateLimiter:
        """The app's (per visitor, per IP) limiter for ``scope``, made on first use; its
        buckets live next to the app's data so every worker shares them."""
        with self._limiter_lock:
            found = self._limiters.get(scope)
            if found is None:
                found = RateLimiter(*limits, store=store_path(self.settings.home), scope=scope)
                self._limiters[scope] = found
            return found


def attach(app: Starlette, state: WebState) -> None:
    """Make ``state`` the app's state (the only attribute the app factory sets)."""
    app.state.web = state


def web_state(where: HTTPConnection | Starlette) -> WebState:
    """The state of an app, or of the app serving a request or connection."""
    app = where if isinstance(where, Starlette) else where.app
    state: WebState = app.state.web
    return state
