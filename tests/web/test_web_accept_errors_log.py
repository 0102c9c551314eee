"""At the open-file limit asyncio logs ``socket.accept() out of system resource`` at ERROR with a traceback
on every accept() retry (QA drill: 76,611 lines, 34 MB, in 60 s; journald then drops other messages). The
HTTP site condenses them into one WARNING a minute naming the limit and [http] max_connections, and a
closing count at stop. A real server in a child whose RLIMIT_NOFILE is lowered while it runs (as
``prlimit`` did in the drill), flooded with idle connections."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.web.accept_errors import ACCEPT_ERROR, AcceptErrorFilter

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, logging, os, resource, sys
    sys.path.insert(0, sys.argv[1])
    from aiohttp import web
    from gateway.web.app import start_http

    async def main() -> None:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
        app = web.Application()
        server = await start_http(app, host="127.0.0.1", port=0, max_connections=256)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
        print(server.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await server.stop()
        await asyncio.sleep(1.5)  # a gateway's loop runs on after the HTTP site stops

    asyncio.run(main())
""")


def test_accept_failures_at_the_fd_limit_are_one_warning_naming_the_limits(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = tmp_path / "child.log"
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, str(script), str(REPO)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=err, text=True)
    flood: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        for _ in range(60):  # idle connections, as in the drill
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:
                break
        time.sleep(3)  # asyncio retries accept() many times meanwhile
        child.stdin.write("stop\n")
        child.stdin.flush()
        child.wait(timeout=30)
    finally:
        for s in flood:
            s.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    text = log.read_text()
    assert child.returncode == 0, text[-2000:]
    assert "Traceback" not in text and ACCEPT_ERROR not in text, text[:3000]
    lines = text.splitlines()
    warnings = [ln for ln in lines if ln.startswith("WARNING asyncio HTTP connections cannot be accepted")]
    assert len(warnings) == 1, text[:3000]
    assert "Too many open files" in warnings[0] and "RLIMIT_NOFILE" in warnings[0]
    assert "[http] max_connections" in warnings[0] and "LimitNOFILE=" in warnings[0]
    closing = [ln for ln in lines if "more accept() failure(s) at the open-file limit" in ln]
    assert len(closing) == 1 and closing[0].startswith("WARNING gateway.web.accept_errors"), text[-2000:]
    assert int(closing[0].split("HTTP connections: ")[1].split()[0]) > 0


def test_the_filter_lets_other_records_pass_and_counts_within_the_interval() -> None:
    now = [100.0]
    flt = AcceptErrorFilter(200, lambda: 7, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), None)

    other = rec("Task exception was never retrieved")
    assert flt.filter(other) and other.levelno == logging.ERROR
    first = rec(ACCEPT_ERROR + "\nsocket: <x>")
    assert flt.filter(first) and first.levelno == logging.WARNING
    assert "accept() failed 1 time(s)" in first.getMessage() and "cap 200" in first.getMessage()
    assert not any(flt.filter(rec(ACCEPT_ERROR)) for _ in range(5))
    now[0] += 61
    later = rec(ACCEPT_ERROR)
    assert flt.filter(later)
    assert "accept() failed 6 time(s) since the last such line" in later.getMessage()
    assert flt.failures == 7 and flt.unlogged == 0


@pytest.mark.parametrize(("code", "cause"), [
    (errno.EMFILE, "the process is at its open-file limit"),
    (errno.ENFILE, "the system's open-file table is full"),
    (errno.ENOBUFS, "the kernel is out of memory for sockets"),
])
def test_the_line_names_the_cause_asyncio_lumps_together(code: int, cause: str) -> None:
    """asyncio says 'out of system resource' for EMFILE, ENFILE, ENOBUFS and ENOMEM; only EMFILE is the
    process's own limit (reviewer: the line blamed RLIMIT_NOFILE for all of them)."""
    flt = AcceptErrorFilter(100, lambda: 3)
    exc = OSError(code, os.strerror(code))
    record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, ACCEPT_ERROR + " %s", ("x",),
                               (OSError, exc, None))
    assert flt.filter(record)
    assert cause in record.getMessage() and record.levelno == logging.WARNING


def test_only_asyncio_retry_on_the_closed_socket_is_dropped_and_the_site_waits_for_it() -> None:
    """After an accept() failure asyncio retries by a timer that closing the server does not cancel; run after
    the site closed, it raised ``ValueError: Invalid file descriptor: -1`` with a traceback (CI, 1 run in 4)."""
    now = [50.0]
    flt = AcceptErrorFilter(10, lambda: 0, clock=lambda: now[0])
    assert flt.retry_pending_s() == 0.0

    def callback_error(msg: str, exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), (type(exc), exc, None))

    retry = "Exception in callback BaseSelectorEventLoop._start_serving(<x>)"
    # review: without an accept() failure seen here, another server's retry error is not hidden
    assert flt.filter(callback_error(retry, ValueError("Invalid file descriptor: -1"))) and flt.stale_retries == 0
    flt.filter(logging.LogRecord("asyncio", logging.ERROR, __file__, 1, ACCEPT_ERROR, (), None))
    assert 1.0 < flt.retry_pending_s() < 1.2
    now[0] += 0.6
    assert 0.4 < flt.retry_pending_s() < 0.6

    stale = callback_error("Exception in callback BaseSelectorEventLoop._start_serving(<x>)\nhandle: <TimerHandle>",
                           ValueError("Invalid file descriptor: -1"))
    assert not flt.filter(stale) and flt.stale_retries == 1
    other_callback = callback_error("Exception in callback Gateway._tick()", ValueError("bad"))
    assert flt.filter(other_callback) and other_callback.levelno == logging.ERROR
    other_error = callback_error("Exception in callback BaseSelectorEventLoop._start_serving(<x>)",
                                 RuntimeError("not the closed socket"))
    assert flt.filter(other_error) and flt.stale_retries == 1
    other_value_error = callback_error(retry, ValueError("something else entirely"))
    assert flt.filter(other_value_error) and flt.stale_retries == 1
    now[0] += 5  # long after the retry was due
    assert flt.filter(callback_error(retry, ValueError("Invalid file descriptor: -1"))) and flt.stale_retries == 1
