"""Child processes (the gateway) that end when the tool that started them dies.

A tool such as ``civicedge hil run``, ``civicedge demo`` or pytest with the HIL plugin starts the
gateway in its own session (so a Ctrl-C in the terminal reaches only the tool, which then stops the
gateway cleanly). Killed with SIGKILL, or by a signal it does not handle, the tool cannot stop it:
the gateway would run on forever with parent 1, retrying its ``[[serial]]`` ptys (and, once the
kernel reuses those pty numbers, locking other runs' boards). :func:`spawn_child` asks the kernel to
send the child SIGTERM (the gateway's clean stop) when its parent dies.

Linux only (``prctl(PR_SET_PDEATHSIG)``): elsewhere the child is started without it. The kernel
sends the signal when the *thread* that forked the child exits, not the process; so the request is
made only when spawning from the main thread (which lives as long as the process); from another
thread the child is started without it (logged at DEBUG).

:func:`pid_alive` tells whether a process still exists (a lease holder, a virtual console's server).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any, Callable, Sequence

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up before forking (no dlopen in the child), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists in this pid namespace.

    Signal 0 checks without signalling: a process of another user (``EPERM``) exists, so it counts
    as alive; so does a zombie (it holds its pid until reaped). A pid of 0 or below names no process
    (``kill`` would address a process group, which always "exists"), so it is not alive.

    Args:
        pid: the process id, as read from a lease or registry file.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_with_parent_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``sig`` when its parent dies, or None where unavailable.

    It also closes the race of a parent that died between fork and the request: the child then
    signals itself (the parent's pid no longer is its parent's).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    if threading.current_thread() is not threading.main_thread():
        log.debug("not spawning from the main thread: the child will not stop with this process")
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def spawn_child(cmd: Sequence[str], *, stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
                env: dict[str, str] | None = None, text: bool = False, cwd: str | None = None,
                stdin: int | IO[Any] | None = None) -> subprocess.Popen[Any]:
    """Start ``cmd`` in its own session, to get SIGTERM when this process dies (see module docstring).

    Args:
        cmd: program and arguments.
        stdin: as :class:`subprocess.Popen`.
        stdout: as :class:`subprocess.Popen`.
        stderr: as :class:`subprocess.Popen`.
        env: the child's environment (None: inherit).
        text: text-mode pipes.
        cwd: working directory (None: inherit).
    """
    return subprocess.Popen(list(cmd), stdin=stdin, stdout=stdout, stderr=stderr, env=env, text=text, cwd=cwd,
                            start_new_session=True, preexec_fn=stop_with_parent_preexec())


async def stop_gateway(proc: subprocess.Popen[Any], timeout: float = 20) -> int:
    """Stop a child started by :func:`spawn_child` (the gateway) and return its exit status.

    SIGTERM first (the gateway's clean stop: it drains and acknowledges what it has); after
    ``timeout`` seconds its whole session is killed (SIGKILL), as it was started in its own. A child
    that has already exited is only reaped. The waits run in a thread, so the event loop goes on.
    """
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(proc.wait, timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it exited between the wait and the kill
            os.killpg(proc.pid, signal.SIGKILL)
        return await asyncio.to_thread(proc.wait)
