"""Building the civicedge command line does not import esptool (it is imported only to flash).

Importing esptool reads ~/.config/esptool/esptool.cfg: with an unreadable $HOME every civicedge
command, even ``gateway --help``, ended in a PermissionError traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_building_the_parser_does_not_import_esptool() -> None:
    code = ("import sys; from hil.cli.main import build_parser; build_parser(); "
            "print('esptool' in sys.modules, 'hil.field.esp_flash' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    # the flash module is loaded (the field commands are registered), esptool is not
    assert done.stdout.split() == ["False", "True"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run as a user who cannot read $HOME")
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
