"""The shipped systemd unit (scripts/civicedge-gateway.service): what it must say, and systemd's own check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from procs import REPO

UNIT = REPO / "scripts" / "civicedge-gateway.service"


def _directives() -> list[tuple[str, str]]:
    pairs = []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def test_the_unit_runs_the_gateway_as_a_notify_service_without_reload() -> None:
    d = dict(_directives())
    assert d["Type"] == "notify"  # gateway run sends READY=1 (gateway.systemd.notify)
    assert d["User"] == "civicedge" and d["StateDirectory"] == "civicedge" and d["StateDirectoryMode"] == "0700"
    assert d["ExecStart"].endswith("/civicedge gateway run -c /etc/civicedge/gateway.toml")
    assert d["Restart"] == "on-failure"
    # SIGHUP stops the gateway (nothing to reload): `systemctl reload` must be refused, not stop it.
    assert "ExecReload" not in d
    assert d["NoNewPrivileges"] == "yes" and d["ProtectSystem"] == "strict"


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The unit as installed, pointing at this checkout's civicedge (verify checks the executable).
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/civicedge/.venv/bin/civicedge", str(REPO / ".venv/bin/civicedge")))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys too, but names them: nothing may be said about this unit.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("Type=notify", "Type=notify\nExecReloadd=/bin/true"))
    done = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in done.stdout + done.stderr  # the check above can fail
