"""The gateway fixture's process, with failures that say the likely cause.

:class:`~hil.pytest_plugin.gateway_process.GatewayProcess` waits for reports; when none arrive from
a deep-sleeping board on a fast virtual clock, the reason (its awake window shrank below a BLE scan
and connect) is not visible in the gateway output. :class:`HintingGateway` adds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from hil.backends.board import BoardHandle
from hil.backends.errors import BackendError
from hil.pytest_plugin.gateway_process import GatewayProcess

DEEP_SLEEP_AWAKE_S = 30.0
"""Virtual seconds a deep-sleeping board (firmware/main.py) stays awake after a reading for the
gateway to collect its reports (docs/scenarios.md, "Bins and deep sleep")."""

MIN_AWAKE_WALL_S = 3.0
"""Wall seconds of awake window below which a BLE scan and connect is unlikely to fit."""

MAX_DEEP_SLEEP_SPEED = DEEP_SLEEP_AWAKE_S / MIN_AWAKE_WALL_S
"""Highest ``sim(speed=...)`` at which a deep-sleeping virtual board reliably reports (10x)."""


def deep_sleep_hint(boards: Sequence[BoardHandle]) -> str | None:
    """Why ``boards`` likely did not report: a deep-sleeping virtual board on a too fast clock, or None."""
    for board in boards:
        speed = board.extras.get("sim_speed")
        if board.backend != "sim" or board.definition.sleep.mode != "deep" or speed is None:
            continue
        if speed == 0 or speed > MAX_DEEP_SLEEP_SPEED:
            awake = "almost no" if speed == 0 else f"{DEEP_SLEEP_AWAKE_S / speed:.2g} s of"
            shown = "0 (as fast as possible)" if speed == 0 else f"{speed:g}"
            return (f"hint: {board.device_id} ({board.definition.name}) deep-sleeps between readings and stays awake "
                    f"~{DEEP_SLEEP_AWAKE_S:g} virtual s after one for the gateway to collect its reports; at speed "
                    f"{shown} that is {awake} wall time, shorter than a BLE scan and connect. Use "
                    f"@pytest.mark.sim(speed=...) <= {MAX_DEEP_SLEEP_SPEED:g} for deep-sleeping boards "
                    "(docs/hil.md, 'Deep-sleeping boards').")
    return None


@dataclass
class HintingGateway(GatewayProcess):
    """A :class:`GatewayProcess` whose :meth:`wait_for_reports` failure names the likely cause.

    Attributes:
        boards: the test's boards (read for hints only).
    """

    boards: list[BoardHandle] = field(default_factory=list, repr=False)

    @classmethod
    def wrapping(cls, gateway: GatewayProcess, boards: Sequence[BoardHandle]) -> "HintingGateway":
        """The same (not started) gateway, with hints about ``boards``."""
        values: dict[str, Any] = {f.name: getattr(gateway, f.name) for f in dataclasses.fields(gateway) if f.init}
        return cls(**values, boards=list(boards))

    def wait_for_reports(self, *, count: int = 1, device_id: str | None = None,
                         timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """See :meth:`GatewayProcess.wait_for_reports`; a failure says the likely cause when known.

        Raises:
            BackendError: fewer arrived within ``timeout_s``.
        """
        try:
            return super().wait_for_reports(count=count, device_id=device_id, timeout_s=timeout_s)
        except BackendError as exc:
            boards = [b for b in self.boards if device_id is None or b.device_id == device_id]
            hint = deep_sleep_hint(boards)
            if hint is None:
                raise
            raise BackendError(f"{exc}\n{hint}", count=len(self.stored_reports(device_id)),
                               hint="deep-sleep-speed") from exc
