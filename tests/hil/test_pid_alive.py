"""hil.children.pid_alive: the one liveness check of lease holders and virtual-console servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.children import pid_alive


def test_own_process_is_alive() -> None:
    assert pid_alive(os.getpid())


def test_reaped_child_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_zombie_still_holds_its_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # exited but not reaped: a zombie
            stat = Path(f"/proc/{proc.pid}/stat").read_text() if sys.platform.startswith("linux") else ""
            if not stat or stat.rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.02)
        assert pid_alive(proc.pid)
    finally:
        proc.wait()


@pytest.mark.parametrize("pid", [0, -1])
def test_non_positive_pid_names_no_process(pid: int) -> None:
    # os.kill(0, 0) / os.kill(-1, 0) address process groups and succeed: they must not read as alive.
    assert not pid_alive(pid)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to check as another user")
def test_process_of_another_user_is_alive() -> None:
    # EPERM from kill(pid, 0) means the process exists but is not ours to signal. A forked child
    # drops to user 65534 and checks this (root) process.
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            try:
                os.kill(parent, 0)
                answer = b"signalled"
            except PermissionError:
                answer = b"eperm " + str(pid_alive(parent)).encode()
            os.write(write_fd, answer)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read()
    finally:
        os.waitpid(child, 0)
    assert answer == b"eperm True"
