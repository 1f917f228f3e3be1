"""The one settings object: precedence, validation, the config file and the generated docs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from papersift import settings as settings_mod
from papersift.cli.settings import settings_table_markdown
from papersift.settings import SettingsError, current, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PAPERSIFT_"):
            monkeypatch.delenv(name)


def test_defaults_and_db_in_home(tmp_path: Path) -> None:
    s = load_settings(tmp_path)
    assert s.home == tmp_path
    assert s.db_url == f"sqlite:///{tmp_path / 'papersift.db'}"
    assert s.index_dir == tmp_path / "index"
    assert (s.vector_dtype, s.hnsw_connectivity, s.smtp_rate, s.digest_hour) == ("bf16", 48, 10, 7)


def test_precedence_argument_env_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "papersift.toml").write_text(
        'smtp_rate = 3\nbase_url = "https://file.example.org/"\nexact_limit = 500\n'
    )
    monkeypatch.setenv("PAPERSIFT_BASE_URL", "https://env.example.org")
    s = load_settings(tmp_path, "sqlite:////tmp/explicit.db")
    assert s.db_url == "sqlite:////tmp/explicit.db"  # argument
    assert s.base_url == "https://env.example.org"  # environment beats the file
    assert s.smtp_rate == 3.0 and s.exact_limit == 500  # file beats the default
    assert s.digest_hour == 7  # default


def test_explicit_config_file_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("hnsw_expansion_search = 256\n")
    assert load_settings(tmp_path / "home", config=cfg).hnsw_expansion_search == 256
    monkeypatch.setenv("PAPERSIFT_CONFIG", str(cfg))
    assert load_settings(tmp_path / "home").hnsw_expansion_search == 256
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path, config=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("PAPERSIFT_VECTOR_DTYPE", "f8", "PAPERSIFT_VECTOR_DTYPE"),
        ("PAPERSIFT_THREADS", "four", "PAPERSIFT_THREADS"),
        ("PAPERSIFT_THREADS", "0", "greater than 0"),
        ("PAPERSIFT_SMTP_RATE", "-1", "PAPERSIFT_SMTP_RATE"),
        ("PAPERSIFT_DIGEST_HOUR", "24", "PAPERSIFT_DIGEST_HOUR"),
        ("PAPERSIFT_BASE_URL", "ftp://x", "http:// or https://"),
        ("PAPERSIFT_HNSW_CONNECTIVITY", "-3", "PAPERSIFT_HNSW_CONNECTIVITY"),
        ("PAPERSIFT_QUERY_INT8", "maybe", "PAPERSIFT_QUERY_INT8"),
        ("PAPERSIFT_COMMENT_BURST", "0", "PAPERSIFT_COMMENT_BURST"),
        ("PAPERSIFT_COMMENTS_PER_HOUR", "lots", "PAPERSIFT_COMMENTS_PER_HOUR"),
        ("PAPERSIFT_CO_SAVED_READERS", "-1", "PAPERSIFT_CO_SAVED_READERS"),
        ("PAPERSIFT_VECTOR_DTYPE", "bf8", "PAPERSIFT_VECTOR_DTYPE"),
        ("PAPERSIFT_VECTOR_INDEX", "annoy", "PAPERSIFT_VECTOR_INDEX"),
        ("PAPERSIFT_IVF_PROBE_SHARE", "0", "PAPERSIFT_IVF_PROBE_SHARE"),
        ("PAPERSIFT_IVF_PROBE_SHARE", "1.5", "PAPERSIFT_IVF_PROBE_SHARE"),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=re.escape(needle)):
        load_settings(tmp_path)


def test_bad_config_files(tmp_path: Path) -> None:
    (tmp_path / "papersift.toml").write_text("smtp_rat = 3\n")
    with pytest.raises(SettingsError, match="unknown setting 'smtp_rat'"):
        load_settings(tmp_path)
    (tmp_path / "papersift.toml").write_text("smtp_rate = [\n")
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(tmp_path)
    (tmp_path / "papersift.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SettingsError):
        load_settings(tmp_path)


def test_blank_optional_values_are_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERSIFT_UNSUBSCRIBE_MAILTO", "  ")
    monkeypatch.setenv("PAPERSIFT_SECRET", "")
    s = load_settings(tmp_path)
    assert s.unsubscribe_mailto is None and s.secret is None
    assert len(s.secret_key()) >= 32  # generated, never empty


def test_replace_validates(tmp_path: Path) -> None:
    s = load_settings(tmp_path)
    assert s.replace(smtp_url="smtp://127.0.0.1:2525").smtp_url == "smtp://127.0.0.1:2525"
    with pytest.raises(ValueError):
        s.replace(digest_hour=99)


def test_current_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAPERSIFT_HOME", str(tmp_path))
    monkeypatch.setenv("PAPERSIFT_EXACT_LIMIT", "123")
    assert current().exact_limit == 123
    assert current() is current()  # cached while the environment is unchanged
    monkeypatch.setenv("PAPERSIFT_EXACT_LIMIT", "456")
    assert current().exact_limit == 456


def test_readme_table_is_generated_from_the_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- settings-table:start -->\n", 1)[1].split("<!-- settings-table:end")[
        0
    ]
    assert block == settings_table_markdown(), "run `papersift settings --markdown` into README"
    for name in settings_mod.Settings.model_fields:
        assert f"`{settings_mod.env_name(name)}`" in block


def test_no_other_module_reads_papersift_variables() -> None:
    """The settings module is the only place that knows the variable names."""
    offenders = []
    for path in (ROOT / "src" / "papersift").rglob("*.py"):
        if path.parent.name == "settings" and path.parent.parent.name == "papersift":
            continue  # the settings package itself
        text = path.read_text(encoding="utf-8")
        if re.search(r"environ(\.get)?\(?\[?\s*[\"']PAPERSIFT_", text) or "getenv(" in text:
            offenders.append(path.name)
    assert offenders == []


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papersift", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERSIFT_")}
    env["PAPERSIFT_VECTOR_DTYPE"] = "f8"
    proc = _cli("--home", str(tmp_path), "stats", env=env)
    assert proc.returncode == 2
    assert "PAPERSIFT_VECTOR_DTYPE" in proc.stderr and "Traceback" not in proc.stderr
    del env["PAPERSIFT_VECTOR_DTYPE"]
    (tmp_path / "papersift.toml").write_text("smtp_rate = 2.5\n")
    proc = _cli("--home", str(tmp_path), "settings", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert '"smtp_rate": 2.5' in proc.stdout.splitlines()[-1]
