"""stats, show, export and every command's --help, through the real typer app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from papersift.cli import app

from .test_ingest_seeds import EXPECTED_SIZES

FIXTURES = Path(__file__).parent / "fixtures"
FIRST_PAGE = "000_e3b0215ea9dd5350"


@pytest.fixture(scope="module")
def seeded_db(seeded_home: Path) -> str:
    return f"sqlite:///{seeded_home / 'papersift.db'}"


def run(db_url: str, *args: str):
    result = CliRunner().invoke(app, ["--db", db_url, *args], catch_exceptions=False)
    return result


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_stats_json_last_line_has_papers_and_collection_sizes(seeded_db):
    result = run(seeded_db, "stats", "--json")
    assert result.exit_code == 0
    data = last_json(result.stdout)
    assert data["papers"] == 804
    assert data["collections"] == EXPECTED_SIZES
    # every page lists distinct papers, so each source counts its page's entries
    assert data["sources"] == {f"file:{name}.txt": n for name, n in EXPECTED_SIZES.items()}


def test_stats_table(seeded_db):
    result = run(seeded_db, "stats")
    assert result.exit_code == 0
    assert "804 papers" in result.stdout
    for name in EXPECTED_SIZES:
        assert name in result.stdout


def test_show_by_id_json_and_text(seeded_db):
    export = run(seeded_db, "export", "--collection", FIRST_PAGE)
    first = json.loads(export.stdout.splitlines()[0])
    result = run(seeded_db, "show", first["id"], "--json")
    assert result.exit_code == 0
    data = last_json(result.stdout)
    assert data["title"] == "Binary and Ternary Natural Language Generation"
    assert {"name": FIRST_PAGE, "rank": 1} in data["collections"]
    assert data["code_url"] == "https://github.com/facebookresearch/Ternary_Binary_Transformer"
    text = run(seeded_db, "show", first["id"])
    assert text.exit_code == 0
    assert "Binary and Ternary Natural Language Generation" in text.stdout
    assert f"in collection {FIRST_PAGE} at #1" in text.stdout


def test_show_finds_by_arxiv_id_and_doi(db, home):
    from papersift.ingest import ingest_paths

    ingest_paths(db, [FIXTURES / "oai_arxiv.xml"])
    by_arxiv = run(db.url, "show", "arXiv:2301.01234v3", "--json")
    by_doi = run(db.url, "show", "10.1145/3539618.3591999", "--json")
    assert by_arxiv.exit_code == 0 and by_doi.exit_code == 0
    assert last_json(by_arxiv.stdout) == last_json(by_doi.stdout)
    assert last_json(by_doi.stdout)["arxiv_id"] == "2301.01234"


def test_show_unknown_id_fails(seeded_db):
    result = run(seeded_db, "show", "9999.99999")
    assert result.exit_code == 1
    assert "no paper with id '9999.99999'" in result.stderr


def test_export_jsonl_everything_and_one_collection_in_order(seeded_db):
    everything = run(seeded_db, "export", "--format", "jsonl")
    assert everything.exit_code == 0
    rows = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(rows) == 804 and len({r["id"] for r in rows}) == 804
    page = run(seeded_db, "export", "--collection", "001_871d086d1143f9dd")
    ids = [json.loads(line)["id"] for line in page.stdout.splitlines()]
    assert len(ids) == 260
    shown = last_json(run(seeded_db, "show", ids[1], "--json").stdout)
    assert {"name": "001_871d086d1143f9dd", "rank": 2} in shown["collections"]


def test_export_bibtex_collection(seeded_db, tmp_path):
    out = tmp_path / "refs.bib"
    result = run(seeded_db, "export", "-f", "bibtex", "-c", FIRST_PAGE, "-o", str(out))
    assert result.exit_code == 0
    text = out.read_text()
    entries = [e for e in text.split("\n@") if e.strip()]
    assert len(entries) == 119
    assert text.startswith("@misc{")
    assert "title = {{Binary and Ternary Natural Language Generation}}" in text.split("\n@")[0]
    assert text.count("{") == text.count("}")


def test_export_bibtex_with_arxiv_fields(db, home):
    from papersift.ingest import ingest_paths

    ingest_paths(db, [FIXTURES / "arxiv_api.xml"])
    result = run(db.url, "export", "--format", "bibtex")
    assert result.exit_code == 0
    assert "@article{lovelace2023dense," in result.stdout
    assert "eprint = {2305.04321}" in result.stdout
    assert "doi = {10.18653/v1/2023.acl-long.42}" in result.stdout


def test_export_rejects_unknown_format_and_collection(seeded_db):
    bad_format = run(seeded_db, "export", "--format", "xml")
    assert bad_format.exit_code == 1 and "unknown format 'xml'" in bad_format.stderr
    bad_coll = run(seeded_db, "export", "--collection", "nope")
    assert bad_coll.exit_code == 1 and "no collection named 'nope'" in bad_coll.stderr


def _leaf_commands() -> list[tuple[str, ...]]:
    """Every runnable command path, including sub-commands of groups (e.g. digest send)."""
    out: list[tuple[str, ...]] = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, (*path, name))
        else:
            out.append(path)

    walk(typer.main.get_command(app), ())
    return out


@pytest.mark.parametrize("command", _leaf_commands(), ids=" ".join)
def test_every_command_help_has_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    # an example may set an environment variable first: "Example: PAPERSIFT_X=1 papersift ..."
    assert re.search(r"Example: ([A-Z_]+=\S+ )*papersift ", result.stdout), result.stdout


def test_root_help_has_an_example():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "Example: papersift " in result.stdout


def test_ingest_keeps_papers_when_the_search_index_cannot_be_updated(tmp_path, home):
    """A broken index folder (a file where the folder should be) is a warning, not a crash."""
    home.mkdir(parents=True)
    (home / "index").write_text("not a folder")
    db_url = f"sqlite:///{home / 'papersift.db'}"
    result = run(db_url, "ingest", "--quiet", str(FIXTURES / "oai_arxivraw.xml"))
    assert result.exit_code == 0, result.output
    assert "papers are stored but the search index was not updated" in result.stderr
    assert "papersift index" in result.stderr
    shown = run(db_url, "show", "2303.11111", "--json")
    assert last_json(shown.stdout)["title"] == "Retrieval-Augmented Protein Language Models"


def test_demo_ingests_the_sample_once_and_indexes_it(home):
    import papersift

    first = CliRunner().invoke(app, ["demo", "--no-serve"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "ingesting the sample corpus" in first.stdout
    assert "search index ready" in first.stdout
    again = CliRunner().invoke(app, ["demo", "--no-serve"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "sample corpus already in" in again.stdout
    assert "search index ready (0 papers updated" in again.stdout
    with papersift.Library(home=home, db_url=f"sqlite:///{home / 'papersift.db'}") as lib:
        assert lib.stats()["collections"] == EXPECTED_SIZES
        found = lib.search("binary and ternary natural language generation", k=3, mode="semantic")
        assert found.message is None and len(found.hits) == 3
