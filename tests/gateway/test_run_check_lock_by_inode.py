"""run --check names a gateway listening on the HTTP port by the store lock the kernel says it holds
(/proc/locks, by inode), not by the pid text in the lock file nor by reopening its name (review L2): a gateway in
another pid namespace (it wrote "1"), one whose lock file was deleted, and a lock path with a newline are a
current gateway on another store, refused on one line; a FIFO named *.lock beside it does not hang the check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.run_check import check_http_port
from gateway.errors import TransportError

_GATEWAY = ("import fcntl, os, socket, sys, time\n"
            "lock, pid_text, delete = sys.argv[1], sys.argv[2], sys.argv[3] == 'delete'\n"
            "fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "os.write(fd, pid_text.encode())\n"  # as a gateway in a pid namespace writes its own pid: 1
            "if delete: os.unlink(lock)\n"
            "fifo = lock[:-5] + '.fifo.lock'\n"
            "os.mkfifo(fifo)\n"
            "ffd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)\n"  # a FIFO named *.lock held open, not locked
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
            "time.sleep(60)\n")


@pytest.mark.parametrize("delete", [False, True])
@pytest.mark.parametrize("dirname", ["data", "da\nta"])
def test_a_gateway_whose_lock_text_is_not_its_host_pid_is_a_current_one(tmp_path: Path, delete: bool,
                                                                        dirname: str) -> None:
    store_dir = tmp_path / dirname
    store_dir.mkdir()
    lock = store_dir / "reports.sqlite.lock"
    proc = subprocess.Popen([sys.executable, "-c", _GATEWAY, str(lock), "1", "delete" if delete else "keep",
                             "civicedge", "gateway", "run"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with pytest.raises(TransportError) as err:
            check_http_port("127.0.0.1", port, None)
        said = str(err.value)
        assert "\n" not in said
        shown = str(store_dir / "reports.sqlite").replace("\n", "\\n")
        deleted = " (its lock file deleted)" if delete else ""
        assert ("Address already in use (by another civicedge gateway, pid %d, on the store %s%s; stop it or set "
                "[http] port)" % (proc.pid, shown, deleted)) in said
        assert "older release" not in said and "fifo" not in said
    finally:
        proc.kill()
        proc.wait()
    assert os.path.exists(store_dir / "reports.sqlite.fifo.lock")
