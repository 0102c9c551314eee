"""Warnings about a scenario that validates but is unlikely to give the result its author wants.

So far one: a board that deep-sleeps (``sleep = "deep"``) at a speed where its awake window after
a reading is shorter than a BLE scan and connect; its reports then never reach the gateway and
``reports_min``/``no_loss`` fail without saying why. The numbers (how long a deep-sleeping board
stays awake, the highest speed at which it reliably reports) are in :mod:`hil.sleep_limits`, shared
with the pytest plugin's :mod:`hil.pytest_plugin.hints`, which gives the same advice to tests.
"""

from __future__ import annotations

from hil.boards import load_board
from hil.scenarios.model import Scenario
from hil.sleep_limits import DEEP_SLEEP_AWAKE_S, MAX_DEEP_SLEEP_SPEED


def deep_sleep_warnings(scenario: Scenario, speed: float | None = None) -> list[str]:
    """One warning per ``[[boards]]`` entry that deep-sleeps too fast to report at ``speed``
    (default: the scenario's); empty when none does.

    Only entries with ``sleep = "deep"`` on a board whose definition deep-sleeps count: with the
    default ``sleep = "awake"`` the run keeps the radio on.
    """
    awake_s, max_speed = DEEP_SLEEP_AWAKE_S, MAX_DEEP_SLEEP_SPEED
    run_speed = float(speed if speed is not None else scenario.speed)
    if run_speed <= max_speed:
        return []
    out = []
    for i, group in enumerate(scenario.boards):
        if group.sleep != "deep":
            continue
        definition = load_board(group.board)
        if definition.sleep.mode != "deep":
            continue
        ids = ", ".join(group.ids)
        out.append(f"boards[{i + 1}] ({definition.name}: {ids}): sleep = \"deep\" at {run_speed:g}x: a deep-sleeping "
                   f"board stays awake ~{awake_s:g} virtual s after a reading for the gateway to collect its reports, "
                   f"{awake_s / run_speed:.2g} s of wall time at {run_speed:g}x, shorter than a BLE scan and connect, "
                   f"so its reports will likely not arrive. Use speed <= {max_speed:g} (or --speed {max_speed:g}), or "
                   "sleep = \"awake\" (docs/scenarios.md, 'Bins and deep sleep')")
    return out


def with_hint(message: str, hints: list[str]) -> str:
    """``message`` followed by the hints (``hint: ...``), for a failing expectation."""
    return message + "".join(f" — hint: {h}" for h in hints)


__all__ = ["deep_sleep_warnings", "with_hint"]
