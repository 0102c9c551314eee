"""A registry that cannot be written, on a read-only bind mount in a private mount namespace (needs root and
unshare; skipped where they are missing): a registry made before 0.2.0 (no ``retired`` column) cannot hold a
retirement, so the gateway uses it as it is (nothing retired) with one WARNING instead of failing to open it;
retire says the registry is read-only (``permissions``) instead of "another process may hold it; retry"."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env  # at import: at run time 'conftest' may be another test dir's
from test_cli_devices_retire import KEY_A, columns, old_registry

from gateway.errors import RegistryError
from gateway.registry import Registry, devices

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(120)

# Run inside the namespace, argv: the registry directory (read-only from the start, or made read-only after
# the config is loaded when argv[2] is "gateway": the config check wants a writable registry, see below).
_SCRIPT = """
import asyncio, json, logging, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from gateway.errors import GatewayError, RegistryError
from gateway.registry import Registry

place, what = Path(sys.argv[1]), sys.argv[2]
records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.name, record.getMessage()])

logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.INFO)
out = {}

def read_only(path):
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)

def retire(path, device):
    try:
        Registry(path, create=False).retire(device)
        return ["ok", ""]
    except RegistryError as exc:
        return [exc.reason, str(exc)]

async def gateway(config_path):
    from helpers import report_frame
    from procs import PtyDevice
    from test_cli_devices_retire import KEY_A
    from gateway.config import load_config
    from gateway.service import Gateway
    from gateway.storage import ReportQueries

    dev = PtyDevice({"b1": KEY_A})
    text = config_path.read_text().replace("[http]", '[[serial]]\\nport = "%s"\\n[http]' % dev.path)
    config_path.write_text(text)
    config = load_config(config_path)
    read_only(config.registry_dir)
    try:
        gw = Gateway(config)
    except GatewayError as exc:
        out["gateway"] = [exc.reason, str(exc)]
        return
    await gw.start()
    try:
        end = time.monotonic() + 20
        while gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) != 1:
            assert time.monotonic() < end, "the serial link did not open"
            await asyncio.sleep(0.05)
        dev.send([report_frame("b1", 1, KEY_A)])
        end = time.monotonic() + 20
        while dev.acks.get("b1", 0) < 1 and time.monotonic() < end:
            await asyncio.to_thread(dev.pump, 0.05)
        out["acked"] = dev.acks.get("b1", 0)
        out["lookup"] = [gw.registry.get("b1").retired, gw.registry.get("b2").revoked]
    finally:
        await gw.stop()
    out["stored"] = [[r.device, r.seq] for r in ReportQueries(config.storage.path).reports(device="b1")]
    out["gateway"] = ["ok", ""]

if what == "gateway":
    asyncio.run(gateway(place))
    out["retire"] = retire(place.parent / "data" / "registry", "b1")
else:
    read_only(place)
    for name in ("old", "new"):
        try:
            reg = Registry(place / name)
            out[name] = ["ok", [[d.id, d.retired] for d in reg.list()]]
        except RegistryError as exc:
            out[name] = [exc.reason, str(exc)]
        out[name + "_retire"] = retire(place / name, "b1" if name == "old" else "bin-1")
out["log"] = records
print(json.dumps(out))
"""


def _in_namespace(place: Path, what: str) -> dict[str, Any]:
    """Run :data:`_SCRIPT` in a private mount namespace (skips without unshare, mount or root)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro "
                            "\"$1\" && touch \"$1/probe\" 2>/dev/null && exit 97; exit 0", "sh", str(place.parent)],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("no read-only bind mount here (rc %d: %s)" % (probe.returncode, probe.stderr.strip()[:200]))
    proc = subprocess.run(["unshare", "-m", sys.executable, "-c", _SCRIPT, str(place), what, str(HERE)],
                          capture_output=True, text=True, timeout=90, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


def test_the_gateway_starts_and_ingests_on_a_read_only_registry_made_before_0_2_0(tmp_path: Path) -> None:
    # Before: Gateway() failed opening it: "cannot upgrade registry ... attempt to write a readonly database"
    # (permissions). The config check (gateway.config.loader) refuses a registry directory this user cannot
    # write, so the registry is made read-only after the config is loaded, as a file system remounted
    # read-only under it (errors=remount-ro) does.
    config = make_env(tmp_path)
    registry = tmp_path / "data" / "registry"
    shutil.rmtree(registry)
    old_registry(registry)
    found = _in_namespace(config, "gateway")
    assert found["gateway"] == ["ok", ""], found
    assert found["acked"] == 1 and found["stored"] == [["b1", 1]], found["log"]
    assert found["lookup"] == [False, True]  # read as not retired; revocations as stored
    warnings = [text for level, name, text in found["log"] if level == "WARNING" and name == "gateway.registry.devices"]
    assert len(warnings) == 1, found["log"]
    assert warnings[0].startswith("registry %s was made by a version before 0.2.0 (no column retired) and cannot be "
                                  "upgraded: the registry is read-only" % registry)
    assert "retiring or reinstating a device needs a writable registry" in warnings[0]
    reason, text = found["retire"]
    assert reason == "permissions" and "the registry is read-only" in text and "retry" not in text
    assert "retired" not in columns(registry)


def test_retire_on_a_read_only_registry_says_it_is_read_only(tmp_path: Path) -> None:
    # Before: an upgraded registry's retire said "storage ... (another process may hold the registry; retry)",
    # and the old one could not be opened by the gateway's open (create) at all.
    place = tmp_path / "mnt"
    old_registry(place / "old")
    reg = Registry(place / "new")
    reg.add("bin-1", kind="bin", zone="north", lat="52.1", lon="4.2", key=KEY_A)
    reg.close()
    found = _in_namespace(place, "registries")
    assert found["old"] == ["ok", [["b1", False], ["b2", False]]], found
    assert found["new"] == ["ok", [["bin-1", False]]], found
    reason, text = found["old_retire"]
    assert reason == "permissions", found
    assert text.startswith("cannot upgrade registry %s (add column retired, made by a version before 0.2.0): "
                           "attempt to write a readonly database: the registry is read-only" % (place / "old"))
    reason, text = found["new_retire"]
    assert reason == "permissions", found
    assert text.startswith("cannot retire device bin-1 in registry %s: attempt to write a readonly database: the "
                           "registry is read-only" % (place / "new"))
    assert "retry" not in text


class _Fails:
    """A connection whose ALTER TABLE (or UPDATE) fails as SQLite fails it on a full or failing disk."""

    def __init__(self, conn: sqlite3.Connection, code: int, message: str) -> None:
        self._conn, self._code, self._message = conn, code, message

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith(("ALTER", "UPDATE")):
            exc = sqlite3.OperationalError(self._message)
            exc.sqlite_errorcode = self._code  # as the sqlite3 module sets it
            raise exc
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("code, message", [(sqlite3.SQLITE_FULL, "database or disk is full"),
                                           (sqlite3.SQLITE_IOERR_WRITE, "disk I/O error")])
def test_a_full_or_failing_disk_is_neither_permissions_nor_a_lock(tmp_path: Path, code: int, message: str) -> None:
    # Before: the upgrade called it permissions, a retire "another process may hold the registry; retry".
    path = old_registry(tmp_path / "old")
    reg = Registry(path, create=False)
    real = reg._conn
    try:
        reg._conn = _Fails(real, code, message)  # type: ignore[assignment]
        with pytest.raises(RegistryError) as caught:
            reg.retire("b1")
        assert caught.value.reason == "storage"
        assert str(caught.value) == ("cannot upgrade registry %s (add column retired): %s (the disk holding the "
                                     "registry is full or failing; nothing was changed: free space or see the "
                                     "system log)" % (path, message))
        reg._conn = real
        Registry(path).close()  # upgraded
        reg._conn = _Fails(real, code, message)  # type: ignore[assignment]
        with pytest.raises(RegistryError) as caught:
            reg.retire("b1")
        assert caught.value.reason == "storage" and "retry" not in str(caught.value)
        assert str(caught.value).endswith("%s (the disk holding the registry is full or failing; nothing was "
                                          "changed: free space or see the system log)" % message)
    finally:
        real.close()
    assert not Registry(path, create=False).get("b1").retired


def test_columns_are_read_again_only_when_another_connection_changed_the_registry(tmp_path: Path) -> None:
    # Before: every lookup on a registry without the column read PRAGMA table_info (one frame, one PRAGMA).
    path = old_registry(tmp_path / "old")
    reg = Registry(path, create=False)
    reads: list[int] = []
    read = devices.Registry._read_columns

    def counted(conn: sqlite3.Connection) -> set[str]:
        reads.append(1)
        return read(conn)

    reg._read_columns = counted  # type: ignore[method-assign]
    for _ in range(50):
        assert not reg.get("b1").retired
    assert reads == []
    Registry(path).close()  # another process's upgrade
    Registry(path, create=False).retire("b1")
    assert reg.get("b1").retired and len(reads) == 1
    assert reg.get("b1").retired and len(reads) == 1  # the column is there: never read again
