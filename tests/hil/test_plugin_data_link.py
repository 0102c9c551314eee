"""The serial backend's data link (``--hil-data-port``) and ``hil_gateway`` with no data link at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.backends.errors import BackendError
from hil.backends.serial.driver import SerialDriver
from hil.backends.serial.select import PortInfo
from hil.boards import load_board

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(240)


def _handle(tmp_path: Path) -> BoardHandle:
    definition = load_board("streetlight-esp32")
    return BoardHandle(backend="serial", definition=definition, identity=make_identity(definition),
                       workdir=tmp_path)


def test_data_port_by_usb_serial_number_becomes_the_data_url(tmp_path: Path) -> None:
    ports = [PortInfo("/dev/ttyUSB0", serial_number="CONSOLE1"), PortInfo("/dev/ttyUSB1", serial_number="DATA1")]
    driver = SerialDriver(selector="usb:CONSOLE1", data_port="usb:DATA1", lease_dir=tmp_path / "leases",
                          ports=ports)
    handle = _handle(tmp_path)
    driver.attach(handle)
    try:
        assert (handle.console_url, handle.data_url) == ("/dev/ttyUSB0", "/dev/ttyUSB1")
    finally:
        driver.stop(handle)


def test_data_port_not_found_releases_the_console_lease(tmp_path: Path) -> None:
    ports = [PortInfo("/dev/ttyUSB0", serial_number="CONSOLE1")]
    driver = SerialDriver(selector="usb:CONSOLE1", data_port="usb:GONE", lease_dir=tmp_path / "leases", ports=ports)
    handle = _handle(tmp_path)
    with pytest.raises(BackendError, match="GONE"):
        driver.attach(handle)
    assert handle.resource is None
    assert not list((tmp_path / "leases").glob("*.lease"))


def test_the_data_port_is_leased_like_the_console(tmp_path: Path) -> None:
    from hil.backends.serial.lease import Lease, LeaseHeldError

    ports = [PortInfo("/dev/ttyUSB0", serial_number="CONSOLE1"), PortInfo("/dev/ttyUSB1", serial_number="DATA1")]
    leases = tmp_path / "leases"
    driver = SerialDriver(selector="usb:CONSOLE1", data_port="usb:DATA1", lease_dir=leases, ports=ports)
    handle = _handle(tmp_path)
    driver.attach(handle)
    try:
        assert handle.resource.held and handle.extras["data_lease"].held
        assert handle.extras["data_lease"].resource == "usb:DATA1"
    finally:
        driver.stop(handle)
    assert not list(leases.glob("*.lease")) and "data_lease" not in handle.extras
    # Another run holding the data port: this run waits, then fails, and gives the console back.
    holder = Lease("usb:DATA1", lease_dir=leases, duration_s=120)
    holder.acquire(wait_s=0)
    try:
        with pytest.raises(LeaseHeldError):
            driver.attach(handle)
        assert handle.resource is None
        assert [p.name for p in leases.glob("*.lease")] == [holder.path.name]
    finally:
        holder.release()


def test_a_data_port_that_resolves_to_the_console_port_is_refused(tmp_path: Path) -> None:
    console = tmp_path / "ttyUSB0"
    console.touch()
    link = tmp_path / "by-id-link"
    link.symlink_to(console)  # e.g. /dev/serial/by-id/usb-...-port0 -> ../../ttyUSB0
    driver = SerialDriver(selector=str(console), data_port=str(link), lease_dir=tmp_path / "leases", ports=[])
    handle = _handle(tmp_path)
    with pytest.raises(BackendError, match="is the console port"):
        driver.attach(handle)
    assert handle.resource is None and handle.data_url is None
    assert not list((tmp_path / "leases").glob("*.lease"))


def test_hil_gateway_on_serial_without_a_data_port_fails_before_touching_the_board(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    lease_dir = tmp_path / "leases"
    pytester.makepyfile("""
        def test_reports_arrive(hil_board, hil_gateway):
            pass

        def test_console_only(hil_board):
            pass
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port",
                                "/dev/ttyNOSUCH0", "--hil-lease-dir", str(lease_dir), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    # The gateway test errors before the board is looked for; the console-only test did look (none there).
    result.stdout.fnmatch_lines(["*ERROR at setup of test_reports_arrive*",
                                 "hil_gateway: no data link to the serial board (streetlight-esp32)*"
                                 "--hil-data-port PORT*",
                                 "*ERROR at setup of test_console_only*",
                                 "hil_board: NoMatchingPortError: *no serial port /dev/ttyNOSUCH0*"])


def test_without_a_data_port_the_driver_leaves_no_data_link(tmp_path: Path) -> None:
    driver = SerialDriver(selector="/dev/ttyUSB0", lease_dir=tmp_path / "leases",
                          ports=[PortInfo("/dev/ttyUSB0")])
    handle = _handle(tmp_path)
    driver.attach(handle)
    try:
        assert handle.data_url is None
    finally:
        driver.stop(handle)


def test_hil_gateway_without_a_data_link_fails_at_once_naming_the_option(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        from hil.backends.board import BoardHandle, make_identity
        from hil.boards import load_board

        @pytest.fixture
        def hil_board(tmp_path):  # what the serial backend gives without --hil-data-port, without booting
            d = load_board("streetlight-esp32")
            return BoardHandle(backend="serial", definition=d, identity=make_identity(d, device_id="sl-x"),
                               workdir=tmp_path, state="reporting", console_url="/dev/ttyUSB0")
    """)
    pytester.makepyfile("""
        def test_reports_arrive(hil_board, hil_gateway):
            hil_gateway.wait_for_reports(count=2, device_id=hil_board.device_id, timeout_s=60)
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", "/dev/ttyUSB0", "--durations=1")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*hil_gateway: no data link to sl-x (streetlight-esp32, serial)*"
                                 "--hil-data-port PORT*"])
    assert "reports stored after" not in result.stdout.str()  # no 60 s wait for nothing


@pytest.fixture
def blank_streetlight(tmp_path_factory: pytest.TempPathFactory, sim_available: None) -> Iterator[Any]:
    """A virtual streetlight with MicroPython only, at 300x: a real board freshly flashed, plus its data UART."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path_factory.mktemp("blank-flash"), install=False,
                         speed=300)
    try:
        loop.run(board.start(), timeout_s=120)
        yield board
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()


def test_serial_backend_runs_the_docs_example(pytester: pytest.Pytester, blank_streetlight: Any,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """docs/hil.md's example, verbatim, on the serial backend: console and data UART of a (virtual)
    board. Reports arrive over the data port; the fleet test skips at once (one board), never waiting
    --hil-lease-wait for the lease its own first board holds."""
    from test_docs_example import doc_example

    assert blank_streetlight.data_path
    pytester.makepyfile(test_doc=doc_example())
    result = pytester.runpytest_subprocess(
        "--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port", blank_streetlight.console_path,
        "--hil-data-port", blank_streetlight.data_path, "--hil-lease-dir", str(tmp_path_factory.mktemp("leases")),
        "--hil-lease-wait", "200", "-rs", "-p", "no:cacheprovider", timeout=220)
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_doc.py:*: the serial backend drives one board (--hil-port "
                                 f"{blank_streetlight.console_path}); fleet(streetlight-esp32=3) needs 3 boards*"])
