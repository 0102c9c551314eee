"""One QEMU release image per chip: a suite with boards of several chips runs in one session.

No Espressif QEMU here: stand-ins for ``qemu-system-xtensa`` and ``qemu-system-riscv32`` answer
``-machine help`` as it does, log their command line and exit as QEMU does when it cannot start, so the
tests go as far as the launcher. Before the fix ``--hil-qemu-image`` took one image per session and the
other chip's test errored ("... is a MicroPython image for ESP32, but the board definition needs ESP32-C3").
An ESP32-S3 board was refused ("unknown chip 'esp32s3'" for esp32s3=FILE, UnsupportedChipError for a plain FILE).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Iterator

import pytest

from gateway.resources import boards_dir
from tests.hil.test_qemu_image import ESP32S3_CHIP_ID, S3_LAYOUT, fake_release_image

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)

STANDIN = """\
#!{python}
import os, sys
args = sys.argv[1:]
if args[:2] == ["-machine", "help"]:
    print("Supported machines are:")
    for machine in {machines!r}:
        print(f"{{machine:<20}} stand-in")
    sys.exit(0)
drive = next(a for a in args if a.startswith("file="))
size = os.path.getsize(drive[len("file="):].split(",")[0])
with open(os.environ["STANDIN_LOG"], "a") as f:
    f.write(os.path.basename(sys.argv[0]) + " " + " ".join(args) + f" flash-bytes={{size}}" + "\\n")
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
    for binary, machines in (("qemu-system-xtensa", ("esp32", "esp32s3")), ("qemu-system-riscv32", ("esp32c3",))):
        exe = bindir / binary
        exe.write_text(STANDIN.format(python=sys.executable, machines=machines))
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


# The shipped streetlight on an S3 (as tests/sim/test_chip_s3.py): 27, 34, 35 are flash/PSRAM pins there,
# GPIO25 does not exist.
S3_PINS = {'chip = "esp32"': 'chip = "esp32s3"', 'name = "streetlight-esp32"': 'name = "sl-s3"',
           "pin = 27\n": "pin = 4\n", "pin = 34\n": "pin = 1\n", "pin = 25\n": "pin = 5\n", "pin = 35\n": "pin = 2\n",
           "rx = 16": "rx = 18"}


def s3_board(where: Path) -> Path:
    text = (boards_dir() / "streetlight-esp32.toml").read_text()
    for old, new in S3_PINS.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = where / "sl-s3.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("option", ["esp32s3={image}", "{image}"])
def test_an_s3_board_reaches_qemu_with_its_machine_and_an_8_mib_flash(pytester: pytest.Pytester, standins: Path,
                                                                      option: str) -> None:
    """ESP32_GENERIC_S3 (laid out for 8 MiB) on qemu-system-xtensa -machine esp32s3, its data UART (UART2)
    on the third -serial; also given as the plain image for every chip."""
    s3_board(pytester.path)
    image = pytester.path / "ESP32_GENERIC_S3-stand-in.bin"
    image.write_bytes(fake_release_image(0x0, S3_LAYOUT, chip_id=ESP32S3_CHIP_ID))
    pytester.makepyfile("""
        import pytest

        @pytest.mark.board("sl-s3.toml")
        def test_s3(hil_board):
            pass
    """)
    result = pytester.runpytest("--hil-backend", "qemu", "--hil-qemu-image", option.format(image=image),
                                "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert "stand-in qemu cannot start" in result.stdout.str()
    runs = standins.read_text().splitlines()
    assert runs, "QEMU was never started"
    for line in runs:  # the launcher retries a QEMU that exits at start on fresh ports
        args = line.split()
        assert args[0] == "qemu-system-xtensa"
        assert args[args.index("-machine") + 1] == "esp32s3"
        serials = [args[i + 1] for i, arg in enumerate(args) if arg == "-serial"]
        assert len(serials) == 3 and serials[1] == "null" and serials[2].startswith("tcp:127.0.0.1:")
        assert args[-1] == f"flash-bytes={8 * 1024 * 1024}"


@pytest.mark.parametrize("values, shown", [
    (["mips=x.bin"], "*--hil-qemu-image mips=x.bin: unknown chip 'mips'; chips: esp32, esp32c3, esp32s3*"),
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
