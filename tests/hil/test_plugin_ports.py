"""--hil-port-range: the gateway's HTTP server and the virtual radio listen only on ports of the range."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Callable

import pytest
from held_ports import pick_block, port_block, take, taken  # noqa: F401 - port_block, taken: fixtures

from hil.pytest_plugin.gateway_process import GatewayProcess, GatewayStartError
from hil.pytest_plugin.ports import PortRange

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


def test_the_plugins_servers_listen_in_the_range(pytester: pytest.Pytester,
                                                 port_block: Callable[[int], PortRange]) -> None:
    block = port_block(6)
    pytester.makepyfile("""
        def test_ports(hil_radio, hil_gateway, hil_settings):
            assert hil_radio.port in hil_settings.port_range, hil_radio.url
            assert hil_gateway.http_port in hil_settings.port_range
            assert hil_gateway.http_port != hil_radio.port
    """)
    result = pytester.runpytest(f"--hil-port-range={block}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_gateway_skips_ports_in_use(tmp_path: Path, taken: list[socket.socket],
                                        port_block: Callable[[int], PortRange]) -> None:
    block = port_block(4)
    for port in range(block.low, block.high):  # all but the last
        take(port, taken)
    gateway = GatewayProcess(workdir=tmp_path / "gw", port_range=block)
    gateway.start()
    try:
        assert gateway.http_port == block.high
        gateway.restart()  # a restart keeps the port, so URLs a test holds stay valid
        assert gateway.http_port == block.high
    finally:
        gateway.stop()


def test_a_full_range_is_a_clear_error(tmp_path: Path, taken: list[socket.socket],
                                       port_block: Callable[[int], PortRange]) -> None:
    block = port_block(2)
    for port in range(block.low, block.high + 1):
        take(port, taken)
    with pytest.raises(GatewayStartError, match=f"no free port in --hil-port-range {block} for the gateway's HTTP"):
        GatewayProcess(workdir=tmp_path / "gw", port_range=block).start()


@pytest.mark.parametrize("value", ["42000-", "2-1", "0-10", "42000-70000", "low-high"])
def test_a_bad_range_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--hil-port-range={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --hil-port-range: a port range is LOW-HIGH*"])


def test_port_range_parsing() -> None:
    assert PortRange.parse("42000-42999") == PortRange(42000, 42999) and len(PortRange.parse("42000")) == 1
    ports = PortRange(42000, 42009)
    assert sorted(ports.candidates()) == list(range(42000, 42010)) and 42009 in ports and 42010 not in ports


def test_a_block_reserved_or_bound_elsewhere_is_passed_over(port_block: Callable[[int], PortRange],
                                                            taken: list[socket.socket]) -> None:
    """The blocks of the tests above: one another test holds (another xdist worker's, though nothing listens on it
    yet) and one with a port bound by another program are passed over for another block."""
    held = port_block(4)
    aside: list[socket.socket] = []
    busy = pick_block(2, aside)
    take(busy.low, taken)
    for sock in aside:  # bound, but no longer reserved: only the probe can see it
        sock.close()
    firsts = iter([held.low - 1, busy.low])  # each overlaps one port of its block
    asked: list[int] = []

    def randint(low: int, high: int) -> int:
        asked.append(next(firsts, random.randint(low, high)))
        return asked[-1]

    reservations: list[socket.socket] = []
    try:
        block = pick_block(2, reservations, randint=randint)
    finally:
        for sock in reservations:
            sock.close()
    assert asked[:2] == [held.low - 1, busy.low] and len(asked) >= 3, asked
    assert block.low == asked[-1], (block, asked)
    assert not {held.low, busy.low} & set(range(block.low, block.high + 1)), (block, held, busy)
