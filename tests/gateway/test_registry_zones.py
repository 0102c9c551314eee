"""Zones with a space at either end, only spaces or only dots are refused for new adds and moves; a
registry that already stores one still opens and its devices can still be moved."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry, validate_device


@pytest.mark.parametrize(("zone", "says"), [(" ", "only spaces"), ("   ", "only spaces"),
                                            ("north ", "starts or ends with a space"),
                                            (" north", "starts or ends with a space"),
                                            (".", "only dots"), ("..", "only dots")])
def test_bad_zone_edges_are_refused(zone: str, says: str) -> None:
    with pytest.raises(RegistryError, match=says) as info:
        validate_device("sl-1", kind="streetlight", zone=zone, lat="52.1", lon="4.3")
    assert info.value.reason == "bad_value"


def test_inner_spaces_and_dots_stay_allowed() -> None:
    for zone in ("north east", "zone.2", "a..b", "-A1-A1"):
        validate_device("sl-1", kind="streetlight", zone=zone, lat="52.1", lon="4.3")


def test_add_and_move_refuse_and_a_stored_old_zone_still_loads(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    with pytest.raises(RegistryError, match="starts or ends with a space"):
        reg.add("sl-1", kind="streetlight", zone="north ", lat="52.1", lon="4.3")
    reg.add("sl-1", kind="streetlight", zone="north", lat="52.1", lon="4.3")
    with pytest.raises(RegistryError, match="only dots"):
        reg.move("sl-1", lat="52.1", lon="4.3", zone="..")
    db = next(p for p in (tmp_path / "r").rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3"))
    reg.close()
    with sqlite3.connect(db) as conn:  # a registry written before the rule
        conn.execute("UPDATE devices SET zone='north ' WHERE id='sl-1'")
    reg = Registry(tmp_path / "r")
    assert reg.get("sl-1").zone == "north "
    assert [d.zone for d in reg.list()] == ["north "]
    rec, changed = reg.move("sl-1", lat="52.2", lon="4.3")  # its zone unchanged: still movable
    assert changed and rec.zone == "north " and rec.lat == "52.2"
    rec, _ = reg.move("sl-1", lat="52.2", lon="4.3", zone="north")  # and correctable
    assert rec.zone == "north"


def test_a_device_stored_with_an_old_zone_enrolls_again_and_replaces_its_key(tmp_path: Path) -> None:
    import os

    reg = Registry(tmp_path / "r")
    key = os.urandom(32)
    assert reg.enroll("sl-1", kind="streetlight", zone="north", lat="52.1", lon="4.3", key=key) == "added"
    db = next(p for p in (tmp_path / "r").rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3"))
    reg.close()
    with sqlite3.connect(db) as conn:  # a registry written before the zone-edge rule
        conn.execute("UPDATE devices SET zone='north ' WHERE id='sl-1'")
    reg = Registry(tmp_path / "r")
    assert reg.enroll("sl-1", kind="streetlight", zone="north ", lat="52.1", lon="4.3", key=key) == "unchanged"
    other = os.urandom(32)
    assert reg.enroll("sl-1", kind="streetlight", zone="north ", lat="52.1", lon="4.3", key=other,
                      replace=True) == "replaced"
    assert reg.key("sl-1") == other
    with pytest.raises(RegistryError, match="starts or ends with a space"):  # a new device: the rule holds
        reg.enroll("sl-2", kind="streetlight", zone="north ", lat="52.1", lon="4.3", key=os.urandom(32))
    reg.close()
