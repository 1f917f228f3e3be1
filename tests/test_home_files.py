"""The home's files are private, the signing key is created once, database URLs fail clearly."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from papersift.cli.argv import hoist_global_options
from papersift.settings import load_settings
from papersift.store.db import Database, DatabaseError
from papersift.web.ratelimit import Limit, SharedTokenBuckets


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERSIFT_")}
    return subprocess.run(
        [sys.executable, "-m", "papersift", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_home_and_its_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask would give 0755 / 0644
    try:
        home = tmp_path / "deep" / "home"
        settings = load_settings(home)
        db = Database(settings.db_url)
        with db.engine.begin() as conn:  # a write creates the WAL and shared-memory files
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        settings.secret_key()
        buckets = SharedTokenBuckets(Limit(5, 1.0), home / "ratelimit.sqlite", "votes")
        assert buckets.take("visitor") == 0.0
        assert _mode(home) == 0o700 and _mode(home.parent) == 0o700
        for name in ("papersift.db", "papersift.db-wal", "papersift.db-shm", "secret.key"):
            assert _mode(home / name) == 0o600, name
        assert _mode(home / "ratelimit.sqlite") == 0o600
        db.dispose()
    finally:
        os.umask(old)


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "shared-home"
    home.mkdir()
    os.chmod(home, 0o750)
    Database(load_settings(home).db_url).dispose()
    assert _mode(home) == 0o750
    assert _mode(home / "papersift.db") == 0o600


def _key_in_child(home: str, start: object, out: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    try:
        out.put(load_settings(home).secret_key())  # type: ignore[attr-defined]
    except Exception as exc:  # the test reports any failure of any process
        out.put(f"error: {exc!r}")  # type: ignore[attr-defined]


def test_secret_key_created_once_by_racing_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_no in range(40):
        home = tmp_path / f"round{round_no}"
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_key_in_child, args=(str(home), start, out)) for _ in range(8)]
        for proc in procs:
            proc.start()
        start.set()
        keys = [out.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert all(not k.startswith("error") for k in keys), keys
        assert len(set(keys)) == 1 and len(keys[0]) >= 32
        assert (home / "secret.key").read_text().strip() == keys[0]
        assert sorted(p.name for p in home.iterdir()) == ["secret.key"]  # no temp files left


def test_an_empty_key_file_is_an_error_not_an_empty_key(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_settings(tmp_path).secret_key()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("bogus://x", "unsupported database 'bogus'"),
        ("mysql://u@h/db", "unsupported database"),
        ("not a url", "not a database URL"),
        ("sqlite:////proc/no-such-dir/x.db", "cannot create database"),
    ],
)
def test_bad_database_urls_are_clear(url: str, needle: str) -> None:
    with pytest.raises(DatabaseError, match=needle):
        Database(url)


def test_cli_database_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _cli("--db", "bogus://x", "stats", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unsupported database" in proc.stderr
    typo = tmp_path / "typo" / "dir" / "x.db"
    proc = _cli("stats", "--db", f"sqlite:///{typo}", cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "typo").exists()  # nothing created for a mistyped path


def test_global_options_after_the_subcommand(tmp_path: Path) -> None:
    home = tmp_path / "h"
    proc = _cli("stats", "--json", "--home", str(home), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (home / "papersift.db").is_file()
    proc = _cli("stats", f"--db=sqlite:///{tmp_path / 'other.db'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "other.db").is_file()
    proc = _cli("stats", "--no-such-option", cwd=tmp_path)
    assert proc.returncode == 2  # usage errors exit 2, like every Click tool


def test_hoisting_keeps_values_and_separator() -> None:
    assert hoist_global_options(["ingest", "a.jsonl", "--db", "sqlite:///x.db"]) == [
        "--db",
        "sqlite:///x.db",
        "ingest",
        "a.jsonl",
    ]
    assert hoist_global_options(["search", "q", "--home=/h", "-k", "3"]) == [
        "--home=/h",
        "search",
        "q",
        "-k",
        "3",
    ]
    assert hoist_global_options(["search", "--", "--db"]) == ["search", "--", "--db"]
    assert hoist_global_options(["stats", "--db"]) == ["stats", "--db"]
