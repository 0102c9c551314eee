"""Give a board its firmware back after a field command stopped it (soft reset), and read its console
for whether it starts."""

from __future__ import annotations

import logging
import time
from typing import Callable

from hil.dut import Dut
from hil.dut.errors import DutError
from hil.errors import HilError
from hil.field.check import ConsoleWatch
from hil.field.cli_common import say
from hil.field.cli_steps import Steps
from hil.field.errors import BoardNotAnsweringError

log = logging.getLogger(__name__)

START_WATCH_S = 3.0  # how long flash and provision read the console after the restart for a "cannot start"


def restart(dut: Dut, timeout_s: float) -> None:
    """Reading the board stopped its firmware (Ctrl-C); start it again (soft reset)."""
    try:
        dut.soft_reset(timeout_s=timeout_s)
    except DutError as exc:
        raise BoardNotAnsweringError(f"the board on {dut.url} did not restart its firmware: {exc}; press RESET",
                                     port=dut.url) from exc


def restart_step(dut: Dut, timeout_s: float, step: Steps) -> bool:
    """The "restart the firmware" step after a flash or provision: whether it restarted (a board that did
    not is left as it is, with a warning: the caller has done its own work already)."""
    step("restart the firmware")
    try:
        restart(dut, timeout_s)
    except HilError as exc:
        log.warning("%s", exc)
        return False
    return True


def restart_quietly(dut: Dut, *, port: str, timeout_s: float) -> None:
    """Give a board the firmware back that a command stopped (nothing changed, or a failure)."""
    try:
        restart(dut, timeout_s)
        log.info("firmware on %s restarted", port)
    except HilError as exc:
        say(f"warning: could not restart the firmware: {exc}")


def console_reader(dut: Dut) -> Callable[[float], bytes]:
    """Reads what the running firmware prints; after a link error, waits quietly instead."""
    broken = False

    def read(duration_s: float) -> bytes:
        nonlocal broken
        if not broken:
            try:
                return dut.read_output(duration_s=duration_s)
            except DutError as exc:
                log.info("console of %s no longer readable (%s); watching the gateway only", dut.url, exc)
                broken = True
        time.sleep(duration_s)
        return b""

    return read


def watch_start(dut: Dut, duration_s: float) -> str | None:
    """Read the restarted firmware's console for up to ``duration_s``: its fatal line, if it printed one.
    Stops as soon as the firmware says it runs ("civicedge: ... running")."""
    scan = ConsoleWatch()
    read = console_reader(dut)
    deadline = time.monotonic() + duration_s
    while (left := deadline - time.monotonic()) > 0:
        fatal = scan.feed(read(min(0.5, left)))
        if fatal is not None:
            return fatal
        if scan.running:
            return None
    return scan.feed(b"\n")
