"""EACCES on the port: the Linux way out (join the port's group: dialout, uucp on some distros; log out
and in), not a bare "Permission denied". The CLI runs without the capability that lets root ignore
file permissions (setpriv), on a pty that belongs to another user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.timeout(60)]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to make a port this process may not open")
@pytest.mark.parametrize("command", [["flash", "--firmware-only", "--board", "streetlight-esp32"],
                                     ["check", "--gateway", "http://127.0.0.1:9"]])
def test_permission_denied_names_the_group(command: list[str], silent_pty: str) -> None:
    os.chown(silent_pty, 1, 1)
    os.chmod(silent_pty, 0o600)
    proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m",
                           "hil.cli.main", *command, "--port", silent_pty], capture_output=True, text=True,
                          timeout=45)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, err
    assert f"no permission to open serial port {silent_pty}" in err, err
    assert "sudo usermod -aG" in err and "dialout" in err and "uucp" in err and "log out and back in" in err, err
    assert "Traceback" not in err
