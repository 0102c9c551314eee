"""Fixtures of the HIL plugin: boards brought to "reporting", a fleet, a gateway, the radio.

Which backend runs the boards is a command-line choice (``--hil-backend``); tests are written
once. Hardware that cannot exist here (no Espressif QEMU on PATH) makes the fixtures SKIP the test
with the reason; a prerequisite the user chose and that is missing (the sim backend's Node runtime,
installed by scripts/setup; a gateway with no data link to the board) makes them ERROR at once.
Missing options (``--hil-port``, ``--hil-qemu-image``) are usage errors at session start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest

from hil.backends.capabilities import CapabilityManifest
from hil.backends.errors import BackendError, QemuNotFoundError
from hil.boards import BoardDefinition, BoardError
from hil.cli.extras import extra_for
from hil.errors import HilError
from hil.pytest_plugin.gateway_process import GatewayProcess, gateway_for, reads_over_ble
from hil.pytest_plugin.hints import combined_hints, deep_sleep_hints, slow_clock_hints
from hil.pytest_plugin.logs import KeptLog, console_failure_hint, keep_board_console, keep_log
from hil.pytest_plugin.markers import fleet_marker_text, gateway_link, ignored_marker_problem
from hil.pytest_plugin.ports import PortRange, free_ports, port_free, range_exhausted_message
from hil.pytest_plugin.settings import (HilSettings, board_problem, settings_key, sim_marker_options,
                                        sim_marker_start_ms)

# hil.backends.board drives boards through hil.dut (mpremote, the field extra): imported when a fixture
# brings a board up (require_harness), not with the plugin, which pytest loads wherever civicedge is.
if TYPE_CHECKING:
    from hil.backends.board import BoardDriver, BoardHandle, BoardStateError, Strategy

log = logging.getLogger(__name__)

radio_port_key = pytest.StashKey[int | None]()
"""The port the session's virtual radio (``hil_radio``) listens on while it runs."""

DEFAULT_FLEET_SIZE = 3
"""Boards of ``hil_fleet`` without a ``fleet(...)`` marker (all of the session board)."""

SINGLE_BOARD_BACKENDS: frozenset[str] = frozenset({"serial"})
"""Backends that drive exactly one board: the serial backend's ``--hil-port`` names one (the sim
backend starts as many virtual boards, the qemu backend as many QEMU machines, as a test asks)."""


@dataclass
class Fleet:
    """Several boards of one test, all brought to the same state.

    Attributes:
        boards: the board handles, in creation order.
    """

    strategy: Strategy
    boards: list[BoardHandle] = field(default_factory=list)

    def __iter__(self) -> Iterator[BoardHandle]:
        return iter(self.boards)

    def __len__(self) -> int:
        return len(self.boards)

    def __getitem__(self, index: int) -> BoardHandle:
        return self.boards[index]

    def power_off(self) -> None:
        """Stop every board, then the driver; then raise what failed (a board whose own identity was
        not put back must not let the test pass).

        Raises:
            HilError: stopping a board failed: its error when one did, else a
                :class:`~hil.backends.errors.BackendError` naming each board and its error.
        """
        failed: list[tuple[BoardHandle, Exception]] = []
        try:
            for board in reversed(self.boards):
                try:
                    self.strategy.power_off(board)
                except Exception as exc:  # noqa: BLE001 - teardown must reach every board; raised below
                    log.warning("stopping %s failed: %s", board.device_id, exc)
                    failed.append((board, exc))
        finally:
            self.strategy.close()
        if len(failed) == 1:
            raise failed[0][1]
        if failed:
            raise BackendError("stopping the fleet's boards failed: " + "; ".join(
                f"{board.device_id}: {type(exc).__name__}: {exc}" for board, exc in failed),
                boards=[board.device_id for board, _ in failed])


def boards_needed(item: pytest.Item) -> tuple[int, str] | None:
    """How many boards ``item`` brings up through ``hil_board``/``hil_fleet``, and what asks for
    them (``"fleet(streetlight-esp32=3)"``); None when it uses no fleet or its ``fleet(...)`` marker
    is malformed (the ``hil_fleet`` fixture reports that as a usage error)."""
    names = getattr(item, "fixturenames", ())
    if "hil_fleet" not in names:
        return None
    mark = item.get_closest_marker("fleet")
    if mark is None:
        return _fleet_need(None, with_board="hil_board" in names)
    counts = list(mark.kwargs.values())
    if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        return None
    return _fleet_need(dict(mark.kwargs), with_board="hil_board" in names)


def _fleet_need(mix: dict[str, int] | None, *, with_board: bool) -> tuple[int, str]:
    """Boards a fleet of ``mix`` (None: the default fleet) plus maybe a ``hil_board`` needs, and
    what asks for them."""
    if mix is None:
        count, what = DEFAULT_FLEET_SIZE, f"hil_fleet (default: {DEFAULT_FLEET_SIZE} of the session board)"
    else:
        count = sum(mix.values())
        what = fleet_marker_text(mix)
    if with_board:
        return count + 1, f"hil_board + {what}"
    return count, what


def _too_many_boards_reason(settings: HilSettings, needed: tuple[int, str] | None) -> str | None:
    if settings.backend not in SINGLE_BOARD_BACKENDS or needed is None or needed[0] <= 1:
        return None
    count, what = needed
    return (f"the {settings.backend} backend drives one board (--hil-port {settings.port}); {what} needs "
            f"{count} boards (run it on the sim or qemu backend)")


def single_board_skip_reason(settings: HilSettings, item: pytest.Item) -> str | None:
    """Why ``item`` cannot run on the session's backend because it needs more boards than the
    backend drives (the serial backend: one, the ``--hil-port`` board), or None.

    Decided at collection from the test's fixture list; a fleet requested at run time
    (``request.getfixturevalue("hil_fleet")``) is not in it, and ``hil_fleet`` skips it itself.

    A skip, not an error: the test is valid and runs on the sim and qemu backends; this rig just
    has not that many boards (like a capability the backend lacks).
    """
    return _too_many_boards_reason(settings, boards_needed(item))


def setup_failure_message(fixture: str, exc: BoardStateError) -> str | None:
    """The one-line failure of a board that could not be brought up for an error of ours (no such
    port, lease held, firmware refused to start, ...), or None for an unexpected exception (a bug,
    whose traceback the test report keeps)."""
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, HilError):
        return None
    return f"{fixture}: {type(cause or exc).__name__}: {exc}"


def bring_up(strategy: Strategy, handle: BoardHandle, *, fixture: str) -> None:
    """Bring ``handle`` to "reporting"; FAIL the test with just the message (no traceback through
    pytest, pytest-asyncio and the strategy) when one of our errors stops it."""
    from hil.backends.board import BoardStateError

    try:
        strategy.transition(handle, "reporting")
        return
    except BoardStateError as exc:
        message = setup_failure_message(fixture, exc)
        if message is None:
            raise
    # Failed outside the except block: inside it, pytest prints the exception chain ("The above
    # exception was the direct cause...", "During handling...") even with pytrace=False.
    pytest.fail(message, pytrace=False)


def power_off_or_fail(power_off: Callable[[], None], *, fixture: str) -> None:
    """Run a fixture's teardown ``power_off``; an error of ours (e.g. the board's own identity not put
    back) ERRORS the test with its message only: no traceback, whose frames would show the arguments
    of the calls that failed (a file's content on its way to the board)."""
    try:
        power_off()
        return
    except HilError as exc:
        message = f"{fixture} teardown: {type(exc).__name__}: {exc}"
    # Outside the except block: inside it pytest prints the exception chain even with pytrace=False.
    pytest.fail(message, pytrace=False)


def require_harness(fixture: str) -> None:
    """FAIL the test with one line when the modules that drive boards are not installed: ``hil_board
    needs the 'hil' extra: pip install 'civicedge[hil]' (missing module mpremote)``."""
    try:
        import hil.backends.board  # noqa: F401
        return
    except ModuleNotFoundError as exc:
        missing = extra_for(exc)
        if missing is None:
            raise
    # Failed outside the except block: inside it, pytest prints the exception chain even with pytrace=False.
    pytest.fail(f"{fixture} needs the 'hil' extra: pip install 'civicedge[hil]' (missing module {missing[1]})",
                pytrace=False)


def make_driver(settings: HilSettings, definitions: list[BoardDefinition],
                request: pytest.FixtureRequest) -> BoardDriver:
    """The driver of the session's backend.

    SKIPS the test when Espressif QEMU is not on PATH (hardware that cannot exist here); FAILS it
    (an error at setup) when the sim backend's runtime is missing: scripts/setup (a checkout) or
    ``civicedge sim install-runtime`` (a wheel) installs it, so its absence is a broken install that
    must not turn CI green. FAILS it when the harness's packages are not installed (:func:`require_harness`).
    """
    require_harness(request.fixturename or "hil_board")
    if settings.backend == "sim":
        from hil.backends.sim_driver import SimDriver, simulator_unavailable_reason

        reason = simulator_unavailable_reason()
        if reason is not None:
            # reason names what installs the missing part (hil.sim.runtime: `civicedge sim install-runtime`).
            pytest.fail(f"sim backend unavailable: {reason} (or choose --hil-backend qemu|serial)", pytrace=False)
        speed, seed = sim_marker_options(request.node)
        return SimDriver(radio_url=request.getfixturevalue("hil_radio").url if wants_radio(definitions, request) else None,
                         speed=settings.sim_speed if speed is None else speed, seed=seed,
                         start_ms=sim_marker_start_ms(request.node))
    definition = definitions[0]
    if settings.backend == "qemu":
        from hil.backends.qemu.driver import QemuDriver

        chips = list(dict.fromkeys(d.chip for d in definitions))
        for chip in chips:
            if settings.qemu_image_for(chip) is None:  # a suite of several chips, run with images of some
                names = ", ".join(sorted({d.name for d in definitions if d.chip == chip}))
                pytest.skip(f"qemu backend: no MicroPython image for {chip} ({names}); add --hil-qemu-image "
                            f"{chip}=FILE (given: {', '.join(sorted(settings.qemu_images))})")
        qemu = QemuDriver(release_image=settings.qemu_image, release_images=settings.qemu_images,
                          port_range=settings.port_range)
        try:
            for chip in chips:
                qemu.check_available(chip)
        except QemuNotFoundError as exc:
            pytest.skip(f"qemu backend unavailable: {exc}")
        except BackendError as exc:
            # from None: a one-line failure, without the exception chain pytest would print.
            raise pytest.fail.Exception(f"qemu backend: {exc}", pytrace=False) from None
        return qemu
    from hil.backends.serial.driver import SerialDriver

    # --hil-port is checked at session start (pytest_sessionstart): a usage error, never a skip.
    if settings.data_port is None and "hil_gateway" in request.fixturenames:
        # Fail before leasing, flashing and booting a board whose reports could never arrive.
        names = ", ".join(sorted({d.name for d in definitions}))
        pytest.fail(f"hil_gateway: no data link to the serial board ({names}), so no report can arrive: "
                    f"{_no_link_how('serial', definition)}", pytrace=False)
    return SerialDriver(selector=settings.port, lease_dir=settings.lease_dir, lease_wait_s=settings.lease_wait_s,
                        data_port=settings.data_port, reprovision=settings.reprovision)


def wants_radio(definitions: list[BoardDefinition], request: pytest.FixtureRequest) -> bool:
    """Whether the sim backend puts the test's BLE boards on the virtual radio: always for a board whose
    only link is BLE (its reports leave that way), and for every BLE board when the test uses
    ``hil_radio``, ``requires("ble")`` or ``hil_gateway(link="ble")`` (a UART+BLE board otherwise gets no
    ``ble_address``)."""
    if any(d.ble is not None and d.uart is None for d in definitions):
        return True
    if not any(d.ble is not None for d in definitions):
        return False
    needs_ble = any("ble" in mark.args for mark in request.node.iter_markers(name="requires"))
    return needs_ble or "hil_radio" in request.fixturenames or gateway_link(request.node) == "ble"


def _fail_on_ignored_marker(request: pytest.FixtureRequest) -> None:
    """FAIL with one line when a marker of the test is one this fixture ignores (:func:`ignored_marker_problem`);
    at collection that is a usage error, here it catches a fixture asked for with ``getfixturevalue``."""
    problem = ignored_marker_problem(request.node, [*request.fixturenames, request.fixturename or ""])
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def _board_name(request: pytest.FixtureRequest) -> str | None:
    mark = request.node.get_closest_marker("board")
    if mark is None:
        return None
    if len(mark.args) != 1 or not isinstance(mark.args[0], str):
        raise pytest.UsageError(f"{request.node.nodeid}: use @pytest.mark.board('<board name or path>')")
    return mark.args[0]


def marker_board(settings: HilSettings, node: pytest.Item, name: str, *, marker: str, label: str) -> BoardDefinition:
    """The board ``name`` a marker of ``node`` gives (a path relative to the test file, see
    :func:`hil.pytest_plugin.settings.marker_board_ref`); an unknown or invalid board ERRORS the test
    with one line, ``<label>: BoardNotFoundError: @pytest.mark.<marker>: no such board 'streetlite-esp32'
    (did you mean 'streetlight-esp32'? ...)``, not a traceback through the plugin."""
    try:
        return settings.board(name, test_file=node.path)
    except BoardError as exc:
        message = f"{label}: {type(exc).__name__}: @pytest.mark.{marker}: {board_problem(name, node.path, exc)}"
    # Outside the except block: inside it pytest prints the exception chain even with pytrace=False.
    pytest.fail(message, pytrace=False)


def session_board(settings: HilSettings, *, label: str) -> BoardDefinition:
    """``--hil-board`` or the default board; on the serial backend without ``--hil-board`` the test
    FAILS (errors at setup) with one line saying how to name the board's definition."""
    missing = settings.no_definition_reason()
    if missing is None:
        return settings.board()
    pytest.fail(f"{label}: {missing}", pytrace=False)


@pytest.fixture(scope="session")
def hil_settings(pytestconfig: pytest.Config) -> HilSettings:
    """The parsed ``--hil-*`` options."""
    return pytestconfig.stash[settings_key]


@pytest.fixture(scope="session")
def hil_manifest(hil_settings: HilSettings) -> CapabilityManifest:
    """Capability manifest of the session's backend and board."""
    return hil_settings.manifest()


@pytest.fixture
def hil_board_definition(request: pytest.FixtureRequest, hil_settings: HilSettings) -> BoardDefinition:
    """The board definition under test: ``@pytest.mark.board(NAME)`` (a name, or a path relative to the
    test file), else ``--hil-board``, else the default; on the serial backend there is no default: the
    test ERRORS at once, before the board is leased or anything written, saying how to name it."""
    name = _board_name(request)
    if name is None:
        return session_board(hil_settings, label="hil_board_definition")
    return marker_board(hil_settings, request.node, name, marker=f"board({name!r})", label="hil_board")


def new_handle(backend: str, definition: BoardDefinition, test_dir: Path) -> BoardHandle:
    """A board handle with a fresh identity, its work directory ``<test_dir>/<device id>`` (flash
    directory or image, ``console.log``)."""
    from hil.backends.board import BoardHandle, make_identity

    identity = make_identity(definition)
    workdir = test_dir / identity["id"]
    workdir.mkdir(parents=True, exist_ok=True)
    return BoardHandle(backend=backend, definition=definition, identity=identity, workdir=workdir)


@pytest.fixture
def hil_board(request: pytest.FixtureRequest, hil_settings: HilSettings, hil_board_definition: BoardDefinition,
              tmp_path: Path) -> Iterator[BoardHandle]:
    """One board brought to "reporting" (flashed -> provisioned -> firmware running) by the strategy.

    Its work directory is ``<tmp_path>/<device id>``; its console is kept there as ``console.log``
    (:mod:`hil.pytest_plugin.logs`).
    """
    _fail_on_ignored_marker(request)
    driver = make_driver(hil_settings, [hil_board_definition], request)
    from hil.backends.board import Strategy  # make_driver checked that it imports

    strategy = Strategy(driver)
    handle = new_handle(driver.backend, hil_board_definition, tmp_path)
    console = keep_board_console(request.node, handle)
    try:
        bring_up(strategy, handle, fixture="hil_board")
        handle.extras["reporting_since"] = time.monotonic()
        yield handle
    finally:
        try:
            console.save()  # before power-off: a virtual board's console goes with it
            power_off_or_fail(lambda: strategy.power_off(handle), fixture="hil_board")
        finally:
            strategy.close()


@pytest.fixture
def hil_fleet(request: pytest.FixtureRequest, hil_settings: HilSettings, tmp_path: Path) -> Iterator[Fleet]:
    """Several boards brought to "reporting".

    Size and mix from ``@pytest.mark.fleet(**{board_name: count})``, e.g.
    ``@pytest.mark.fleet(**{"streetlight-esp32": 2, "bin-esp32c3": 1})``; default: 3 of the session board.
    Each board's work directory is ``<tmp_path>/<device id>``, its console kept there as ``console.log``.
    On a backend that drives one board (serial) a fleet of more than one board (counting a
    ``hil_board`` of the same test) SKIPS the test at once (:func:`single_board_skip_reason`).
    """
    _fail_on_ignored_marker(request)
    mark = request.node.get_closest_marker("fleet")
    mix: dict[str, int] = dict(mark.kwargs) if mark is not None else {"": DEFAULT_FLEET_SIZE}
    if not mix or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in mix.values()):
        raise pytest.UsageError(f"{request.node.nodeid}: fleet(...) needs board_name=count with count >= 1")
    # Skipped at collection when the test names hil_fleet; counted here from the mix itself for a
    # fleet requested at run time (getfixturevalue), which the collection-time check cannot see.
    reason = _too_many_boards_reason(hil_settings, _fleet_need(None if mark is None else mix,
                                                               with_board="hil_board" in request.fixturenames))
    if reason is not None:
        pytest.skip(reason)
    if mark is None:
        session = session_board(hil_settings, label="hil_fleet")
        mix = {session.name: DEFAULT_FLEET_SIZE}
        definitions = {session.name: session}
    else:
        definitions = {name: marker_board(hil_settings, request.node, name, marker=fleet_marker_text(mix),
                                          label="hil_fleet") for name in mix}
    driver = make_driver(hil_settings, list(definitions.values()), request)
    from hil.backends.board import Strategy  # make_driver checked that it imports

    fleet = Fleet(Strategy(driver))
    consoles: list[KeptLog] = []
    try:
        for name, count in mix.items():
            for _ in range(count):
                handle = new_handle(driver.backend, definitions[name], tmp_path)
                fleet.boards.append(handle)
                consoles.append(keep_board_console(request.node, handle))
                bring_up(fleet.strategy, handle, fixture="hil_fleet")
                handle.extras["reporting_since"] = time.monotonic()
        yield fleet
    finally:
        for console in consoles:
            console.save()  # before power-off: a virtual board's console goes with it
        power_off_or_fail(fleet.power_off, fixture="hil_fleet")


@pytest.fixture(scope="session")
def hil_radio(hil_settings: HilSettings, pytestconfig: pytest.Config) -> Iterator[Any]:
    """The virtual BLE radio (a running Bumble link relay, :class:`hil.sim.radio.relay.RadioHandle`),
    shared by the session: ``hil_radio.url`` is what boards and the gateway's bleak backend join. It
    listens on a port of ``--hil-port-range`` when given, else on any free port.

    Bumble and websockets come with civicedge's ``hil`` extra: without it the test errors naming the extra, and
    failing to import it otherwise is a broken install; it errors too (never skips).
    """
    try:
        from hil.sim.radio.relay import start_relay
    except ImportError as exc:
        missing = extra_for(exc)
        if missing is not None:
            raise pytest.fail.Exception(f"hil_radio needs the '{missing[0]}' extra: pip install "
                                        f"'civicedge[{missing[0]}]' (missing module {missing[1]})", pytrace=False) from None
        raise pytest.fail.Exception(f"virtual radio unavailable: {exc} (bumble comes with civicedge's hil extra: "
                                    "pip install 'civicedge[hil]'; in a checkout: scripts/setup)",
                                    pytrace=False) from None
    handle = start_relay() if hil_settings.port_range is None else _relay_in_range(start_relay, hil_settings.port_range)
    port = urlsplit(handle.url).port
    try:
        if port is not None:  # named when the range runs out for a server started after it (the gateway)
            pytestconfig.stash[radio_port_key] = port
        yield handle
    finally:
        pytestconfig.stash[radio_port_key] = None
        handle.stop()


def _relay_in_range(start_relay: Any, ports: PortRange) -> Any:
    """A relay on the first port of ``ports`` it can bind (one taken after the probe is skipped)."""
    from hil.sim.radio.errors import RadioError

    for port in free_ports(ports):
        try:
            return start_relay(port=port)
        except RadioError:
            if port_free(port):  # not a port taken meanwhile: a failure of its own
                raise
            log.info("port %d was taken before the radio bound it; trying another", port)
    pytest.fail(f"hil_radio: {range_exhausted_message(ports, 'the virtual radio', {})}", pytrace=False)


def session_ports(boards: list[BoardHandle], radio_port: int | None) -> dict[int, str]:
    """The TCP ports the session's own servers hold (port -> what), for the error of a server that finds
    no free port of ``--hil-port-range``: the virtual radio's, and the boards' TCP serial ports (a QEMU
    board's console and data UART, ``socket://HOST:PORT``) and QMP socket."""
    held: dict[int, str] = {}
    if radio_port is not None:
        held[radio_port] = "virtual radio (hil_radio)"
    for board in boards:
        for url, what in ((board.console_url, "console"), (board.data_url, "data UART")):
            port = _url_port(url)
            if port is not None:
                held[port] = f"board {board.device_id}'s {what}"
        qmp_port = getattr(board.resource, "qmp_port", None)
        if isinstance(qmp_port, int) and qmp_port > 0:
            held[qmp_port] = f"board {board.device_id}'s QMP socket"
    return held


def _url_port(url: str | None) -> int | None:
    """The TCP port of a ``socket://``/``rfc2217://`` URL, else None (a pty path, None)."""
    if not url or "://" not in url:
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


@pytest.fixture
def hil_gateway(request: pytest.FixtureRequest, hil_settings: HilSettings,
                tmp_path: Path) -> Iterator[GatewayProcess]:
    """A running ``civicedge gateway run`` on a temporary config, wired to the test's boards.

    Boards of ``hil_board``/``hil_fleet`` (when the test uses them) are registered with their
    keys; UART boards (those with BLE too) are read over their data links (a pty, QEMU's
    ``socket://127.0.0.1:PORT`` data UART, a rig's serial port), BLE-only boards over ``hil_radio``.
    ``@pytest.mark.hil_gateway(link="ble")`` reads every board over BLE instead (a UART+BLE board's UART is
    left unread, so its firmware sends over BLE once a UART round goes unanswered; sim backend only, the
    marker requires ``ble`` and skips elsewhere); ``hil_gateway(link="uart")`` insists on the UART. A board
    the chosen link cannot reach errors the test at once. Over BLE, virtual boards' links may go one report window
    of their clock without a verified frame (:func:`~hil.pytest_plugin.gateway_process.ble_auth_timeout_for`). Its
    work directory (config, registry, store) is
    ``<tmp_path>/gateway``, its output kept there as ``gateway.log``.
    """
    boards: list[BoardHandle] = []
    if "hil_board" in request.fixturenames:
        boards.append(request.getfixturevalue("hil_board"))
    if "hil_fleet" in request.fixturenames:
        boards.extend(request.getfixturevalue("hil_fleet").boards)
    link = gateway_link(request.node)
    unreachable = [b for b in boards if b.data_url is None and (link == "uart" or not b.ble_address)]
    if unreachable:
        pytest.fail(no_data_link_message(unreachable), pytrace=False)
    off_radio = [b for b in boards if link == "ble" and not b.ble_address]
    if off_radio:
        pytest.fail(no_ble_link_message(off_radio), pytrace=False)
    needs_radio = any(reads_over_ble(b, link) for b in boards)
    radio_url: str | None = request.getfixturevalue("hil_radio").url if needs_radio else None
    gateway = gateway_for(boards, workdir=tmp_path / "gateway", radio_url=radio_url,
                          port_range=hil_settings.port_range, link=link)
    gateway.failure_hint = combined_hints(console_failure_hint(boards), deep_sleep_hints(boards),
                                          slow_clock_hints(boards))
    gateway.session_ports = session_ports(boards, request.config.stash.get(radio_port_key, None))
    keep_log(request.node, KeptLog("gateway log", gateway.log_path, lambda: None, write=False), name="gateway")
    try:
        # In the try: whatever ends the start (a Ctrl-C included) still stops what it started.
        gateway.start()
        yield gateway
    finally:
        gateway.stop()


def no_data_link_message(boards: list[BoardHandle]) -> str:
    """Why ``hil_gateway`` cannot receive reports from ``boards`` (no UART data link, no radio)."""
    names = ", ".join(f"{b.device_id} ({b.definition.name}, {b.backend})" for b in boards)
    return f"hil_gateway: no data link to {names}, so no report can arrive: " \
           f"{_no_link_how(boards[0].backend, boards[0].definition)}"


def no_ble_link_message(boards: list[BoardHandle]) -> str:
    """Why ``hil_gateway`` under the ``hil_gateway(link="ble")`` marker cannot read ``boards`` over BLE."""
    names = ", ".join(f"{b.device_id} ({b.definition.name}, {b.backend})" for b in boards)
    board = boards[0]
    if board.definition.ble is None:
        why = f"board {board.definition.name!r} has no BLE link in its definition"
    elif board.backend != "sim":
        why = f"hil_gateway reads BLE only over the sim backend's virtual radio, not on the {board.backend} backend"
    else:
        why = "the board is not on the virtual radio (no ble_address)"
    return f"hil_gateway: @pytest.mark.hil_gateway(link='ble'): no BLE link to {names}: {why}"


def _no_link_how(backend: str, definition: BoardDefinition) -> str:
    if backend == "serial" and definition.uart is not None:
        return ("give the board's data UART with --hil-data-port PORT (e.g. /dev/ttyUSB1, usb:<serial number> "
                "of a second USB-serial adapter or socket://HOST:PORT of a TCP serial bridge; for a virtual "
                "board, the data pty `civicedge sim up` prints)")
    if definition.uart is None:
        return (f"board {definition.name!r} has no UART data link and its BLE is reached only on the "
                "sim backend's virtual radio")
    return "the backend gave the board no data link"


__all__ = ["DEFAULT_FLEET_SIZE", "Fleet", "SINGLE_BOARD_BACKENDS", "boards_needed", "fleet_marker_text", "hil_board", "hil_board_definition", "hil_fleet", "hil_gateway", "hil_manifest", "hil_radio",
           "hil_settings", "make_driver", "marker_board", "setup_failure_message", "single_board_skip_reason"]
