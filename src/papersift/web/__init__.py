"""The web app and JSON API (FastAPI + Jinja2). Entry point: ``papersift.web.app.create_app``."""
