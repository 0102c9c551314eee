"""A gateway started by a tool (hil run, the demo, the pytest plugin) ends when that tool dies, even by
SIGKILL: no orphan with parent 1 retrying its [[serial]] ptys and locking other runs' boards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _parent(code: str) -> tuple[subprocess.Popen[str], int]:
    """Run ``code`` in a parent process that prints its child's pid on the first line."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), line
    return proc, int(line)


SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_a_spawned_child_gets_sigterm_when_its_parent_is_killed() -> None:
    parent, child = _parent(f"""
        import subprocess, sys, time
        from hil.children import spawn_child
        p = spawn_child({SLEEPER!r})
        print(p.pid, flush=True)
        time.sleep(120)
    """)
    try:
        assert _alive(child)
        time.sleep(0.3)
        assert _alive(child), "the child must run while its parent does"
        parent.kill()
        parent.wait(10)
        assert _wait_gone(child, 10), "the child outlived its SIGKILLed parent"
    finally:
        for pid in (parent.pid, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(10)


def test_a_child_spawned_from_another_thread_survives_that_thread() -> None:
    # PDEATHSIG fires when the forking *thread* exits: not requested off the main thread.
    parent, child = _parent(f"""
        import threading, time
        from hil.children import spawn_child
        out = []
        t = threading.Thread(target=lambda: out.append(spawn_child({SLEEPER!r})))
        t.start(); t.join()
        print(out[0].pid, flush=True)
        time.sleep(120)
    """)
    try:
        time.sleep(0.5)
        assert _alive(child), "the child died with the thread that started it"
    finally:
        for pid in (child, parent.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(10)


def test_the_plugin_gateway_ends_when_pytest_is_killed(tmp_path: Path) -> None:
    parent, gateway = _parent(f"""
        import time
        from pathlib import Path
        from hil.pytest_plugin.gateway_process import GatewayProcess
        gw = GatewayProcess(workdir=Path({str(tmp_path / "gw")!r}), http=False)
        gw.start(timeout_s=60)
        assert gw.proc is not None
        print(gw.proc.pid, flush=True)
        time.sleep(120)
    """)
    try:
        assert _alive(gateway)
        parent.kill()
        parent.wait(10)
        assert _wait_gone(gateway, 20), "the gateway outlived the SIGKILLed pytest"
    finally:
        for pid in (gateway, parent.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(10)
