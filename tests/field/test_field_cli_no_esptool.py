"""Building the civicedge command line does not import esptool (it is imported only to flash).

Importing esptool reads ~/.config/esptool/esptool.cfg: with an unreadable $HOME every civicedge
command, even ``gateway --help``, ended in a PermissionError traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _nobody_can_run_the_repo() -> bool:
    """True when user nobody can start this Python on this checkout (a clone under a 0700 directory,
    as ``mktemp -d`` makes, or a venv under /root, cannot be read by another user)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                           "import hil.cli.main"], capture_output=True, cwd=REPO, timeout=60,
                          env=dict(os.environ, HOME="/nonexistent"))
    return done.returncode == 0


NOBODY = pytest.mark.skipif(not _nobody_can_run_the_repo(),
                            reason="needs root, setpriv, and a checkout and Python that user nobody can read "
                                   "(to run as a user who cannot read $HOME)")


def test_building_the_parser_does_not_import_esptool() -> None:
    code = ("import sys; from hil.cli.main import build_parser; build_parser(); "
            "print('esptool' in sys.modules, 'hil.field.esp_flash' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    # the flash module is loaded (the field commands are registered), esptool is not
    assert done.stdout.split() == ["False", "True"]


@NOBODY
def test_gateway_help_with_an_unreadable_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "esptool").mkdir(parents=True)
    (home / ".config" / "esptool" / "esptool.cfg").write_text("[esptool]\n")
    home.chmod(0o700)  # owned by root: nobody cannot look inside
    tmp_path.chmod(0o755)
    env = dict(os.environ, HOME=str(home))
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "hil.cli.main", "gateway", "--help"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "usage:" in done.stdout


@NOBODY
def test_flash_with_an_unreadable_home_says_how_to_fix_it(tmp_path: Path) -> None:
    """esptool is imported when flashing starts and reads ~/.config/esptool/esptool.cfg: with an
    unreadable $HOME that ended in a PermissionError traceback; now one error line with the fix."""
    home = tmp_path / "home"
    (home / ".config" / "esptool").mkdir(parents=True)
    (home / ".config" / "esptool" / "esptool.cfg").write_text("[esptool]\n")
    home.chmod(0o700)  # owned by root: nobody cannot look inside
    tmp_path.chmod(0o755)
    with tempfile.TemporaryDirectory() as shared:  # pytest's tmp_path is under a root-only 0700 directory
        os.chmod(shared, 0o755)
        image = Path(shared) / "micropython.bin"
        image.write_bytes(b"\xe9\x03\x02\x20" + b"\0" * 20 + b"\xff" * 4072)  # an ESP32 image (chip id 0)
        image.chmod(0o644)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                   "hil.cli.main", "flash", "--board", "streetlight-esp32", "--port", str(Path(shared) / "no-port"),
                   "--micropython", str(image)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                              env=dict(os.environ, HOME=str(home)), timeout=60)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "esptool cannot read its configuration" in done.stderr and "esptool.cfg" in done.stderr
        assert "set HOME to a readable directory, or ESPTOOL_CFGFILE" in done.stderr
        # The way out it names works: a readable config file given by ESPTOOL_CFGFILE (then the port is missing).
        config = Path(shared) / "esptool.cfg"
        config.write_text("[esptool]\n")
        config.chmod(0o644)
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                              env=dict(os.environ, HOME=str(home), ESPTOOL_CFGFILE=str(config)), timeout=60)
        assert "Traceback" not in done.stderr and "no-port does not exist" in done.stderr, done.stderr
