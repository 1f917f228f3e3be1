"""Routers of the web app: pages, search, JSON API, feeds, docs and digest subscriptions."""
