"""Every setting papersift has, in one typed object.

Values come from, in order of precedence: arguments (the CLI's ``--db`` / ``--home``), the
environment (``PAPERSIFT_<NAME>``), a TOML file (``$PAPERSIFT_HOME/papersift.toml`` or
``--config FILE``, keys are the names below in lower case), then the defaults. Every value is
validated once, here, so a typo in a deployment is one clear message instead of a setting that
is silently ignored. This package is the only place that knows the variable names; the README's
settings table is generated from it (``papersift settings --markdown``). The fields are in
:mod:`.fields`, how their values are found in :mod:`.loading`.
"""

from papersift.settings.fields import (
    CONFIG_ENV,
    CONFIG_NAME,
    ENV_PREFIX,
    Settings,
    SettingsError,
)
from papersift.settings.loading import current, env_name, load_settings, worker_environment

__all__ = [
    "CONFIG_ENV",
    "CONFIG_NAME",
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "current",
    "env_name",
    "load_settings",
    "worker_environment",
]
