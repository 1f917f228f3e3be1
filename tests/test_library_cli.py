"""``papersift library ...`` on a real home (SQLite): import with a per-entry report, list,
save, remove, export read back by rispy and bibtexparser, clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import bibtexparser
import rispy
from typer.testing import CliRunner

from papersift.cli import app
from papersift.settings import load_settings
from papersift.store.db import Database
from tests.accounts_support import make_account

FIXTURES = Path(__file__).parent / "fixtures" / "library"
USER = "reader@example.org"


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_library_commands(home: Path, tmp_path: Path) -> None:
    db = Database(load_settings(home).db_url)
    make_account(db, USER)
    db.dispose()
    code, out, err = _run(
        "library", "import", str(FIXTURES / "zotero.bib"), "--user", USER, "--json"
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["matched"], report["added"], report["failed"]) == (0, 4, 1)
    assert report["tag"] == "zotero" and report["index_error"] is None
    code, out, err = _run("library", "import", str(FIXTURES / "mendeley.ris"), "-u", USER)
    assert code == 0, err
    assert "2 matched, 1 added, 1 failed; saved into mendeley" in out
    assert "(arXiv id)" in out and "(DOI)" in out and "(no title)" in out
    code, out, _ = _run("library", "list", "--user", USER, "--json")
    tags = json.loads(out.strip().splitlines()[-1])["tags"]
    assert tags == [{"name": "mendeley", "count": 3}, {"name": "zotero", "count": 4}]
    code, out, err = _run("library", "save", "1706.03762", "--tag", "RL", "--user", USER)
    assert code == 0 and "saved RL: 1706.03762" in out, err
    code, out, _ = _run("library", "list", "--user", USER, "--tag", "RL")
    assert "Attention Is All You Need" in out
    target = tmp_path / "rl.ris"
    code, _, err = _run(
        "library", "export", "-u", USER, "-t", "RL", "--format", "ris", "-o", str(target)
    )
    assert code == 0, err
    assert rispy.loads(target.read_text())[0]["title"] == "Attention Is All You Need"
    code, out, _ = _run("library", "export", "-u", USER, "-t", "zotero")
    lib = bibtexparser.parse_string(out)
    assert not lib.failed_blocks and len(lib.entries) == 4
    code, out, _ = _run("library", "remove", "1706.03762", "--user", USER)
    assert code == 0 and "from 3 tags" in out


def test_library_failures(home: Path, tmp_path: Path) -> None:
    db = Database(load_settings(home).db_url)
    make_account(db, USER)
    db.dispose()
    bad = tmp_path / "broken.json"
    bad.write_text("[1, 2")
    code, _, err = _run("library", "import", str(bad), "--user", USER)
    assert code == 1 and "broken.json: not valid JSON" in err
    code, _, err = _run("library", "import", str(tmp_path / "missing.bib"), "--user", USER)
    assert code == 2 and "cannot read" in err
    code, _, err = _run("library", "list", "--user", "nobody@example.org")
    assert code == 1 and "no account" in err
    code, _, err = _run("library", "save", "9999.99999", "--user", USER)
    assert code == 1 and "no paper" in err
    code, _, err = _run("library", "export", "--user", USER, "--tag", "nope")
    assert code == 1 and "no tag" in err
