"""`gateway run --check` checks what `run` opens at start (read-only) and works beside a running gateway.

QA findings: --check refused to check the config of the running gateway (``in_use``), and said
"config OK" for a store that is not a database, a damaged registry, a broken retention.json and an
HTTP port held by another process, all of which `run` then refused at start.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_env
from procs import GatewayProcess, free_port

from gateway.cli.run_check import (check_http_port, check_registry, check_retention_file, check_store_file,
                                   read_schema_version)
from gateway.errors import RegistryError, StorageError, TransportError
from gateway.resources import load_policy
from hil.cli.main import main


def civicedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], capture_output=True, text=True, timeout=60)


def config_with_http(tmp_path: Path, port: int) -> Path:
    path = make_env(tmp_path)
    path.write_text(path.read_text().replace("enabled = false", "enabled = true\nport = %d" % port))
    return path


def test_check_of_the_running_gateways_config_says_ok_and_names_its_pid(tmp_path: Path) -> None:
    port = free_port()
    config = config_with_http(tmp_path, port)
    gw = GatewayProcess(config, tmp_path / "gw.log")
    try:
        gw.start()
        assert gw.proc is not None
        done = civicedge("gateway", "run", "--config", str(config), "--check")
        assert done.returncode == 0, done.stderr
        assert "config OK" in done.stdout
        assert "in use by the running gateway (pid %d)" % gw.proc.pid in done.stdout
        assert "http 127.0.0.1:%d: in use by the running gateway (pid %d)" % (port, gw.proc.pid) in done.stdout
        # starting a second gateway on the same store is still refused
        second = civicedge("gateway", "run", "--config", str(config))
        assert second.returncode == 1 and "error (in_use)" in second.stderr
    finally:
        gw.kill()


@pytest.mark.parametrize("content", [b"hello", bytes(range(256)) * 16])
def test_a_store_that_is_not_a_database_fails_the_check(tmp_path: Path, content: bytes,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)
    store = tmp_path / "data" / "reports.sqlite"
    store.write_bytes(content)
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    err = capsys.readouterr().err
    assert "error (open_failed)" in err and "not a database" in err
    assert store.read_bytes() == content and not (tmp_path / "data" / "reports.sqlite-wal").exists()


def test_store_check_is_read_only_and_knows_foreign_databases(tmp_path: Path) -> None:
    assert check_store_file(tmp_path / "absent.sqlite").startswith("no store yet")
    assert not (tmp_path / "absent.sqlite").exists()
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE customers (id INTEGER)").connection.commit()
    with pytest.raises(StorageError) as info:
        check_store_file(foreign)
    assert info.value.reason == "not_a_store" and "customers" in str(info.value)


def test_a_garbage_registry_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)
    (tmp_path / "data" / "registry" / "devices.sqlite").write_bytes(b"garbage" * 200)
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    err = capsys.readouterr().err
    assert "error (corrupt)" in err and "is not a device registry database" in err


def test_registry_check_counts_devices_and_names_missing_table(tmp_path: Path) -> None:
    make_env(tmp_path)
    assert check_registry(tmp_path / "data" / "registry") == "3 device(s)"
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / "devices.sqlite").execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(RegistryError) as info:
        check_registry(other)
    assert info.value.reason == "corrupt" and "no devices table" in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{broken", "is not valid JSON (line 1, column 2)"),
        ('{"overrides": [{"kind": "bin", "field": "temp", "days": "x"}]}',
         'entry 1 (bin.temp): days is "x", not a whole number of days'),
        ('{"overrides": [{"kind": "bin", "field": "temp", "days": 91}]}', "days = 91 for bin.temp is outside 1..90"),
        ('{"overrides": [{"kind": "bin", "field": "nope", "days": 1}]}', "no field bin.nope"),
        ('{"overrides": [{"kind": "bin", "days": 1}]}', "entry 1 has no 'field'"),
        ("[]", '{"overrides": ['),
    ],
)
def test_retention_file_errors_say_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "retention.json"
    path.write_text(text)
    with pytest.raises(StorageError) as info:
        check_retention_file(path, load_policy())
    assert info.value.reason == "bad_retention_file"
    assert words in str(info.value) and "invalid literal" not in str(info.value)


def test_a_broken_retention_file_fails_check_and_run_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with_http(tmp_path, free_port())
    (tmp_path / "data" / "retention.json").write_text('{"overrides": [{"kind": "bin", "field": "temp", "days": "x"}]}')
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
    err = capsys.readouterr().err
    assert "error (bad_retention_file)" in err and "days is \"x\"" in err
    assert main(["gateway", "run", "--config", str(config)]) == 1
    assert capsys.readouterr().err == err
    good = {"overrides": [{"kind": "bin", "field": "temp", "days": 30}]}
    (tmp_path / "data" / "retention.json").write_text(json.dumps(good))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    assert "1 retention override(s)" in capsys.readouterr().out


def test_an_http_port_held_by_another_process_fails_the_check(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = config_with_http(tmp_path, port)
        assert main(["gateway", "run", "--config", str(config), "--check"]) == 1
        err = capsys.readouterr().err
        assert "error (open_failed)" in err and "cannot serve HTTP on 127.0.0.1:%d" % port in err
        # a holder pid that does not own the socket does not excuse it
        with pytest.raises(TransportError):
            check_http_port("127.0.0.1", port, "1")
    assert check_http_port("127.0.0.1", port, None) == "free"


def data_files(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*"))


def test_check_of_a_stopped_gateways_store_leaves_the_data_directory_as_it_was(tmp_path: Path) -> None:
    """A read-only open of a WAL database in a writable directory creates its -shm (32 KB) and an
    empty -wal; --check on a stopped gateway's store left both behind ("creates nothing")."""
    config = config_with_http(tmp_path, free_port())
    gw = GatewayProcess(config, tmp_path / "gw.log")
    try:
        gw.start()
    finally:
        assert gw.terminate() == 0
    data = tmp_path / "data"
    before = data_files(data)
    assert "reports.sqlite" in before and "reports.sqlite-shm" not in before
    done = civicedge("gateway", "run", "--config", str(config), "--check")
    assert done.returncode == 0, done.stderr
    assert "store %s: readable" % (data / "reports.sqlite") in done.stdout
    assert data_files(data) == before


def _killed_gateways_store(tmp_path: Path) -> Path:
    """A store whose schema is only in its -wal, as a gateway killed with -9 leaves it."""
    live = tmp_path / "live"
    live.mkdir()
    conn = sqlite3.connect(live / "reports.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    conn.commit()
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in ("reports.sqlite", "reports.sqlite-wal"):  # the files as a kill -9 leaves them
        (killed / name).write_bytes((live / name).read_bytes())
    conn.close()
    assert (killed / "reports.sqlite-wal").stat().st_size > 0
    return killed / "reports.sqlite"


def test_a_killed_gateways_wal_is_read_not_read_around(tmp_path: Path) -> None:
    """With no gateway running, a -wal with content (left by a killed one) holds commits the main file
    lacks: the check reads it (an immutable open would see an empty database here)."""
    store = _killed_gateways_store(tmp_path)
    assert check_store_file(store, running=False) == "readable"
    assert read_schema_version(store) == 3


def test_a_killed_gateways_wal_is_read_through_a_symlinked_store_path(tmp_path: Path) -> None:
    """[storage] path may be a symlink (the store follows it to the file itself). The check looked for
    the -wal next to the link, found none and read the main file immutable: a store whose tables were
    only in a killed gateway's -wal was "empty database: initialised at start", schema version None."""
    store = _killed_gateways_store(tmp_path)
    link = tmp_path / "etc" / "reports.sqlite"
    link.parent.mkdir()
    link.symlink_to(store)
    assert check_store_file(link, running=False) == "readable"
    assert read_schema_version(link) == 3


@pytest.mark.parametrize(("days", "loaded"), [(5, 5), ('"5"', 5), ('" 7 "', 7), ("5.0", 5)])
def test_whole_days_start_up_loaded_before_still_pass_check_and_load(tmp_path: Path, days: object,
                                                                     loaded: int) -> None:
    """`run` checks retention.json before it starts: the check once refused "5" and 5.0, which start-up
    (int()) loads, so a hand-edited file that worked stopped the gateway. One parser reads it now."""
    from gateway.web.retention import RetentionSettings

    path = tmp_path / "retention.json"
    path.write_text('{"overrides": [{"kind": "bin", "field": "temp", "days": %s}]}' % days)
    assert check_retention_file(path, load_policy()) == "1 retention override(s)"
    assert RetentionSettings(load_policy(), path=path).effective()[("bin", "temp")] == loaded


@pytest.mark.parametrize("days", ["true", "false", "5.5", '"5.0"', '"five"', "null", "[5]", "1e400"])
def test_days_that_are_not_whole_numbers_are_refused_alike_by_check_and_start_up(tmp_path: Path, days: str) -> None:
    """true loaded as 1 day and 5.5 as 5 (int()); both are refused now, by the check and start-up, in
    the same words."""
    from gateway.web.errors import BadParameter
    from gateway.web.retention import RetentionSettings

    path = tmp_path / "retention.json"
    path.write_text('{"overrides": [{"kind": "bin", "field": "temp", "days": %s}]}' % days)
    with pytest.raises(StorageError) as checked:
        check_retention_file(path, load_policy())
    with pytest.raises(BadParameter) as started:
        RetentionSettings(load_policy(), path=path)
    words = "entry 1 (bin.temp): days is %s, not a whole number of days" % json.dumps(json.loads(days))
    assert words in str(checked.value) and words in str(started.value)


def test_an_ipv6_listen_address_is_shown_in_brackets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`http :::18733` read as a garbled address; the check says `http [::]:18733`."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 on this host")
    config = config_with_http(tmp_path, port)
    config.write_text(config.read_text().replace("enabled = true", 'enabled = true\nlisten = "::"'))
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0
    assert "http [::]:%d: free" % port in capsys.readouterr().out
    with socket.socket(socket.AF_INET6) as holder:
        holder.bind(("::", port))
        holder.listen()
        with pytest.raises(TransportError, match=r"cannot serve HTTP on \[::\]:%d: " % port):
            check_http_port("::", port, None)


@pytest.mark.parametrize(("argv", "older"), [(["civicedge", "gateway", "run"], True), (["nginx"], False)])
def test_the_port_of_an_older_gateway_without_a_store_lock_is_named_not_refused(argv: list[str], older: bool) -> None:
    """Upgrade drill: `run --check` before an upgrade (docs/upgrading.md, step 4) failed with 'Address
    already in use' while the 0.1.0 gateway served, since 0.1.0 takes no store lock naming it. A process
    running `civicedge gateway run` that listens on the port is named; any other program still fails."""
    code = ("import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        if older:
            said = check_http_port("127.0.0.1", port, None)
            assert said == ("in use by a civicedge gateway (pid %d) that holds no store lock: an older release;"
                            " free once it stops" % proc.pid)
        else:
            with pytest.raises(TransportError, match="Address already in use"):
                check_http_port("127.0.0.1", port, None)
    finally:
        proc.kill()
        proc.wait()


def test_the_port_of_a_current_gateway_on_another_store_fails_the_check(tmp_path: Path) -> None:
    """City IT QA: a `civicedge demo` left running (its gateway is a `gateway run` child holding its own
    store's lock) on this config's port was named 'an older release ... free once it stops', the check
    said config OK, and `run` then failed with 'Address already in use'. A gateway that holds another
    store's lock is refused, naming its pid and its store; the same port's own gateway is still not."""
    port = free_port()
    other = config_with_http(tmp_path / "demo", port)
    gw = GatewayProcess(other, tmp_path / "gw.log")
    try:
        gw.start()
        assert gw.proc is not None
        mine = config_with_http(tmp_path / "mine", port)
        done = civicedge("gateway", "run", "--config", str(mine), "--check")
        assert done.returncode == 1, done.stdout
        assert "config OK" not in done.stdout
        assert ("error (open_failed): cannot serve HTTP on 127.0.0.1:%d: Address already in use (by another civicedge "
                "gateway, pid %d, on the store %s; stop it or set [http] port)"
                % (port, gw.proc.pid, (tmp_path / "demo" / "data" / "reports.sqlite").resolve())) in done.stderr
        # the restart case the check names instead of refusing: the gateway on this config's own store
        own = civicedge("gateway", "run", "--config", str(other), "--check")
        assert own.returncode == 0 and "in use by the running gateway (pid %d)" % gw.proc.pid in own.stdout
    finally:
        gw.kill()
