"""No device registry while the report store knows devices: ``run`` and ``run --check`` refuse to start.

DR drill M1: with the registry directory moved away, ``run --check`` said "no registry yet: created at start"
and ``run`` created an empty registry, though the store held reports and ACK floors of devices: every frame
of theirs was then refused. Real store, real registry, real CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_env

from gateway.config import load_config
from gateway.errors import RegistryError
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore


def civicedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", *args], capture_output=True, text=True,
                          timeout=60)


def record(device: str, seq: int) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=1_790_000_000 + 900 * seq,
                        l=900, m={"fill": 40}, e={}, a=[], fw="1.0", received_at=1_790_000_000.0, link="serial:x",
                        digest="%064x" % seq)


def store_with(config: Path, *, reports: tuple[tuple[str, int], ...] = (), floors: dict[str, int] | None = None) -> Path:
    db = config.parent / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        if reports:
            store.insert_batch([record(d, s) for d, s in reports])
        if floors:
            store.save_floors(floors)
    finally:
        store.close()
    return db


def move_registry_away(config: Path) -> Path:
    reg = config.parent / "data" / "registry"
    away = config.parent / "registry.moved"
    os.rename(reg, away)
    return away


@pytest.mark.parametrize("held", ["reports", "floors"])
def test_a_missing_registry_is_refused_when_the_store_knows_devices(tmp_path: Path, held: str) -> None:
    config = make_env(tmp_path)
    if held == "reports":
        store_with(config, reports=(("bin-1", 1), ("bin-2", 1), ("bin-2", 2)))
    else:  # reports gone (retention), ACK floors kept
        store_with(config, floors={"bin-1": 5, "bin-2": 7, "sl-1": 3})
    move_registry_away(config)
    reg = tmp_path / "data" / "registry"
    with pytest.raises(RegistryError) as err:
        Gateway(load_config(config))
    assert err.value.reason == "registry_missing"
    n = 2 if held == "reports" else 3
    assert "%d device(s)" % n in str(err.value)
    assert not reg.exists()  # no empty registry created
    done = civicedge("run", "--config", str(config), "--check")
    assert done.returncode == 1 and "error (registry_missing)" in done.stderr, (done.stdout, done.stderr)
    assert "%d device(s)" % n in done.stderr and "devices --config %s add" % config.resolve() in done.stderr
    assert "no registry yet" not in done.stdout
    run = civicedge("run", "--config", str(config))
    assert run.returncode == 1 and "error (registry_missing)" in run.stderr, run.stderr
    assert not reg.exists()


def test_a_first_start_and_an_empty_store_still_create_the_registry(tmp_path: Path) -> None:
    config = make_env(tmp_path)
    move_registry_away(config)
    done = civicedge("run", "--config", str(config), "--check")
    assert done.returncode == 0 and "no registry yet: created at start" in done.stdout, done.stderr
    store_with(config)  # a store with its tables, no device in it
    done = civicedge("run", "--config", str(config), "--check")
    assert done.returncode == 0 and "no registry yet: created at start" in done.stdout, done.stderr
    gw = Gateway(load_config(config))
    try:
        assert gw.registry.lookup("bin-1") is None and (tmp_path / "data" / "registry" / "devices.sqlite").exists()
    finally:
        gw.store.close()
        gw.registry.close()


def test_the_advice_works_registry_restored_from_a_backup(tmp_path: Path) -> None:
    config = make_env(tmp_path)
    store_with(config, reports=(("bin-1", 1),))
    backup = tmp_path / "backup"
    made = civicedge("backup", str(backup), "--config", str(config))
    assert made.returncode == 0, made.stderr
    move_registry_away(config)
    # the command the message gives (the registry's directory is missing: it is made first)
    err = civicedge("run", "--config", str(config), "--check").stderr
    assert "mkdir -m 0700 %s && cp -a \"$B/devices.sqlite\" \"$B/keys\" %s/" % (
        tmp_path / "data" / "registry", tmp_path / "data" / "registry") in err
    reg = tmp_path / "data" / "registry"
    subprocess.run("mkdir -m 0700 %s && cp -a \"$B/devices.sqlite\" \"$B/keys\" %s/" % (reg, reg), shell=True,
                   check=True, env={**os.environ, "B": str(backup)})
    done = civicedge("run", "--config", str(config), "--check")
    assert done.returncode == 0 and "registry %s: 3 device(s)" % reg in done.stdout, done.stderr


def test_the_advice_works_starting_over_by_registering_devices(tmp_path: Path) -> None:
    config = make_env(tmp_path)
    store_with(config, reports=(("bin-1", 1),))
    move_registry_away(config)
    added = civicedge("devices", "--config", str(config), "add", "--id", "bin-1", "--kind", "bin", "--zone",
                      "north", "--location", "52.37,4.89")
    assert added.returncode == 0, added.stderr
    done = civicedge("run", "--config", str(config), "--check")
    assert done.returncode == 0 and "1 device(s)" in done.stdout, done.stderr
