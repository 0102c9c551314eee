"""Failures of the gateway fixture that say the likely cause.

:class:`~hil.pytest_plugin.gateway_process.GatewayProcess` waits for reports; when none arrive, the
reason is often not visible in the gateway output: a deep-sleeping board on a fast virtual clock (its
awake window shrank below a BLE scan and connect, :func:`deep_sleep_hints`), or a clock too slow for
any report to be due yet (reports leave when a 15-minute window closes: at speed 1 that is up to 15
wall minutes, :func:`slow_clock_hints`). Each gives a ``failure_hint`` for the gateway;
:func:`combined_hints` joins them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hil.sleep_limits import DEEP_SLEEP_AWAKE_S, MAX_DEEP_SLEEP_SPEED, MIN_AWAKE_WALL_S

# Annotations only: hil.backends.board drives boards through hil.dut (mpremote, the field extra), which
# the plugin does not import when pytest loads it.
if TYPE_CHECKING:
    from hil.backends.board import BoardHandle

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


def report_window_s(board: BoardHandle) -> float:
    """The report window (s of the board's clock) of ``board``'s kind in the policy
    (firmware/policy.json, ``window_s``: 900)."""
    from gateway.resources import load_policy

    policy: dict[str, Any] = load_policy()
    default = float(policy.get("defaults", {}).get("window_s", 900))
    return float(policy.get("kinds", {}).get(board.definition.kind, {}).get("window_s", default))


def slow_clock_hint(boards: Sequence[BoardHandle], *, now: float | None = None) -> str | None:
    """Why ``boards`` likely did not report: the board's clock has not run one report window since it
    started reporting (a virtual board at speed 1, a real board), so no window may have closed yet; or None.

    Uses ``extras["reporting_since"]`` (``time.monotonic()`` when the fixture had it running) and, on
    the sim backend, ``extras["sim_speed"]`` (a paused clock or speed 0 gives no hint: the first never
    reports, the second jumps).
    """
    now = time.monotonic() if now is None else now
    for board in boards:
        since = board.extras.get("reporting_since")
        if since is None:
            continue
        speed = board.extras.get("sim_speed") if board.backend == "sim" else 1.0
        if not speed:
            continue
        ran = (now - since) * speed
        window = report_window_s(board)
        if ran >= window:
            continue
        minutes = f"{window / 60:g}-minute"
        if board.backend == "sim":
            fast = 300.0
            return (f"hint: {board.device_id} reports when a {minutes} window of its clock closes (on the {minutes} "
                    f"grid); at speed {speed:g} its clock ran ~{ran:.0f} s since it started reporting, less than one "
                    f"window, so no report may be due yet. Speed its clock up, e.g. @pytest.mark.sim(speed={fast:g}) "
                    f"(a window every {window / fast:g} s of wall time), or wait longer (docs/hil.md, 'Writing a test').")
        return (f"hint: {board.device_id} reports when a {minutes} window of its clock closes; on the {board.backend} "
                f"backend boards run in real time and it ran {ran:.0f} s since it started reporting, less than one "
                f"window, so no report may be due yet: wait up to {window / 60:g} minutes (timeout_s={window + 60:.0f}) "
                "or run the test on the sim backend with @pytest.mark.sim(speed=...).")
    return None


def slow_clock_hints(boards: Sequence[BoardHandle]) -> Hint:
    """A ``GatewayProcess.failure_hint`` for ``boards``: the slow-clock hint about the awaited device
    (all of ``boards`` when ``device_id`` is None)."""
    held = list(boards)

    def hint(device_id: str | None) -> str | None:
        return slow_clock_hint([b for b in held if device_id is None or b.device_id == device_id])

    return hint
