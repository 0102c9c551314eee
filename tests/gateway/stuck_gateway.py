"""A stand-in ``Gateway`` with a task that ignores cancellation, run by ``gateway run`` in a subprocess.

Shared by test_service.py (the run is stopped by a SIGTERM: ``civicedge gateway run`` still exits) and
test_run_stop_hangs.py (the start fails, as on an HTTP port in use: the run still ends with the error). The
subprocess runs :func:`command`: it imports this module by its path and swaps it in for the real Gateway.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from gateway.errors import TransportError

SIGTERM_AFTER_S = 0.3
"""Seconds after the start at which a started :class:`StuckGateway` sends its own process a SIGTERM."""


async def _ignore_cancellation() -> None:
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass


class StuckGateway:
    """Starts a task (``stuck-radio``) that swallows every cancel, then SIGTERMs its own process; its stop prints
    ``stopped``."""

    http_port = None
    fail_start = False
    """True: the start raises (an HTTP port in use) after the task began, instead of the SIGTERM."""

    def __init__(self, config: Any) -> None:
        self.task: asyncio.Task[None] | None = None

    def retention(self) -> dict[str, Any]:
        """None shorter than ``[retention] interval_s`` (run warns from it)."""
        return {}

    async def start(self) -> None:
        self.task = asyncio.create_task(_ignore_cancellation(), name="stuck-radio")
        if self.fail_start:
            await asyncio.sleep(0.1)
            raise TransportError("cannot serve HTTP on port 1: in use", reason="open_failed", link="http")
        asyncio.get_running_loop().call_later(SIGTERM_AFTER_S, os.kill, os.getpid(), signal.SIGTERM)

    async def stop(self) -> None:
        print("stopped", flush=True)


class StuckStart(StuckGateway):
    """A :class:`StuckGateway` whose start fails after its task began."""

    fail_start = True


def run(gateway: type[StuckGateway]) -> NoReturn:
    """``gateway run`` (``run_cmd._run``, default config) with ``gateway`` as the Gateway; exits with its code, or
    with ``raised <exception>`` (status 1) when it raised."""
    from gateway import service
    from gateway.cli import run_cmd
    from gateway.config.loader import default_config

    service.Gateway = gateway  # type: ignore[misc, assignment]
    try:
        code: int | str = asyncio.run(run_cmd._run(default_config()))
    except Exception as exc:
        code = "raised %r" % exc
    sys.exit(code)


def command(gateway: type[StuckGateway]) -> list[str]:
    """The command line of a Python subprocess that does :func:`run` with ``gateway``."""
    script = (f"import sys; sys.path.append({str(Path(__file__).resolve().parent)!r}); import stuck_gateway; "
              f"stuck_gateway.run(stuck_gateway.{gateway.__name__})")
    return [sys.executable, "-c", script]
