"""Device registry and `civicedge gateway devices`: owner-only key files, keys never printed or logged."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry, read_key_file
from hil.cli.main import main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_lifecycle_never_shows_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reg_dir = tmp_path / "reg"
    base = ["gateway", "devices", "--registry", str(reg_dir)]
    code, out, _ = run(base + ["add", "--id", "sl-7", "--kind", "streetlight", "--zone", "centre",
                               "--location", "52.3702,4.8952"], capsys)
    assert code == 0
    key_path = reg_dir / "keys" / "sl-7.key"
    assert str(key_path) in out
    key1 = read_key_file(key_path).hex()
    assert mode(reg_dir) == 0o700 and mode(reg_dir / "keys") == 0o700
    assert mode(key_path) == 0o600 and mode(reg_dir / "devices.sqlite") == 0o600

    keyfile = tmp_path / "given.key"
    keyfile.write_text(bytes(range(32)).hex() + "\n")
    code, out, _ = run(base + ["add", "--id", "bin-9", "--kind", "bin", "--zone", "north", "--location",
                               "52.1,4.2", "--key-file", str(keyfile)], capsys)
    assert code == 0 and read_key_file(reg_dir / "keys" / "bin-9.key") == bytes(range(32))

    code, out, _ = run(base + ["list", "--json"], capsys)
    listed = json.loads(out)
    assert [d["id"] for d in listed] == ["bin-9", "sl-7"] and listed[1]["lat"] == "52.3702"

    code, out, _ = run(base + ["rotate-key", "sl-7"], capsys)
    assert code == 0 and str(key_path) in out
    key2 = read_key_file(key_path).hex()
    assert key2 != key1 and mode(key_path) == 0o600
    code, out, _ = run(base + ["show", "sl-7", "--json"], capsys)
    assert json.loads(out)["key_version"] == 2
    code, out, _ = run(base + ["revoke", "sl-7"], capsys)
    assert code == 0
    code, out, _ = run(base + ["show", "sl-7"], capsys)
    assert "True" in out

    everything = out + caplog.text + json.dumps(listed)
    for secret in (key1, key2, bytes(range(32)).hex()):
        assert secret not in everything
        assert secret.upper() not in everything


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--id", "bad id", "--kind", "bin", "--zone", "z", "--location", "1,2"], "bad_value"),
        (["--id", "x", "--kind", "lamp", "--zone", "z", "--location", "1,2"], "bad_value"),
        (["--id", "x", "--kind", "bin", "--zone", "z", "--location", "91,2"], "bad_value"),
        (["--id", "x", "--kind", "bin", "--zone", "z", "--location", "12"], "bad_value"),
        (["--id", "x", "--kind", "bin", "--zone", "", "--location", "1,2"], "bad_value"),
    ],
)
def test_cli_add_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], reason: str) -> None:
    code, _, err = run(["gateway", "devices", "--registry", str(tmp_path / "r"), "add"] + extra, capsys)
    assert code == 1 and "error (%s)" % reason in err


def test_api_errors(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    reg.add("a", kind="bin", zone="z", lat="1", lon="2")
    with pytest.raises(RegistryError) as info:
        reg.add("a", kind="bin", zone="z", lat="1", lon="2")
    assert info.value.reason == "exists" and info.value.device_id == "a"
    with pytest.raises(RegistryError) as info:
        reg.revoke("nobody")
    assert info.value.reason == "unknown_device"
    with pytest.raises(RegistryError) as info:
        reg.add("b", kind="bin", zone="z", lat="1", lon="2", key=b"short")
    assert info.value.reason == "bad_key"
    bad = tmp_path / "bad.key"
    bad.write_text("zz" * 32)
    with pytest.raises(RegistryError) as info:
        read_key_file(bad)
    assert info.value.reason == "bad_key" and "zz" not in str(info.value)


def test_enroll_is_idempotent_and_refuses_conflicts_moves_and_revoked_ids(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    try:
        key, other = bytes(range(32)), bytes(range(1, 33))
        where = {"kind": "bin", "zone": "north", "lat": "52.1", "lon": "4.2"}
        assert reg.enroll("bin-1", key=key, **where) == "added"
        assert reg.enroll("bin-1", key=key, **where) == "unchanged"
        assert reg.get("bin-1").key_version == 1
        with pytest.raises(RegistryError) as err:
            reg.enroll("bin-1", key=other, **where)
        assert err.value.reason == "conflict" and other.hex() not in str(err.value) and key.hex() not in str(err.value)
        assert reg.key("bin-1") == key
        assert reg.enroll("bin-1", key=other, replace=True, **where) == "replaced"
        assert reg.key("bin-1") == other and reg.get("bin-1").key_version == 2
        for moved in ({"zone": "south"}, {"lat": "52.2"}, {"kind": "streetlight"}):
            with pytest.raises(RegistryError) as err:
                reg.enroll("bin-1", key=other, replace=True, **{**where, **moved})
            assert err.value.reason == "moved"
            # A kind change is no move: the message says what differs.
            assert ("registered as a bin, not a streetlight" in str(err.value)) == ("kind" in moved), err.value
        reg.revoke("bin-1")
        with pytest.raises(RegistryError) as err:
            reg.enroll("bin-1", key=other, replace=True, **where)
        assert err.value.reason == "revoked" and reg.get("bin-1").revoked
        with pytest.raises(RegistryError) as err:
            reg.enroll("bin-2", key=b"short", **where)
        assert err.value.reason == "bad_key" and reg.lookup("bin-2") is None
    finally:
        reg.close()


def test_ids_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    """keys/SL-1.key and keys/sl-1.key would be one file on a case-insensitive copy of the registry."""
    reg = Registry(tmp_path / "reg")
    reg.add("sl-0003", kind="streetlight", zone="north", lat="52.1", lon="4.2")
    with pytest.raises(RegistryError, match="sl-0003 is registered; ids that differ only in case") as info:
        reg.add("SL-0003", kind="streetlight", zone="north", lat="52.1", lon="4.2")
    assert info.value.reason == "exists" and info.value.field == "device_id"
    with pytest.raises(RegistryError):
        reg.enroll("Sl-0003", kind="streetlight", zone="north", lat="52.1", lon="4.2", key=bytes(range(32)))
    assert [d.id for d in reg.list()] == ["sl-0003"] and not (tmp_path / "reg" / "keys" / "SL-0003.key").exists()


def test_a_directory_with_other_files_is_not_turned_into_a_registry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "reports.sqlite").write_bytes(b"")
    with pytest.raises(RegistryError, match=r"not a registry \(no devices.sqlite\) and holds other files "
                                            r"\(reports.sqlite\)") as info:
        Registry(data)
    assert info.value.reason == "no_registry"
    assert sorted(p.name for p in data.iterdir()) == ["reports.sqlite"]  # nothing created, nothing changed
    Registry(data / "registry").close()  # the gateway's own place for it
    Registry(data / "registry").close()  # and it opens again


# Values other scripts write with digits/letters that ``float()`` or ``\d``/``\w`` would take.
NON_ASCII = [
    ("lat", {"lat": "５２.３"}),            # full-width digits (float() reads 52.3)
    ("lat", {"lat": "5２.3"}),              # one full-width digit among ASCII ones
    ("lon", {"lon": "٤.٢"}),                # Arabic-Indic digits
    ("lon", {"lon": "4.२"}),                # a Devanagari digit in the fraction
    ("lat", {"lat": "52.1\n"}),             # a trailing newline is not part of the number
    # zones take letters and digits of any script ("Zentrüm", "zone１": tests/gateway/test_zone_names_unicode.py),
    # not other scripts' spaces nor invisible characters
    ("zone", {"zone": "Zentr\u00fcm\u00a0Nord"}),  # a no-break space
    ("zone", {"zone": "zone\u200b1"}),              # a zero-width space
    ("device_id", {"device_id": "sl-１"}),  # a non-ASCII digit in the id
]


@pytest.mark.parametrize(("field", "change"), NON_ASCII)
def test_registry_values_are_ascii_only(tmp_path: Path, field: str, change: dict[str, str]) -> None:
    from gateway.registry import validate_device

    values = {"device_id": "b-1", "kind": "bin", "zone": "north", "lat": "52.1", "lon": "4.2", **change}
    device_id = values.pop("device_id")
    reg = Registry(tmp_path / "reg")
    try:
        for check in (lambda: validate_device(device_id, **values), lambda: reg.add(device_id, **values),
                      lambda: reg.enroll(device_id, key=bytes(range(32)), **values)):
            with pytest.raises(RegistryError) as info:
                check()
            assert info.value.reason == "bad_value" and info.value.field == field, info.value
        assert reg.list() == [] and list(reg.keys_dir.iterdir()) == []
    finally:
        reg.close()
    validate_device("b-1", kind="bin", zone="north", lat="-52.123456789", lon="179.9")  # ASCII still fine


# --- permissions: key files others may read are tightened (and said so), as dirs and the db are ----------

def test_opening_tightens_wide_key_files_dirs_and_db_and_says_which(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    reg_dir = tmp_path / "reg"
    reg = Registry(reg_dir)
    for i in range(5):
        reg.add("sl-%d" % i, kind="streetlight", zone="centre", lat="52.37", lon="4.80")
    key_text = reg.key_path("sl-1").read_text().strip()
    reg.close()
    for i in (1, 2, 3, 4):
        reg.key_path("sl-%d" % i).chmod(0o644)
    (reg_dir / "keys").chmod(0o755)
    reg_dir.chmod(0o755)
    (reg_dir / "devices.sqlite").chmod(0o644)

    # Read-only (create=False): nothing changes, the too-open mode is reported.
    ro = Registry(reg_dir, create=False)
    try:
        problem = ro.key_mode_problem("sl-1")
        assert problem is not None and "0644" in problem and "sl-1.key" in problem
        assert ro.key_mode_problem("sl-0") is None and ro.key_problem("sl-1") is None
    finally:
        ro.close()
    assert mode(reg.key_path("sl-1")) == 0o644 and mode(reg_dir) == 0o755

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
        Registry(reg_dir).close()
    assert all(mode(reg.key_path("sl-%d" % i)) == 0o600 for i in range(5))
    assert mode(reg_dir) == 0o700 and mode(reg_dir / "keys") == 0o700 and mode(reg_dir / "devices.sqlite") == 0o600
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    dirs, keys = warnings
    assert "reg 0755 -> 0700" in dirs and "keys 0755 -> 0700" in dirs and "devices.sqlite 0644 -> 0600" in dirs
    # One line: the count and the first few names, never the content.
    assert "4 key file(s)" in keys and "sl-1.key (0644), sl-2.key (0644), sl-3.key (0644) and 1 more" in keys
    assert key_text not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
        Registry(reg_dir).close()  # nothing left to change: nothing said
    assert caplog.records == []


def test_a_key_file_replaced_by_hand_while_open_is_tightened_when_read(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(tmp_path / "reg")
    try:
        reg.add("b1", kind="bin", zone="north", lat="52.1", lon="4.2")
        copy = tmp_path / "copy.key"
        copy.write_text(bytes(range(32)).hex() + "\n")
        copy.chmod(0o644)
        copy.replace(reg.key_path("b1"))
        with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
            assert reg.key("b1") == bytes(range(32))
        assert mode(reg.key_path("b1")) == 0o600
        assert "key file b1.key" in caplog.text and "(0644)" in caplog.text
    finally:
        reg.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file another owner")
def test_a_wide_key_file_of_another_owner_is_left_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(tmp_path / "reg")
    reg.add("b1", kind="bin", zone="north", lat="52.1", lon="4.2")
    reg.close()
    reg.key_path("b1").chmod(0o640)
    os.chown(reg.key_path("b1"), 4242, -1)
    with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
        Registry(tmp_path / "reg").close()
    assert mode(reg.key_path("b1")) == 0o640
    assert "key file b1.key can be read or written by group or others (0640) and was not changed (not owned by this user)" in caplog.text


def test_a_symlinked_key_file_is_never_chmod_ed_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A chmod through keys/<id>.key -> elsewhere would change whatever it points to (any file the
    gateway's user owns): at open and when key() re-reads it, the link is named, its target left."""
    reg = Registry(tmp_path / "reg")
    try:
        reg.add("a1", kind="bin", zone="north", lat="52.1", lon="4.2")
        target = tmp_path / "elsewhere.key"
        target.write_text(bytes(range(32)).hex() + "\n")
        target.chmod(0o644)
        link = tmp_path / "link.tmp"
        link.symlink_to(target)
        link.replace(reg.key_path("a1"))  # swapped in while the registry is open
        with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
            assert reg.key("a1") == bytes(range(32))
        assert mode(target) == 0o644
        assert "a1.key is a symlink" in caplog.text and "(0644)" in caplog.text and "not changed" in caplog.text
    finally:
        reg.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
        Registry(tmp_path / "reg").close()
    assert mode(target) == 0o644 and reg.key_path("a1").is_symlink()
    assert "key file a1.key is a symlink to a file group or others may read or write (0644)" in caplog.text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file another owner")
def test_key_re_read_leaves_other_owners_files_and_symlink_targets(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """As root: a key file replaced while open by a link to another user's 0644 file, and one
    replaced by another user's own 0644 file, are both named and left 0644 (were chmod'ed 0600)."""
    reg = Registry(tmp_path / "reg")
    try:
        for dev in ("a1", "a2"):
            reg.add(dev, kind="bin", zone="north", lat="52.1", lon="4.2")
        theirs = tmp_path / "theirs.key"
        theirs.write_text(bytes(range(32)).hex() + "\n")
        os.chown(theirs, 65534, 65534)
        theirs.chmod(0o644)
        link = tmp_path / "link.tmp"
        link.symlink_to(theirs)
        link.replace(reg.key_path("a1"))
        copy = tmp_path / "a2.tmp"
        copy.write_text(bytes(range(1, 33)).hex() + "\n")
        os.chown(copy, 65534, 65534)
        copy.chmod(0o644)
        copy.replace(reg.key_path("a2"))
        with caplog.at_level(logging.WARNING, logger="gateway.registry.devices"):
            assert reg.key("a1") == bytes(range(32)) and reg.key("a2") == bytes(range(1, 33))
        assert mode(theirs) == 0o644 and mode(reg.key_path("a2")) == 0o644
        assert "a1.key is a symlink" in caplog.text
        assert "a2.key can be read or written by group or others (0644) and was not changed (not owned" in caplog.text
    finally:
        reg.close()


def test_devices_show_reports_a_too_open_key_file_without_changing_it(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry(tmp_path / "reg")
    reg.add("sl-q1", kind="streetlight", zone="centre", lat="52.37", lon="4.80")
    reg.close()
    reg.key_path("sl-q1").chmod(0o644)
    code, out, err = run(["gateway", "devices", "--registry", str(tmp_path / "reg"), "show", "sl-q1", "--json"],
                         capsys)
    assert code == 0
    status = json.loads(out)["key_status"]
    assert status.startswith("ok; too open:") and "mode 0644" in status
    assert "warning: device sl-q1:" in err and "0644" in err
    assert mode(reg.key_path("sl-q1")) == 0o644


def _show_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    code, out, err = run(["gateway", "devices", "--registry", str(tmp_path / "reg"), "show", "sl-q1", "--json"],
                         capsys)
    assert code == 0, err
    return json.loads(out)["key_status"], err


def test_devices_show_of_a_symlinked_key_file_says_to_chmod_its_target(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Review: a key file that is a symlink to a 0644 file was "chmod 600 it; the gateway does when it
    opens the registry", but the gateway never follows a link to chmod (it says so when opening)."""
    reg = Registry(tmp_path / "reg")
    reg.add("sl-q1", kind="streetlight", zone="centre", lat="52.37", lon="4.80")
    reg.close()
    target = tmp_path / "elsewhere.key"
    reg.key_path("sl-q1").replace(target)
    target.chmod(0o644)
    reg.key_path("sl-q1").symlink_to(target)
    status, err = _show_status(tmp_path, capsys)
    assert status.startswith("ok; too open:") and "is a symlink to a file of mode 0644" in status
    assert "never changes its mode: chmod 600 its target (%s) yourself" % target in status
    assert "the gateway does" not in status + err and "is a symlink" in err
    assert mode(target) == 0o644
    target.chmod(0o600)  # a link to a private file is fine
    status, err = _show_status(tmp_path, capsys)
    assert status == "ok" and err == ""


@pytest.mark.parametrize("what", ["fifo", "directory"])
def test_devices_show_of_a_key_file_that_is_not_a_regular_file_gives_no_chmod_advice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    """Review: a FIFO or directory in the key file's place showed "unusable: no key file at ...; too open:
    ... mode 0644 ... chmod 600 it": there is a file, and a chmod makes it no key."""
    reg = Registry(tmp_path / "reg")
    reg.add("sl-q1", kind="streetlight", zone="centre", lat="52.37", lon="4.80")
    reg.close()
    path = reg.key_path("sl-q1")
    path.unlink()
    if what == "fifo":
        os.mkfifo(path, 0o644)
    else:
        path.mkdir(mode=0o755)
    os.chmod(path, 0o644 if what == "fifo" else 0o755)
    status, err = _show_status(tmp_path, capsys)
    kind = "a FIFO" if what == "fifo" else "a directory"
    assert status == "unusable: key file %s is not a regular file (%s)" % (path, kind), status
    assert "no key file" not in status + err and "chmod" not in status + err and "too open" not in status + err
    reopened = Registry(tmp_path / "reg", create=False)
    try:
        assert reopened.key_mode_problem("sl-q1") is None
        assert reopened.key_problem("sl-q1") == "key file %s is not a regular file (%s)" % (path, kind)
    finally:
        reopened.close()


def test_key_problem_names_a_dangling_symlink_and_a_missing_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    try:
        reg.add("b1", kind="bin", zone="north", lat="52.1", lon="4.2")
        path = reg.key_path("b1")
        path.unlink()
        assert reg.key_problem("b1") == "no key file at %s" % path
        path.symlink_to(tmp_path / "gone.key")
        problem = reg.key_problem("b1")
        assert problem is not None and problem.startswith("key file %s is a symlink to nothing" % path), problem
        assert reg.key_mode_problem("b1") is None
    finally:
        reg.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file another owner")
def test_devices_show_of_another_users_too_open_key_file_does_not_say_the_gateway_fixes_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry(tmp_path / "reg")
    reg.add("sl-q1", kind="streetlight", zone="centre", lat="52.37", lon="4.80")
    reg.close()
    reg.key_path("sl-q1").chmod(0o644)
    os.chown(reg.key_path("sl-q1"), 4242, -1)
    status, _err = _show_status(tmp_path, capsys)
    assert status.startswith("ok; too open:") and "another user's file" in status and "chmod 600 it as its owner" in status
    assert "the gateway does" not in status


@pytest.mark.timeout(20)
def test_a_stored_key_that_is_a_fifo_or_a_device_is_refused_without_blocking(tmp_path: Path) -> None:
    """The gateway reads keys on its event loop: a FIFO in keys/ blocked it for good, and a symlink to
    /dev/zero read without end. Both are bad_key now; a key given on the command line may be a pipe."""
    reg = Registry(tmp_path / "reg")
    try:
        reg.add("b1", kind="bin", zone="north", lat="52.1", lon="4.2")
        reg.add("b2", kind="bin", zone="north", lat="52.1", lon="4.3")
        reg.key_path("b1").unlink()
        os.mkfifo(reg.key_path("b1"), 0o600)
        reg.key_path("b2").unlink()
        reg.key_path("b2").symlink_to("/dev/zero")
        for device in ("b1", "b2"):
            with pytest.raises(RegistryError) as info:
                reg.key(device)
            assert info.value.reason == "bad_key" and "not a regular file" in str(info.value)
    finally:
        reg.close()
    read_end, write_end = os.pipe()
    os.write(write_end, (bytes(range(32)).hex() + "\n").encode())
    os.close(write_end)
    try:
        assert read_key_file(Path(f"/proc/self/fd/{read_end}")) == bytes(range(32))  # a pipe on the command line
    finally:
        os.close(read_end)
