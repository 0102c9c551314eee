"""``civicedge gateway devices`` and the registry rules behind it: ids, keys, revocation, registry paths."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry
from hil.cli.main import main

WHERE = {"kind": "bin", "zone": "north", "lat": "52.1", "lon": "4.2"}
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def devices(registry: Path, *argv: str) -> list[str]:
    return ["gateway", "devices", "--registry", str(registry), *argv]


def add_argv(registry: Path, device_id: str, *extra: str) -> list[str]:
    return devices(registry, "add", "--id", device_id, "--kind", "bin", "--zone", "north", "--location", "52.1,4.2",
                   *extra)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.add("b1", key=KEY_A, **WHERE)
    return registry


# --- revocation, as in the admin API ----------------------------------------------------------------

def test_second_revoke_fails_as_already_revoked(tmp_path: Path, reg: Registry,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(devices(reg.path, "revoke", "b1")) == 0
    assert "revoked b1" in capsys.readouterr().out
    assert main(devices(reg.path, "revoke", "b1")) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error (already_revoked): device b1 is already revoked" in err
    with pytest.raises(RegistryError) as info:
        reg.revoke("b1")
    assert info.value.reason == "already_revoked"
    with pytest.raises(RegistryError) as info:
        reg.revoke("ghost")
    assert info.value.reason == "unknown_device"


def test_revoke_tells_what_happens_to_the_devices_public_data(reg: Registry,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """QA (open-data officer): revoking a device drops it from the public listings, and nothing said so,
    nor what becomes of the data it published."""
    assert main(devices(reg.path, "revoke", "b1")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "revoked b1"
    (said,) = [line for line in out if line.startswith("open data: ")]
    for words in ("leaves the open-data listings", "NGSI-LD", "devices.geojson", "/opendata/readings.csv",
                  "until their retention ends"):
        assert words in said, said


def test_the_key_of_a_revoked_device_is_not_rotated(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    reg.revoke("b1")
    assert main(devices(reg.path, "rotate-key", "b1")) == 1
    assert "error (revoked): device b1 is revoked" in capsys.readouterr().err
    for key in (None, KEY_B):
        with pytest.raises(RegistryError) as info:
            reg.rotate_key("b1", key=key)
        assert info.value.reason == "revoked"
    assert reg.get("b1").key_version == 1 and reg.key("b1") == KEY_A


# --- registry paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("action", [["list"], ["show", "b1"], ["revoke", "b1"], ["rotate-key", "b1"]])
def test_commands_other_than_add_do_not_create_a_registry(tmp_path: Path, action: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "typo"
    assert main(devices(typo, *action)) == 1
    assert "error (no_registry): no registry at %s" % typo in capsys.readouterr().err
    assert not typo.exists()


def test_list_of_an_empty_registry_says_so_on_stderr_only(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    Registry(tmp_path / "r").close()
    assert main(devices(tmp_path / "r", "list")) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no devices registered" in err
    assert main(devices(tmp_path / "r", "list", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_registry_path_that_is_a_file_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    for argv in (devices(a_file, "list"), add_argv(a_file, "b1"), add_argv(a_file / "sub", "b1")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "error (not_a_directory)" in err and "%s is not a directory" % a_file in err and "Errno" not in err
    assert a_file.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("content", [b"this is not sqlite\n" * 10, None])
def test_a_corrupt_registry_database_is_reported_as_corrupt(tmp_path: Path, content: bytes | None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "r"
    root.mkdir()
    db = root / "devices.sqlite"
    if content is None:  # a SQLite database, but not a registry
        sqlite3.connect(db).execute("CREATE TABLE devices (name TEXT)").connection.commit()
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    for argv in (devices(root, "list"), add_argv(root, "b1")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "error (corrupt)" in err and "is not a device registry database" in err
    assert db.read_bytes() == before


def test_show_says_when_the_key_file_is_missing_or_garbage(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(devices(reg.path, "show", "b1")) == 0
    out, err = capsys.readouterr()
    assert "key_status       ok" in out and err == "" and KEY_A.hex() not in out
    # the fingerprint on the pole's label (civicedge provision), never the key
    assert f"key_fingerprint  {hashlib.sha256(KEY_A).digest()[:8].hex()}" in out
    reg.key_path("b1").write_text("garbage\n")
    assert main(devices(reg.path, "show", "b1", "--json")) == 0
    out, err = capsys.readouterr()
    status = json.loads(out)["key_status"]
    assert status.startswith("unusable:") and "does not hold a 32-byte key" in status and "garbage" not in out + err
    assert "warning: device b1 cannot authenticate its frames" in err and "--force --take-over" in err
    assert "key_fingerprint" not in out
    reg.key_path("b1").unlink()
    assert main(devices(reg.path, "show", "b1")) == 0
    out, err = capsys.readouterr()
    assert "unusable: no key file at" in out and "no key file at" in err


# --- ids made only of dots -------------------------------------------------------------------------

@pytest.mark.parametrize("device_id", [".", "..", "..."])
def test_ids_made_only_of_dots_are_refused_by_add_and_enroll(reg: Registry, device_id: str) -> None:
    for register in (lambda: reg.add(device_id, **WHERE), lambda: reg.enroll(device_id, key=KEY_B, **WHERE)):
        with pytest.raises(RegistryError) as err:
            register()
        assert err.value.reason == "bad_value" and "only dots" in str(err.value)
    assert reg.lookup(device_id) is None and sorted(p.name for p in reg.keys_dir.iterdir()) == ["b1.key"]
    reg.add("a.b", **WHERE)  # dots among other characters stay valid


def test_cli_add_refuses_a_dot_only_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(add_argv(tmp_path / "r", "..")) == 1
    assert "only dots" in capsys.readouterr().err
    assert not (tmp_path / "r" / "keys" / "...key").exists()


# --- weak and shared keys ---------------------------------------------------------------------------

@pytest.mark.parametrize("byte", [0x00, 0xFF, 0x41])
def test_a_key_of_one_repeated_byte_is_refused_everywhere(reg: Registry, byte: int) -> None:
    weak = bytes([byte]) * 32
    attempts = [lambda: reg.add("b2", key=weak, **WHERE), lambda: reg.enroll("b2", key=weak, **WHERE),
                lambda: reg.enroll("b1", key=weak, replace=True, **WHERE), lambda: reg.rotate_key("b1", key=weak)]
    for attempt in attempts:
        with pytest.raises(RegistryError) as err:
            attempt()
        assert err.value.reason == "bad_key" and weak.hex() not in str(err.value)
    assert reg.lookup("b2") is None and reg.key("b1") == KEY_A and reg.get("b1").key_version == 1


def test_cli_refuses_an_all_zero_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "zero.key"
    key_file.write_text("0" * 64 + "\n")
    assert main(add_argv(tmp_path / "r", "b1", "--key-file", str(key_file))) == 1
    err = capsys.readouterr().err
    assert "error (bad_key)" in err and "repeated" in err and "0" * 64 not in err


def test_a_key_another_device_has_is_refused_naming_that_device(reg: Registry) -> None:
    reg.add("b2", key=KEY_B, **WHERE)
    reg.revoke("b2")  # a revoked device's key is not free for reuse either
    attempts = [("b1", lambda: reg.add("b3", key=KEY_A, **WHERE)),
                ("b1", lambda: reg.enroll("b3", key=KEY_A, **WHERE)),
                ("b2", lambda: reg.add("b3", key=KEY_B, **WHERE)),
                ("b2", lambda: reg.enroll("b1", key=KEY_B, replace=True, **WHERE)),
                ("b2", lambda: reg.rotate_key("b1", key=KEY_B))]
    for owner, attempt in attempts:
        with pytest.raises(RegistryError) as err:
            attempt()
        text = str(err.value)
        assert err.value.reason == "bad_key" and "device %s already has this key" % owner in text
        assert KEY_A.hex() not in text and KEY_B.hex() not in text
    assert reg.lookup("b3") is None and reg.key("b1") == KEY_A and reg.get("b1").key_version == 1
    assert reg.enroll("b1", key=KEY_A, **WHERE) == "unchanged"  # its own key is no conflict


def test_cli_add_refuses_the_key_file_of_another_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(add_argv(tmp_path / "r", "b1")) == 0
    key_file = tmp_path / "r" / "keys" / "b1.key"
    assert main(add_argv(tmp_path / "r", "b2", "--key-file", str(key_file))) == 1
    out, err = capsys.readouterr()
    assert "device b1 already has this key" in err
    assert key_file.read_text().strip() not in out + err


# --- directory modes -------------------------------------------------------------------------------

@pytest.mark.parametrize("data_dir", ["data", "srv/civicedge/data"])
def test_devices_add_before_the_first_run_makes_the_data_directory_private(
        tmp_path: Path, data_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Quick-start order: `devices add` creates <data_dir>/registry, and so the data directory, which
    was left 0755 (mkdir parents get the umask's mode) though docs/gateway.md promises 0700."""
    import os

    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\ndata_dir = "%s"\n[http]\nenabled = false\n' % data_dir)
    old = os.umask(0o022)
    try:
        assert main(["gateway", "devices", "--config", str(cfg), "add", "--id", "b1", "--kind", "bin",
                     "--zone", "north", "--location", "52.1,4.2"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    made = tmp_path / data_dir
    while made != tmp_path:
        assert made.stat().st_mode & 0o777 == 0o700, made
        made = made.parent
    assert (tmp_path / data_dir / "registry").stat().st_mode & 0o777 == 0o700


# --- ASCII values only ------------------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value", "field"), [
    ("--location", "５２.１,4.2", "lat"),   # full-width digits: float() would read 52.1
    ("--location", "52.1,٤.٢", "lon"),      # Arabic-Indic digits
    ("--zone", "nörth\u2028", "zone"),       # a letter of any script is a zone's, a line separator not
    ("--id", "b１", "device id"),
])
def test_cli_add_refuses_non_ascii_digits_and_letters(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      option: str, value: str, field: str) -> None:
    argv = add_argv(tmp_path / "r", "b1")
    argv[argv.index(option) + 1] = value
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error (bad_value)" in err and field in err, err
    assert list((tmp_path / "r" / "keys").iterdir()) == []


def test_a_registry_directory_the_user_may_not_read_is_one_error_line(tmp_path: Path) -> None:
    """A registry directory of another user (0700, as the gateway creates it): Path.exists raised
    PermissionError out of Registry() and the CLI printed a traceback."""
    import os
    import shutil
    import subprocess
    import sys

    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file modes cannot be made to apply")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    reg = tmp_path / "reg"
    Registry(reg).close()
    reg.chmod(0)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "hil.cli.main", "gateway", "devices", "--registry",
                               str(reg), "list"], capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[2])
    finally:
        reg.chmod(0o700)
    assert proc.returncode == 1, proc.stderr
    assert "error (permissions): cannot open registry" in proc.stderr and "Traceback" not in proc.stderr


def test_show_of_a_key_file_this_user_may_not_read_does_not_advise_a_take_over(
        reg: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: `show` run by another user than the gateway's said to re-key the board (--force --take-over)
    for a key file that is fine, only unreadable to that user."""
    from gateway.registry import key_files

    path = reg.key_path("b1")
    real = key_files.read_limited  # root reads every file: the denial is simulated where key files are read

    def denied(file: str | Path, limit: int, *, pipes: bool = False) -> bytes:
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, limit, pipes=pipes)

    monkeypatch.setattr(key_files, "read_limited", denied)
    reg.close()
    assert main(devices(path.parent.parent, "show", "b1", "--json")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["key_status"].startswith("unreadable by this user:")
    assert "--take-over" not in err and "run this command as the gateway's user" in err and "Permission denied" in err


def test_revoke_and_rotate_key_are_logged_at_info_not_warned_about(tmp_path: Path, reg: Registry,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A requested action is no problem: its record is INFO (shown with -v), and the default CLI run
    prints only the result line."""
    import os
    import subprocess
    import sys

    reg.add("b2", key=KEY_B, **WHERE)
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        reg.rotate_key("b1")
        reg.revoke("b1")
    ours = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gateway.registry.devices"]
    assert ("INFO", "rotated the key of device b1") in ours and ("INFO", "revoked device b1") in ours
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    cli = [sys.executable, "-m", "hil.cli.main", *devices(reg.path, "revoke", "b2")]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert (done.returncode, done.stdout.splitlines()[0], done.stderr) == (0, "revoked b2", "")


def test_show_and_list_align_their_columns(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    """Every value starts in one column, whatever the length of the names and locations before it."""
    reg.add("b2", key=KEY_B, kind="bin", zone="a zone with a long name over 16", lat="52.37", lon="4.81")
    reg.add("b3", kind="bin", zone="north", lat="52.3702", lon="4.8952")
    reg.revoke("b1")
    reg.revoke("b2")
    assert main(devices(reg.path, "show", "b1")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines][-2:] == ["key_fingerprint", "key_status"]
    starts = {len(line) - len(line.split(None, 1)[1]) for line in lines}
    assert len(starts) == 1, lines
    assert main(devices(reg.path, "list")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["b1", "b2", "b3"]
    located = [line.index(loc) for line, loc in zip(lines, ("52.1,4.2", "52.37,4.81", "52.3702,4.8952"))]
    revoked = [line.index("REVOKED") for line in lines[:2]]
    assert len(set(located)) == 1 and len(set(revoked)) == 1, lines
    assert all(line == line.rstrip() for line in lines) and lines[2].endswith("52.3702,4.8952")


def test_move_corrects_a_mistyped_location_keeping_id_and_key(reg: Registry, capsys: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    reg.add("b2", key=KEY_B, kind="bin", zone="north", lat="25.37", lon="4.89")  # 25 for 52: a typo
    with caplog.at_level(logging.INFO, logger="gateway.registry.devices"):
        rec, changed = reg.move("b2", lat="52.37", lon="4.89")
    assert changed and (rec.zone, rec.lat, rec.lon, rec.key_version) == ("north", "52.37", "4.89", 1)
    assert reg.key("b2") == KEY_B
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "moved device b2 from zone north at 25.37,4.89 to zone north at 52.37,4.89")]
    # enroll with the corrected place now matches; with the typo it is a (refused) move
    assert reg.enroll("b2", kind="bin", zone="north", lat="52.370", lon="4.89", key=KEY_B) == "unchanged"
    with pytest.raises(RegistryError) as info:
        reg.enroll("b2", kind="bin", zone="north", lat="25.37", lon="4.89", key=KEY_B)
    assert info.value.reason == "moved"

    assert main(devices(reg.path, "move", "b2", "--location", "52.38,4.90", "--zone", "south")) == 0
    out, err = capsys.readouterr()
    assert out == ("moved b2 to zone south at 52.38,4.90 (was zone north at 52.37,4.89); reports stored before "
                   "keep zone north\n") and err == ""
    assert main(devices(reg.path, "move", "b2", "--location", "52.380,4.9")) == 0
    assert capsys.readouterr().out == "b2 is already in zone south at 52.38,4.90; nothing changed\n"
    rec = reg.get("b2")
    assert (rec.zone, rec.lat, rec.lon) == ("south", "52.38", "4.90") and reg.key("b2") == KEY_B

    reg.revoke("b1")
    for argv, reason in (((devices(reg.path, "move", "b2", "--location", "91,4.9")), "bad_value"),
                         ((devices(reg.path, "move", "b2", "--location", "52.1")), "bad_value"),
                         ((devices(reg.path, "move", "b2", "--location", "52.1,4.9", "--zone", "a/b")), "bad_value"),
                         ((devices(reg.path, "move", "ghost", "--location", "52.1,4.9")), "unknown_device"),
                         ((devices(reg.path, "move", "b1", "--location", "52.1,4.9")), "revoked")):
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert out == "" and "error (%s)" % reason in err, (argv, err)
    assert (reg.get("b2").lat, reg.get("b1").lat) == ("52.38", "52.1")


def test_rotate_key_names_the_provision_command_that_re_keys_a_board(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review: it said "re-provision the device with it", but no command puts a registry key onto a
    board: provision makes the key itself (--force --take-over once the registry holds another)."""
    import shlex

    from hil.cli.main import build_parser

    reg = Registry(tmp_path / "my registry")
    reg.add("b1", key=KEY_A, kind="bin", zone="west side", lat="52.37", lon="4.89")
    reg.close()
    assert main(devices(reg.path, "rotate-key", "b1")) == 0
    out, err = capsys.readouterr()
    assert out == "new key for b1 written to %s\n" % reg.key_path("b1") and "re-provision the device with it" not in err
    assert "no civicedge command puts a registry key onto a board" in err
    command = err.split("itself: ", 1)[1].split(" (--discard-unsent:", 1)[0]
    argv = shlex.split(command)
    assert argv[0] == "civicedge"
    # The real parser takes it with only the port left to fill in, the registered values as given.
    args = build_parser().parse_args(argv[1:])
    assert (args.device_id, args.zone, args.location, args.registry) == (
        "b1", "west side", "52.37,4.89", (tmp_path / "my registry").absolute())
    assert args.port == "PORT" and args.force and args.take_over and args.discard_unsent
    assert KEY_A.hex() not in out + err


def test_the_cannot_move_refusal_prints_a_move_command_that_runs_as_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review: it said `devices move ID --location LAT,LON [--zone Z]`: no --registry (run as printed:
    no_registry) and placeholders for a place the refused enrolment had given."""
    import shlex

    reg = Registry(tmp_path / "a registry")  # a space: the path must be quoted for the shell
    reg.add("b1", key=KEY_A, **WHERE)
    with pytest.raises(RegistryError) as info:
        reg.enroll("b1", kind="bin", zone="west side", lat="52.37", lon="4.89", key=KEY_A)
    message = str(info.value)
    assert info.value.reason == "moved" and "cannot move" in message
    command = message.split("`")[1]
    assert command.startswith("civicedge gateway devices move b1 --registry ") and "LAT" not in command
    assert 'POST /api/admin/devices/b1/move with {"lat": "52.37", "lon": "4.89", "zone": "west side"}' in message
    reg.close()
    argv = shlex.split(command)
    assert argv[0] == "civicedge"
    assert main(argv[1:]) == 0, capsys.readouterr().err
    assert "moved b1 to zone west side at 52.37,4.89" in capsys.readouterr().out
    reg = Registry(tmp_path / "a registry")
    try:  # and the enrolment it refused now matches
        assert reg.enroll("b1", kind="bin", zone="west side", lat="52.37", lon="4.89", key=KEY_A) == "unchanged"
    finally:
        reg.close()


def test_list_aligns_zones_of_wide_and_combining_characters(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    """Review of f2bff90: widths were len(), so 中央区 (6 terminal cells) and a decomposed ü pushed the columns."""
    from rich.cells import cell_len

    reg.add("b2", key=KEY_B, kind="bin", zone="中央区中央区中央区中央区", lat="52.37", lon="4.81")
    reg.add("b3", kind="bin", zone="Su\u0308dstadt", lat="52.3702", lon="4.8952")
    assert main(devices(reg.path, "list")) == 0
    lines = capsys.readouterr().out.splitlines()
    located = [cell_len(line[:line.index(loc)]) for line, loc in zip(lines, ("52.1,4.2", "52.37,4.81", "52.3702,4.8952"))]
    assert len(set(located)) == 1, lines
