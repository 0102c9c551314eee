"""Running under systemd, with the real thing where it exists: sd_notify to a real unix datagram
socket (a path, and an abstract @name) from a real `gateway run`, and journal priority prefixes when
stderr is the stream JOURNAL_STREAM names."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Iterator

import pytest
from procs import REPO

pytestmark = pytest.mark.timeout(90)
TOKEN = "9f2c41d7e8b0a6c35d1e4f7a2b8c9d0e"


def _config(tmp_path: Path, *, listen: str = "127.0.0.1", admin: bool = False) -> Path:
    lines = ['[gateway]', 'id = "gw-sd"', 'data_dir = "data"', '[http]', 'listen = "%s"' % listen, 'port = 0']
    if admin:
        token = tmp_path / "admin.token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        lines.append('admin_token_file = "admin.token"')
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(config: Path, stderr: IO[str], env: dict[str, str], *verbose: str) -> "subprocess.Popen[str]":
    full = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    full.update(env)
    return subprocess.Popen([sys.executable, "-m", "hil.cli.main", *verbose, "gateway", "run", "-c", str(config)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, env=full)


def _ready_port(proc: "subprocess.Popen[str]", timeout: float = 30.0) -> int:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if " ready" in line:
                return int(line.rsplit("http=", 1)[1])
            assert line or proc.poll() is None, "gateway exited before it was ready"
    raise AssertionError("gateway not ready in %.0f s" % timeout)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket at a short path (sun_path holds 108 bytes; pytest's tmp_path can be longer)."""
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


@pytest.fixture
def abstract_notify_socket() -> Iterator[tuple[socket.socket, str]]:
    name = "civicedge-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield sock, "@" + name
    sock.close()


def _receive(sock: socket.socket, timeout: float = 30.0) -> dict[str, str]:
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


@pytest.mark.parametrize("which", ["notify_socket", "abstract_notify_socket"])
def test_type_notify_ready_status_and_stopping(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    sock, address = request.getfixturevalue(which)
    with (tmp_path / "gw.log").open("w") as err:
        proc = _start(_config(tmp_path), err, {"NOTIFY_SOCKET": address})
        try:
            port = _ready_port(proc)
            ready = _receive(sock)
            assert ready["READY"] == "1"
            assert ready["STATUS"] == "gateway gw-sd running: 0 serial port(s), BLE off, HTTP on port %d" % port
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10) as r:
                assert r.status == 200  # READY=1 came when the gateway answers
            proc.send_signal(signal.SIGTERM)
            stopping = _receive(sock)
            assert stopping["STOPPING"] == "1" and stopping["STATUS"].startswith("gateway gw-sd stopping")
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "cannot notify" not in (tmp_path / "gw.log").read_text()


def test_without_notify_socket_nothing_is_sent_and_an_unreachable_one_is_one_warning(tmp_path: Path) -> None:
    with (tmp_path / "gw.log").open("w") as err:
        proc = _start(_config(tmp_path), err, {"NOTIFY_SOCKET": "/nonexistent/notify"})
        try:
            _ready_port(proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0  # a socket that cannot be reached does not stop the gateway
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    log = (tmp_path / "gw.log").read_text()
    assert log.count("cannot notify the service manager at NOTIFY_SOCKET /nonexistent/notify") == 1, log


def _journal_run(tmp_path: Path, journal: bool) -> list[str]:
    """Run a gateway whose stderr is a file, with JOURNAL_STREAM naming that file (or not), that logs
    an INFO (-v), a WARNING (admin API beyond loopback) and an ERROR (a replaced, unusable token file)."""
    config = _config(tmp_path, listen="0.0.0.0", admin=True)
    log_path = tmp_path / "stderr.txt"
    with log_path.open("w") as err:
        st = os.fstat(err.fileno())
        stream = "%d:%d" % (st.st_dev, st.st_ino) if journal else "%d:%d" % (st.st_dev, st.st_ino + 1)
        proc = _start(config, err, {"JOURNAL_STREAM": stream}, "-v")
        try:
            port = _ready_port(proc)
            token = tmp_path / "admin.token"
            token.write_text("aaaaaaaaaaaaaaaaaaaaaaaa\n")  # a placeholder: refused, the old token stays
            end = time.monotonic() + 20
            while "ERROR" not in log_path.read_text():
                assert time.monotonic() < end, log_path.read_text()
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10).close()
                except urllib.error.HTTPError as exc:
                    json.loads(exc.read())  # 503 degraded: the reason is there
                time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return log_path.read_text().splitlines()


def test_under_the_journal_each_line_starts_with_its_syslog_priority(tmp_path: Path) -> None:
    lines = _journal_run(tmp_path, journal=True)
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert any(line.startswith("<6>INFO gateway.service: gateway gw-sd running") for line in lines), lines
    assert any(line.startswith("<4>WARNING gateway.service: the admin API is served over plain HTTP")
               for line in lines), lines
    assert any(line.startswith("<3>ERROR gateway.web.auth: the admin token in ") for line in lines), lines
    assert TOKEN not in "\n".join(lines)


def test_a_stderr_that_is_not_the_journal_named_gets_no_prefix(tmp_path: Path) -> None:
    """A child that inherited JOURNAL_STREAM but writes elsewhere (a file here) keeps the usual format."""
    lines = _journal_run(tmp_path, journal=False)
    assert not any(line.startswith("<") for line in lines), lines
    assert any(" ERROR gateway.web.auth: the admin token in " in line for line in lines), lines


def test_a_long_store_copy_and_migration_keep_extending_the_start_timeout(
        tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Test fails before: nothing was sent between the start and READY=1, so under Type=notify a multi-GB
    copy and migration on slow storage outlasted the 90 s start timeout and was killed and restarted forever."""
    from gateway import systemd
    from gateway.storage import ReportStore, schema_backup
    from tests.gateway.test_store_migration_space import big_v1_store

    sock, address = notify_socket
    db = tmp_path / "r.sqlite"
    big_v1_store(db, rows=20_000)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setattr(systemd, "EXTEND_EVERY_S", 0.0)  # every step sends: the store here is small
    monkeypatch.setattr(schema_backup, "STEP_PAGES", 16)
    states: list[dict[str, str]] = []

    def receive() -> None:  # as systemd does, while the store opens (a full socket queue blocks the sender)
        sock.settimeout(2.0)
        try:
            while True:
                data = sock.recv(4096).decode()
                states.append(dict(line.split("=", 1) for line in data.split("\n")))
        except socket.timeout:
            pass

    import threading

    reader = threading.Thread(target=receive)
    reader.start()
    ReportStore(db, gateway_id="gw1").close()
    reader.join()
    statuses = [s["STATUS"] for s in states]
    assert all(s["EXTEND_TIMEOUT_USEC"] == "60000000" for s in states), states  # at least 60 s each time
    assert statuses.count("copying the report store to r.sqlite.schema-v1.bak before migrating it") > 3, statuses
    assert "migrating the report store from schema version 1 to 4" in statuses, statuses
    assert statuses[-1] == "writing the migrated report store's -wal into it"


def test_one_long_step_extends_the_start_timeout_by_what_it_writes(
        notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import systemd

    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    systemd.StartExtender("dropping").send(writes=3 * 60 * systemd.SLOW_WRITE_BPS)  # 3 minutes at the slow rate
    assert _receive(sock) == {"EXTEND_TIMEOUT_USEC": "180000000", "STATUS": "dropping"}


def test_a_full_notify_queue_drops_the_notification_without_blocking(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """notify() runs on the event loop: a service manager that does not read its socket must not stall
    it (review rev-obs L2). The datagram is dropped and said once."""
    import gateway.systemd as sd

    folder = tempfile.mkdtemp(prefix="sdq-", dir="/tmp")
    path = os.path.join(folder, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        filler.connect(path)
        filled = 0
        while True:  # fill the receiver's queue (net.unix.max_dgram_qlen datagrams, or its buffer)
            try:
                filler.send(b"WATCHDOG=1", socket.MSG_DONTWAIT)
                filled += 1
            except BlockingIOError:
                break
        assert filled > 0
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setattr(sd, "_warned", False)
        started = time.monotonic()
        assert sd.notify("WATCHDOG=1") is False
        assert sd.notify("WATCHDOG=1") is False
        assert time.monotonic() - started < 1.0
        assert caplog.text.count("notify queue at NOTIFY_SOCKET %s is full" % path) == 1, caplog.text
        receiver.recv(4096)  # room again: sent
        assert sd.notify("WATCHDOG=1") is True
    finally:
        filler.close()
        receiver.close()
        os.unlink(path)
        os.rmdir(folder)
