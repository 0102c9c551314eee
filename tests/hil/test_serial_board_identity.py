"""The serial backend on a board that ``civicedge flash`` and ``civicedge provision`` prepared.

A virtual streetlight stands in for the real board (its console and flash are what a USB board
offers; its flash is a host directory, so what the harness left on it can be read here). Before the
fix a test run replaced the board's identity and key silently, added the firmware's ``.py`` sources
next to ``flash``'s ``.mpy`` modules (MicroPython imports ``.py`` first), copied ``pyrightconfig.json``
and left ``/firmware.json`` describing something else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hil.backends.board import BoardHandle, BoardStateError, Strategy, make_identity
from hil.backends.errors import BoardIdentityError
from hil.backends.serial.driver import SerialDriver
from hil.backends.serial.identity_guard import HOST_BACKUP_NAME, SAVED_PATH
from hil.boards import load_board
from hil.dut import Dut
from hil.field.device import write_identity
from hil.field.firmware_copy import copy_firmware
from hil.field.identity import new_identity

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("sim_available")]

BOARD = "streetlight-esp32"


@pytest.fixture
def provisioned_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A virtual streetlight with MicroPython only, then ``civicedge flash --firmware-only``'s copy (.mpy)
    and ``civicedge provision``'s identity written to it: a board ready for the field."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard(BOARD, flash_dir=tmp_path_factory.mktemp("field-flash"), install=False, speed=300)
    try:
        loop.run(board.start(), timeout_s=120)
        with Dut(board.console_path) as dut:
            copy_firmware(dut, board_config=load_board(BOARD).to_device_config())
            write_identity(dut, new_identity(device_id="sl-prod-7", kind="streetlight", zone="harbour",
                                             lat="52.37", lon="4.89"))
        board.field_identity = (Path(board.flash_dir) / "identity.json").read_bytes()
        yield board
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()


def flash_files(board: Any) -> dict[str, bytes]:
    root = Path(board.flash_dir)
    return {"/" + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_flash_as_manifest_says(board: Any) -> None:
    """Every module on the board is one /firmware.json lists (no .py twin of a .mpy), with its hash."""
    files = flash_files(board)
    manifest = json.loads(files["/firmware.json"])
    assert manifest["mode"] == "mpy"
    for path, digest in manifest["files"].items():
        assert hashlib.sha256(files[path]).hexdigest() == digest, path
    modules = {p for p in files if p.endswith((".py", ".mpy"))}
    assert modules == {p for p in manifest["files"] if p.endswith((".py", ".mpy"))}
    assert modules & {"/boot.py", "/main.py"} == {"/boot.py", "/main.py"}
    assert not any(p.endswith(".py") for p in modules - {"/boot.py", "/main.py"}), "sources next to .mpy"
    assert "/pyrightconfig.json" not in files


def serial_handle(tmp_path: Path) -> BoardHandle:
    definition = load_board(BOARD)
    workdir = tmp_path / "hil-board"
    workdir.mkdir()
    return BoardHandle(backend="serial", definition=definition, identity=make_identity(definition), workdir=workdir)


def test_a_provisioned_board_is_refused_by_default_and_left_as_flash_left_it(
        pytester: pytest.Pytester, provisioned_board: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    before = flash_files(provisioned_board)
    pytester.makepyfile("""
        def test_board(hil_board):
            pass
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", BOARD, "--hil-port",
                                provisioned_board.console_path, "--hil-lease-dir",
                                str(tmp_path_factory.mktemp("leases")), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*BoardIdentityError*the board on {provisioned_board.console_path} is provisioned "
                                 "as sl-prod-7 (zone harbour, key fingerprint *); a test would replace its identity "
                                 "and key*Pass --hil-reprovision to allow it*"])
    assert provisioned_board.field_identity.decode() not in result.stdout.str()  # the key never shows
    after = flash_files(provisioned_board)
    assert {p: after.get(p) for p in before} == before, "the refused run changed the board's files"
    # The firmware runs again after the refusal: new files are only its own state.
    assert all(p.startswith(("/outbox/", "/state/", "/seq.bin")) for p in set(after) - set(before)), set(after)


def test_reprovision_saves_the_identity_and_puts_it_back(provisioned_board: Any, tmp_path: Path) -> None:
    own = provisioned_board.field_identity
    # A source module next to its .mpy (what the harness used to leave) would be imported instead of it.
    stale = Path(provisioned_board.flash_dir) / "lib" / "civic" / "report.py"
    stale.write_text("raise ImportError('stale source imported')\n")
    driver = SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases", reprovision=True)
    strategy = Strategy(driver)
    handle = serial_handle(tmp_path)
    try:
        strategy.transition(handle, "reporting")
        assert not stale.exists()
        # The sync is civicedge flash's: the board already holds that firmware, so nothing moves.
        assert handle.extras["sync"].copied == () and handle.extras["sync"].mode == "mpy"
        assert_flash_as_manifest_says(provisioned_board)
        files = flash_files(provisioned_board)
        assert json.loads(files["/identity.json"]) == handle.identity
        saved = json.loads(files[SAVED_PATH])
        assert saved["previous"].encode("latin-1") == own
        backup = handle.workdir / HOST_BACKUP_NAME
        assert backup.read_bytes() == own and stat.S_IMODE(backup.stat().st_mode) == 0o600
        own_key = json.loads(own)["key"]
        assert own_key not in repr(handle.extras) and "sl-prod-7" in repr(handle.extras["saved_identity"])
    finally:
        seen = len(provisioned_board.console_text())
        strategy.power_off(handle)
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == own and SAVED_PATH not in files
    assert not backup.exists(), "the host copy of the key stays among the test's artifacts"
    assert_flash_as_manifest_says(provisioned_board)
    # The firmware was restarted under the board's own identity (everything the board printed is kept).
    assert_runs_again(provisioned_board, seen)


def assert_runs_again(board: Any, seen: int) -> None:
    """The board's firmware printed its running line after console offset ``seen`` (it was restarted)."""
    deadline = time.monotonic() + 60
    while "civicedge: streetlight sl-prod-7 running" not in board.console_text()[seen:]:
        assert time.monotonic() < deadline, board.console_text()[seen:][-2000:]
        time.sleep(0.2)


def test_a_refused_board_runs_its_firmware_again(provisioned_board: Any, tmp_path: Path) -> None:
    """Before the fix the refusal left the board at its REPL prompt: reading /identity.json stopped the
    firmware, and only a board whose identity had been saved was restarted."""
    strategy = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases"))
    handle = serial_handle(tmp_path)
    seen = len(provisioned_board.console_text())
    with pytest.raises(BoardStateError):
        strategy.transition(handle, "reporting")
    strategy.power_off(handle)
    assert_runs_again(provisioned_board, seen)


def test_an_interrupted_run_is_undone_by_the_next_one(provisioned_board: Any, tmp_path: Path) -> None:
    own = provisioned_board.field_identity
    first = serial_handle(tmp_path)
    driver = SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases", reprovision=True)
    Strategy(driver).transition(first, "provisioned")
    # The run dies here: no teardown puts the identity back; its leases go with the process.
    first.close_dut()
    first.resource.release()
    assert flash_files(provisioned_board)["/identity.json"] != own
    # The next run, without --hil-reprovision, first puts the board's identity back, then refuses it.
    second = BoardHandle(backend="serial", definition=first.definition, identity=make_identity(first.definition),
                         workdir=tmp_path)
    again = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases"))
    with pytest.raises(BoardStateError) as err:
        again.transition(second, "reporting")
    assert isinstance(err.value.__cause__, BoardIdentityError) and err.value.__cause__.reason == "provisioned"
    again.power_off(second)
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == own and SAVED_PATH not in files


def test_a_saved_identity_is_not_put_over_one_provisioned_since(provisioned_board: Any, tmp_path: Path) -> None:
    record = json.dumps({"previous": '{"id": "sl-old"}', "written": "0" * 64}).encode()
    with Dut(provisioned_board.console_path) as dut:
        dut.write_file(SAVED_PATH, record)
    strategy = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases",
                                     reprovision=True))
    handle = serial_handle(tmp_path)
    with pytest.raises(BoardStateError) as err:
        strategy.transition(handle, "reporting")
    strategy.power_off(handle)
    cause = err.value.__cause__
    assert isinstance(cause, BoardIdentityError) and cause.reason == "saved-record"
    assert "now holds sl-prod-7" in str(cause) and f"fs rm :{SAVED_PATH}" in str(cause)
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == provisioned_board.field_identity and files[SAVED_PATH] == record


def test_reprovision_refuses_a_board_with_unsent_reports(provisioned_board: Any, tmp_path: Path) -> None:
    with Dut(provisioned_board.console_path) as dut:
        dut.write_file("/outbox/00000041.r", b"a frame under the board's own key")
    seen = len(provisioned_board.console_text())
    strategy = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases",
                                     reprovision=True))
    handle = serial_handle(tmp_path)
    with pytest.raises(BoardStateError) as err:
        strategy.transition(handle, "reporting")
    strategy.power_off(handle)
    cause = err.value.__cause__
    assert isinstance(cause, BoardIdentityError) and cause.reason == "unsent"
    assert "holds 1 un-sent report(s)" in str(cause)
    assert_runs_again(provisioned_board, seen)
    assert flash_files(provisioned_board)["/identity.json"] == provisioned_board.field_identity


def test_hil_reprovision_option_lets_a_pytest_run_use_a_provisioned_board(
        pytester: pytest.Pytester, provisioned_board: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--hil-reprovision`` reaches the driver: the run that is refused without it passes, the test sees
    the test identity on the board, and the board's own identity is back afterwards."""
    own = provisioned_board.field_identity
    pytester.makepyfile("""
        import json

        def test_board(hil_board, hil_settings):
            assert hil_settings.reprovision
            on_board = json.loads(hil_board.dut.read_file("/identity.json"))
            assert on_board == hil_board.identity and on_board["id"] != "sl-prod-7"
            backup = hil_board.workdir / "identity-backup.json"
            assert json.loads(backup.read_bytes())["id"] == "sl-prod-7"
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", BOARD, "--hil-port",
                                provisioned_board.console_path, "--hil-lease-dir",
                                str(tmp_path_factory.mktemp("leases")), "--hil-reprovision", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert own.decode() not in result.stdout.str()
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == own and SAVED_PATH not in files


def fail_identity_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the board's flash fail under the first chunk of every ``/identity.json`` write (the device file
    is closed under it: the write raises ``OSError: [Errno 9] EBADF`` on the board, as a flash error would).

    Returns the base64 payloads of the failed chunks (what an error message must never show).
    """
    payloads: list[str] = []
    real_exec = Dut.exec
    armed: set[int] = set()

    def exec_(self: Dut, code: str, *, timeout_s: float = 10.0) -> str:
        if code.startswith("_civic_f.write(_civic_d(") and id(self) in armed:
            armed.discard(id(self))
            payloads.append(code.split("'")[1])
            real_exec(self, "_civic_f.close()", timeout_s=timeout_s)
        out = real_exec(self, code, timeout_s=timeout_s)
        if code.startswith("_civic_f = open('/identity.json.part'"):
            armed.add(id(self))
        return out

    monkeypatch.setattr(Dut, "exec", exec_)
    return payloads


def secret_pieces(payloads: list[str]) -> set[str]:
    """Every 16-character piece of the payloads' base64 and of the key (hex) they carry."""
    pieces: set[str] = set()
    for payload in payloads:
        key = json.loads(base64.b64decode(payload))["key"]
        for text in (payload, key):
            pieces |= {text[i:i + 16] for i in range(len(text) - 15)}
    return pieces


def test_a_failed_identity_write_shows_no_key_anywhere(
        pytester: pytest.Pytester, provisioned_board: Any, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix a device error showed the first 200 characters of the code it ran: writing
    /identity.json sends ``_civic_f.write(_civic_d(b'<base64 of the file>'))``, so the test identity's key
    went into the exception, pytest's output and JUnit."""
    payloads = fail_identity_writes(monkeypatch)
    pytester.makepyfile("""
        def test_board(hil_board):
            pass
    """)
    junit = pytester.path / "junit.xml"
    log_file = pytester.path / "run.log"
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", BOARD, "--hil-port",
                                provisioned_board.console_path, "--hil-lease-dir",
                                str(tmp_path_factory.mktemp("leases")), "--hil-reprovision", "-p", "no:cacheprovider",
                                f"--junitxml={junit}", f"--log-file={log_file}", "--log-file-level=DEBUG")
    result.assert_outcomes(errors=1)
    assert payloads, "no identity write was failed"
    result.stdout.fnmatch_lines(["*step to *provisioned* failed: device raised *closed file*"])
    pieces = secret_pieces(payloads) | secret_pieces([base64.b64encode(provisioned_board.field_identity).decode()])
    texts = {"stdout": result.stdout.str() + result.stderr.str()}
    for path in pytester.path.rglob("*"):
        if path.is_file() and path.name != HOST_BACKUP_NAME:  # the backup holds the board's own identity on purpose
            texts[str(path)] = path.read_bytes().decode(errors="replace")
    assert str(junit) in texts and str(log_file) in texts
    for where, text in texts.items():
        shown = [p for p in pieces if p in text]
        assert not shown, f"key material in {where}: {shown[:3]}"


def test_device_errors_never_show_base64_payloads_and_secret_transfers_show_nothing_received() -> None:
    from hil.dut.errors import DeviceError, DeviceProtocolError, DeviceTimeoutError

    payload = base64.b64encode(b'{"key": "' + b"ab" * 32 + b'"}').decode()
    plain = DeviceError(url="/dev/pts/9", traceback="OSError: [Errno 28] ENOSPC\n", stdout="",
                        code=f"_civic_f.write(_civic_d(b'{payload}'))")
    assert payload[:16] not in str(plain) and payload[:16] not in plain.code
    assert f"_civic_d(<{len(payload)} base64 chars>)" in str(plain)
    secret = DeviceError(url="/dev/pts/9", traceback="OSError: [Errno 5] EIO\n", stdout=payload,
                         code="print(_civic_e(_civic_f.read(2048)).decode(), end='')", secret=True)
    assert "_civic_e" not in str(secret) and secret.stdout == "" and "device raised OSError" in str(secret)
    timeout = DeviceTimeoutError(url="/dev/pts/9", operation="exec", timeout_s=10, received=payload.encode(),
                                 secret=True)
    assert payload[:16] not in str(timeout) and timeout.received == b""
    assert f"received {len(payload)} bytes, not shown" in str(timeout)
    garbled = DeviceProtocolError(url="/dev/pts/9", operation="exec", received=payload.encode(), secret=True)
    assert payload[:16] not in str(garbled) and garbled.received == b""


def test_a_failed_identity_write_still_puts_the_board_identity_back(
        provisioned_board: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix a failed /identity.json write (after the record was written) left the teardown
    nothing to do: /identity.hil-saved.json, holding the board's key, stayed on the board."""
    fail_identity_writes(monkeypatch)
    strategy = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases",
                                     reprovision=True))
    handle = serial_handle(tmp_path)
    with pytest.raises(BoardStateError):
        strategy.transition(handle, "reporting")
    monkeypatch.undo()
    strategy.power_off(handle)
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == provisioned_board.field_identity
    assert SAVED_PATH not in files and "/identity.json.part" not in files


def test_the_host_backup_stays_only_when_the_put_back_fails(
        provisioned_board: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    strategy = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases",
                                     reprovision=True))
    handle = serial_handle(tmp_path)
    strategy.transition(handle, "provisioned")
    backup = handle.workdir / HOST_BACKUP_NAME
    fail_identity_writes(monkeypatch)
    with pytest.raises(BoardIdentityError) as err:
        strategy.power_off(handle)
    assert err.value.reason == "restore" and str(backup) in str(err.value)
    assert backup.read_bytes() == provisioned_board.field_identity
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # Never written over: a second run into the same directory is refused before it touches the board.
    monkeypatch.undo()
    again = BoardHandle(backend="serial", definition=handle.definition, identity=make_identity(handle.definition),
                        workdir=handle.workdir)
    with pytest.raises(BoardStateError) as refused:
        strategy.transition(again, "provisioned")
    strategy.power_off(again)
    assert isinstance(refused.value.__cause__, BoardIdentityError)
    assert refused.value.__cause__.reason == "backup-exists"
    assert backup.read_bytes() == provisioned_board.field_identity
    # That second run put the board's identity back first (the record the failed teardown left).
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == provisioned_board.field_identity and SAVED_PATH not in files


def test_hil_fleet_errors_when_a_board_identity_is_not_put_back(
        pytester: pytest.Pytester, provisioned_board: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Before the fix Fleet.power_off logged a warning and the test passed green while the board kept
    the test identity."""
    pytester.makepyfile("""
        import pytest

        @pytest.mark.fleet(**{"streetlight-esp32": 1})
        def test_fleet(hil_fleet):
            # The flash refuses the put-back's temporary file: a directory stands in its place.
            hil_fleet[0].dut.exec("import os\\nos.mkdir('/identity.json.part')")
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-board", BOARD, "--hil-port",
                                provisioned_board.console_path, "--hil-lease-dir",
                                str(tmp_path_factory.mktemp("leases")), "--hil-reprovision", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*hil_fleet teardown: BoardIdentityError: could not put the board's own identity "
                                 "back on *EISDIR*", "*It is saved on the board in /identity.hil-saved.json*"])
    assert provisioned_board.field_identity.decode() not in result.stdout.str()
    assert SAVED_PATH[1:] in {p.name for p in Path(provisioned_board.flash_dir).iterdir()}


def test_a_broken_identity_left_by_an_interrupted_run_gets_the_saved_one_back(
        provisioned_board: Any, tmp_path: Path) -> None:
    """Before the fix a missing or broken /identity.json (a write cut short) made the recovery refuse, so the
    board kept no usable identity though its own was saved on it."""
    own = provisioned_board.field_identity
    record = json.dumps({"previous": own.decode("latin-1"), "written": "0" * 64}).encode()
    with Dut(provisioned_board.console_path) as dut:
        dut.write_file(SAVED_PATH, record)
        dut.write_file("/identity.json", b'{"id": "streetlight-hil-1", "ke')
    strategy = Strategy(SerialDriver(selector=provisioned_board.console_path, lease_dir=tmp_path / "leases"))
    handle = serial_handle(tmp_path)
    with pytest.raises(BoardStateError) as err:
        strategy.transition(handle, "reporting")
    strategy.power_off(handle)
    assert isinstance(err.value.__cause__, BoardIdentityError) and err.value.__cause__.reason == "provisioned"
    files = flash_files(provisioned_board)
    assert files["/identity.json"] == own and SAVED_PATH not in files
