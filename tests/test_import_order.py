"""usearch 2.26 imported before onnxruntime 1.32 crashes the process (SIGSEGV).

papersift.search imports onnxruntime first; these tests fail if that guard goes, because
each entry point below reaches usearch through papersift and then loads onnxruntime.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["papersift.search.vectors", "papersift.cli", "papersift.web.app", "papersift"]
)
def test_usearch_through_papersift_then_onnxruntime_does_not_crash(module: str) -> None:
    code = f"import {module}; import usearch.index; import onnxruntime; print('alive')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "alive" in proc.stdout, (proc.returncode, proc.stderr[-500:])


def test_the_guard_is_the_first_import_of_the_search_package() -> None:
    import papersift.search

    source = open(papersift.search.__file__, encoding="utf-8").read()
    imports = [
        line
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and "__future__" not in line
    ]
    assert imports[0].startswith("import onnxruntime")
