"""How long `papersift demo` takes to serve its first page on a fresh home.

Two runs: a fresh home and a fresh cache (the int8 query model and the fused document graph
are derived on first use), then a fresh home with that cache kept. Each run starts
`papersift demo --port P` as a user would and times it until `/` answers 200. The install
itself is timed by `tools/wheel_check.sh` and `make install`, which this script does not
repeat; it writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import report

from server_support import free_port, stop, wait_until_up

PAPERSIFT = str(Path(sys.executable).with_name("papersift"))
LIMIT = 180.0  # seconds; a demo slower than this is reported as failed


def served_after(home: Path, cache: Path, log: Path) -> float | None:
    """Seconds from starting `papersift demo` to its first 200 on /, or None."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERSIFT_")}
    env.update(PAPERSIFT_HOME=str(home), PAPERSIFT_CACHE=str(cache))
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [PAPERSIFT, "demo", "--port", str(port)], env=env, stdout=out, stderr=out
        )
        try:
            if wait_until_up(proc, f"http://127.0.0.1:{port}/", timeout=LIMIT) is None:
                return None
            return time.monotonic() - started
        finally:
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="papersift-demo-bench-"))
    try:
        cache = work / "cache"
        cold = served_after(work / "home1", cache, work / "cold.log")
        warm = served_after(work / "home2", cache, work / "warm.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())

    def shown(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else f"not served within {LIMIT:.0f} s"

    lines = [
        "## Demo: first page (bench/demo.py)",
        "",
        f"Run {date.today().isoformat()} on {report.machine()}; load average (1 / 5 / 15 min) "
        f"{load} at the end. `papersift demo` from this checkout's virtualenv, timed from start "
        "to the first 200 on `/` (ingest of the packaged corpus, loading its precomputed "
        "embeddings, index build, serve).",
        "",
        "| home | derived models (int8 query model, fused graph) | first page after |",
        "| --- | --- | --- |",
        f"| fresh | made in this run | {shown(cold)} |",
        f"| fresh | already cached | {shown(warm)} |",
        "",
        "Target: serving within 60 s of the install finishing. The install (`make install`, or "
        "the wheel into a fresh virtualenv in `tools/wheel_check.sh`) comes before this and "
        "is dominated by downloading the dependencies.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        report.write_section("bench/demo.py", lines)


if __name__ == "__main__":
    main()
