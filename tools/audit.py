"""Dependency audit for `make test`: pip-audit where its vulnerability service answers.

pip-audit asks PyPI's JSON API (or OSV) about every installed distribution. Where that
service cannot be reached (an offline build machine, a registry mirror without the JSON API)
every package comes back "could not be audited": that is reported as a visible note and does
not fail the build, because nothing was learned. A known vulnerability fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TIMEOUT = 240  # seconds; an unreachable service must not hold the test run


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    cmd = [str(pip_audit), "--progress-spinner", "off", "--skip-editable", "-f", "json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"note: dependency audit skipped: pip-audit did not finish ({exc})")
        return 0
    try:
        report = json.loads(proc.stdout or "{}")
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"note: dependency audit skipped: {tail[0]}")
        return 0
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        ids = ", ".join(v.get("id", "?") for v in dep["vulns"])
        print(f"VULNERABLE {dep['name']} {dep.get('version', '')}: {ids}")
    if vulnerable:
        return 1
    if not audited:
        print(
            f"note: dependency audit skipped: the vulnerability service was not reachable "
            f"({len(deps)} packages could not be checked); run `make audit` where it is"
        )
        return 0
    print(f"dependency audit: {len(audited)} packages checked, none with known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
