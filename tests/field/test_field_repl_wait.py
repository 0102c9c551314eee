"""QA: flash said "no MicroPython REPL answered on P within 5 s" after waiting 22 s (each attempt's
5 s, not the wait); it now states the real wait and asks whether this is the console port."""

from __future__ import annotations

import re

import pytest

from hil.cli.main import main as civicedge_main

pytestmark = [pytest.mark.timeout(60)]


def test_flash_states_the_real_wait_and_the_console_port_hint(silent_pty: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["flash", "--firmware-only", "--board", "streetlight-esp32", "--port", silent_pty,
                         "--repl-timeout", "6"])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    match = re.search(r"no MicroPython REPL answered on \S+ within (\d+) s", err)
    assert match is not None, err
    assert int(match.group(1)) >= 6, err
    assert "not the data UART" in err and "--repl-timeout" in err and "Traceback" not in err
