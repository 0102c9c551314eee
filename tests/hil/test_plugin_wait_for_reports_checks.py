"""``GatewayProcess.wait_for_reports`` refuses a wait that cannot mean anything: ``count`` below 1 (was: ``[]`` at
once, so a test checking nothing passed) and a device id the gateway has no record of (was: the whole timeout, then
"0 of 1 reports stored"); it fails at once naming the registered ids, with a did-you-mean."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
from held_ports import port_block  # noqa: F401 - a fixture

from hil.backends.errors import BackendError
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.pytest_plugin.ports import PortRange

pytest_plugins = ["pytester"]

BOARD = "streetlight-hil-1a2b3c"


@pytest.fixture
def gateway(tmp_path: Path) -> GatewayProcess:
    """A gateway's registry with one board (waits read the registry and store; no process is needed)."""
    from gateway.registry import Registry

    gw = GatewayProcess(workdir=tmp_path / "gw", http=False)
    registry = Registry(gw.registry_dir)
    try:
        registry.add(BOARD, kind="streetlight", zone="hil", lat="52.1", lon="4.3")
        registry.add("bin-hil-9f8e7d", kind="bin", zone="hil", lat="52.1", lon="4.3")
    finally:
        registry.close()
    return gw


@pytest.mark.parametrize("count", [0, -1, True, 1.5, "2", None])
def test_a_count_below_one_or_not_whole_is_refused(gateway: GatewayProcess, count: Any) -> None:
    with pytest.raises(ValueError, match=r"wait_for_reports\(count=\.\.\.\): count must be a whole number >= 1") as info:
        gateway.wait_for_reports(count=count, device_id=BOARD, timeout_s=5)
    assert f"not {count!r}" in str(info.value)


def test_an_unregistered_device_fails_at_once_with_a_did_you_mean(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        gateway.wait_for_reports(device_id="streetlight-hil-1a2b3d", timeout_s=30)
    assert time.monotonic() - started < 5  # not the whole timeout
    message = str(info.value)
    assert "device 'streetlight-hil-1a2b3d' is not registered with this gateway" in message, message
    assert f"did you mean {BOARD!r}?" in message, message
    assert f"registered: bin-hil-9f8e7d, {BOARD}" in message, message
    assert info.value.details["registered"] == ["bin-hil-9f8e7d", BOARD]


def test_an_unrelated_id_lists_the_registered_ones_without_a_guess(gateway: GatewayProcess) -> None:
    with pytest.raises(BackendError) as info:
        gateway.wait_for_reports(device_id="x", timeout_s=30)
    assert "did you mean" not in str(info.value) and f"registered: bin-hil-9f8e7d, {BOARD}" in str(info.value)


def test_a_registered_device_still_waits_for_its_reports(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    with pytest.raises(BackendError, match="0 of 1 reports stored after 0.5 s"):
        gateway.wait_for_reports(device_id=BOARD, timeout_s=0.5)
    assert time.monotonic() - started >= 0.5


def test_an_empty_registry_says_none_is_registered(tmp_path: Path) -> None:
    from gateway.registry import Registry

    gw = GatewayProcess(workdir=tmp_path / "gw", http=False)
    Registry(gw.registry_dir).close()  # what a started gateway with no boards has
    with pytest.raises(BackendError, match="is not registered with this gateway.*registered: none"):
        gw.wait_for_reports(device_id=BOARD, timeout_s=30)


TYPO_TEST = """
import pytest

def test_typo(hil_board, hil_gateway):
    hil_gateway.wait_for_reports(device_id=hil_board.device_id + "x", timeout_s=120)
"""


@pytest.mark.timeout(240)
def test_a_typo_in_a_boards_id_fails_the_test_at_once(pytester: pytest.Pytester, sim_available: None,
                                                      port_block: Callable[[int], PortRange]) -> None:
    pytester.makepyfile(TYPO_TEST)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--hil-backend", "sim", f"--hil-port-range={port_block(10)}", "-p",
                                           "no:cacheprovider", timeout=230)
    result.assert_outcomes(failed=1)
    assert time.monotonic() - started < 100  # the 120-s wait was not sat out
    result.stdout.fnmatch_lines(["*BackendError: wait_for_reports: device 'streetlight-hil-*x' is not registered "
                                 "with this gateway*did you mean 'streetlight-hil-*'?*"])
