"""Capability manifests per backend and board (``hil.backends.manifest_for``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.backends.capabilities import HARNESS_CAPABILITIES, KNOWN_CAPABILITIES, manifest_for
from hil.boards import load_board

pytest_plugins = ["pytester"]


def test_sim_manifest_is_the_boards_declared_capabilities_plus_the_harness() -> None:
    light, bin_ = load_board("streetlight-esp32"), load_board("bin-esp32c3")
    for board in (light, bin_):
        assert manifest_for("sim", board).capabilities == board.capabilities | HARNESS_CAPABILITIES
    # A virtual streetlight never deep-sleeps; a virtual bin has no UART link.
    reason = manifest_for("sim", light).skip_reason({"deepsleep"})
    assert reason == ("backend 'sim' lacks deepsleep (has adc, ble, console, faults, gpio, pwm, stimuli, uart, "
                      "virtual_time: a virtual streetlight-esp32 has what its definition declares, plus stimuli, "
                      "fault injection and virtual time)")
    assert manifest_for("sim", bin_).missing(["uart", "deepsleep", "faults"]) == ("uart",)
    # Without a board the simulator can offer anything.
    assert manifest_for("sim").capabilities == KNOWN_CAPABILITIES


def test_hil_manifest_on_sim_narrows_to_the_session_board(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_manifest(hil_manifest, hil_settings):
            assert hil_manifest.backend == "sim"
            assert hil_manifest.skip_reason({"faults", "virtual_time"}) is None
            if hil_settings.board().name == "streetlight-esp32":
                assert "lacks deepsleep" in hil_manifest.skip_reason({"deepsleep"})
                assert hil_manifest.skip_reason({"ble", "uart", "adc", "pwm"}) is None
            else:
                assert "lacks uart" in hil_manifest.skip_reason({"uart"})
                assert hil_manifest.skip_reason({"deepsleep", "ble"}) is None
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--hil-board", "bin-esp32c3").assert_outcomes(passed=1)


def test_stimuli_are_a_capability_of_the_simulator_only(tmp_path: Path) -> None:
    """Before the fix ``hil_board.control.stimulus(...)`` on the serial backend raised ``AttributeError: 'NoneType'
    object has no attribute 'stimulus'``, and no ``requires(...)`` capability could skip such a test there."""
    from hil.backends.board import BoardHandle, make_identity
    from hil.backends.errors import BackendError

    light = load_board("streetlight-esp32")
    assert manifest_for("sim", light).skip_reason({"stimuli"}) is None
    for backend in ("qemu", "serial"):
        assert f"backend {backend!r} lacks stimuli" in (manifest_for(backend, light).skip_reason({"stimuli"}) or "")
        handle = BoardHandle(backend=backend, definition=light, identity=make_identity(light), workdir=tmp_path)
        assert not handle.control
        with pytest.raises(BackendError) as err:
            handle.control.stimulus("lux", 120)
        assert str(err.value).startswith(f"hil_board.control.stimulus is sim-only: stimuli, faults and the virtual "
                                         f"clock exist on the sim backend, not on {backend}; mark the test "
                                         '@pytest.mark.requires("stimuli")')


def test_a_test_requiring_stimuli_is_skipped_on_the_serial_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires("stimuli")
        def test_dark(hil_board):
            hil_board.control.stimulus("lux", 0)
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", "streetlight-esp32", "--hil-port",
                                "/dev/ttyNOSUCH0", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*backend 'serial' lacks stimuli (has * as declared by board streetlight-esp32)*"])
