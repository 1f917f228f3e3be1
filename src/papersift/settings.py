"""Run-time settings, read from the environment with sensible local defaults.

Every knob has one environment variable; the CLI's ``--db`` / ``--home`` override them.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("PAPERSIFT_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "papersift"


@dataclass
class Settings:
    """Where data lives and how to reach the outside world."""

    home: Path
    db_url: str
    base_url: str = "http://127.0.0.1:8000"
    smtp_url: str = "smtp://127.0.0.1:25"
    mail_from: str = "papersift <digest@localhost>"
    model_dir: str | None = None
    unsubscribe_mailto: str | None = None  # an address piped into `unsubscribe-mail`

    @property
    def index_dir(self) -> Path:
        """Derived search indexes: safe to delete, rebuilt from the database."""
        return self.home / "index"

    def secret_key(self) -> str:
        """Key for signed cookies and email tokens; generated once per home if not set."""
        env = os.environ.get("PAPERSIFT_SECRET")
        if env:
            return env
        path = self.home / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # first writer wins if two processes race
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()


def load_settings(home: str | Path | None = None, db_url: str | None = None) -> Settings:
    """Settings from arguments, then environment, then defaults."""
    home_path = Path(home).expanduser() if home else default_home()
    url = db_url or os.environ.get("PAPERSIFT_DB") or f"sqlite:///{home_path / 'papersift.db'}"
    return Settings(
        home=home_path,
        db_url=url,
        base_url=os.environ.get("PAPERSIFT_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
        smtp_url=os.environ.get("PAPERSIFT_SMTP_URL", "smtp://127.0.0.1:25"),
        mail_from=os.environ.get("PAPERSIFT_MAIL_FROM", "papersift <digest@localhost>"),
        model_dir=os.environ.get("PAPERSIFT_MODEL_DIR"),
        unsubscribe_mailto=os.environ.get("PAPERSIFT_UNSUBSCRIBE_MAILTO") or None,
    )
