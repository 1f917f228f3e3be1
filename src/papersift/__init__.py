"""papersift: a self-hostable research-paper discovery service.

One core (store, ingest, search, rank, digest) serves a CLI and a web app.
"""

__version__ = "0.1.0"
