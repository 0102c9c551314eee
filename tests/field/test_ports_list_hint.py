"""The "list ports" hint of a port error names a command of this installation's Python: a bare
``python -m serial.tools.list_ports`` is, in a venv install, another Python (package-install QA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.field.errors import PortNotFoundError
from hil.field.ports import check_port_available, list_ports_command, require_port


def test_the_hint_is_the_venvs_pyserial_ports_script_by_its_full_path() -> None:
    script = Path(sys.executable).parent / "pyserial-ports"
    assert script.is_file()  # pyserial installs it beside the venv's python
    assert list_ports_command() == str(script)
    # The command runs and lists (maybe no) ports.
    assert subprocess.run(list_ports_command(), shell=True, capture_output=True, timeout=60).returncode in (0, 1)


def test_without_the_script_the_hint_is_this_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "my venv" / "bin" / "python3"))
    assert list_ports_command() == f"'{tmp_path}/my venv/bin/python3' -m serial.tools.list_ports"


@pytest.mark.parametrize("port", ["", "/dev/ttyNO-SUCH-PORT", "/"])
def test_port_errors_name_the_installations_list_command(port: str) -> None:
    with pytest.raises(PortNotFoundError) as info:
        check_port_available(port) if port else require_port(port)
    assert f"(list ports: {list_ports_command()})" in str(info.value)
    assert "python -m serial" not in str(info.value)
