"""deploy/: the systemd units pass ``systemd-analyze verify`` and a hardening threshold,
every command the units and the cron file run exists with the options they pass, and the
settings file names real settings with valid values. Proxy configs are checked by nginx /
caddy where those are installed (skipped with the reason where not)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from papersift.settings import ENV_PREFIX, Settings, load_settings

from .digest_support import PAPERSIFT

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
    (DEPLOY / "systemd").glob("*.timer")
)
SERVICES = [u for u in UNITS if u.suffix == ".service"]
INSTALLED = "/usr/local/bin/papersift"
MAX_EXPOSURE = 3.0  # systemd-analyze security: 0 (locked down) .. 10 (unprotected)


def local_copies(tmp_path: Path) -> list[Path]:
    """The units with the installed papersift replaced by this checkout's (verify checks
    that each ExecStart program exists)."""
    out = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, PAPERSIFT[0]))
        out.append(copy)
    return out


def commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every papersift command a unit or the cron file runs."""
    found = []
    for unit in SERVICES:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                found.append((unit.name, shlex.split(line.split("=", 1)[1])))
    for line in (DEPLOY / "cron" / "papersift").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]:
            fields = line.split(None, 6)  # 5 time fields, the user, the command
            argv = shlex.split(fields[6].split(">")[0])
            found.append(("cron", argv))
    return found


def test_units_and_cron_cover_serve_daily_and_mail() -> None:
    subcommands = {tuple(a for a in argv[1:3] if not a.startswith("-")) for _w, argv in commands()}
    assert {("serve",), ("daily",), ("mail", "send")} <= subcommands
    for unit in SERVICES:
        text = unit.read_text()
        for needed in (
            "DynamicUser=yes",
            "StateDirectory=papersift",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "EnvironmentFile=/etc/papersift/papersift.env",
        ):
            assert needed in text, f"{unit.name} lacks {needed}"


@pytest.mark.parametrize("where,argv", commands(), ids=lambda v: str(v))
def test_every_command_exists_with_its_options(where: str, argv: list[str]) -> None:
    assert argv[0] == INSTALLED, f"{where}: runs {argv[0]}"
    words = [a for a in argv[1:] if not a.startswith("-")][:2]
    path = [w for w in words if w in ("serve", "daily", "mail", "send", "digest")]
    shown = subprocess.run(
        [*PAPERSIFT, *path, "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, f"{where}: papersift {' '.join(path)} --help: {shown.stderr}"
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        assert option in shown.stdout, f"{where}: papersift {' '.join(path)} has no {option}"


def test_settings_file_names_real_settings_with_valid_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    pairs = [
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "papersift.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    unknown = {k for k, _v in pairs} - known
    assert not unknown, f"papersift.env sets unknown settings {unknown}"
    for key, value in pairs:
        if key in known:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PAPERSIFT_HOME", str(tmp_path))  # the real one is /var/lib/papersift
    settings = load_settings()
    assert settings.daily_source.startswith("oai:https://")
    assert settings.base_url.startswith("https://")
    assert settings.forwarded_allow_ips == "127.0.0.1"  # the local proxy's headers count


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here: units not verified")
    copies = local_copies(tmp_path)
    done = subprocess.run(
        [tool, "verify", *map(str, copies)], capture_output=True, text=True, timeout=120
    )
    # verify exits 0 on unknown keys too: any message is a finding
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    for unit in copies:
        if unit.suffix != ".service":
            continue
        score = subprocess.run(
            [tool, "security", "--offline=yes", str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", score.stdout)
        assert match, score.stdout[-500:] + score.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, f"{unit.name}: {match.group(0)}"


def test_nginx_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed here: deploy/nginx not checked by nginx -t")
    site = (DEPLOY / "nginx" / "papersift.conf").read_text()
    snippet = tmp_path / "papersift-proxy.conf"
    snippet.write_text((DEPLOY / "nginx" / "papersift-proxy.conf").read_text())
    site = site.replace("/etc/nginx/snippets/papersift-proxy.conf", str(snippet))
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed here: no test certificate for nginx -t")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=papers.example.org", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    site = re.sub(r"ssl_certificate_key [^;]+;", f"ssl_certificate_key {key};", site)
    site = re.sub(r"ssl_certificate [^;]+;", f"ssl_certificate {cert};", site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off;\n{site}\n}}\n"
    )
    done = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_caddyfile() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed here: deploy/caddy/Caddyfile not validated")
    done = subprocess.run(
        [caddy, "adapt", "--config", str(DEPLOY / "caddy" / "Caddyfile")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
