"""How settings are found: arguments, then ``PAPERSIFT_*`` variables, then the TOML file,
then the defaults (:func:`load_settings`), the cached settings of this process
(:func:`current`), and the variables that hand them to worker processes."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from papersift.settings.fields import (
    CONFIG_ENV,
    CONFIG_NAME,
    ENV_PREFIX,
    Settings,
    SettingsError,
    _config_file,
    _xdg_home,
)


def worker_environment(
    settings: Settings,
    *,
    config: Path | None = None,
    single_thread: bool = False,
    embedding: bool = False,
) -> dict[str, str]:
    """Variables that make a worker process (uvicorn starts them afresh) load these settings:
    the home and database chosen on the command line, the config file, and one embedding
    thread per worker when several share the cores (unless threads were set). With
    ``embedding``, also the model settings, for workers on other nodes that have no config
    file (a Ray cluster's actors)."""
    env = {env_name("home"): str(settings.home), env_name("db"): settings.db}
    if embedding:
        for name in ("model_dir", "document_int8", "embed_providers"):
            value = getattr(settings, name)
            if value is not None:
                env[env_name(name)] = str(int(value) if isinstance(value, bool) else value)
    if config is not None:
        env[CONFIG_ENV] = str(Path(config).resolve())
    if single_thread and settings.threads is None:
        env[env_name("threads")] = "1"
    return env


def env_name(field: str) -> str:
    """The environment variable of a setting."""
    return ENV_PREFIX + field.upper()


def _describe(error: ValidationError, config: Path | None) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        name = field if field.startswith(ENV_PREFIX) else env_name(field)
        if item["type"] == "extra_forbidden":
            where = f" in {config}" if config else ""
            lines.append(f"unknown setting {field!r}{where}")
            continue
        value = item.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        lines.append(f"{name}: {item['msg']}{shown}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(
    home: str | Path | None = None,
    db_url: str | None = None,
    config: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from arguments, then the environment, then the config file, then defaults.

    The config file is ``config`` when given (it must exist), else ``$PAPERSIFT_CONFIG``, else
    ``papersift.toml`` in the home when there is one. Raises SettingsError with a readable
    message for a bad value.
    """
    init: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if home is not None:
        init["home"] = Path(home)
    if db_url:
        init["db"] = db_url
    config_path: Path | None
    if config is None and os.environ.get(CONFIG_ENV):
        config = os.environ[CONFIG_ENV]
    if config is not None:
        config_path = Path(config).expanduser()
        if not config_path.is_file():
            raise SettingsError(f"config file {config_path} does not exist")
    else:
        where = Path(home) if home is not None else None
        if where is None:
            env_home = os.environ.get(ENV_PREFIX + "HOME")
            where = Path(env_home) if env_home else _xdg_home()
        candidate = where.expanduser() / CONFIG_NAME
        config_path = candidate if candidate.is_file() else None
    token = _config_file.set(config_path)
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, config_path)) from None
    except (OSError, ValueError) as exc:  # an unreadable or malformed TOML file
        raise SettingsError(f"cannot read config file {config_path}: {exc}") from None
    finally:
        _config_file.reset(token)


_current_lock = threading.Lock()
_current: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def _environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))


def current() -> Settings:
    """The settings of this process as the environment says now, for code that has no
    Settings passed in (the embedder, the vector index). Cached until the environment's
    ``PAPERSIFT_*`` variables change, so it costs a dictionary scan per call."""
    global _current
    env = _environment()
    cached = _current
    if cached is not None and cached[0] == env:
        return cached[1]
    with _current_lock:
        settings = load_settings()
        _current = (env, settings)
        return settings
