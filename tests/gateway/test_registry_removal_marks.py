"""A removal's own mark (third review M1, L1, L2, L3): the device is retired *for the removal* (``retired`` = 2)
while it waits, and only that mark is put back or deleted. An operator's retire meanwhile stands; the mark moves
the connection's change count also for a device retired already; a row changed during the wait is not deleted;
a reinstate never takes back a device without its key; signals wait for the command line's final deletion."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Callable

import pytest
from conftest import make_env
from helpers import retired_column

import gateway.registry.removal as removal
from gateway.errors import RegistryError
from gateway.registry import Registry
from gateway.registry.records import RETIRED, RETIRED_FOR_REMOVAL
from gateway.storage import ReportStore
from hil.cli.main import main


def _during_wait(reg: Registry, act: Callable[[Registry], None]) -> Callable[[str], list[str]]:
    """``traces`` for :meth:`Registry.remove` that runs ``act`` (through another Registry instance, as another
    process) between the mark and the second check: the removal's wait."""
    calls: list[str] = []

    def traces(device: str) -> list[str]:
        calls.append(device)
        if len(calls) == 2:
            other = Registry(reg.path, create=False)
            try:
                act(other)
            finally:
                other.close()
        return []
    return traces


def test_the_removal_marks_the_device_retired_for_it_and_lists_it_so(registry: Registry) -> None:
    seen: list[tuple[int, bool, bool]] = []

    def look(other: Registry) -> None:
        rec = other.get("bin-2")
        seen.append((retired_column(registry.path, "bin-2"), rec.retired, rec.removing))

    registry.remove("bin-2", traces=_during_wait(registry, look))
    assert seen == [(RETIRED_FOR_REMOVAL, True, True)]  # refused as retired; shown as a removal's
    assert registry.lookup("bin-2") is None


def test_a_retire_during_the_wait_answers_as_a_retire_stops_the_removal_and_stands(registry: Registry) -> None:
    """M1: before, the retire was refused (already_retired) and then undone by the removal's put-back (or, with
    nothing stored, the device deleted under it)."""
    answers: list[bool] = []

    def retire(other: Registry) -> None:
        answers.append(other.retire("bin-2").retired)  # no already_retired: a real retire

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=_during_wait(registry, retire))
    assert answers == [True]
    assert info.value.reason == "retired"
    assert str(info.value) == ("device bin-2 was retired by another request or process while it was being removed; "
                               "it is not removed and stays retired")
    rec = registry.get("bin-2")
    assert rec.retired and not rec.removing and retired_column(registry.path, "bin-2") == RETIRED
    assert registry.key_path("bin-2").is_file()


def test_a_retire_during_the_wait_stays_when_the_device_was_heard_from_meanwhile(registry: Registry) -> None:
    """M1: the put-back after heard_from leaves an operator's retire as it is."""
    calls: list[str] = []

    def traces(device: str) -> list[str]:
        calls.append(device)
        if len(calls) == 2:
            other = Registry(registry.path, create=False)
            other.retire("bin-2")
            other.close()
            return ["reports"]
        return []

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=traces)
    assert info.value.reason == "heard_from"
    assert "(it was retired meanwhile (by another request or process); it stays retired)" in str(info.value)
    assert registry.get("bin-2").retired and retired_column(registry.path, "bin-2") == RETIRED


def test_a_removal_stopped_puts_back_only_its_own_mark(registry: Registry) -> None:
    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=lambda device: [], wait=_fail, settle_s=1.0)
    assert info.value.reason == "storage"
    assert retired_column(registry.path, "bin-2") == 0 and not registry.get("bin-2").retired


def _fail(seconds: float) -> None:
    raise RegistryError("the wait failed", reason="storage")


def test_marking_a_device_retired_already_moves_the_change_count(registry: Registry) -> None:
    """L1: a verifier reading this instance empties its cache when the change count moves. A device retired by
    another process a moment ago may be cached as not retired; before, the mark ran no UPDATE for it."""
    other = Registry(registry.path, create=False)
    other.retire("bin-2")
    other.close()
    before = registry.changes
    mark = removal.mark_removing(registry.path, registry._conn, "bin-2")
    assert registry.changes > before
    assert not mark.set_retired and mark.stamp == mark.updated_before == registry.get("bin-2").updated_at
    assert retired_column(registry.path, "bin-2") == RETIRED  # unchanged: the operator's retire


@pytest.mark.parametrize("retired_before", [False, True])
def test_a_row_reinstated_and_marked_by_another_removal_meanwhile_is_not_deleted(
        registry: Registry, retired_before: bool, caplog: pytest.LogCaptureFixture) -> None:
    """L2: reinstated and then retired again (by another removal, or a retire) during the wait: frames accepted
    while it was reinstated were not waited for. Before, the removal deleted it (it checked only 'retired').
    Fifth review L1: the other removal's mark stays (before, this removal's put-back cleared it: the device took
    frames again during that removal's wait, which then refused as 'reinstated' though nobody had)."""
    caplog.set_level("WARNING", logger="gateway.registry.devices")
    if retired_before:
        registry.retire("bin-2")

    def again(other: Registry) -> None:
        other.reinstate("bin-2")
        if retired_before:
            other.retire("bin-2")
        else:
            removal.mark_removing(other.path, other._conn, "bin-2")

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=_during_wait(registry, again))
    assert info.value.reason == "changed"
    assert "was changed by another request or process while it was being removed" in str(info.value)
    assert registry.lookup("bin-2") is not None and registry.key_path("bin-2").is_file()
    rec = registry.get("bin-2")
    assert rec.retired  # retired as before, or for the other removal
    assert retired_column(registry.path, "bin-2") == (RETIRED if retired_before else RETIRED_FOR_REMOVAL)
    if not retired_before:
        assert rec.removing
        assert [r for r in caplog.records if "it was reinstated and retired for another removal meanwhile; it stays "
                "retired for that removal" in r.getMessage()]


def test_a_device_moved_during_the_wait_is_not_deleted_and_is_put_back(registry: Registry) -> None:
    """L2: its row changed (moved) while it waited; the removal's mark is put back."""
    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=_during_wait(
            registry, lambda other: other.move("bin-2", lat="52.1", lon="4.1")))
    assert info.value.reason == "changed"
    rec = registry.get("bin-2")
    assert not rec.retired and rec.lat == "52.1" and registry.key_path("bin-2").is_file()


def test_a_device_whose_key_was_rotated_during_the_wait_is_put_back(registry: Registry) -> None:
    """Fifth review L1: a row changed under this removal's mark (its key version moved) is still put back."""
    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=_during_wait(registry, lambda other: other.rotate_key("bin-2")))
    assert info.value.reason == "changed"
    rec = registry.get("bin-2")
    assert not rec.retired and rec.key_version == 2


def test_reinstate_of_a_device_whose_key_file_is_gone_warns_what_to_do(
        registry: Registry, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """L3: a removal cut off after unlinking the key file, before its commit, leaves the row retired without its
    key. Before, reinstate took it back silently (the log) or with a bare 'cannot authenticate' (the command):
    every frame of it then failed as registry_unreadable with a 'data directory moved?' ERROR. It is still taken
    back (the field tools re-key a reinstated device), with the ways out."""
    removal.mark_removing(registry.path, registry._conn, "bin-2")
    registry.key_path("bin-2").unlink()
    with caplog.at_level("WARNING", logger="gateway.registry.devices"):
        assert registry.reinstate("bin-2").retired is False
    advice = "remove it again (civicedge gateway devices remove -- bin-2, or DELETE /api/admin/devices/bin-2)"
    assert [r.getMessage() for r in caplog.records if "reinstated device bin-2: its key is not usable (no key file "
            "at %s)" % registry.key_path("bin-2") in r.getMessage() and advice in r.getMessage()]
    registry.retire("bin-2")
    assert main(["gateway", "devices", "--registry", str(registry.path), "reinstate", "bin-2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: device bin-2 cannot authenticate its frames: its key is not usable (no key file at" in err
    assert advice in err and "--force --take-over" in err
    registry.retire("bin-2")
    registry.remove("bin-2", traces=lambda device: [])  # removing it again finishes it
    assert registry.lookup("bin-2") is None


class _Signalled(Exception):
    """Raised by the test's own handler (what the command does without one of its own)."""


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_during_the_command_lines_final_deletion_waits_until_it_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: int) -> None:
    """L3: the key file is unlinked (and its directory synced) before the row's deletion commits. Before, a
    signal there stopped the command in between: the row stayed (retired) without its key file."""
    config = make_env(tmp_path)
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test").close()
    registry = tmp_path / "data" / "registry"
    real_sync = removal.fsync_dir

    def sync_then_signal(path: Path) -> None:  # between the unlink and the COMMIT
        real_sync(path)
        signal.raise_signal(signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Signalled()

    monkeypatch.setattr(removal, "fsync_dir", sync_then_signal)
    old = signal.signal(signum, handler)  # never the default action (it would end the test's process)
    try:
        assert main(["gateway", "devices", "--config", str(config), "remove", "bin-2"]) == 0
    finally:
        signal.signal(signum, old)
    assert capsys.readouterr().out == (
        "removed bin-2: its registry row and key file are deleted; the interruption (%s) that came during that "
        "last step was held until it was done\n" % signal.Signals(signum).name)
    assert not (registry / "keys" / "bin-2.key").exists()
    reg = Registry(registry, create=False)
    try:
        assert reg.lookup("bin-2") is None  # both gone together
    finally:
        reg.close()


def test_a_device_reinstated_and_retired_during_the_wait_answers_retired_and_stays_retired(registry: Registry) -> None:
    """Fifth review L2 (the docs said ``changed``): the removal marked it; a reinstate and then a retire meanwhile
    is the operator's retire, which stands: ``retired``."""
    def again(other: Registry) -> None:
        other.reinstate("bin-2")
        other.retire("bin-2")

    with pytest.raises(RegistryError) as info:
        registry.remove("bin-2", traces=_during_wait(registry, again))
    assert info.value.reason == "retired"
    assert retired_column(registry.path, "bin-2") == RETIRED and registry.key_path("bin-2").is_file()


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_held_during_a_final_deletion_that_fails_keeps_its_error_and_the_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: int) -> None:
    """Fifth review L4: the key file cannot be deleted (key_file: nothing removed) while a signal is held. Before,
    the signal let go replaced the RegistryError: no put-back (the device stayed retired for its removal) and the
    command said so whatever the error was."""
    config = make_env(tmp_path)
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test").close()
    registry = tmp_path / "data" / "registry"
    key = registry / "keys" / "bin-2.key"
    real_unlink = Path.unlink

    def signal_then_fail(self: Path, missing_ok: bool = False) -> None:
        if self == key:
            signal.raise_signal(signum)
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok=missing_ok)

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Signalled()

    monkeypatch.setattr(Path, "unlink", signal_then_fail)
    old = signal.signal(signum, handler)  # never the default action (it would end the test's process)
    try:
        assert main(["gateway", "devices", "--config", str(config), "remove", "bin-2"]) != 0
    finally:
        signal.signal(signum, old)
    err = " ".join(capsys.readouterr().err.split())
    assert "the interruption (%s) that came during the removal's last step was held until it ended; that step " \
        "failed" % signal.Signals(signum).name in err
    assert "its key file %s could not be deleted: Permission denied" % key in err
    assert "stays retired for its removal" not in err
    reg = Registry(registry, create=False)
    try:
        rec = reg.get("bin-2")
        assert not rec.retired and not rec.removing  # put back
    finally:
        reg.close()
    assert key.is_file()
