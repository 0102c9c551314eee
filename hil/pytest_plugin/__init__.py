"""pytest plugin of the civicedge HIL harness (registered through the ``pytest11`` entry point).

Options: ``--hil-backend sim|qemu|serial``, ``--hil-board NAME``, ``--hil-port SELECTOR``
(``/dev/ttyUSB0``, ``rfc2217://host:port``, ``usb:<serial>``, ``mac:<addr>``),
``--hil-data-port PORT`` (serial backend: the board's data UART, a port, ``usb:<serial>`` or
``socket://HOST:PORT``), ``--hil-qemu-image RELEASE.bin``,
``--hil-lease-dir DIR``, ``--hil-lease-wait S``, ``--hil-reprovision`` (serial backend: a board that already
has an identity is re-keyed for the test, its identity saved and put back), ``--hil-sim-speed X``,
``--hil-port-range LOW-HIGH``.
A prerequisite the user asked for (``--hil-backend serial`` without ``--hil-port``, ``qemu`` without an
existing ``--hil-qemu-image``) is a usage error at session start; the sim backend's Node runtime
missing errors the tests that need a board. Only hardware that cannot exist here (no Espressif QEMU
on PATH) makes tests skip.
Markers ``board(name)``, ``fleet(**{name: count})``, ``sim(speed=, seed=, start=)`` choose what the
fixtures bring up, ``hil_gateway(link="uart"|"ble")`` which link ``hil_gateway`` reads boards with both over
(it requires that link as ``requires(...)`` does; docs/hil.md).

Marker ``@pytest.mark.requires("ble", "adc")``: the test runs only where each board its fixtures bring up
(:func:`hil.pytest_plugin.markers.board_refs`: ``hil_board``'s ``board(name)`` marker, each board of
``hil_fleet``'s ``fleet(...)`` marker, else ``--hil-board``/the default board; a marker the test's fixtures
would ignore is a usage error) declares
every board capability in its definition AND the backend's capability manifest
(:func:`hil.backends.manifest_for`) has every capability; it is SKIPPED with the reason otherwise,
on every backend (a board without a UART has none on the simulator either). Fixtures: ``hil_board``, ``hil_fleet``, ``hil_gateway``, ``hil_radio`` (see
:mod:`hil.pytest_plugin.fixtures`). A :class:`hil.dut.DeviceError` raised in a test fails it with
the device's traceback shown in its own report section; a failed test also gets the tails of its board
consoles and gateway log, kept as files in its ``tmp_path`` (:mod:`hil.pytest_plugin.logs`).
"""

from __future__ import annotations

import os
import sys
from typing import Generator

import pytest

from hil.backends.capabilities import BACKENDS, KNOWN_CAPABILITIES, manifest_for
from hil.pytest_plugin.fixtures import (
    hil_board,
    hil_board_definition,
    hil_fleet,
    hil_gateway,
    hil_manifest,
    hil_radio,
    hil_settings,
    marker_board,
    single_board_skip_reason,
)
from hil.boards import CAPABILITY_NAMES, BoardDefinition, BoardError
from hil.pytest_plugin.logs import failure_sections
from hil.pytest_plugin.markers import (GATEWAY_LINKS, board_refs, check_marker_shapes, gateway_link, ignored_marker_problem,
                                       unknown_capability_message)
from hil.pytest_plugin.settings import (DEFAULT_BOARD, HilSettings, board_error_suffix, lease_wait_option, marker_board_ref,
                                        port_range_option, settings_key, sim_marker_options, sim_speed_option)

__all__ = ["hil_board", "hil_board_definition", "hil_fleet", "hil_gateway", "hil_manifest", "hil_radio",
           "hil_settings"]


EMBEDDED_WARNING_FILTERS: tuple[str, ...] = (
    "ignore:record_xml_attribute is an experimental feature:pytest.PytestExperimentalApiWarning",
    "ignore:record_xml_attribute is incompatible with junit_family:pytest.PytestWarning",
)
"""pytest-embedded (installed with civicedge's hil extra, auto-loaded) calls ``record_xml_attribute`` for every
test: two warnings per test in any project using this plugin, hiding real ones. Only these two
messages are ignored, and only while pytest-embedded is loaded."""


ASYNCIO_LOOP_SCOPE_OPTION = "asyncio_default_fixture_loop_scope"
ASYNCIO_LOOP_SCOPE_DEFAULT = "fixture-scope"
"""pytest-asyncio warns at the start of every run (a ``PytestDeprecationWarning``) while its
``asyncio_default_fixture_loop_scope`` option is unset. Where the project has not set it, the plugin
sets ``fixture-scope``: exactly what pytest-asyncio does when it is unset (an async fixture runs in
the event loop of its own scope), so nothing changes but the warning. ``function`` (the future
default) would break a project's session-scoped async fixtures."""

_ASYNCIO_UNSET_MEANS_FIXTURE_SCOPE = "will default to the fixture scope"
"""What pytest-asyncio's unset-option warning (``_DEFAULT_FIXTURE_LOOP_SCOPE_UNSET``) says while unset
means :data:`ASYNCIO_LOOP_SCOPE_DEFAULT`; without it the plugin does not set the option."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the HIL command-line options."""
    group = parser.getgroup("civicedge-hil", "civicedge hardware-in-the-loop")
    group.addoption("--hil-backend", choices=BACKENDS, default="sim",
                    help="where boards under test run: sim (virtual boards), qemu, serial (real boards)")
    group.addoption("--hil-board", default=None, metavar="NAME",
                    help=f"board definition under test: a board name (e.g. {DEFAULT_BOARD}, bin-esp32c3), looked up in the "
                         "CIVICEDGE_BOARDS directories and the boards/ shipped inside civicedge (not ./boards/), or "
                         f"a path to a board .toml file (default: {DEFAULT_BOARD} on the sim and qemu backends; on "
                         "the serial backend none: requires(...) assumes only the console, and a test using a board "
                         "errors until its definition is named here or with @pytest.mark.board(NAME)); an unknown "
                         "board is a usage error")
    group.addoption("--hil-port", default=None, metavar="SELECTOR",
                    help="serial backend: port or URL (/dev/ttyUSB0, rfc2217://host:4000) or stable identity "
                         "(usb:<serial number>, mac:<chip MAC>)")
    group.addoption("--hil-data-port", default=None, metavar="PORT",
                    help="serial backend: the board's data UART the gateway reads (/dev/ttyUSB1, "
                         "usb:<serial number> of a second USB-serial adapter, socket://HOST:PORT of a raw TCP serial "
                         "bridge such as ser2net; for a virtual board the data pty `civicedge sim up` prints)")
    group.addoption("--hil-qemu-image", action="append", default=None, metavar="[CHIP=]FILE",
                    help="qemu backend: MicroPython release image (ESP32_GENERIC-*.bin); repeat as CHIP=FILE for "
                         "boards of several chips (esp32=ESP32_GENERIC-*.bin, esp32c3=ESP32_GENERIC_C3-*.bin, "
                         "esp32s3=ESP32_GENERIC_S3-*.bin); FILE "
                         "alone is for every chip without its own; tests of a chip without an image are skipped")
    group.addoption("--hil-lease-dir", default=None, metavar="DIR",
                    help="serial backend: directory of board leases, shared by the runs (and rig hosts) that use "
                         "the same boards (default: $XDG_RUNTIME_DIR/civicedge-leases, else "
                         "<tmp>/civicedge-leases)")
    group.addoption("--hil-sim-speed", type=sim_speed_option, default=1.0, metavar="X",
                    help="sim backend: virtual seconds per wall second (0 = as fast as possible; default 1)")
    group.addoption("--hil-lease-wait", type=lease_wait_option, default=30.0, metavar="SECONDS",
                    help="serial backend: how long to wait for a board another run holds (>= 0; default 30)")
    group.addoption("--hil-reprovision", action="store_true", default=False,
                    help="serial backend: let the test identity replace an identity the board already has "
                         "(civicedge provision); the board's identity is saved on the board and in the test's "
                         "work dir and put back at teardown (default: such a board is refused)")
    group.addoption("--hil-port-range", type=port_range_option, default=None, metavar="LOW-HIGH",
                    help="TCP ports the plugin's servers (hil_gateway's HTTP API, hil_radio's virtual radio, QEMU's "
                         "console, data UART and QMP sockets) listen on, e.g. 42000-42999 for a firewalled CI machine "
                         "(default: any free port)")


@pytest.hookimpl(tryfirst=True)  # before pytest-asyncio's pytest_configure, which warns about the unset option
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, quiet pytest-embedded's per-test warnings (:data:`EMBEDDED_WARNING_FILTERS`),
    default pytest-asyncio's fixture loop scope (:func:`default_asyncio_loop_scope`) and keep the
    parsed settings on the config."""
    default_asyncio_loop_scope(config)
    config.addinivalue_line(
        "markers",
        "requires(*capabilities): run only where the test's board definition and the HIL backend have these "
        "capabilities "
        f"({', '.join(sorted(KNOWN_CAPABILITIES))}); skipped with the reason otherwise")
    config.addinivalue_line("markers", "board(name): board definition for the hil_board fixture")
    config.addinivalue_line("markers", "sim(speed=X, seed=N, start=ISO): virtual clock speed, noise seed and start "
                            "time (ISO 8601 with its offset, \"2026-12-21T22:00:00Z\") of the test's virtual boards "
                            "(sim backend only; other backends ignore it)")
    config.addinivalue_line("markers", "fleet(**counts): board mix of the hil_fleet fixture, board_name=count")
    config.addinivalue_line("markers", f"hil_gateway(link={'|'.join(GATEWAY_LINKS)}): the link the hil_gateway fixture reads "
                            "the test's boards over (default: a board's UART when it has one, else BLE); "
                            "requires that link like requires(...)")
    if config.pluginmanager.has_plugin("pytest_embedded"):
        for line in EMBEDDED_WARNING_FILTERS:
            config.addinivalue_line("filterwarnings", line)
    config.stash[settings_key] = HilSettings.from_config(config)


def default_asyncio_loop_scope(config: pytest.Config) -> None:
    """Set :data:`ASYNCIO_LOOP_SCOPE_OPTION` to :data:`ASYNCIO_LOOP_SCOPE_DEFAULT` unless the project
    set it (ini file, ``-o``) or pytest-asyncio is absent, disabled, too old to know the value, or
    no longer says that unset means the fixture's own scope.

    The value only silences pytest-asyncio's unset-option warning while keeping what unset means, so
    it is set only while pytest-asyncio still carries that warning and its text still says unset
    defaults to the fixture scope (:data:`_ASYNCIO_UNSET_MEANS_FIXTURE_SCOPE`). A release where unset
    means ``function`` must not be pinned to the old behaviour unnoticed: there the option stays
    unset and pytest-asyncio's own default (and any warning it gives) applies.

    pytest has no public way for a plugin to give another plugin's ini option a value; this writes
    the config's ini cache, which ``config.getini`` reads first (the value also shows in
    pytest-asyncio's report header). Should a pytest release change that, the option stays unset and
    only the warning comes back.
    """
    if not config.pluginmanager.has_plugin("asyncio"):
        return
    try:
        if config.getini(ASYNCIO_LOOP_SCOPE_OPTION):
            return  # the project's own choice
        from pytest_asyncio import plugin as asyncio_plugin
    except (ValueError, ImportError):  # option not registered: another pytest-asyncio
        return
    if getattr(asyncio_plugin, "_MATCH_FIXTURE_SCOPE", None) != ASYNCIO_LOOP_SCOPE_DEFAULT:
        return  # a pytest-asyncio without "fixture-scope": no value keeps its behaviour
    unset_warning = getattr(asyncio_plugin, "_DEFAULT_FIXTURE_LOOP_SCOPE_UNSET", None)
    if not isinstance(unset_warning, str) or _ASYNCIO_UNSET_MEANS_FIXTURE_SCOPE not in " ".join(unset_warning.split()):
        return  # unset may mean something else now: leave the choice to pytest-asyncio and the project
    cache = getattr(config, "_inicache", None)
    if isinstance(cache, dict):
        cache[ASYNCIO_LOOP_SCOPE_OPTION] = ASYNCIO_LOOP_SCOPE_DEFAULT


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse a mistyped ``--hil-board`` or a backend without what it needs (:func:`check_prerequisites`).

    Here rather than in ``pytest_configure``, which ``--help`` and ``--markers`` run too: an
    ``addopts = --hil-backend serial`` without a port must not hide the help. pytest turns the
    ``UsageError`` into exit code 4 before any test is collected.
    """
    settings = session.config.stash[settings_key]
    if settings.board_name is not None:
        try:  # a typo in --hil-board is a usage error up front, not an INTERNALERROR later
            settings.board()
        except BoardError as exc:
            raise pytest.UsageError(f"--hil-board {settings.board_name}: {exc}"
                                    f"{board_error_suffix(settings.board_name, exc)}") from exc
    check_prerequisites(settings)


def check_prerequisites(settings: HilSettings) -> None:
    """Refuse, as a usage error, a backend chosen without what it needs or a mistyped path.

    These are choices the user made; skipping every test instead would let CI go green having
    tested nothing. (Hardware that cannot exist here, e.g. no Espressif QEMU on PATH, still skips.)

    Raises:
        pytest.UsageError: ``serial`` without ``--hil-port`` or with a malformed one (``mac:zz``,
            ``usb:`` without a serial number), ``qemu`` without an existing
            ``--hil-qemu-image``, ``--hil-data-port`` with another backend than ``serial``, naming the
            console port (``socket://localhost:P`` and ``rfc2217://127.0.0.1:P`` are one port) or a URL
            the gateway does not read (anything but ``socket://HOST:PORT``; credentials are refused
            without being repeated).
    """
    from hil.backends.errors import BackendError

    # The serial backend's modules (hil.dut: mpremote, the field extra) only when it is the one chosen:
    # pytest loads this plugin wherever civicedge is installed.
    if settings.backend == "serial" and not settings.port:
        raise pytest.UsageError("--hil-backend serial needs --hil-port (a port such as /dev/ttyUSB0, "
                                "rfc2217://host:port, usb:<USB serial number> or mac:<chip MAC>)")
    if settings.backend == "serial" and settings.port:
        from hil.backends.serial.select import BoardSelector

        try:  # a malformed selector is the user's typo: once, up front, not an error in every test
            BoardSelector.parse(settings.port)
        except BackendError as exc:
            raise pytest.UsageError(f"--hil-port {settings.port}: {exc}") from exc
    if settings.data_port is not None:
        if settings.backend != "serial":
            raise pytest.UsageError(f"--hil-data-port is for --hil-backend serial (the {settings.backend} backend "
                                    "wires the data link itself)")
        from hil.backends.serial.driver import parse_data_port, same_port

        try:
            parse_data_port(settings.data_port)
        except BackendError as exc:
            text = str(exc)
            raise pytest.UsageError(text if text.startswith("--hil-data-port") else
                                    f"--hil-data-port {settings.data_port}: {text}") from exc
        if settings.port is not None and same_port(settings.port, settings.data_port):
            raise pytest.UsageError(f"--hil-data-port {settings.data_port} is the console port (--hil-port "
                                    f"{settings.port}); the data UART needs its own port")
    if settings.qemu_image_problem is not None:
        raise pytest.UsageError(settings.qemu_image_problem)
    if settings.backend == "qemu":
        if settings.qemu_image is None and not settings.qemu_images:
            raise pytest.UsageError("--hil-backend qemu needs --hil-qemu-image (a MicroPython release image, e.g. "
                                    "ESP32_GENERIC-v1.27.0.bin from micropython.org/download; CHIP=FILE per chip)")
        images = ([("", settings.qemu_image)] if settings.qemu_image is not None else []) + \
            [(f"{chip}=", path) for chip, path in settings.qemu_images.items()]
        for prefix, path in images:
            if not path.is_file():
                raise pytest.UsageError(f"--hil-qemu-image {prefix}{path}: no such file")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove pytest-embedded's session directory when this session left nothing in it."""
    remove_empty_embedded_tempdir(config)


def remove_empty_embedded_tempdir(config: pytest.Config) -> None:
    """pytest-embedded (auto-loaded) creates ``<tmp>/pytest-embedded/<timestamp>/`` in every session
    through an autouse fixture, used or not, and never removes it: one empty directory per pytest
    run. Remove it (and its empty sub-directories) only if it holds no file at all: logs of tests
    that used pytest-embedded's ``dut`` stay where its users expect them."""
    try:
        from pytest_embedded.plugin import _session_tempdir_key
    except ImportError:
        return
    tempdir = config.stash.get(_session_tempdir_key, None)
    if not tempdir or not os.path.isdir(tempdir):
        return
    for root, dirs, files in os.walk(tempdir, topdown=False):
        if files:
            return
        try:
            os.rmdir(root)  # only ever removes an empty directory, even if another run writes meanwhile
        except OSError:
            return


def required_capabilities(item: pytest.Item) -> list[str]:
    """All capabilities named by the ``requires`` markers of ``item`` (class, module and function)."""
    names: list[str] = []
    for mark in item.iter_markers(name="requires"):
        if not mark.args:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.requires() needs at least one capability")
        for arg in mark.args:
            if not isinstance(arg, str):
                raise pytest.UsageError(f"{item.nodeid}: requires() takes capability names, got {arg!r}")
            names.append(arg)
    return names


def item_boards(item: pytest.Item, settings: HilSettings) -> list[BoardDefinition] | None:
    """The board definitions ``item`` runs on, the ones its fixtures bring up (:func:`board_refs`):
    ``hil_board``'s ``board(name)`` marker, each board of ``hil_fleet``'s ``fleet(...)`` marker, else
    the session board; None where the session board is needed and the serial backend has none
    (no ``--hil-board``: a real board nobody described).

    Raises:
        hil.boards.BoardError: a marker names an unknown board.
    """
    refs = board_refs(item)
    if None in refs and settings.backend == "serial" and settings.board_name is None:
        return None
    return [settings.board() if ref is None else settings.board(ref[1], test_file=item.path) for ref in refs]


BOARD_FIXTURES = frozenset({"hil_board", "hil_board_definition", "hil_fleet", "hil_manifest"})
"""Fixtures that load the item's board definitions (``requires(...)`` markers do too, for the manifest)."""


def looks_up_board_names(item: pytest.Item, settings: HilSettings) -> bool:
    """Whether ``item`` loads a board definition by name (through ``CIVICEDGE_BOARDS`` and ``boards/``)
    rather than only from files that exist; the serial backend's session board without ``--hil-board``
    is none (:meth:`HilSettings.no_definition_reason` says why)."""
    if not (BOARD_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("requires")):
        return False
    refs: list[str] = []
    for ref in board_refs(item):
        if ref is not None:
            refs.append(marker_board_ref(ref[1], item.path))
        elif not (settings.backend == "serial" and settings.board_name is None):
            refs.append(settings.board_name or DEFAULT_BOARD)
    return any(not os.path.isfile(ref) for ref in refs)


def marker_board_names(item: pytest.Item) -> list[tuple[str, str]] | None:
    """``(marker, board name or path)`` for each board the markers of ``item`` name that its fixtures
    bring up (:func:`board_refs`, ``marker`` as messages show it); None when it has none."""
    named = [ref for ref in board_refs(item) if ref is not None]
    return named or None


def capability_skip_reason(settings: HilSettings, boards: list[BoardDefinition] | None,
                           needed: list[str]) -> str | None:
    """Why a test needing ``needed`` cannot run on ``boards`` with the session's backend (None: it can).

    A board capability the board definition lacks comes first (on every backend, the simulator
    included: a virtual board has what its definition says), then what the backend lacks.
    """
    if boards is None:
        return settings.manifest().skip_reason(needed)
    for board in boards:
        lacking = [name for name in dict.fromkeys(needed) if name in CAPABILITY_NAMES and name not in board.capabilities]
        if lacking:
            return (f"board {board.name!r} lacks {', '.join(lacking)} (has {', '.join(sorted(board.capabilities))}; "
                    f"from its definition {board.source.name})")
    for board in boards:
        reason = manifest_for(settings.backend, board).skip_reason(needed)
        if reason is not None:
            return reason
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests whose board or backend lacks a required capability, or that need more boards than
    the backend drives (a fleet on the serial backend), as skipped (never failed).

    Done at collection so the skip is reported at the test's own location, with the reason.
    A ``hil_gateway(link=X)`` marker requires X like ``requires(X)``; ``link='ble'`` skips off the sim backend
    (:func:`gateway_link_skip_reason`). Malformed ``board``/``fleet``/``sim``/``requires``/``gateway`` markers
    and a ``board(...)``/``fleet(...)``/``hil_gateway(...)`` marker the test's fixtures would ignore (:func:`hil.pytest_plugin.markers.ignored_marker_problem`)
    are usage errors here. Unknown capability names and unknown boards in markers are left to
    :func:`pytest_runtest_setup`, which errors.
    """
    settings = config.stash[settings_key]
    problem = settings.board_search_problem()
    if problem is not None:  # else every test using a board errors with the same traceback
        for item in items:
            if looks_up_board_names(item, settings):
                _usage_error(config, item, f"{problem}; {item.nodeid} and every other test using a board by name "
                                           "cannot find it")
    for item in items:
        try:
            sim_marker_options(item)  # a bad sim(...) marker is a usage error before anything boots
            check_marker_shapes(item)  # board(), board(a, b), fleet() too
            link = gateway_link(item)  # hil_gateway(link=X) needs the boards' link X, as requires(X) would
            ignored = ignored_marker_problem(item, getattr(item, "fixturenames", ()))
            if ignored is not None:  # requires(...) would check a board the test never gets
                raise pytest.UsageError(ignored)
            needed = required_capabilities(item)
            if link is not None:
                needed.append(link)
        except pytest.UsageError as exc:
            _usage_error(config, item, str(exc))
            continue
        too_many = single_board_skip_reason(settings, item)
        if too_many is not None:  # before anything is leased: a fleet would wait for its own first board
            item.add_marker(pytest.mark.skip(reason=too_many))
            continue
        if not needed or any(name not in KNOWN_CAPABILITIES for name in needed):
            continue
        try:
            boards = item_boards(item, settings)
        except BoardError:
            continue
        reason = capability_skip_reason(settings, boards, needed) or gateway_link_skip_reason(settings.backend, link)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def gateway_link_skip_reason(backend: str, link: str | None) -> str | None:
    """Why ``hil_gateway`` cannot read the test's boards over ``link`` on ``backend`` although the boards
    and the backend's manifest have it, or None: the gateway's only BLE is the sim backend's virtual radio
    (a real board's BLE would need the gateway's bleak backend and a radio on the test host)."""
    if link == "ble" and backend != "sim":
        return (f"hil_gateway reads BLE only over the sim backend's virtual radio; hil_gateway(link='ble') cannot run "
                f"on the {backend} backend")
    return None


USAGE_ERROR_KEY = pytest.StashKey[str]()
"""A usage error found at collection in a pytest-xdist worker (:func:`_usage_error`)."""


def _usage_error(config: pytest.Config, item: pytest.Item, message: str) -> None:
    """Raise ``message`` as a usage error (exit 4, one ``ERROR:`` line); in a pytest-xdist worker keep it
    on ``item`` instead, for :func:`pytest_runtest_setup` to error that test in one line: a
    ``UsageError`` raised at a worker's collection crashes the worker, and xdist shows an INTERNALERROR
    without the message."""
    if hasattr(config, "workerinput"):
        item.stash[USAGE_ERROR_KEY] = message
        return
    raise pytest.UsageError(message)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Error (not skip) on a capability name nobody defines or an unknown board in a marker of a
    test that requires capabilities: a typo must not hide a test. One line each, with the closest
    name (a traceback through the plugin would say the plugin has a bug). Under pytest-xdist, a
    usage error found at collection errors its test here (:func:`_usage_error`)."""
    usage = item.stash.get(USAGE_ERROR_KEY, None)
    if usage is not None:
        pytest.fail(f"usage error: {usage}", pytrace=False)
    needed = required_capabilities(item)
    if needed:
        settings = item.config.stash[settings_key]
        unknown = [name for name in needed if name not in KNOWN_CAPABILITIES]
        if unknown:
            pytest.fail("requires: UnknownCapabilityError: " + unknown_capability_message(unknown[0], KNOWN_CAPABILITIES),
                        pytrace=False)
        for marker, name in marker_board_names(item) or ():
            marker_board(settings, item, name, marker=marker, label="requires")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """On a failure: save the test's board console and gateway logs and show their tails, each in a
    section of its own (:mod:`hil.pytest_plugin.logs`); when device code raised, the device's own
    traceback in its own section too."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    excinfo = call.excinfo
    err: BaseException | None = excinfo.value if excinfo is not None else None
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    # Looked up, not imported: hil.dut needs mpremote (the field extra), and pytest loads this plugin
    # wherever civicedge is installed. No DeviceError was raised unless hil.dut.errors is loaded.
    device_error = getattr(sys.modules.get("hil.dut.errors"), "DeviceError", None)
    for exc in chain:
        if device_error is not None and isinstance(exc, device_error):
            report.sections.append((f"device traceback ({exc.url})", exc.traceback.rstrip()))
            break
    if report.failed:
        report.sections.extend(failure_sections(item))
