"""A ``--hil-port-range`` with no port left for a server says who holds its ports: which of the session's own
servers took which port, which ports other processes hold; and no empty "--- gateway output ---" section for a
gateway that never ran."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

import pytest
from held_ports import port_block, take, taken  # noqa: F401 - port_block, taken: fixtures

from hil.pytest_plugin.gateway_process import GatewayProcess, GatewayStartError
from hil.pytest_plugin import ports
from hil.pytest_plugin.ports import PortRange, range_use_text

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


RADIO_THEN_GATEWAY = """
def test_radio_and_gateway(hil_radio, hil_gateway):
    pass
"""


def test_a_range_the_radio_and_another_process_fill_names_both(
        pytester: pytest.Pytester, taken: list[socket.socket], port_block: Callable[[int], PortRange]) -> None:
    """The integrator's run: --hil-port-range LOW-HIGH of two ports, LOW held by another program; the virtual
    radio takes HIGH, and the gateway finds none."""
    block = port_block(2)
    take(block.low, taken)
    pytester.makepyfile(RADIO_THEN_GATEWAY)
    result = pytester.runpytest_subprocess(f"--hil-port-range={block}", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert (f"no free port in --hil-port-range {block} for the gateway's HTTP server: {block.high} is this "
            f"session's virtual radio (hil_radio); {block.low} is in use by another process" in out), out
    assert "widen the range or free its ports" in out, out
    assert "--- gateway output ---" not in out, out


def test_a_full_range_for_the_gateway_alone_names_the_busy_ports_and_no_empty_output(
        tmp_path: Path, taken: list[socket.socket], port_block: Callable[[int], PortRange]) -> None:
    block = port_block(3)
    for port in range(block.low, block.high + 1):
        take(port, taken)
    with pytest.raises(GatewayStartError) as info:
        GatewayProcess(workdir=tmp_path / "gw", port_range=block, session_ports={block.low: "virtual radio (hil_radio)"},
                       http=True).start()
    message = str(info.value)
    assert message == (f"no free port in --hil-port-range {block} for the gateway's HTTP server: {block.low} is this "
                       f"session's virtual radio (hil_radio); {block.low + 1}, {block.high} are in use by other "
                       "processes. Each of the session's servers needs a port of the range (the gateway's HTTP "
                       "server, the virtual radio; with --hil-backend qemu three per board): widen the range or "
                       "free its ports"), message


def test_a_long_list_of_busy_ports_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # No real ports: every port of the range is "held" by another process (as port_free would say).
    monkeypatch.setattr(ports, "port_free", lambda port, host=ports.HOST: False)
    block = PortRange(40000, 40011)
    text = range_use_text(block, {40011: "virtual radio (hil_radio)"})
    listed = ", ".join(str(p) for p in range(40000, 40008))
    assert text == f"40011 is this session's virtual radio (hil_radio); {listed} and 3 more are in use by other processes", text


def test_a_port_let_go_since_is_said_to_be_free_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "port_free", lambda port, host=ports.HOST: port == 40001)
    assert range_use_text(PortRange(40000, 40001), {}) == ("40000 is in use by another process; "
                                                           "40001 is free again now (taken when tried)")


def test_a_gateway_that_printed_keeps_its_output_section() -> None:
    exc = GatewayStartError("gateway exited at start", returncode=1, output="config error: no such file\n")
    assert str(exc) == "gateway exited at start\n--- gateway output ---\nconfig error: no such file\n"
    assert str(GatewayStartError("gateway exited at start", returncode=1, output=" \n")) == "gateway exited at start"
