"""Log configuration for the server and the jobs: one JSON object per line for log
collectors, plain text for a person at a terminal, and the request id on every line.

The configuration is a ``logging.config.dictConfig`` mapping rather than code, because
uvicorn applies it in each worker process it starts (a logger set up in the parent is not
inherited by spawned workers).
"""

from __future__ import annotations

import logging.config
import sys
from typing import Any

from papersift.settings import Settings

PLAIN = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(correlation_id)s %(message)s"


def log_config(settings: Settings, *, stream_is_tty: bool | None = None) -> dict[str, Any]:
    """The dictConfig for ``settings`` (JSON unless told otherwise or on a terminal)."""
    tty = sys.stderr.isatty() if stream_is_tty is None else stream_is_tty
    as_json = settings.json_logs if settings.json_logs is not None else not tty
    level = settings.log_level.upper()
    formatter: dict[str, Any]
    if as_json:
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "rename_fields_keep_missing": False,
        }
    else:
        formatter = {"format": PLAIN}
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "main",
        "filters": ["request_id"],
    }
    loggers = {
        name: {"handlers": ["stderr"], "level": level, "propagate": False}
        for name in ("papersift", "uvicorn", "uvicorn.error", "uvicorn.access")
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            # Adds ``correlation_id`` to every record ("-" outside a request).
            "request_id": {"()": "asgi_correlation_id.CorrelationIdFilter", "default_value": "-"}
        },
        "formatters": {"main": formatter},
        "handlers": {"stderr": handler},
        "loggers": loggers,
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def configure(settings: Settings) -> None:
    """Apply :func:`log_config` to this process."""
    logging.config.dictConfig(log_config(settings))
