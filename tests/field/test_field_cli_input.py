"""Bad input to flash / provision / check / boards: refused at once, in one line, without a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import serial

from gateway import small_files
from hil.cli.main import main as civicedge_main

pytestmark = [pytest.mark.timeout(60)]


@pytest.mark.parametrize(("extra", "match"), [
    (["--firmware-only", "--micropython", "fake.bin"], "--micropython does nothing with --firmware-only"),
    (["--firmware-only", "--no-erase"], "--no-erase does nothing with --firmware-only"),
    (["--firmware-only", "--repl-timeout", "-1"], "must be a positive number of seconds"),
    (["--firmware-only", "--repl-timeout", "soon"], "is not a number of seconds"),
])
def test_flash_refuses_conflicting_options(extra: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        civicedge_main(["flash", "--board", "streetlight-esp32", "--port", "/dev/ttyUSB-missing", *extra])
    assert exited.value.code == 2 and match in capsys.readouterr().err


def test_provision_discard_unsent_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        civicedge_main(["provision", "--port", "/dev/ttyUSB-missing", "--id", "sl-1", "--zone", "centre",
                        "--location", "52.1,4.2", "--registry", str(tmp_path), "--discard-unsent"])
    assert exited.value.code == 2 and "--discard-unsent does nothing without --force" in capsys.readouterr().err


def test_plain_http_key_warning_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "admin.token"
    token.write_text("t0ken\n")
    rc = civicedge_main(["provision", "--port", "/dev/ttyUSB-missing", "--id", "sl-1", "--zone", "centre",
                         "--location", "52.1,4.2", "--gateway", "http://192.0.2.1:8080", "--token-file", str(token)])
    captured = capsys.readouterr()
    assert rc == 2  # the missing port; the key never left
    assert "over plain HTTP" in captured.err and "plain HTTP" not in captured.out


@pytest.mark.parametrize("kind", ["missing", "file", "directory", "busy"])
def test_flash_firmware_only_fails_at_once_for_a_port_it_cannot_open(
        kind: str, tmp_path: Path, silent_pty: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = {"missing": str(tmp_path / "ttyUSB9"), "file": str(tmp_path / "port.txt"), "directory": str(tmp_path),
            "busy": silent_pty}[kind]
    (tmp_path / "port.txt").write_text("x")
    holder = serial.Serial(silent_pty, exclusive=True) if kind == "busy" else None
    started = time.monotonic()
    try:
        rc = civicedge_main(["flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port])
    finally:
        if holder is not None:
            holder.close()
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - started < 5, err  # not after the 20 s REPL wait
    assert {"missing": "does not exist", "file": "is a regular file, not a serial device",
            "directory": "is a directory, not a serial device", "busy": "is busy"}[kind] in err


def test_boards_check_on_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('title = "Straßenlampe"\n'.encode("latin-1"))
    rc = civicedge_main(["boards", "check", str(bad)])
    err = capsys.readouterr()
    assert rc == 1 and "not UTF-8 text" in err.out + err.err


@pytest.mark.parametrize("args", [["boards", "list", "--json"], ["boards", "show", "bin-esp32c3"]])
def test_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes (`| head -c 0`)
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_registry_that_is_a_file_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.field.errors import GatewayRegistrationError
    from hil.field.registration import registered_device

    registry = tmp_path / "registry.sqlite"
    registry.write_text("not a directory")
    with pytest.raises(GatewayRegistrationError, match="is not a directory"):
        registered_device(registry, "sl-1")


def test_a_registry_that_is_not_a_database_is_named_once(tmp_path: Path) -> None:
    from hil.field.errors import GatewayRegistrationError
    from hil.field.registration import registered_device

    (tmp_path / "devices.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GatewayRegistrationError) as err:
        registered_device(tmp_path, "sl-1")
    assert str(err.value).count("cannot open registry") <= 1 and str(tmp_path) in str(err.value)


def test_zone_error_quotes_plainly() -> None:
    from hil.field.errors import IdentityFormatError
    from hil.field.identity import validate_fields

    with pytest.raises(IdentityFormatError, match="zone 'a/b' must be"):
        validate_fields(device_id="sl-1", kind="streetlight", zone="a/b")


def _esp32_image(tmp_path: Path) -> Path:
    header = bytearray(b"\xe9\x03\x02\x20" + b"\0" * 20)  # chip id 0 (ESP32) at byte 12
    image = tmp_path / "my image.bin"
    image.write_bytes(bytes(header) + b"\xff" * 4072)
    return image


@pytest.mark.parametrize(
    ("extra", "interrupt_at", "rerun_tail", "identity"),
    [
        (["--no-erase", "--source"], "write", "--no-erase --source", "its identity, if any, is kept"),
        ([], "connect", "", "interrupted: nothing was written to the board"),  # esptool had not begun
        ([], "erase", "", "the erase had started, so its identity and files may be gone"),
    ],
)
def test_interrupted_flash_rerun_keeps_the_options_and_tells_the_truth_about_the_identity(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        extra: list[str], interrupt_at: str, rerun_tail: str, identity: str) -> None:
    # QA: the re-run advice dropped --no-erase (following it wiped the flash) and always said the
    # identity was kept, even after the erase had started.
    from hil.field import flash_cmd

    def fake_execute(plan: Any, *, on_step: Any) -> None:
        for flash_step in plan.steps:
            if interrupt_at == "connect":
                break
            on_step(flash_step)
            if flash_step.action == interrupt_at:
                break
        raise KeyboardInterrupt

    monkeypatch.setattr(flash_cmd, "execute_flash", fake_execute)
    image = _esp32_image(tmp_path)
    rc = civicedge_main(["flash", "--board", "streetlight-esp32", "--port", "/dev/ttyUSB9",
                         "--micropython", str(image), *extra])
    err = capsys.readouterr().err
    assert rc == 130
    rerun = f"civicedge flash --board streetlight-esp32 --port /dev/ttyUSB9 --micropython '{image}'"
    assert " ".join(err.split()).endswith(rerun + (" " + rerun_tail if rerun_tail else ""))
    assert identity in " ".join(err.split())
    if interrupt_at != "erase":
        assert "take-over" not in err


def test_check_refuses_a_missing_db_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # QA: a mistyped --db waited the whole report window, then blamed the link.
    started = time.monotonic()
    rc = civicedge_main(["check", "--port", "/dev/ttyUSB-civicedge-missing", "--db", str(tmp_path / "reprots.sqlite")])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - started < 5
    assert err.strip().splitlines() == [
        f"error: the gateway store {tmp_path / 'reprots.sqlite'} does not exist; pass the gateway's SQLite report "
        "store (the [storage] path of the gateway config)"]


def test_check_db_that_is_a_directory_or_unreadable_is_one_error_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["check", "--port", "/dev/ttyUSB-civicedge-missing", "--db", str(tmp_path)])
    assert rc == 2 and "is not a file; pass the gateway's SQLite report store (the [storage] path" in \
        capsys.readouterr().err

    # A store directory this user may not search: Path.exists raises PermissionError (QA ran it as a
    # user without dac_override; as root here it is simulated).
    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)
    rc = civicedge_main(["check", "--port", "/dev/ttyUSB-civicedge-missing", "--db", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: cannot read the gateway store {tmp_path / 'r.sqlite'}: Permission "
                                      "denied;") and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["unreadable", "directory"])
def test_board_file_that_cannot_be_read_is_one_error_line(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # QA: a --board x.toml without read permission was a PermissionError traceback (as root here the
    # mode is simulated: QA dropped dac_override).
    board = tmp_path / "x.toml"
    if kind == "directory":
        board.mkdir()
    else:
        board.write_text('schema = 1\nname = "x"\n')
        real_open = small_files._open  # how the boards loader opens a definition (regular files, bounded)

        def denied(path: str | Path) -> int:
            if Path(path) == board:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path)

        monkeypatch.setattr(small_files, "_open", denied)
    rc = civicedge_main(["flash", "--firmware-only", "--board", str(board), "--port", "/dev/ttyUSB-civicedge-missing"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {board}: " + {
        "unreadable": "cannot read the board definition (Permission denied); make it readable by this user",
        "directory": "is a directory, not a board definition file"}[kind]), err
