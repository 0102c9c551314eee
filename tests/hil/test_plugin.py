"""The pytest plugin, exercised the way integrators use it (pytester runs of small test files)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hil_peer import ReplPeer

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)


def backend_args(pytester: pytest.Pytester, backend: str) -> list[str]:
    """``--hil-backend`` plus the options that backend requires (else a usage error): a release image
    file for qemu (tests that boot nothing only need the ESP32 image header the backend checks), a port
    selector for serial."""
    if backend == "qemu":
        image = pytester.path / "release.bin"
        image.write_bytes(b"\xe9\x03\x02\x20" + b"\x00" * 20 + b"\xff" * 4072)  # chip id 0 (ESP32) at byte 12
        return ["--hil-backend", "qemu", "--hil-qemu-image", str(image)]
    if backend == "serial":
        return ["--hil-backend", "serial", "--hil-port", "usb:NOT-PLUGGED"]
    return ["--hil-backend", backend]


CAPS_TESTS = """
import pytest

@pytest.mark.requires("adc")
def test_needs_adc():
    pass

@pytest.mark.requires("console", "uart", "gpio")
def test_needs_console_uart_gpio():
    pass

@pytest.mark.requires("ble")
class TestBle:
    def test_scan(self):
        pass

def test_plain(hil_manifest):
    assert hil_manifest.backend in ("sim", "qemu", "serial")
"""


def test_plugin_is_registered_through_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--hil-backend=*", "*--hil-board=*", "*--hil-port=*"])
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.requires(*capabilities)*"])


def test_requires_adc_skips_on_qemu_with_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CAPS_TESTS)
    result = pytester.runpytest(*backend_args(pytester, "qemu"), "-v", "-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines([
        "*::test_needs_adc SKIPPED*",
        "*::TestBle::test_scan SKIPPED*",
        "*SKIPPED [[]1[]] *.py:3: backend 'qemu' lacks adc (has console, gpio, uart: Espressif QEMU models console, "
        "UART and GPIO only)",
        "*SKIPPED [[]1[]] *.py*: backend 'qemu' lacks ble*",
    ])


def test_sim_has_what_the_board_has(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CAPS_TESTS)
    pytester.runpytest("--hil-backend", "sim").assert_outcomes(passed=4)  # the streetlight has all four
    result = pytester.runpytest("--hil-backend", "sim", "--hil-board", "bin-esp32c3", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*.py:7: board 'bin-esp32c3' lacks uart (has adc, ble, console, deepsleep, "
                                 "gpio; from its definition bin-esp32c3.toml)"])


def test_serial_manifest_comes_from_the_board_definition(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CAPS_TESTS)
    # The bin board has no UART link: console/uart/gpio test skips; adc and ble run.
    result = pytester.runpytest(*backend_args(pytester, "serial"), "--hil-board", "bin-esp32c3", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*.py:7: board 'bin-esp32c3' lacks uart*"])
    # Without a board definition a real board is assumed to have only its console.
    bare = pytester.runpytest(*backend_args(pytester, "serial"), "-rs")
    bare.assert_outcomes(passed=1, skipped=3)
    bare.stdout.fnmatch_lines(["*: backend 'serial' lacks adc (has console: without a board definition only the "
                               "console of a real board is assumed; name its definition with --hil-board NAME or "
                               "@pytest.mark.board(NAME))"])


MARKED_BOARD_TESTS = """
import pytest

@pytest.mark.board("bin-esp32c3")
@pytest.mark.requires("uart")
def test_bin_uart():
    pass

@pytest.mark.board("streetlight-esp32")
@pytest.mark.requires("deepsleep")
def test_light_deepsleep():
    pass

@pytest.mark.board("bin-esp32c3")
@pytest.mark.requires("deepsleep", "ble")
def test_bin_deepsleep():
    pass

@pytest.mark.fleet(**{"streetlight-esp32": 1, "bin-esp32c3": 1})
@pytest.mark.requires("ble")
def test_fleet_ble():
    pass

@pytest.mark.fleet(**{"streetlight-esp32": 1, "bin-esp32c3": 1})
@pytest.mark.requires("pwm")
def test_fleet_pwm():
    pass

@pytest.mark.board("bin-esp32c3")
@pytest.mark.requires("faults")
def test_bin_faults():
    pass
"""


@pytest.mark.parametrize("backend", ["sim", "qemu", "serial"])
def test_requires_checks_the_board_the_test_names(pytester: pytest.Pytester, backend: str) -> None:
    # The session board (default streetlight) has a UART and no deep sleep; the tests' own boards decide.
    pytester.makepyfile(MARKED_BOARD_TESTS)
    result = pytester.runpytest(*backend_args(pytester, backend), "-rs", "-v")
    result.stdout.fnmatch_lines_random([
        "*::test_bin_uart SKIPPED*",
        "*::test_light_deepsleep SKIPPED*",
        "*::test_fleet_pwm SKIPPED*",
        "*SKIPPED*test_requires_checks_the_board_the_test_names.py:3: board 'bin-esp32c3' lacks uart (has adc, ble, "
        "console, deepsleep, gpio; from its definition bin-esp32c3.toml)",
        "*SKIPPED*:8: board 'streetlight-esp32' lacks deepsleep (has *)",
        "*SKIPPED*:23: board 'bin-esp32c3' lacks pwm *",
    ])
    outcomes = result.parseoutcomes()
    if backend == "sim":
        # What the boards have runs; the simulator itself lacks nothing.
        result.assert_outcomes(passed=3, skipped=3)
    else:
        # QEMU has no BLE/deep sleep/fault injection, serial no fault injection: those skip too, never fail.
        assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0
        result.stdout.fnmatch_lines_random([f"*SKIPPED*:28: backend '{backend}' lacks faults*"])


def test_unknown_board_in_a_marker_of_a_requiring_test_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.board("lamppost-9000")
        @pytest.mark.requires("uart")
        def test_typo():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*lamppost-9000*"])


def test_unknown_capability_is_an_error_not_a_skip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires("bluetooth")
        def test_typo():
            pass
    """)
    result = pytester.runpytest(*backend_args(pytester, "qemu"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*UnknownCapabilityError*unknown capability 'bluetooth'*"])


def test_requires_without_arguments_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires()
        def test_empty():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret != 0
    assert "needs at least one capability" in result.stdout.str() + result.stderr.str()


def test_bad_backend_is_rejected(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--hil-backend", "jtag")
    assert result.ret != 0
    assert "invalid choice: 'jtag'" in result.stderr.str()


def test_device_traceback_shown_in_failure(pytester: pytest.Pytester, repl_peer: ReplPeer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICEDGE_TEST_PTY", repl_peer.path)
    pytester.makepyfile("""
        import os
        from hil.dut import Dut

        def test_device_raises():
            with Dut(os.environ["CIVICEDGE_TEST_PTY"]) as dut:
                dut.exec("def read_sensor():\\n    return 1 // 0\\nread_sensor()")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*DeviceError: device raised ZeroDivisionError*",
        "*device traceback (/dev/pts/*)*",
        '*File "<stdin>", line 2, in read_sensor*',
        "*ZeroDivisionError*",
    ])


def test_hil_board_skips_when_qemu_is_missing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # No Espressif QEMU can exist on this PATH: hardware that is not here skips, with the reason.
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    pytester.makepyfile("""
        def test_boots(hil_board):
            assert hil_board.state == "reporting"
    """)
    result = pytester.runpytest(*backend_args(pytester, "qemu"), "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*qemu backend unavailable*"])


def test_a_qemu_image_that_is_not_a_release_errors_even_without_qemu(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong --hil-qemu-image is the user's mistake: an error naming it (as civicedge flash says), not a
    skip for the missing QEMU, nor a partition table error once the image is built."""
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    image = pytester.path / "random.bin"
    image.write_bytes(b"\x17\x0b" + bytes(range(256)) * 64)
    pytester.makepyfile("""
        def test_boots(hil_board):
            assert hil_board.state == "reporting"
    """)
    result = pytester.runpytest("--hil-backend", "qemu", "--hil-qemu-image", str(image))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"qemu backend: {image} is not an ESP firmware image (first byte 0x17, expected "
                                 "0xe9); download the .bin for your board from micropython.org/download"])


ONE_BOARD_TEST = """
def test_boots(hil_board):
    pass
"""


@pytest.mark.parametrize("args, message", [
    (["--hil-backend", "serial"], "*--hil-backend serial needs --hil-port*"),
    (["--hil-backend", "qemu"], "*--hil-backend qemu needs --hil-qemu-image*"),
    (["--hil-backend", "qemu", "--hil-qemu-image", "/tmp/none.bin"], "*--hil-qemu-image /tmp/none.bin: no such file*"),
    (["--hil-data-port", "/dev/ttyUSB1"], "*--hil-data-port is for --hil-backend serial*"),
    (["--hil-backend", "serial", "--hil-port", "/dev/ttyUSB0", "--hil-data-port", "mac:aa:bb:cc:dd:ee:ff"],
     "*--hil-data-port mac:*cannot name the data UART*"),
    (["--hil-backend", "serial", "--hil-port", "/dev/ttyUSB0", "--hil-data-port", "rfc2217://rig:4001"],
     "*--hil-data-port rfc2217://rig:4001: the data UART is a local port, usb:<serial number> or socket://HOST:PORT*"),
    (["--hil-backend", "serial", "--hil-port", "/dev/ttyUSB0", "--hil-data-port", "/dev/ttyUSB0"],
     "*--hil-data-port /dev/ttyUSB0 is the console port (--hil-port /dev/ttyUSB0)*"),
    (["--hil-backend", "serial", "--hil-port", "usb:A1", "--hil-data-port", "usb:A1"],
     "*--hil-data-port usb:A1 is the console port*"),
    (["--hil-backend", "serial", "--hil-port", "mac:zz"],
     "*--hil-port mac:zz: not a MAC address: 'zz' (expected 6 hex bytes*"),
    (["--hil-backend", "serial", "--hil-port", "usb:"], "*--hil-port usb:: usb: selector needs a serial number*"),
    (["--hil-backend", "serial", "--hil-port", "/dev/ttyUSB0", "--hil-data-port", "mac:zz"],
     "*--hil-data-port mac:zz: not a MAC address*"),
])
def test_missing_or_mistyped_prerequisite_is_a_usage_error(pytester: pytest.Pytester, args: list[str],
                                                           message: str) -> None:
    """What the user asked for must exist: never 'all skipped' and exit 0 (CI green having tested nothing)."""
    pytester.makepyfile(ONE_BOARD_TEST)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "skipped" not in result.stdout.str()


@pytest.mark.parametrize("value", ["-5", "soon", "inf"])
def test_bad_hil_lease_wait_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    """A negative wait was taken silently (as no wait); like --hil-sim-speed, it is the user's typo."""
    pytester.makepyfile(ONE_BOARD_TEST)
    result = pytester.runpytest_subprocess(f"--hil-lease-wait={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*argument --hil-lease-wait: must be*got '{value}'*"])


def test_every_option_has_help_with_its_default(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == pytest.ExitCode.OK
    text = " ".join(result.stdout.str().split())  # help lines are wrapped at the terminal width
    for shown in ("--hil-board=NAME board definition under test: a board name (e.g. streetlight-esp32, bin-esp32c3), "
                  "looked up in the CIVICEDGE_BOARDS directories and the boards/ shipped inside civicedge (not ./boards/)",
                  "(default: streetlight-esp32 on the sim and qemu backends; on the serial backend none",
                  "--hil-lease-dir=DIR serial backend: directory of board leases",
                  "(default: $XDG_RUNTIME_DIR/civicedge-leases, else <tmp>/civicedge-leases)",
                  "--hil-port=SELECTOR", "--hil-qemu-image=[CHIP=]FILE", "--hil-lease-wait=SECONDS",
                  "--hil-reprovision serial backend: let the test identity replace an identity the board already",
                  "saved on the board and in the test's work dir and put back at teardown"):
        assert shown in text, shown
    assert "HIL_" not in text  # no option left with argparse's made-up metavar and no help


@pytest.mark.parametrize("flag, shown", [("--help", "*--hil-data-port=PORT*"),
                                         ("--markers", "*@pytest.mark.requires(*capabilities)*")])
def test_help_and_markers_work_when_addopts_lack_a_prerequisite(pytester: pytest.Pytester, flag: str,
                                                                shown: str) -> None:
    """A project's ``addopts = --hil-backend serial`` without a port still shows pytest's help."""
    pytester.makeini("[pytest]\naddopts = --hil-backend serial\n")
    pytester.makepyfile(ONE_BOARD_TEST)
    result = pytester.runpytest_subprocess(flag)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines([shown])
    # A run is still refused up front.
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-backend serial needs --hil-port*"])
    assert "collected" not in result.stdout.str()


def test_sim_backend_without_node_is_an_error_not_a_skip(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # scripts/setup installs Node for the default backend: missing, tests that need a board error out.
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    pytester.makepyfile(ONE_BOARD_TEST + "\n\ndef test_no_board():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*sim backend unavailable: node is not on PATH*scripts/setup*"])


def test_serial_strategy_brings_a_board_to_reporting(pytester: pytest.Pytester, blank_virtual_board: Any,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """Serial backend end to end on a console pty, as on a USB board with only MicroPython on it:
    lease, sync our firmware by hash, write the identity, soft reset, firmware reports it runs."""
    lease_dir = tmp_path_factory.mktemp("leases")
    pytester.makepyfile("""
        import json
        import pytest

        @pytest.mark.board("bin-esp32c3")
        def test_board(hil_board):
            assert hil_board.state == "reporting" and hil_board.backend == "serial"
            assert hil_board.resource.held  # the lease
            assert "bin " + hil_board.device_id + " running" in hil_board.extras["boot_console"]
            sync = hil_board.extras["sync"]  # civicedge flash's copy: compiled modules, manifest checked by hash
            assert sync.mode == "mpy" and len(sync.copied) > 10 and sync.unchanged == ()
            assert "/lib/civic/report.mpy" in sync.manifest and "/lib/civic/report.py" not in sync.manifest
            dut = hil_board.dut
            assert json.loads(dut.read_file("/identity.json")) == hil_board.identity
            assert dut.eval("__import__('json').loads(open('/board.json').read())['name']") == "bin-esp32c3"
            assert json.loads(dut.read_file("/firmware.json"))["files"] == sync.manifest
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", blank_virtual_board.console_path,
                                "--hil-lease-dir", str(lease_dir), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not any(p.suffix == ".lease" for p in lease_dir.iterdir()), "lease not released"
    # A board that had no identity has none again (its next run is not refused as provisioned).
    flash = blank_virtual_board.flash_dir
    assert not (flash / "identity.json").exists() and not (flash / "identity.hil-saved.json").exists()
    assert (flash / "firmware.json").exists() and not (flash / "pyrightconfig.json").exists()


def test_board_setup_errors_of_ours_fail_in_one_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """No serial port there: the test errors with the message, not a traceback through pytest,
    pytest-asyncio and the strategy (board.py, select.py)."""
    pytester.makepyfile(ONE_BOARD_TEST)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port",
                                "/dev/ttyNOSUCH0", "--hil-lease-dir", str(tmp_path / "leases"), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_boots*",
                                 "hil_board: NoMatchingPortError: streetlight-esp32: step to 'flashed' failed: "
                                 "no serial port /dev/ttyNOSUCH0 (ports: *) (reached 'off', wanted 'reporting')"])
    out = result.stdout.str()
    assert "Traceback" not in out and "board.py" not in out and "select.py" not in out and "pytest_asyncio" not in out
    # Nor the exception chain pytest prints for a failure raised while handling one.
    assert "direct cause" not in out and "During handling" not in out, out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "ERROR at setup of test_boots" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    assert [line[:30] for line in lines[start + 1:end]] == ["hil_board: NoMatchingPortError"], out  # one line


def test_unexpected_exceptions_in_board_setup_keep_their_traceback(pytester: pytest.Pytester, tmp_path: Path) -> None:
    # A bug (not one of our error types) in a strategy step: its traceback is what finds it.
    pytester.makeconftest("""
        from hil.backends.serial.driver import SerialDriver

        def broken_attach(self, handle):
            raise ZeroDivisionError("a bug in attach")

        SerialDriver.attach = broken_attach
    """)
    pytester.makepyfile(ONE_BOARD_TEST)
    # In a subprocess: the patched class must not leak into the other in-process runs.
    result = pytester.runpytest_subprocess("--hil-backend", "serial", "--hil-board", "streetlight-esp32",
                                           "--hil-port", "/dev/ttyNOSUCH0", "--hil-lease-dir",
                                           str(tmp_path / "leases"), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*def broken_attach*", "*ZeroDivisionError: a bug in attach*",
                                 "*BoardStateError: streetlight-esp32: step to 'flashed' failed: a bug in attach*"])


FLEET_TESTS = """
import pytest

@pytest.mark.fleet(**{"streetlight-esp32": 3})
def test_three_lights(hil_fleet):
    pass

def test_default_fleet(hil_fleet):
    pass

@pytest.mark.fleet(**{"streetlight-esp32": 1})
def test_board_and_fleet(hil_board, hil_fleet):
    pass

@pytest.mark.fleet(**{"streetlight-esp32": 1})
def test_fleet_of_one(hil_fleet):
    pass
"""


def test_a_fleet_on_the_one_board_serial_backend_skips_at_once(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The serial backend drives the one --hil-port board: a fleet of more cannot run, and must not
    wait --hil-lease-wait for its own first board's lease and then blame this run."""
    pytester.makepyfile(FLEET_TESTS)
    lease_dir = tmp_path / "leases"
    t0 = time.monotonic()
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", "/dev/ttyNOSUCH0", "--hil-lease-wait", "30",
                                "--hil-lease-dir", str(lease_dir), "-rs", "-p", "no:cacheprovider")
    assert time.monotonic() - t0 < 20
    # The fleet of one is a board like hil_board: it runs (and errors here: no such port).
    result.assert_outcomes(skipped=3, errors=1)
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] *.py:3: the serial backend drives one board (--hil-port /dev/ttyNOSUCH0); "
        "fleet(streetlight-esp32=3) needs 3 boards (run it on the sim or qemu backend)",
        "SKIPPED [[]1[]] *.py*: the serial backend drives one board (--hil-port /dev/ttyNOSUCH0); "
        "hil_fleet (default: 3 of the session board) needs 3 boards*",
        "SKIPPED [[]1[]] *.py:10: *; hil_board + fleet(streetlight-esp32=1) needs 2 boards*",
        "*ERROR at setup of test_fleet_of_one*",
    ])
    assert "leased by" not in result.stdout.str()
    assert not lease_dir.exists() or not list(lease_dir.glob("*.lease"))



RUNTIME_FLEET_TESTS = """
import pytest

@pytest.mark.fleet(**{"streetlight-esp32": 3})
def test_runtime_fleet(request):
    request.getfixturevalue("hil_fleet")

def test_runtime_default_fleet(request):
    request.getfixturevalue("hil_fleet")

@pytest.fixture
def fleet_at_run_time(request):
    return request.getfixturevalue("hil_fleet")

def test_runtime_fleet_and_board(fleet_at_run_time, hil_board):
    pass

@pytest.mark.fleet(**{"streetlight-esp32": 1})
def test_runtime_fleet_of_one(request):
    request.getfixturevalue("hil_fleet")
"""


def test_a_fleet_requested_at_run_time_on_the_serial_backend_skips_too(pytester: pytest.Pytester,
                                                                       tmp_path: Path) -> None:
    """request.getfixturevalue("hil_fleet") is not in the collection-time fixture list; hil_fleet
    counts the boards itself, before bringing any up (these tried to, NoMatchingPortError)."""
    pytester.makepyfile(RUNTIME_FLEET_TESTS)
    lease_dir = tmp_path / "leases"
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", "/dev/ttyNOSUCH0",
                                "--hil-lease-dir", str(lease_dir), "-rs", "-p", "no:cacheprovider")
    # The fleet of one is a board like hil_board: it runs (and fails here: no such port).
    result.assert_outcomes(skipped=3, failed=1)
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] *.py*: the serial backend drives one board (--hil-port /dev/ttyNOSUCH0); "
        "fleet(streetlight-esp32=3) needs 3 boards (run it on the sim or qemu backend)",
        "SKIPPED [[]1[]] *.py*: the serial backend drives one board (--hil-port /dev/ttyNOSUCH0); "
        "hil_fleet (default: 3 of the session board) needs 3 boards*",
        "SKIPPED [[]1[]] *.py*: *; hil_board + hil_fleet (default: 3 of the session board) needs 4 boards*",
        "hil_fleet: NoMatchingPortError: streetlight-esp32: step to 'flashed' failed: no serial port *",
    ])
    assert result.stdout.str().count("NoMatchingPortError") == 1  # only the fleet of one tried a board
    assert "direct cause" not in result.stdout.str() and "During handling" not in result.stdout.str()


HOLDER = """
import sys, time
from pathlib import Path
from hil.backends.serial.lease import Lease
Lease(sys.argv[1], lease_dir=Path(sys.argv[2]), duration_s=120).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_serial_board_held_by_another_run_is_reported(pytester: pytest.Pytester, repl_peer: ReplPeer,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    lease_dir = tmp_path_factory.mktemp("leases")
    # Another run: a process of its own holding the port's lease.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, repl_peer.path, str(lease_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        pytester.makepyfile("""
            def test_board(hil_board):
                pass
        """)
        result = pytester.runpytest("--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port",
                                    repl_peer.path, "--hil-lease-dir", str(lease_dir), "--hil-lease-wait", "0.5")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([f"*leased by pid {holder.pid} on * until *-*-*T*:*:* (in 1?? s)*"])
        assert "UNIX time" not in result.stdout.str()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_pytest_embedded_warnings_are_quieted_in_an_integrator_project(pytester: pytest.Pytester) -> None:
    # A project of its own (pytester's ini, not this repo's pyproject with its filterwarnings).
    pytester.makepyfile("""
        import warnings
        import pytest

        def test_one():
            pass

        def test_two():
            pass

        def test_other_warnings_still_show():
            warnings.warn(pytest.PytestExperimentalApiWarning("something else is an experimental feature"))
    """)
    # In a subprocess: an in-process run would inherit this repo's own warning filters.
    result = pytester.runpytest_subprocess("--junitxml=j.xml", "-o", "junit_family=xunit2")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "record_xml_attribute" not in out
    assert "something else is an experimental feature" in out  # only pytest-embedded's messages are ignored
    result.stdout.fnmatch_lines(["*1 warning*"])


def test_hil_radio_without_bumble_is_an_error_not_a_skip(pytester: pytest.Pytester) -> None:
    # A failed import of the radio's own module is a broken install, which must not go green (without the
    # hil extra the error names it: tests/hil/test_plugin_without_extras.py).
    pytester.makeconftest("""
        import sys
        sys.modules["hil.sim.radio.relay"] = None  # makes the import fail as without bumble
    """)
    pytester.makepyfile("""
        def test_radio(hil_radio):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*virtual radio unavailable:*bumble comes with civicedge's hil extra*"])
