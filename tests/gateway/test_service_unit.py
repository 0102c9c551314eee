"""The shipped systemd unit (scripts/civicedge-gateway.service): what it must say, and systemd's own check."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
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


def test_the_unit_grants_no_bluetooth_socket_or_capability_and_names_the_routes_extra() -> None:
    # The gateway's [ble] backends are "bluez" (bluetoothd over D-Bus, AF_UNIX) and "virtual" (a websocket):
    # neither opens an AF_BLUETOOTH socket nor needs a capability (the unit once allowed both for an HCI
    # socket backend that does not exist).
    d = dict(_directives())
    assert d["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
    assert d["CapabilityBoundingSet"] == "" and "AmbientCapabilities" not in d
    text = UNIT.read_text()
    assert "HCI" not in text and "CAP_NET_" not in text
    # The install step installs the extra the route planner imports (ortools, numpy: gateway.routes.solver).
    with (REPO / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert {r.split(">")[0] for r in extras["routes"]} >= {"ortools", "numpy"}
    assert "/opt/civicedge/.venv/bin/pip install 'civicedge-<version>-py3-none-any.whl[routes]'" in text


def test_systemd_analyze_security_gives_the_exposure_the_docs_state(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/civicedge/.venv/bin/civicedge", str(REPO / ".venv/bin/civicedge")))
    done = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                          timeout=60)
    if "--offline" in done.stderr:  # systemd before 250 cannot check a unit file that is not loaded
        pytest.skip("systemd-analyze security has no --offline: %s" % done.stderr.strip())
    measured = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert measured is not None, done.stdout + done.stderr
    stated = re.search(r"`systemd-analyze security` \(exposure (\d+\.\d),", (REPO / "docs" / "gateway.md").read_text())
    assert stated is not None and stated.group(1) == measured.group(1)
