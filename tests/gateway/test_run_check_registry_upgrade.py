"""``civicedge gateway run --check`` says what ``run`` writes to the registry at start (the retired column
of a registry made before 0.2.0) and flags a registry it cannot write with a warning: the gateway runs, registry
changes through it fail, and one made before 0.2.0 is used without the upgrade (nothing retired), as ``run`` does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_env
from test_cli_devices_retire import columns, old_registry

from gateway.cli.run_check import check_registry
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_an_older_registry_is_said_to_be_upgraded_at_start_and_left_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)
    registry = tmp_path / "data" / "registry"
    shutil.rmtree(registry)
    old_registry(registry)
    assert check_registry(registry) == "2 device(s); upgraded at start (adds column retired)"
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    assert "registry %s: 2 device(s); upgraded at start (adds column retired)" % registry in capsys.readouterr().out
    assert "retired" not in columns(registry)  # a check changes nothing


def test_an_upgraded_registry_says_only_its_devices(tmp_path: Path) -> None:
    make_env(tmp_path)
    assert check_registry(tmp_path / "data" / "registry") == "3 device(s)"


_CHECK = """
import json, sys
from pathlib import Path
from gateway.cli.run_check import check_registry
from gateway.errors import RegistryError
out = {}
for name in ("old", "new"):
    try:
        out[name] = ["ok", check_registry(Path(sys.argv[1]) / name)]
    except RegistryError as exc:
        out[name] = [exc.reason, str(exc)]
print(json.dumps(out))
"""


def _on_read_only_mount(place: Path) -> dict[str, list[str]]:
    """check_registry of ``place``/old and ``place``/new, run where ``place`` is a read-only bind mount (a
    private mount namespace: needs root and unshare; skipped where they are missing)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount")
    script = ("mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && touch \"$1/probe\" 2>/dev/null "
              "&& exit 97; exec \"$2\" -c \"$3\" \"$1\"")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(place), sys.executable, _CHECK],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    if proc.returncode != 0:
        pytest.skip("no read-only bind mount here (rc %d: %s)" % (proc.returncode, proc.stderr.strip()[:200]))
    answer: dict[str, list[str]] = json.loads(proc.stdout)
    return answer


def test_a_read_only_registry_is_a_warning_also_when_it_was_made_before_0_2_0(tmp_path: Path) -> None:
    # Before: fatal (permissions, "run would fail") for the old one; run now uses it as it is
    # (test_registry_read_only.py).
    place = tmp_path / "mnt"
    old_registry(place / "old")
    make_env(tmp_path / "env")
    shutil.copytree(tmp_path / "env" / "data" / "registry", place / "new")
    found = _on_read_only_mount(place)
    reason, text = found["old"]
    assert reason == "ok", found
    assert text.startswith("2 device(s); warning: cannot be written by this user")
    assert "upgraded at start" not in text
    assert text.endswith("; made by a version before 0.2.0 and not upgraded (adds column retired): used as it is, no "
                         "device retired; retiring or reinstating needs a writable registry")
    reason, text = found["new"]
    assert reason == "ok", found
    assert text.startswith("3 device(s); warning: cannot be written by this user")
    assert "the gateway runs, but registering" in text
