"""A ``--hil-port-range`` with no port left for a server says who holds its ports: which of the session's own
servers took which port, which ports other processes hold; and no empty "--- gateway output ---" section for a
gateway that never ran."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Iterator

import pytest

from hil.pytest_plugin.gateway_process import GatewayProcess, GatewayStartError
from hil.pytest_plugin.ports import PortRange, port_free, range_use_text

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


def free_block(size: int) -> PortRange:
    """``size`` consecutive free ports of 7850-7899 (the ports these tests may use)."""
    lows = list(range(7850, 7900 - size + 1))
    random.shuffle(lows)  # parallel workers rarely pick the same block
    for low in lows:
        if all(port_free(p) for p in range(low, low + size)):
            return PortRange(low, low + size - 1)
    pytest.skip("no block of free ports in 7850-7899")


@pytest.fixture
def taken() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def _take(port: int, held: list[socket.socket]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    held.append(sock)


RADIO_THEN_GATEWAY = """
def test_radio_and_gateway(hil_radio, hil_gateway):
    pass
"""


def test_a_range_the_radio_and_another_process_fill_names_both(pytester: pytest.Pytester,
                                                               taken: list[socket.socket]) -> None:
    """The integrator's run: --hil-port-range LOW-HIGH of two ports, LOW held by another program; the virtual
    radio takes HIGH, and the gateway finds none."""
    block = free_block(2)
    _take(block.low, taken)
    pytester.makepyfile(RADIO_THEN_GATEWAY)
    result = pytester.runpytest_subprocess(f"--hil-port-range={block}", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert (f"no free port in --hil-port-range {block} for the gateway's HTTP server: {block.high} is this "
            f"session's virtual radio (hil_radio); {block.low} is in use by another process" in out), out
    assert "widen the range or free its ports" in out, out
    assert "--- gateway output ---" not in out, out


def test_a_full_range_for_the_gateway_alone_names_the_busy_ports_and_no_empty_output(
        tmp_path: Path, taken: list[socket.socket]) -> None:
    block = free_block(3)
    for port in range(block.low, block.high + 1):
        _take(port, taken)
    with pytest.raises(GatewayStartError) as info:
        GatewayProcess(workdir=tmp_path / "gw", port_range=block, session_ports={block.low: "virtual radio (hil_radio)"},
                       http=True).start()
    message = str(info.value)
    assert message == (f"no free port in --hil-port-range {block} for the gateway's HTTP server: {block.low} is this "
                       f"session's virtual radio (hil_radio); {block.low + 1}, {block.high} are in use by other "
                       "processes. Each of the session's servers needs a port of the range (the gateway's HTTP "
                       "server, the virtual radio; with --hil-backend qemu three per board): widen the range or "
                       "free its ports"), message


def test_a_long_list_of_busy_ports_is_counted(taken: list[socket.socket]) -> None:
    block = free_block(10)
    for port in range(block.low, block.high + 1):
        _take(port, taken)
    text = range_use_text(block, {})
    listed = ", ".join(str(p) for p in range(block.low, block.low + 8))
    assert text == f"{listed} and 2 more are in use by other processes", text


def test_a_port_let_go_since_is_said_to_be_free_again() -> None:
    block = free_block(1)
    assert range_use_text(block, {}) == f"{block.low} is free again now (taken when tried)"


def test_a_gateway_that_printed_keeps_its_output_section() -> None:
    exc = GatewayStartError("gateway exited at start", returncode=1, output="config error: no such file\n")
    assert str(exc) == "gateway exited at start\n--- gateway output ---\nconfig error: no such file\n"
    assert str(GatewayStartError("gateway exited at start", returncode=1, output=" \n")) == "gateway exited at start"
