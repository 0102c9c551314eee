"""Failures of the gateway fixture that say the likely cause.

:class:`~hil.pytest_plugin.gateway_process.GatewayProcess` waits for reports; when none arrive from
a deep-sleeping board on a fast virtual clock, the reason (its awake window shrank below a BLE scan
and connect) is not visible in the gateway output. :func:`deep_sleep_hints` gives the gateway's
``failure_hint`` that adds it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from hil.backends.board import BoardHandle
from hil.sleep_limits import DEEP_SLEEP_AWAKE_S, MAX_DEEP_SLEEP_SPEED, MIN_AWAKE_WALL_S

__all__ = ["DEEP_SLEEP_AWAKE_S", "MAX_DEEP_SLEEP_SPEED", "MIN_AWAKE_WALL_S"]  # re-exported


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


def deep_sleep_hints(boards: Sequence[BoardHandle]) -> Callable[[str | None], str | None]:
    """A ``GatewayProcess.failure_hint`` for ``boards``: the deep-sleep hint about the awaited device
    (all of ``boards`` when ``device_id`` is None)."""
    held = list(boards)

    def hint(device_id: str | None) -> str | None:
        return deep_sleep_hint([b for b in held if device_id is None or b.device_id == device_id])

    return hint


Hint = Callable[[str | None], str | None]
"""A ``GatewayProcess.failure_hint``: the likely cause for a ``device_id`` (None: all boards), or None."""


def combined_hints(*hints: Hint) -> Hint:
    """One ``failure_hint`` giving the text of every hint of ``hints`` that has one, one per line."""

    def hint(device_id: str | None) -> str | None:
        texts = [text for h in hints if (text := h(device_id)) is not None]
        return "\n".join(texts) or None

    return hint
