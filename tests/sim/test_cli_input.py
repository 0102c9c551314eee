"""`civicedge sim up|fleet` refuse ordinary bad input with exit 2 and one clear line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args,words", [
    (["up", "--board", "streetlight-esp32", "--stimuli", "/nonexist.toml"], "no stimuli file"),
    (["up", "--board", "streetlight-esp32", "--id", "../evil id"], "device id"),
    (["up", "--board", "streetlight-esp32", "--id", ".."], "device id"),
    (["up", "--board", "streetlight-esp32", "--id", "laterne-süd"], "device id must be 1..32 chars of ASCII letters"),
    (["up", "--board", "streetlight-esp32", "--seed", "x"], "seed must be an integer"),
    (["fleet", "--board", "streetlight-esp32", "--count", "2", "--processes", "0"], "--processes"),
    (["fleet", "--board", "streetlight-esp32", "--count", "0"], "--count"),
    (["up", "--board", "nosuch"], "no such board"),
    (["fleet", "--board", "nosuch", "--count", "1"], "no such board"),
])
def test_bad_input_exits_2_without_traceback(args: list[str], words: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_a_stimuli_file_with_an_unknown_stimulus_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text("[set]\nnosuch = 1\n")
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "up", "--board", "streetlight-esp32",
                           "--stimuli", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--stimuli" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text,words", [
    ("set = 4\n", "[set] must be a table"),
    ("at = [1, 2]\n", "array of tables"),
    ('[at]\ntime = "+1m"\npir = "pulse 2s"\n', "array of tables"),
    ("[set]\n\"pin:x\" = 1\n", "pin:<GPIO number>"),
    ("[sett]\nlight = 3\n", "unknown sections"),
])
def test_a_stimuli_file_of_the_wrong_shape_exits_2_with_a_message(tmp_path: Path, text: str, words: str) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "up", "--board", "streetlight-esp32",
                           "--stimuli", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_a_stimuli_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_bytes(b"[set]\nlight = 5 # \xe9clairage\n")  # saved in Latin-1
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "up", "--board", "streetlight-esp32",
                           "--stimuli", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr


def test_up_refuses_an_id_other_than_the_one_its_flash_holds(tmp_path: Path) -> None:
    # QA: it printed "id": "other-id" while the board ran as the flash's id, so a script registered the
    # wrong id and the gateway rejected every report.
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "identity.json").write_text('{"id": "sl-held", "kind": "streetlight", "key": "%s"}' % ("ab" * 32))
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "up", "--board", "streetlight-esp32",
                           "--id", "other-id", "--flash", str(flash)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "already holds the identity of sl-held" in proc.stderr and "Traceback" not in proc.stderr
