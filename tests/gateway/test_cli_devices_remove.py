"""``civicedge gateway devices remove``: a device registered by mistake (never heard from) leaves the registry with
its key file; one the report store holds anything of is refused and nothing changes, also when its frames are
stored while the removal runs beside a gateway."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

import pytest
from conftest import KEYS, make_env
from helpers import report_frame, stored_bin_report

import gateway.cli.devices_cmd as devices_cmd
from gateway.errors import RegistryError, RejectedReport, StorageError
from gateway.pipeline import Verifier
from gateway.pipeline.verify import REGISTRY_CACHE_S
from gateway.registry import Registry
from gateway.registry.removal import SETTLE_MARGIN_S
from gateway.resources import load_policy
from gateway.storage import ReportStore
from gateway.storage.device_traces import device_traces
from hil.cli.main import main


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(config, registry dir, store path): the KEYS devices registered, an empty store made."""
    config = make_env(tmp_path)
    store = tmp_path / "data" / "reports.sqlite"
    ReportStore(store, gateway_id="gw-test").close()
    return config, tmp_path / "data" / "registry", store


def remove(config: Path, *argv: str) -> int:
    return main(["gateway", "devices", "--config", str(config), "remove", *argv])


def test_a_device_never_heard_from_is_removed_with_its_key_file_and_can_be_added_again(
        env: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, registry, store = env
    key_file = registry / "keys" / "bin-2.key"
    assert key_file.is_file()
    assert remove(config, "bin-2") == 0
    out = capsys.readouterr().out
    assert "removed bin-2 (bin, zone north)" in out and "holds nothing of it" in out and str(store) in out
    assert KEYS["bin-2"].hex() not in out  # never the key
    assert not key_file.exists()
    reg = Registry(registry, create=False)
    assert reg.lookup("bin-2") is None and reg.lookup("bin-1") is not None
    assert main(["gateway", "devices", "--config", str(config), "list", "--json"]) == 0
    assert '"bin-2"' not in capsys.readouterr().out
    # Never heard from: the id can be registered again (another board, a new key), with no seq to clash with.
    assert main(["gateway", "devices", "--config", str(config), "add", "--id", "bin-2", "--kind", "bin", "--zone",
                 "south", "--location", "52.1,4.2"]) == 0
    assert key_file.is_file() and Registry(registry, create=False).get("bin-2").zone == "south"


def test_without_a_store_the_removal_is_refused_unless_no_store_yet_says_the_gateway_never_ran(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong [storage] path must not pass for a store without the device (review L1)."""
    config = make_env(tmp_path)
    store = tmp_path / "data" / "reports.sqlite"
    assert remove(config, "sl-1") == 1
    assert capsys.readouterr().err.startswith("error (no_store): no report store at %s" % store)
    assert Registry(tmp_path / "data" / "registry", create=False).get("sl-1").retired is False
    assert (tmp_path / "data" / "registry" / "keys" / "sl-1.key").is_file()
    assert remove(config, "sl-1", "--no-store-yet") == 0
    assert "there is no report store at %s yet (--no-store-yet)" % store in capsys.readouterr().out
    assert Registry(tmp_path / "data" / "registry", create=False).lookup("sl-1") is None


def test_a_device_with_stored_reports_is_refused_naming_retire_and_revoke_and_nothing_changes(
        env: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, registry, store = env
    s = ReportStore(store, gateway_id="gw-test")
    s.insert_batch([stored_bin_report("bin-1", 1), stored_bin_report("bin-1", 2)], {"bin-1": 2})
    s.close()
    key_before = (registry / "keys" / "bin-1.key").read_bytes()
    assert remove(config, "bin-1") == 1
    err = capsys.readouterr().err
    assert err.startswith("error (heard_from): device bin-1 was heard from")
    assert "the report store holds rows of it (ack_floor)" in err  # the first table found (indexed ones first)
    assert "civicedge gateway devices retire bin-1" in err and "civicedge gateway devices revoke bin-1" in err
    assert Registry(registry, create=False).get("bin-1").key_version == 1
    assert (registry / "keys" / "bin-1.key").read_bytes() == key_before
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT COUNT(*) FROM reports WHERE device='bin-1'").fetchone()[0] == 2
    conn.close()


@pytest.mark.parametrize("table, row", [("ack_floor", "('bin-1', 7)"), ("retired_seqs", "('bin-1', 7)")])
def test_a_replay_floor_alone_refuses_the_removal(env: tuple[Path, Path, Path], table: str, row: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """No report left (report retention removed them all), only the seq floor that protects against replay."""
    config, registry, store = env
    conn = sqlite3.connect(store)
    conn.execute("INSERT INTO %s (device, seq) VALUES %s" % (table, row) if table == "retired_seqs"
                 else "INSERT INTO %s (device, floor) VALUES %s" % (table, row))
    conn.commit()
    conn.close()
    assert device_traces(store, "bin-1") == [table]
    assert remove(config, "bin-1") == 1
    assert "(heard_from)" in capsys.readouterr().err
    assert (registry / "keys" / "bin-1.key").is_file() and Registry(registry, create=False).lookup("bin-1")


def test_an_unknown_id_is_an_error(env: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, _, _ = env
    assert remove(config, "nobody") == 1
    assert capsys.readouterr().err == "error (unknown_device): no device nobody in the registry\n"


def test_with_registry_the_store_must_be_named_and_exist(env: tuple[Path, Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, registry, store = env
    base = ["gateway", "devices", "--registry", str(registry), "remove", "bin-2"]
    assert main(base) == 1
    assert "error (bad_value)" in capsys.readouterr().err
    assert main([*base, "--store", str(store.with_name("typo.sqlite"))]) == 1
    assert "error (no_store): no report store at" in capsys.readouterr().err
    assert Registry(registry, create=False).lookup("bin-2") is not None
    assert main([*base, "--store", str(store)]) == 0
    assert Registry(registry, create=False).lookup("bin-2") is None


def test_help_names_remove_and_what_it_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["gateway", "devices", "remove", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "never heard from" in text and "retire" in text and "revoke" in text and "--store" in text


def test_a_report_stored_during_the_removal_puts_the_registration_back(
        env: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Beside a running gateway (the store's writer lock held): the device is retired (its row stays), the gateway
    commits a frame it accepted just before, and the check after the wait finds it: the registration is back as it
    was, key file untouched."""
    config, registry, store = env
    before = Registry(registry, create=False).get("bin-2")
    key_before = (registry / "keys" / "bin-2.key").read_bytes()
    running = ReportStore(store, gateway_id="gw-test")  # holds the writer lock, as a running gateway does
    waits: list[float] = []

    def gateway_commits_meanwhile(seconds: float, announce: Callable[[], None]) -> None:
        announce()
        waits.append(seconds)
        assert Registry(registry, create=False).get("bin-2").retired  # out of service during the wait, still there
        running.insert_batch([stored_bin_report("bin-2", 1)], {"bin-2": 1})

    monkeypatch.setattr(devices_cmd, "_interruptible_sleep", gateway_commits_meanwhile)
    try:
        assert remove(config, "bin-2") == 1
    finally:
        running.close()
    captured = capsys.readouterr()
    assert "a gateway is running on" in captured.err
    assert "error (heard_from): device bin-2 was heard from while it was being removed (its registration is kept " \
        "as it was)" in captured.err
    assert waits and waits[0] >= REGISTRY_CACHE_S + SETTLE_MARGIN_S
    assert Registry(registry, create=False).get("bin-2") == before
    assert (registry / "keys" / "bin-2.key").read_bytes() == key_before


def test_a_failed_second_check_puts_the_registration_back(registry: Registry) -> None:
    before = registry.get("bin-2")
    calls: list[str] = []

    def traces(device: str) -> list[str]:
        calls.append(device)
        if len(calls) == 2:
            raise StorageError("cannot read report store", reason="read_failed")
        return []

    with pytest.raises(StorageError):
        registry.remove("bin-2", traces=traces)
    assert registry.get("bin-2") == before and registry.key_path("bin-2").is_file()


def test_a_key_file_that_cannot_be_deleted_is_reported_and_nothing_is_removed(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row and the key file go in one transaction: a key file that stays keeps its row (no orphan key file, no
    row without its key), and the device is put back as it was."""
    before = registry.get("bin-2")
    path = registry.key_path("bin-2")
    real_unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=lambda device: [])
    assert info.value.reason == "key_file"
    assert str(info.value) == "device bin-2 is not removed: its key file %s could not be deleted: Permission denied" \
        % path
    assert registry.get("bin-2") == before and path.is_file()


def test_a_reinstate_by_another_process_during_the_wait_stops_the_removal(registry: Registry) -> None:
    """The operator took the device back while the removal waited: it stays, with its key file."""
    other = Registry(registry.path, create=False)
    calls: list[str] = []

    def traces(device: str) -> list[str]:
        calls.append(device)
        if len(calls) == 2:  # after the mark: another tool reinstates it
            other.reinstate("bin-2")
        return []

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=traces)
    assert info.value.reason == "reinstated"
    assert str(info.value) == "device bin-2 was reinstated by another process while it was being removed; it is " \
        "not removed"
    assert registry.get("bin-2").retired is False and registry.key_path("bin-2").is_file()


def test_an_id_differing_only_in_case_cannot_be_added_while_the_removal_waits(registry: Registry) -> None:
    """The row stays until the end, so add's case-insensitive twin check refuses SL... while sl... is removed (their
    key files would be one file on a case-insensitive filesystem)."""
    other = Registry(registry.path, create=False)
    refused: list[str] = []

    def wait(seconds: float) -> None:
        with pytest.raises(RegistryError) as info:
            other.add("BIN-2", kind="bin", zone="east", lat="52.2", lon="4.3")
        refused.append(info.value.reason)

    registry.remove("bin-2", traces=lambda device: [], settle_s=0.5, wait=wait)
    assert refused == ["exists"]
    assert registry.lookup("bin-2") is None and registry.lookup("BIN-2") is None


def test_a_removed_ids_frames_are_refused_as_from_an_unknown_device(registry: Registry) -> None:
    verifier = Verifier(registry, load_policy())
    frame = report_frame("bin-2", 1, KEYS["bin-2"])
    assert verifier.verify(frame, link="l", now=0).device.id == "bin-2"  # cached now
    registry.remove("bin-2", traces=lambda device: [])
    with pytest.raises(RejectedReport) as info:
        verifier.verify(frame, link="l", now=0)
    assert info.value.reason == "unknown_device"


def test_a_revoked_device_is_not_removed(env: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Its row is what keeps the id refused for good, heard from or not."""
    config, registry, _ = env
    Registry(registry, create=False).revoke("bin-2")
    assert remove(config, "bin-2") == 1
    assert capsys.readouterr().err.startswith("error (revoked): device bin-2 is revoked; it is not removed")
    assert Registry(registry, create=False).get("bin-2").revoked and (registry / "keys" / "bin-2.key").is_file()


def test_a_revocation_by_another_process_after_the_check_stops_the_removal(registry: Registry) -> None:
    other = Registry(registry.path, create=False)

    def traces(device: str) -> list[str]:
        other.revoke(device)  # between the store's check and the row's deletion
        return []

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=traces)
    assert info.value.reason == "revoked"
    assert registry.get("bin-2").revoked and registry.key_path("bin-2").is_file()


def test_a_store_that_cannot_be_read_refuses_the_removal(env: tuple[Path, Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, registry, store = env
    other = store.with_name("notes.sqlite")
    other.write_text("not a database\n" * 200)
    assert main(["gateway", "devices", "--registry", str(registry), "remove", "bin-2", "--store", str(other)]) == 1
    assert capsys.readouterr().err.startswith("error (open_failed): report store %s is not a database" % other)
    assert Registry(registry, create=False).lookup("bin-2") is not None and (registry / "keys" / "bin-2.key").is_file()
