"""Review findings on the field CLI: a dead link after a failed flash is said as such within seconds;
provision does not restart firmware it refused as damaged; the start watch ends at the firmware's
"running" line; the advice after a firmware that does not start is runnable."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pytest

from hil.dut.errors import DutError
from hil.field import flash_cmd, provision_cmd
from hil.field.firmware_restart import watch_start
from hil.field.errors import FieldError


class _DeadLink:
    url = "/dev/ttyUSB0"

    def __init__(self) -> None:
        self.resets = 0
        self.calls: list[str] = []

    def eval(self, expression: str, *, timeout_s: float = 10.0) -> Any:
        self.calls.append("eval %g" % timeout_s)
        raise DutError("no answer", url=self.url)

    def enter_raw_repl(self, *, timeout_s: float = 10.0) -> None:
        self.calls.append("raw %g" % timeout_s)
        raise DutError("no answer", url=self.url)

    def soft_reset(self, *, timeout_s: float = 10.0) -> str:
        self.resets += 1
        return ""

    def __getattr__(self, name: str) -> Any:
        raise DutError(f"{name}: no answer", url=self.url)


def _flash_args() -> argparse.Namespace:
    return argparse.Namespace(board="streetlight-esp32", port="/dev/ttyUSB0", firmware_only=True, micropython=None,
                              no_erase=False, source=False, repl_timeout=20.0)


def test_a_dead_link_after_a_failed_copy_is_said_within_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    dut = _DeadLink()
    started = time.monotonic()
    flash_cmd._after_failed_flash(dut, _flash_args(), copying=True, interrupted=False)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    err = " ".join(capsys.readouterr().err.split())
    assert "could not check the firmware on /dev/ttyUSB0 (link lost), so it was not restarted" in err, err
    assert "incomplete" not in err and "civicedge flash --board streetlight-esp32 --port /dev/ttyUSB0" in err
    assert dut.resets == 0 and all(float(c.split()[1]) <= flash_cmd.LINK_PROBE_S for c in dut.calls)


def test_provision_marks_damaged_firmware_so_it_is_not_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provision_cmd, "read_manifest", lambda dut: {"files": {"/lib/civic/report.mpy": "00"}})
    monkeypatch.setattr(provision_cmd, "verify_manifest", lambda dut, files: ["/lib/civic/report.mpy"])
    args = argparse.Namespace(port="/dev/ttyUSB0", board="streetlight-esp32")
    with pytest.raises(FieldError, match="its firmware was not restarted") as refused:
        provision_cmd._check_firmware_for_provision(object(), args)  # type: ignore[arg-type]
    assert refused.value.details["firmware_damaged"] is True
    monkeypatch.setattr(provision_cmd, "read_manifest", lambda dut: None)  # no /firmware.json: its code may be fine
    with pytest.raises(FieldError) as refused:
        provision_cmd._check_firmware_for_provision(object(), args)  # type: ignore[arg-type]
    assert not refused.value.details["firmware_damaged"] and "not restarted" not in str(refused.value)


class _Console:
    url = "/dev/ttyUSB0"

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def read_output(self, *, duration_s: float) -> bytes:
        if self._lines:
            return self._lines.pop(0)
        time.sleep(duration_s)
        return b""


def test_the_start_watch_ends_at_the_running_line() -> None:
    dut = _Console([b">>> civicedge: boot\r\n", b"civicedge: streetlight sl-1 running (lamp, lux)\r\n"])
    started = time.monotonic()
    assert watch_start(dut, 3.0) is None  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.0
    dut = _Console([b"civicedge: cannot start: no /board.json\r\n"])
    assert watch_start(dut, 3.0) == "civicedge: cannot start: no /board.json"  # type: ignore[arg-type]


def test_the_check_after_a_start_failure_names_where_the_gateway_is(tmp_path: Path) -> None:
    args = argparse.Namespace(gateway="http://gw.local:8080", registry=None)
    assert provision_cmd._check_where(args) == "--gateway http://gw.local:8080"
    data = tmp_path / "data dir"
    (data / "registry").mkdir(parents=True)
    args = argparse.Namespace(gateway=None, registry=data / "registry")
    assert "--db GATEWAY-STORE" in provision_cmd._check_where(args)
    (data / "reports.sqlite").write_bytes(b"")
    assert provision_cmd._check_where(args) == f"--registry '{data / 'registry'}' --db '{data / 'reports.sqlite'}'"
