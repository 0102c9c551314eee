"""Commands that only read (export-log, devices list|show) work on a data directory they cannot write.

QA finding: with the data directory on a read-only mount, ``export-log -c`` and ``devices -c ... list``
failed "gateway.data_dir ... is not writable by this user" (they worked with --db/--registry).
"""

from __future__ import annotations

import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.registry import Registry
from gateway.storage import ReportRecord, ReportStore
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def make_gateway_dir(tmp_path: Path) -> Path:
    """A config whose data directory holds a registry with one device and a store with one report."""
    data = tmp_path / "data"
    reg = Registry(data / "registry")
    reg.add("bin-1", kind="bin", zone="north", lat="52.37", lon="4.89")
    reg.close()
    store = ReportStore(data / "reports.sqlite", gateway_id="gw1")
    store.insert_batch([ReportRecord(device="bin-1", seq=1, kind="bin", zone="north", type="win", w=1_700_000_000,
                                     l=900, m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_700_000_000.0,
                                     link="serial:x", digest="%064x" % 1)])
    store.close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw1"\ndata_dir = "data"\n[http]\nenabled = false\n')
    return cfg


@pytest.fixture
def unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The config; everything under its data directory answers access(W_OK) False, as on a read-only
    mount (root passes access() on a 0555 directory, so an ordinary user's answer is emulated)."""
    cfg = make_gateway_dir(tmp_path)
    data = tmp_path / "data"
    real_access = os.access

    def access(p: "str | os.PathLike[str]", mode: int, **kw: object) -> bool:
        inside = Path(p) == data or data in Path(p).parents
        return real_access(p, mode) and not (inside and mode & os.W_OK)

    monkeypatch.setattr(os, "access", access)
    return cfg


def test_reading_commands_accept_an_unwritable_data_directory(unwritable: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(unwritable)
    assert main(["gateway", "export-log", "-c", cfg]) == 0
    out, err = capsys.readouterr()
    assert '"device":"bin-1"' in out and "exported 1 entries" in err
    assert main(["gateway", "devices", "-c", cfg, "list"]) == 0
    assert capsys.readouterr().out.startswith("bin-1 ")
    assert main(["gateway", "devices", "-c", cfg, "show", "bin-1"]) == 0
    assert re.search(r"^key_status +ok$", capsys.readouterr().out, re.M)


@pytest.mark.parametrize("argv", [
    ["run", "--check"],
    ["devices", "revoke", "bin-1"],
    ["devices", "rotate-key", "bin-1"],
    ["devices", "add", "--id", "bin-2", "--kind", "bin", "--zone", "north", "--location", "52.3,4.8"],
])
def test_writing_commands_still_need_a_writable_data_directory(unwritable: Path, argv: list[str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", argv[0], "-c", str(unwritable), *argv[1:]]) == 1
    err = capsys.readouterr().err
    assert "error (bad_path) [gateway.data_dir]" in err and "is not writable by this user" in err


def test_read_only_loading_checks_readability(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_gateway_dir(tmp_path)
    data = tmp_path / "data"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and not (Path(p) == data and mode & os.R_OK))
    with pytest.raises(ConfigError, match="is not readable by this user") as info:
        load_config(cfg, read_only=True)
    assert (info.value.reason, info.value.key) == ("bad_path", "gateway.data_dir")


def test_read_only_loading_of_a_missing_data_directory_leaves_the_command_to_say_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\ndata_dir = "nowhere/data"\n[http]\nenabled = false\n')
    assert load_config(cfg, read_only=True).storage.path == tmp_path / "nowhere" / "data" / "reports.sqlite"
    assert main(["gateway", "export-log", "-c", str(cfg)]) == 1
    assert "error (open_failed): no report store at" in capsys.readouterr().err
    assert main(["gateway", "devices", "-c", str(cfg), "list"]) == 1
    assert "error (no_registry)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml"]


def _can_mount_privately() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    return subprocess.run([unshare, "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount_privately(), reason="needs root and unshare -m (a private mount namespace)")
def test_on_a_real_read_only_mount(tmp_path: Path) -> None:
    """The QA repro, end to end: the data directory bind-mounted read-only in a private mount namespace
    (gone with the process, so nothing is left mounted whatever happens)."""
    cfg = make_gateway_dir(tmp_path)
    data = tmp_path / "data"
    civicedge = [sys.executable, "-m", "hil.cli.main"]
    script = """set -e
mount --bind "$1" "$1"
mount -o remount,ro,bind "$1"
shift
if touch "$DATA/probe" 2>/dev/null; then echo "mount is not read-only"; exit 99; fi
"$@"
"""
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(data), *civicedge, "gateway", *argv],
                              capture_output=True, text=True, timeout=60, cwd=REPO,
                              env={**os.environ, "DATA": str(data)})
    exported = run("export-log", "-c", str(cfg))
    if exported.returncode == 99 or "mount:" in exported.stderr:
        pytest.skip("cannot make a read-only bind mount here: %s" % (exported.stdout + exported.stderr))
    assert exported.returncode == 0, exported.stderr
    assert "exported 1 entries" in exported.stderr
    listed = run("devices", "-c", str(cfg), "list")
    assert listed.returncode == 0 and listed.stdout.startswith("bin-1 "), listed.stderr
    checked = run("run", "-c", str(cfg), "--check")
    assert checked.returncode == 1 and "data is on a read-only file system" in checked.stderr
