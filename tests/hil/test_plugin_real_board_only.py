"""docs/hil.md's "Real-board-only tests" example runs as written: skipped on the sim backend, before a board boots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "hil.md"


def real_board_example() -> str:
    """The python block of docs/hil.md's "Real-board-only tests" section, verbatim."""
    section = DOC.read_text().split("#### Real-board-only tests", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/hil.md: no python block under 'Real-board-only tests'"
    return match.group(1)


@pytest.mark.timeout(120)
def test_the_real_board_only_example_skips_on_the_sim_backend(pytester: pytest.Pytester) -> None:
    source = real_board_example()
    assert "hil_settings.backend" in source and "def test_lamp_current_reads_on_the_real_board" in source
    pytester.makepyfile(test_real_only=source)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider", "--hil-backend", "sim")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * needs a real board (--hil-backend serial), not the sim backend"])
    # Skipped before hil_board: no board work directory was made under the test's tmp_path.
    assert not list(pytester.path.glob("**/console.log"))


def test_hil_settings_attributes_named_in_the_docs_exist(pytester: pytest.Pytester) -> None:
    """The attributes docs/hil.md lists for hil_settings are the ones HilSettings has."""
    text = DOC.read_text().split("`hil_settings` (session-wide", 1)[1].split("\n\n", 1)[0]
    names = re.findall(r"`(\w+)`", text.split("holds the parsed options:", 1)[1])
    assert {"backend", "board_name", "port", "data_port", "sim_speed", "port_range"} <= set(names)
    pytester.makepyfile(test_attrs=f"""
def test_attrs(hil_settings):
    for name in {names!r}:
        assert hasattr(hil_settings, name), name
    assert hil_settings.backend == "qemu" and hil_settings.board_name == "bin-esp32c3"
""")
    image = pytester.path / "fw.bin"
    image.write_bytes(b"x")
    pytester.runpytest("-p", "no:cacheprovider", "--hil-backend", "qemu", "--hil-qemu-image", str(image),
                       "--hil-board", "bin-esp32c3").assert_outcomes(passed=1)
