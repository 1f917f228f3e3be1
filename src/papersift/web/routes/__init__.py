"""Routers of the web app: pages, search, JSON API, feeds, docs (and, when present, the
digest engineer's subscriptions router)."""
