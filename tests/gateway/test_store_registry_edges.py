"""registry_missing edge cases (review C, L4/L5): a registry path that is a dangling symlink, and a store that
cannot be read while the registry is missing. Real store, real registry, real CLI commands from the messages."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_env

from gateway.errors import GatewayError, RegistryError
from gateway.storage import ReportRecord, ReportStore
from gateway.storage.store_devices import check_registry_present


def known_store(config: Path) -> Path:
    db = config.parent / "data" / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw-test")
    try:
        store.insert_batch([ReportRecord("bin-1", 1, "bin", "north", "win", 1_790_000_000, 900, {"fill": 1}, {}, [],
                                         "1.0", 1.0, "serial:x", "%064x" % 1)])
    finally:
        store.close()
    return db


@pytest.mark.parametrize("mounted", [True, False])
def test_a_dangling_registry_link_gets_advice_that_works(tmp_path: Path, mounted: bool) -> None:
    """L4, fails before: the advice was mkdir -m 0700 LINK && cp ... ("File exists") and mv -T -n onto the link
    (does nothing): the commands now go where the link points. Review E LOW 4, fails before: with the target's
    parent missing too (a card not mounted) that mkdir failed; now mkdir -p, and the message says to mount it."""
    config = make_env(tmp_path)
    db = known_store(config)
    reg = config.parent / "data" / "registry"
    backup = tmp_path / "bk"
    backup.mkdir()
    shutil.copytree(reg, backup / "registry")
    shutil.rmtree(reg)
    target = tmp_path / "mnt" / "registry"
    if mounted:
        (tmp_path / "mnt").mkdir()
    os.symlink(target, reg)  # the registry on a disk not mounted (yet)
    with pytest.raises(RegistryError) as refused:
        check_registry_present(reg, db, config)
    msg = str(refused.value)
    assert "is a symlink to %s, which does not exist: if it is on a card or disk that is not mounted, mount it " \
        "first" % target in msg
    restore = msg.split("civicedge gateway backup directory: ")[1].split("; docs/gateway.md")[0]
    assert restore.startswith("mkdir -p -m 0700 %s && " % target)
    src = backup / "registry"
    subprocess.run(restore, shell=True, check=True, env=dict(os.environ, B=str(src)))
    check_registry_present(reg, db, config)  # the registry is there again, through the link
    assert (target.stat().st_mode & 0o777) == 0o700


def test_a_store_that_cannot_be_read_is_no_store_without_devices(tmp_path: Path) -> None:
    """L5, fails before: any read error counted as no devices, so the start went on and created an empty
    registry, which disabled this check at every later start."""
    config = make_env(tmp_path)
    db = known_store(config)
    reg = config.parent / "data" / "registry"
    shutil.rmtree(reg)
    raw = bytearray(db.read_bytes())
    raw[100:] = b"\xff" * (len(raw) - 100)  # the header kept, every page damaged
    db.write_bytes(bytes(raw))
    with pytest.raises(GatewayError) as refused:
        check_registry_present(reg, db, config)
    assert refused.value.reason in ("corrupt", "read_failed", "not_a_store"), refused.value
    assert not reg.exists()
