"""``civicedge gateway devices remove`` after review: what counts as the report store (H1, L1), how long it waits
beside a running gateway (M1, L2), what a command killed or signalled during that wait leaves (M2: the device stays
registered, retired, with its key file; never a lost row), where its messages come (L4, L5), how much of the store it
reads (L6) and a key file shared by ids differing only in case (L7)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import KEYS, make_env
from helpers import stored_bin_report

import gateway.cli.devices_cmd as devices_cmd
import gateway.storage.device_traces as traces_module
from gateway.config.loader import load_config
from gateway.errors import ConfigError, RegistryError
from gateway.pipeline.verify import REGISTRY_CACHE_S
from gateway.registry import Registry
from gateway.registry.removal import SETTLE_MARGIN_S
from gateway.storage import ReportStore
from gateway.storage.device_traces import device_traces
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(config, registry dir, store path): the KEYS devices registered, an empty store made."""
    config = make_env(tmp_path)
    store = tmp_path / "data" / "reports.sqlite"
    ReportStore(store, gateway_id="gw-test").close()
    return config, tmp_path / "data" / "registry", store


def _unchanged(registry: Path, device: str, key: bytes) -> bool:
    reg = Registry(registry, create=False)
    try:
        rec = reg.lookup(device)
        return rec is not None and not rec.retired and reg.key_path(device).read_bytes() == key
    finally:
        reg.close()


def _foreign_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE readings (device TEXT, value REAL)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("what", ["the registry's own database", "an empty file", "another program's database"])
def test_a_store_option_naming_no_report_store_is_refused_and_nothing_changes(
        env: tuple[Path, Path, Path], what: str, capsys: pytest.CaptureFixture[str]) -> None:
    """H1: each of these holds no row of bin-1 though the real store does; before, the removal went through."""
    _, registry, store = env
    s = ReportStore(store, gateway_id="gw-test")
    s.insert_batch([stored_bin_report("bin-1", 1)], {"bin-1": 1})  # heard from
    s.close()
    if what == "the registry's own database":
        wrong = registry / "devices.sqlite"
    elif what == "an empty file":
        wrong = store.with_name("empty.sqlite")
        wrong.write_bytes(b"")
    else:
        wrong = store.with_name("other.sqlite")
        _foreign_db(wrong)
    key = (registry / "keys" / "bin-1.key").read_bytes()
    assert main(["gateway", "devices", "--registry", str(registry), "remove", "bin-1", "--store", str(wrong)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (not_a_store): %s is " % wrong), err
    assert _unchanged(registry, "bin-1", key)


def test_the_wait_includes_the_configs_batch_ms_also_with_store_and_the_largest_without_a_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """M1: a gateway with batch_ms 5000 may commit a report it accepted up to 5 s after: the wait covers it, with
    --store too (before: 3.05 s); with --registry --store (no config) the largest batch_ms a config may set."""
    config = make_env(tmp_path, batch_ms=5000)
    store = tmp_path / "data" / "reports.sqlite"
    registry = tmp_path / "data" / "registry"
    running = ReportStore(store, gateway_id="gw-test")  # the writer lock held, as by a running gateway
    waits: list[float] = []
    monkeypatch.setattr(devices_cmd, "_interruptible_sleep", lambda s, announce: (announce(), waits.append(s)))
    try:
        assert main(["gateway", "devices", "--config", str(config), "remove", "bin-2"]) == 0
        assert main(["gateway", "devices", "--config", str(config), "remove", "bin-1", "--store", str(store)]) == 0
        assert main(["gateway", "devices", "--registry", str(registry), "remove", "sl-1", "--store", str(store)]) == 0
    finally:
        running.close()
    assert waits == pytest.approx([REGISTRY_CACHE_S + 5.0 + SETTLE_MARGIN_S] * 2
                                  + [REGISTRY_CACHE_S + devices_cmd.BATCH_MS_MAX / 1000 + SETTLE_MARGIN_S])
    assert "batch_ms 5000" in capsys.readouterr().err


def test_the_largest_batch_ms_assumed_is_the_largest_a_config_may_set(tmp_path: Path) -> None:
    assert load_config(make_env(tmp_path, batch_ms=devices_cmd.BATCH_MS_MAX)).storage.batch_ms == 10_000
    with pytest.raises(ConfigError):
        load_config(make_env(tmp_path, batch_ms=devices_cmd.BATCH_MS_MAX + 1))


def test_a_gateway_started_after_the_first_check_is_waited_for(
        env: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """L2: whether to wait is decided once the device is retired, not before the first check."""
    config, _, store = env
    started: list[ReportStore] = []
    real = devices_cmd.device_traces

    def gateway_starts_after_the_check(path: Path, device: str, **kw: Any) -> list[str]:
        found = real(path, device, **kw)
        if not started:
            started.append(ReportStore(store, gateway_id="gw-test"))
        return found

    waits: list[float] = []
    monkeypatch.setattr(devices_cmd, "device_traces", gateway_starts_after_the_check)
    monkeypatch.setattr(devices_cmd, "_interruptible_sleep", lambda s, announce: (announce(), waits.append(s)))
    try:
        assert main(["gateway", "devices", "--config", str(config), "remove", "bin-2"]) == 0
    finally:
        started[0].close()
    assert waits == pytest.approx([REGISTRY_CACHE_S + 0.05 + SETTLE_MARGIN_S])


@pytest.mark.parametrize("device, reason", [("nobody", "unknown_device"), ("bin-1", "heard_from")])
def test_a_removal_refused_at_once_does_not_announce_a_wait(
        env: tuple[Path, Path, Path], device: str, reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    """L4: before, "a gateway is running ...: waiting" came first, then the immediate refusal."""
    config, _, store = env
    running = ReportStore(store, gateway_id="gw-test")
    running.insert_batch([stored_bin_report("bin-1", 1)], {"bin-1": 1})
    try:
        assert main(["gateway", "devices", "--config", str(config), "remove", device]) == 1
    finally:
        running.close()
    err = capsys.readouterr().err
    assert err.startswith("error (%s)" % reason) and err.count("\n") == 1, err


def test_a_registry_path_without_a_registry_is_no_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """L5: as docs/gateway.md says for every command but add (before: bad_value, about --store)."""
    assert main(["gateway", "devices", "--registry", str(tmp_path / "missing"), "remove", "bin-1"]) == 1
    assert capsys.readouterr().err.startswith("error (no_registry)")
    assert not (tmp_path / "missing").exists()


def test_indexed_tables_are_checked_first_and_the_search_stops_at_the_first_hit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L6: chain and alarms have no index on device: a device with reports costs no scan of them."""
    store = tmp_path / "reports.sqlite"
    s = ReportStore(store, gateway_id="gw-test")
    s.insert_batch([stored_bin_report("bin-1", 1)], {"bin-1": 1})
    s.close()
    statements: list[str] = []
    real = traces_module.open_for_check

    def traced(path: Path, **kw: Any) -> sqlite3.Connection:
        conn = real(path, **kw)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(traces_module, "open_for_check", traced)
    assert device_traces(store, "bin-1") == ["ack_floor"]
    scans = [s for s in statements if s.startswith("SELECT EXISTS")]
    assert scans == ['SELECT EXISTS (SELECT 1 FROM "ack_floor" WHERE device = \'bin-1\')'], scans
    statements.clear()
    assert device_traces(store, "bin-9") == []  # never heard from: every indexed table, no scan (second review M2)
    looked = [s.split('"')[1] for s in statements if s.startswith("SELECT EXISTS")]
    assert looked == ["ack_floor", "reports", "retired_seqs", "window_duplicates"]


def test_every_table_with_a_device_column_is_indexed_on_it_or_covered(tmp_path: Path) -> None:
    """A table added later without an index on device must be indexed, or its rows shown to imply rows of a
    checked table (COVERED), not scanned in full on every removal unnoticed."""
    store = tmp_path / "reports.sqlite"
    ReportStore(store, gateway_id="gw-test").close()
    conn = sqlite3.connect(store)
    try:
        indexed, others = traces_module._device_tables(conn)
    finally:
        conn.close()
    assert set(others) == set(traces_module.COVERED), others
    assert all(set(by) <= set(indexed) for by in traces_module.COVERED.values())


def test_chain_and_alarm_rows_come_with_a_report_row_and_retention_leaves_retired_seqs(tmp_path: Path) -> None:
    """What COVERED relies on: a stored report with an alarm writes its reports, chain and alarms rows together;
    when retention removes the report row (its alarm goes with it, its chain entry stays), retired_seqs keeps the
    device, so it is still found."""
    store = tmp_path / "reports.sqlite"
    s = ReportStore(store, gateway_id="gw-test")
    s.insert_batch([stored_bin_report("bin-1", 1)._replace(a=["lid_open"])], {"bin-1": 1})
    s.insert_batch([stored_bin_report("bin-2", 9)], {"bin-2": 9})  # the newest row, which retention keeps
    conn = sqlite3.connect(store)
    counts = {t: conn.execute("SELECT COUNT(*) FROM %s WHERE device='bin-1'" % t).fetchone()[0]
              for t in ("reports", "chain", "alarms", "retired_seqs")}
    assert counts == {"reports": 1, "chain": 1, "alarms": 1, "retired_seqs": 0}
    s.apply_retention({("bin", "fill"): 1}, now=1_800_000_000.0)
    s.close()
    counts = {t: conn.execute("SELECT COUNT(*) FROM %s WHERE device='bin-1'" % t).fetchone()[0]
              for t in ("reports", "chain", "alarms", "retired_seqs")}
    assert counts == {"reports": 0, "chain": 1, "alarms": 0, "retired_seqs": 1}
    assert device_traces(store, "bin-1") == ["ack_floor"]
    conn.execute("DELETE FROM ack_floor WHERE device='bin-1'")  # without its ACK floor too, retired_seqs finds it
    conn.commit()
    conn.close()
    assert device_traces(store, "bin-1") == ["retired_seqs"]


def test_a_key_file_shared_with_an_id_differing_only_in_case_stays(tmp_path: Path) -> None:
    """L7: on a case-insensitive filesystem keys/bin-2.key and keys/BIN-2.key are one file (a registry made
    before add refused such twins may hold both ids); here the one file has both names (a hard link)."""
    reg = Registry(tmp_path / "registry")
    reg.add("bin-2", kind="bin", zone="north", lat="52.1", lon="4.1", key=KEYS["bin-2"])
    conn = sqlite3.connect(reg.path / "devices.sqlite")
    conn.execute("INSERT INTO devices (id, kind, zone, lat, lon, created_at, updated_at) "
                 "VALUES ('BIN-2', 'bin', 'north', '52.1', '4.1', 0, 0)")
    conn.commit()
    conn.close()
    os.link(reg.key_path("bin-2"), reg.key_path("BIN-2"))
    reg.remove("bin-2", traces=lambda device: [])
    assert reg.lookup("bin-2") is None
    assert reg.key_path("bin-2").is_file()  # the twin's key file, under the name the removed id shared
    assert reg.key("BIN-2") == KEYS["bin-2"]


def _remove_in_a_process(config: Path, device: str) -> subprocess.Popen[str]:
    """``devices remove`` in a process of its own; returns once it announced its wait (the device is retired)."""
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "gateway", "devices", "--config", str(config),
                             "remove", device], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # blocks until the announcement (or the end of a failed command)
    assert line.startswith("a gateway is running on"), (line, proc.stderr.read())
    return proc


def test_a_removal_killed_during_its_wait_leaves_the_device_retired_with_its_key_and_a_rerun_finishes(
        env: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """M2: SIGKILL (as a power cut) during the wait. Before, the row was deleted before the wait: killed then, the
    device was gone from the registry while its key file stayed and a report of it could still be stored."""
    config, registry, store = env
    key = (registry / "keys" / "bin-2.key").read_bytes()
    running = ReportStore(store, gateway_id="gw-test")
    try:
        proc = _remove_in_a_process(config, "bin-2")
        proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        rec = Registry(registry, create=False).get("bin-2")
        assert rec.retired and not rec.revoked  # visible: devices list shows it retired
        assert (registry / "keys" / "bin-2.key").read_bytes() == key
        assert main(["gateway", "devices", "--config", str(config), "list"]) == 0
        assert "RETIRED" in [line for line in capsys.readouterr().out.splitlines() if "bin-2" in line][0]
    finally:
        running.close()
    assert main(["gateway", "devices", "--config", str(config), "remove", "bin-2"]) == 0  # the re-run finishes
    assert Registry(registry, create=False).lookup("bin-2") is None
    assert not (registry / "keys" / "bin-2.key").exists()


def test_a_rerun_after_a_kill_refuses_cleanly_when_the_device_was_heard_from_meanwhile(
        env: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway committed a report it accepted just before the device was retired, after the command died."""
    config, registry, store = env
    key = (registry / "keys" / "bin-2.key").read_bytes()
    running = ReportStore(store, gateway_id="gw-test")
    try:
        proc = _remove_in_a_process(config, "bin-2")
        proc.kill()
        proc.communicate(timeout=30)
        running.insert_batch([stored_bin_report("bin-2", 1)], {"bin-2": 1})
    finally:
        running.close()
    assert main(["gateway", "devices", "--config", str(config), "remove", "bin-2"]) == 1
    assert capsys.readouterr().err.startswith("error (heard_from): device bin-2 was heard from: the report store "
                                              "holds rows of it (ack_floor)")
    rec = Registry(registry, create=False).get("bin-2")
    assert rec.retired and (registry / "keys" / "bin-2.key").read_bytes() == key  # reinstate takes it back
    assert main(["gateway", "devices", "--config", str(config), "reinstate", "bin-2"]) == 0
    assert _unchanged(registry, "bin-2", key)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_during_the_wait_puts_the_device_back_as_it_was(
        env: tuple[Path, Path, Path], signum: int) -> None:
    """M2: a stopped service or a dropped ssh session: before, the row was lost (deleted, never put back)."""
    config, registry, store = env
    before = Registry(registry, create=False).get("bin-2")
    key = (registry / "keys" / "bin-2.key").read_bytes()
    running = ReportStore(store, gateway_id="gw-test")
    try:
        proc = _remove_in_a_process(config, "bin-2")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        running.close()
    assert proc.returncode == 1, err
    warning, error = err.splitlines()
    assert warning.endswith("the removal of device bin-2 was stopped (interrupted (%s)): its registration is kept "
                            "as it was" % signal.Signals(signum).name), err
    assert error.startswith("error (interrupted): removal of device bin-2 interrupted (%s) during its wait: nothing "
                            "is removed" % signal.Signals(signum).name), err
    assert Registry(registry, create=False).get("bin-2") == before
    assert (registry / "keys" / "bin-2.key").read_bytes() == key


def test_ctrl_c_during_the_wait_puts_the_device_back_as_it_was(registry: Registry) -> None:
    before = registry.get("bin-2")

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        registry.remove("bin-2", traces=lambda device: [], settle_s=1.0, wait=interrupted)
    assert registry.get("bin-2") == before and registry.key_path("bin-2").is_file()


def test_a_device_retired_before_stays_retired_when_its_removal_is_refused(registry: Registry) -> None:
    """L3: the message says what the registration is now."""
    registry.retire("bin-2")
    before = registry.get("bin-2")
    calls: list[str] = []

    def traces(device: str) -> list[str]:
        calls.append(device)
        return ["reports"] if len(calls) == 2 else []

    with pytest.raises(Exception) as info:
        registry.remove("bin-2", traces=traces)
    assert "while it was being removed (it stays registered, retired as it was before)" in str(info.value)
    assert registry.get("bin-2") == before




def test_a_device_that_cannot_be_put_back_stays_retired_and_the_error_says_how_to_take_it_back(
        registry: Registry) -> None:
    """Heard from during the wait, and the registry fails then (its connection gone): the device is left retired
    with its key file, never removed, and storage_partial names both ways to reinstate it."""
    calls: list[str] = []

    def traces(device: str) -> list[str]:
        calls.append(device)
        if len(calls) == 2:
            registry._conn.close()  # the registry's storage fails from now on
            return ["reports"]
        return []

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=traces)
    assert info.value.reason == "storage_partial"
    assert str(info.value).startswith("device bin-2 was heard from while it was being removed; and its registration "
                                      "could not be put back as it was (")
    assert str(info.value).endswith("it stays registered but retired, with its key file; reinstate it (civicedge "
                                    "gateway devices reinstate bin-2, or POST /api/admin/devices/bin-2/reinstate)")
    other = Registry(registry.path, create=False)
    assert other.get("bin-2").retired and other.key_path("bin-2").is_file()
