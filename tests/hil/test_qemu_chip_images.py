"""One QEMU release image per chip: a suite with boards of both chips runs in one session.

No Espressif QEMU here: stand-ins for ``qemu-system-xtensa`` and ``qemu-system-riscv32`` answer
``-machine help`` as it does, log their command line and exit as QEMU does when it cannot start, so the
tests go as far as the launcher. Before the fix ``--hil-qemu-image`` took one image per session and the
other chip's test errored ("... is a MicroPython image for ESP32, but the board definition needs ESP32-C3").
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.hil.test_qemu_image import fake_release_image

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)

STANDIN = """\
#!{python}
import os, sys
args = sys.argv[1:]
if args[:2] == ["-machine", "help"]:
    print("Supported machines are:")
    print("{machine:<20} stand-in")
    sys.exit(0)
with open(os.environ["STANDIN_LOG"], "a") as f:
    f.write(os.path.basename(sys.argv[0]) + " " + " ".join(args) + "\\n")
sys.stderr.write("stand-in qemu cannot start\\n")
sys.exit(1)
"""

TESTS = """
    import pytest

    @pytest.mark.board("streetlight-esp32")
    def test_light(hil_board):
        pass

    @pytest.mark.board("bin-esp32c3")
    def test_bin(hil_board):
        pass
"""


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Stand-ins for both Espressif QEMU binaries first on PATH; yields the file their runs are logged to."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for binary, machine in (("qemu-system-xtensa", "esp32"), ("qemu-system-riscv32", "esp32c3")):
        exe = bindir / binary
        exe.write_text(STANDIN.format(python=sys.executable, machine=machine))
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "standin.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_LOG", str(log))
    yield log


def images(where: Path) -> tuple[Path, Path]:
    esp32, c3 = where / "ESP32_GENERIC-stand-in.bin", where / "ESP32_GENERIC_C3-stand-in.bin"
    esp32.write_bytes(fake_release_image(0x1000))
    c3.write_bytes(fake_release_image(0x0))
    return esp32, c3


def test_boards_of_both_chips_reach_qemu_with_their_own_image(pytester: pytest.Pytester, standins: Path) -> None:
    esp32, c3 = images(pytester.path)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--hil-backend", "qemu", "--hil-qemu-image", str(esp32), "--hil-qemu-image",
                                f"esp32c3={c3}", "-p", "no:cacheprovider")
    # Both get as far as starting QEMU (the stand-in's refusal), none refused for its image.
    result.assert_outcomes(errors=2)
    assert result.stdout.str().count("stand-in qemu cannot start") >= 2
    assert "MicroPython image for" not in result.stdout.str()
    runs = standins.read_text().splitlines()
    assert sorted(line.split()[0] for line in runs) == ["qemu-system-riscv32", "qemu-system-xtensa"]


def test_a_chip_without_an_image_is_skipped_naming_it(pytester: pytest.Pytester, standins: Path) -> None:
    esp32, _c3 = images(pytester.path)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--hil-backend", "qemu", "--hil-qemu-image", f"esp32={esp32}", "-rs",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*qemu backend: no MicroPython image for esp32c3 (bin-esp32c3); add "
                                 "--hil-qemu-image esp32c3=FILE (given: esp32)*"])
    assert [line.split()[0] for line in standins.read_text().splitlines()] == ["qemu-system-xtensa"]


@pytest.mark.parametrize("values, shown", [
    (["mips=x.bin"], "*--hil-qemu-image mips=x.bin: unknown chip 'mips'; chips: esp32, esp32c3*"),
    (["esp32=a.bin", "esp32=b.bin"], "*--hil-qemu-image esp32=b.bin: an image for esp32 is given twice*"),
    (["a.bin", "b.bin"], "*--hil-qemu-image b.bin: a second image without a chip*"),
    (["esp32c3=missing.bin"], "*--hil-qemu-image esp32c3=missing.bin: no such file*"),
])
def test_bad_image_options_are_usage_errors(pytester: pytest.Pytester, values: list[str], shown: str) -> None:
    pytester.makepyfile(TESTS)
    args = [arg for value in values for arg in ("--hil-qemu-image", value)]
    result = pytester.runpytest("--hil-backend", "qemu", *args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([shown])
