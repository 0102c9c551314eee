"""``civicedge gateway devices retire|reinstate``: a board that left this gateway (moved to another one, or
taken out of service) is retired, not revoked; the registry keeps the state, upgrades older registries and
a backup keeps it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import KEYS, make_env

from gateway.errors import RegistryError
from gateway.registry import Registry
from gateway.storage import ReportStore
from gateway.web.revocation import REINSTATED_OPEN_DATA
from hil.cli.main import main

WHERE = {"kind": "bin", "zone": "north", "lat": "52.1", "lon": "4.2"}
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))

# The registry table as versions before the retired state made it (0.1.x).
OLD_SCHEMA = """
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    zone        TEXT NOT NULL,
    lat         TEXT NOT NULL,
    lon         TEXT NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    key_version INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
"""


def devices(registry: Path, *argv: str) -> list[str]:
    return ["gateway", "devices", "--registry", str(registry), *argv]


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.add("b1", key=KEY_A, **WHERE)
    registry.add("b2", key=KEY_B, **WHERE)
    return registry


def old_registry(path: Path) -> Path:
    """A registry as an older version left it: no retired column, b1 and a revoked b2 with their keys."""
    (path / "keys").mkdir(parents=True, mode=0o700)
    path.chmod(0o700)
    conn = sqlite3.connect(path / "devices.sqlite")
    conn.executescript(OLD_SCHEMA)
    conn.execute("INSERT INTO devices (id, kind, zone, lat, lon, revoked, created_at, updated_at) VALUES "
                 "('b1', 'bin', 'north', '52.1', '4.2', 0, 1, 1), ('b2', 'bin', 'north', '52.1', '4.2', 1, 1, 1)")
    conn.commit()
    conn.close()
    (path / "devices.sqlite").chmod(0o600)
    for dev, key in (("b1", KEY_A), ("b2", KEY_B)):
        (path / "keys" / ("%s.key" % dev)).write_text(key.hex() + "\n")
        (path / "keys" / ("%s.key" % dev)).chmod(0o600)
    return path


def columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path / "devices.sqlite")
    try:
        return {str(row[1]) for row in conn.execute("PRAGMA table_info(devices)")}
    finally:
        conn.close()


def test_retire_then_reinstate_keeps_the_key_and_says_what_it_does(reg: Registry,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    key_file = reg.key_path("b1").read_bytes()
    assert main(devices(reg.path, "retire", "b1")) == 0
    out = capsys.readouterr().out
    assert out.startswith("retired b1: its frames are refused and not acknowledged")
    assert "devices reinstate b1" in out
    # As revoke does: what becomes of its public data (out of the listings, CSV rows kept, back on reinstate).
    assert "\nopen data: its entity leaves the open-data listings now" in out
    assert "reinstating it brings its entity back\n" in out
    rec = reg.get("b1")
    assert rec.retired and not rec.revoked and rec.key_version == 1
    assert reg.key_path("b1").read_bytes() == key_file  # reinstate needs it
    assert main(devices(reg.path, "list")) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["b1"].endswith("RETIRED") and not rows["b2"].endswith("RETIRED")
    assert main(devices(reg.path, "show", "b1", "--json")) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["retired"], shown["revoked"], shown["key_status"]) == (True, False, "ok")
    assert main(devices(reg.path, "list", "--json")) == 0
    assert {d["id"]: d["retired"] for d in json.loads(capsys.readouterr().out)} == {"b1": True, "b2": False}

    assert main(devices(reg.path, "reinstate", "b1")) == 0
    assert capsys.readouterr().out.splitlines() == ["reinstated b1: its frames are accepted again",
                                                   "open data: " + REINSTATED_OPEN_DATA]
    assert not reg.get("b1").retired
    assert reg.key_path("b1").read_bytes() == key_file


def test_a_second_retire_or_a_reinstate_of_an_active_device_is_an_error(reg: Registry,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(devices(reg.path, "reinstate", "b1")) == 1
    assert "error (not_retired): device b1 is not retired" in capsys.readouterr().err
    assert main(devices(reg.path, "retire", "b1")) == 0
    capsys.readouterr()
    assert main(devices(reg.path, "retire", "b1")) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error (already_retired): device b1 is already retired" in err
    for action in ("retire", "reinstate"):
        assert main(devices(reg.path, action, "ghost")) == 1
        assert "error (unknown_device)" in capsys.readouterr().err


def test_a_revoked_device_is_neither_retired_nor_reinstated_but_a_retired_one_can_be_revoked(
        reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    reg.revoke("b2")
    for action in ("retire", "reinstate"):
        assert main(devices(reg.path, action, "b2")) == 1
        assert "error (revoked): device b2 is revoked; a revoked id stays revoked" in capsys.readouterr().err
    rec = reg.get("b2")
    assert rec.revoked and not rec.retired
    reg.retire("b1")
    assert main(devices(reg.path, "revoke", "b1")) == 0
    capsys.readouterr()
    assert reg.get("b1").revoked
    assert main(devices(reg.path, "list")) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["b1"].endswith("REVOKED")  # the revocation is what counts now
    with pytest.raises(RegistryError) as info:
        reg.reinstate("b1")
    assert info.value.reason == "revoked"


def test_enrolling_a_retired_id_is_refused_and_names_reinstate(reg: Registry) -> None:
    """Decision (docs/gateway.md): enrolling (provision --gateway, PUT /api/admin/devices/ID) never takes a
    retired board back by itself, not even with the same key: reinstating it is its own, explicit step."""
    reg.retire("b1")
    for key, replace in ((KEY_A, False), (bytes(range(5, 37)), True)):
        with pytest.raises(RegistryError) as info:
            reg.enroll("b1", key=key, replace=replace, **WHERE)
        assert info.value.reason == "retired"
        assert "devices reinstate b1" in str(info.value) and "/api/admin/devices/b1/reinstate" in str(info.value)
    assert reg.get("b1").retired and reg.key("b1") == KEY_A
    reg.reinstate("b1")
    assert reg.enroll("b1", key=KEY_A, **WHERE) == "unchanged"
    with pytest.raises(RegistryError) as info:
        reg.add("b1", key=bytes(range(5, 37)), **WHERE)
    assert info.value.reason == "exists"


def test_an_older_registry_reads_as_not_retired_and_is_upgraded_by_the_first_retire(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = old_registry(tmp_path / "registry")
    assert main(devices(path, "list", "--json")) == 0  # read-only: nothing changed
    assert [(d["id"], d["revoked"], d["retired"]) for d in json.loads(capsys.readouterr().out)] == [
        ("b1", False, False), ("b2", True, False)]
    assert "retired" not in columns(path)
    assert main(devices(path, "reinstate", "b1")) == 1
    assert "error (not_retired)" in capsys.readouterr().err
    assert main(devices(path, "retire", "b1")) == 0
    capsys.readouterr()
    assert "retired" in columns(path)
    reg = Registry(path, create=False)
    assert [(r.id, r.revoked, r.retired, r.key_version) for r in reg.list()] == [
        ("b1", False, True, 1), ("b2", True, False, 1)]
    assert reg.key("b1") == KEY_A


def test_the_gateway_upgrades_an_older_registry_when_it_opens_it(tmp_path: Path) -> None:
    path = old_registry(tmp_path / "registry")
    reg = Registry(path)  # as the gateway and `devices add` open it
    assert "retired" in columns(path)
    assert [(r.id, r.revoked, r.retired) for r in reg.list()] == [("b1", False, False), ("b2", True, False)]
    reg.retire("b1")
    reg.close()
    again = Registry(path)  # a second open leaves the upgraded table as it is
    assert again.get("b1").retired and not again.get("b2").retired


def test_a_backup_keeps_the_retired_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_env(tmp_path)
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test").close()
    registry = tmp_path / "data" / "registry"
    assert main(devices(registry, "retire", "bin-2")) == 0
    dest = tmp_path / "backup"
    assert main(["gateway", "backup", str(dest), "--config", str(cfg)]) == 0
    capsys.readouterr()
    # restored as docs/gateway.md says: devices.sqlite and keys/ copied back into a registry directory
    place = tmp_path / "restored"
    place.mkdir(mode=0o700)
    shutil.copy2(dest / "devices.sqlite", place / "devices.sqlite")
    shutil.copytree(dest / "keys", place / "keys")
    restored = Registry(place, create=False)
    assert {r.id: r.retired for r in restored.list()} == {"bin-1": False, "bin-2": True, "sl-1": False}
    assert restored.key("bin-2") == KEYS["bin-2"]
    restored.close()
    assert main(devices(place, "reinstate", "bin-2")) == 0
    assert not Registry(place).get("bin-2").retired


def test_show_gives_a_retired_device_with_a_missing_key_advice_that_works(
        reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: "give it a key again with civicedge provision ... --force --take-over", which is refused for a
    # retired id (and would re-key a board that still holds its key).
    reg.retire("b1")
    reg.key_path("b1").unlink()
    assert main(devices(reg.path, "show", "b1")) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "device b1 cannot authenticate its frames: no key file at" in err
    assert "it is retired, so its frames are refused anyway" in err
    assert "put its key file back first" in err and "civicedge gateway devices reinstate b1" in err
    assert "--take-over" not in err
    reg.revoke("b2")
    reg.key_path("b2").unlink()
    assert main(devices(reg.path, "show", "b2")) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "it is revoked, so its frames are refused anyway" in err and "--take-over" not in err
    reg.add("b3", key=bytes(range(2, 34)), **WHERE)  # active: re-keying the board is the repair
    reg.key_path("b3").unlink()
    assert main(devices(reg.path, "show", "b3")) == 0
    assert "--id b3 ... --force --take-over" in " ".join(capsys.readouterr().err.split())
