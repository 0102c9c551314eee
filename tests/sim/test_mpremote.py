"""The unmodified mpremote CLI from PyPI against a virtual board's console pty (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


async def mpremote(*args: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(MPREMOTE, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_mpremote_exec_eval_fs_softreset_run(make_board, tmp_path):
    board = await make_board(files={"main.py": "print('MAIN')\n"}, speed=1.0)
    await board.wait_console(">>> ")
    port = board.console_path

    r = await mpremote("connect", port, "exec", "import sys; print(sys.implementation.name, 6*7)")
    assert r.returncode == 0, r.stderr
    assert "micropython 42" in r.stdout

    r = await mpremote("connect", port, "eval", "2**10")
    assert r.returncode == 0 and r.stdout.strip() == "1024", r.stderr

    src = tmp_path / "hello.py"
    src.write_bytes(b"print('hello from', __name__)\n" + bytes(range(32, 127)) * 20 + b"\n")
    back = tmp_path / "back.py"
    r = await mpremote("connect", port, "fs", "cp", str(src), ":hello.py", "+", "fs", "ls", "+",
                       "fs", "cp", ":hello.py", str(back))
    assert r.returncode == 0, r.stderr
    assert "hello.py" in r.stdout
    assert back.read_bytes() == src.read_bytes()
    # The file really is in the board's flash directory on the host.
    assert (board.flash_dir / "hello.py").read_bytes() == src.read_bytes()

    r = await mpremote("connect", port, "fs", "mkdir", "d", "+", "fs", "cp", str(src), ":d/x.py", "+",
                       "fs", "ls", "d", "+", "fs", "rm", ":d/x.py", "+", "fs", "rmdir", "d")
    assert r.returncode == 0, r.stderr
    assert "x.py" in r.stdout and not (board.flash_dir / "d").exists()

    r = await mpremote("connect", port, "fs", "cat", ":nonexistent.txt")
    assert r.returncode != 0 and "No such file" in (r.stdout + r.stderr)

    boots = board.boots
    r = await mpremote("connect", port, "soft-reset")
    assert r.returncode == 0, r.stderr
    assert board.boots == boots + 1

    script = tmp_path / "script.py"
    script.write_text("import machine\nprint('run:', machine.unique_id().hex(), machine.reset_cause())\n")
    r = await mpremote("connect", port, "run", str(script))
    assert r.returncode == 0, r.stderr
    assert "run:" in r.stdout and " 5" in r.stdout


@pytest.mark.parametrize(("board_name", "chip"), [("streetlight-esp32", "ESP32"), ("bin-esp32c3", "ESP32C3")])
async def test_uname_names_the_board_definitions_chip(make_board, board_name, chip):
    """Field QA: the wasm port has no os.uname and says 'JS with Emscripten', so the field tools could
    not tell a virtual board's chip, and a flash of another chip's definition was not refused."""
    board = await make_board(board_name, speed=1.0)
    await board.wait_console(">>> ")
    r = await mpremote("connect", board.console_path, "exec",
                       "import os; u = os.uname(); print(u.sysname, '|', u.machine, '|', u[4] == u.machine)")
    assert r.returncode == 0, r.stderr
    assert [part.strip() for part in r.stdout.split("|")] == [chip.lower(), f"civicedge virtual board with {chip}", "True"]
    from hil.field.board_facts import chip_from_machine
    assert chip_from_machine(r.stdout.split("|")[1].strip()) == chip.lower()
