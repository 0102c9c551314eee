"""On a non-UTF-8 locale (de_DE.ISO-8859-1, or PYTHONIOENCODING=ascii) the CLI escapes what the terminal
cannot show instead of dying with UnicodeEncodeError, and prints ASCII for its own symbols (i18n QA #1)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.file_proxy import FileProxy

from hil.boards.search import BOARDS_PATH_ENV
from hil.cli.text import encodes_everything, plain

HTTP_PORT = 48011  # in this helper's range; `--check` only looks whether it is free


def _run(args: list[str], encoding: str, cwd: Path | None = None,
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONIOENCODING": encoding, **(extra_env or {})}
    env.pop("PYTHONUTF8", None)
    return subprocess.run([sys.executable, *args], capture_output=True, timeout=120, env=env, cwd=cwd)


def _civicedge(args: list[str], encoding: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return _run(["-m", "hil.cli.main", *args], encoding, **kwargs)  # type: ignore[arg-type]


def test_boards_list_with_a_non_ascii_board_file_on_an_ascii_terminal(tmp_path: Path) -> None:
    site = tmp_path / "boards"
    site.mkdir()
    (site / "laterne-süd.toml").write_text("chip = = \n", encoding="utf-8")
    env = {BOARDS_PATH_ENV: str(site)}
    utf8 = _civicedge(["boards", "list"], "utf-8", extra_env=env)
    ascii_ = _civicedge(["boards", "list"], "ascii", extra_env=env)
    assert "laterne-süd: INVALID" in utf8.stdout.decode("utf-8")
    assert utf8.returncode == 1  # the invalid file, as without the odd name
    assert ascii_.returncode == utf8.returncode, ascii_.stderr.decode("ascii", "replace")
    assert b"Traceback" not in ascii_.stderr
    assert b"laterne-s\\xfcd: INVALID" in ascii_.stdout  # escaped, the other boards still listed
    assert ascii_.stdout.count(b"\n") == utf8.stdout.count(b"\n")


def test_gateway_check_with_a_cjk_config_path_on_a_latin1_terminal(tmp_path: Path) -> None:
    config = tmp_path / "中央区" / "gateway-köln.toml"
    assert _civicedge(["gateway", "init", str(config)], "utf-8").returncode == 0
    config.write_text(config.read_text(encoding="utf-8").replace("port = 8080", f"port = {HTTP_PORT}", 1),
                      encoding="utf-8")
    args = ["gateway", "run", "--config", str(config), "--check"]
    utf8 = _civicedge(args, "utf-8")
    latin1 = _civicedge(args, "iso-8859-1")
    assert utf8.returncode == 0, utf8.stderr.decode("utf-8")
    assert latin1.returncode == utf8.returncode, latin1.stderr.decode("latin-1")
    assert b"Traceback" not in latin1.stderr
    out = latin1.stdout.decode("latin-1")
    assert "\\u4e2d\\u592e\\u533a" in out and "config OK" in out


STEPS = """
from rich.console import Console
from hil.field.cli_steps import steps
with steps(Console()) as step:
    step("copy files")
    step("restart")
try:
    with steps(Console()) as step:
        step("wait for a report")
        raise KeyboardInterrupt
except KeyboardInterrupt:
    pass
"""


def test_field_steps_mark_done_and_failed_in_ascii() -> None:
    utf8 = _run(["-c", STEPS], "utf-8")
    ascii_ = _run(["-c", STEPS], "ascii")
    assert utf8.returncode == 0, utf8.stderr.decode("utf-8")
    assert "✓ copy files" in utf8.stdout.decode("utf-8") and "✗ wait for a report" in utf8.stdout.decode("utf-8")
    assert ascii_.returncode == 0, ascii_.stderr.decode("ascii", "replace")
    out = ascii_.stdout.decode("ascii")
    assert "ok copy files" in out and "ok restart" in out and "x wait for a report" in out


SUMMARY = """
from rich.console import Console
from hil.demo.summary import FleetSummary, render
Console().print(render(FleetSummary(rows=[], total_reports=3, total_alarms=0), virtual_now_s=0.0,
                       url="http://127.0.0.1:48012/", elapsed_s=5.0))
"""


def test_demo_summary_table_on_a_latin1_terminal() -> None:
    utf8 = _run(["-c", SUMMARY], "utf-8")
    latin1 = _run(["-c", SUMMARY], "latin-1")
    assert utf8.returncode == 0, utf8.stderr.decode("utf-8")
    assert "civicedge demo — virtual time" in utf8.stdout.decode("utf-8")
    assert latin1.returncode == 0, latin1.stderr.decode("latin-1")
    out = latin1.stdout.decode("latin-1")
    assert "civicedge demo - virtual time Thu 00:00 UTC - dashboard" in out
    assert "5 s wall time - Ctrl-C to stop" in out


@pytest.mark.parametrize(("encoding", "expected"), [
    ("UTF-8", True), ("utf8", True), ("utf-16", True), (None, True),
    ("ascii", False), ("ANSI_X3.4-1968", False), ("ISO-8859-1", False), ("cp1252", False),
])
def test_which_encodings_encode_everything(encoding: str | None, expected: bool) -> None:
    assert encodes_everything(encoding) is expected


class _Stream:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding


def test_plain_keeps_what_the_stream_can_show() -> None:
    text = "a — b … ✓ ✗ ü"
    assert plain(text, _Stream("utf-8")) == text
    assert plain(text, _Stream("ascii")) == "a - b ... ok x ü"  # ü is not ours: the stream escapes it
    assert plain(text, _Stream("cp1252")) == "a — b … ok x ü"  # cp1252 has the dash and the ellipsis


def test_plain_sees_through_rich_lives_stdout_proxy() -> None:
    # `civicedge demo` renders its table while rich's Live has put a FileProxy (encoding None) in front
    # of sys.stdout; the terminal behind it is what counts
    latin1 = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    proxy = FileProxy(Console(file=latin1), latin1)
    assert plain("demo — Ctrl-C", proxy) == "demo - Ctrl-C"


SPINNING = """
import time
from rich.console import Console
from hil.field.cli_steps import steps
with steps(Console(force_terminal=True)) as step:
    step("wait for a report")
    time.sleep(1.0)
"""


def test_field_steps_spin_in_ascii_on_an_ascii_terminal() -> None:
    utf8 = _run(["-c", SPINNING], "utf-8")
    ascii_ = _run(["-c", SPINNING], "ascii")
    assert "⠋" in utf8.stdout.decode("utf-8")  # rich's braille spinner where it shows
    assert ascii_.returncode == 0, ascii_.stderr.decode("ascii", "replace")
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", ascii_.stdout.decode("ascii"))  # the terminal's colours
    assert "\\u28" not in out  # no escaped braille
    assert "- wait for a report" in out and "\\ wait for a report" in out and "ok wait for a report" in out


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_data_on_stdout_stays_utf8_on_a_non_utf8_terminal(encoding: str) -> None:
    """Review of ab65b25: the escaping made `docs protocol-vectors --show > v.json` invalid JSON (exit 0)."""
    import json

    from gateway.resources import docs_dir

    shown = _civicedge(["docs", "protocol-vectors", "--show"], encoding)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (docs_dir() / "protocol-vectors.json").read_bytes()
    json.loads(shown.stdout.decode("utf-8"))
    unit = _civicedge(["docs", "--unit"], encoding)
    assert unit.returncode == 0 and b"[Service]" in unit.stdout and b"\\x" not in unit.stdout


def test_a_file_name_that_is_not_utf8_is_written_back_on_a_utf8_terminal(tmp_path: Path) -> None:
    """Review of ab65b25: a strict UTF-8 stdout (de_DE.UTF-8) still crashed on a Latin-1 file name."""
    site = tmp_path / "boards"
    site.mkdir()
    (site / os.fsdecode(b"laterne-s\xfcd.toml")).write_text("chip = = \n", encoding="utf-8")
    done = _civicedge(["boards", "list"], "utf-8", extra_env={BOARDS_PATH_ENV: str(site)})
    assert b"Traceback" not in done.stderr, done.stderr.decode("utf-8", "replace")
    assert b"laterne-s\xfcd" in done.stdout + done.stderr  # the name's own bytes
