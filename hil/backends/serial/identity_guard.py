"""A real board keeps its own identity: the test identity goes only where it may, and the board's comes back.

A board provisioned with ``civicedge provision`` holds the id and key its gateway knows. The serial
backend refuses to replace them unless the run opts in (``SerialDriver(reprovision=True)``, the
``--hil-reprovision`` option); then, before it writes the test identity, it saves the board's
``/identity.json`` twice: on the board itself in :data:`SAVED_PATH`, together with the hash of the
identity the harness writes, and on the host in the board's work directory (:data:`HOST_BACKUP_NAME`,
mode 0600). When the board is released the saved identity is written back (the host copy is deleted once
the board holds it; it stays only when that fails) and the firmware restarted with it. A board without an identity gets the test identity and has none again afterwards (the same
record, saying there was none).

A run that dies in between (host crash, a second Ctrl-C, power cut) leaves the record on the board:
the next run on that board puts the identity back first, whatever its options, as long as the board
still holds the identity the harness wrote, its own one again, or no usable identity (missing or
broken). A valid other identity (the board was provisioned anew since) is left to the user, with an
error saying so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.backends.board import BoardHandle
from hil.backends.errors import BoardIdentityError
from hil.dut import Dut
from hil.field.device import IDENTITY_PATH, count_outbox, with_retries
from hil.field.errors import IdentityFormatError
from hil.field.identity import parse_identity

log = logging.getLogger(__name__)

SAVED_PATH = "/identity.hil-saved.json"
"""On the board: the identity a test replaced, until it is put back (holds the key, like /identity.json)."""
HOST_BACKUP_NAME = "identity-backup.json"
"""In the board's work directory on the host: a second copy of the replaced identity (mode 0600), deleted
once the identity is back on the board."""
OPT_IN = "--hil-reprovision"


@dataclass(frozen=True, repr=False)
class SavedIdentity:
    """What :data:`SAVED_PATH` records.

    Attributes:
        previous: the board's ``/identity.json`` before the test identity (None: it had none); holds
            its key, so ``repr`` shows only its id.
        written: SHA-256 (hex) of the test identity the harness wrote over it.
    """

    previous: bytes | None
    written: str

    def __repr__(self) -> str:
        previous = "None" if self.previous is None else f"<identity {describe_identity(self.previous)[0]!r}>"
        return f"SavedIdentity(previous={previous}, written={self.written!r})"

    def to_json(self) -> bytes:
        """The record's file content."""
        previous = None if self.previous is None else self.previous.decode("latin-1")
        return json.dumps({"previous": previous, "written": self.written}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SavedIdentity:
        """Parse a record.

        Raises:
            ValueError: not a record this module wrote.
        """
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("written"), str) or not (
                doc.get("previous") is None or isinstance(doc.get("previous"), str)):
            raise ValueError("not an identity record of the harness")
        previous = doc["previous"]
        return cls(None if previous is None else previous.encode("latin-1"), doc["written"])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Every exchange below is idempotent (and secret: identities and the record hold keys, never shown in errors) and retried (with_retries) after link trouble: a board whose
# firmware was just stopped may still print into the first one, or reset under it.
FILE_TIMEOUT_S = 10.0  # one small file (an identity, the record) over the REPL


def _read_optional(dut: Dut, path: str) -> bytes | None:
    """The content of the root-level file ``path``, or None when the board has no such file."""
    def read() -> bytes | None:
        if not dut.eval(f"{path.lstrip('/')!r} in __import__('os').listdir('/')", timeout_s=FILE_TIMEOUT_S):
            return None
        return dut.read_file(path, timeout_s=FILE_TIMEOUT_S, secret=True)

    return with_retries(dut, read)


def _write(dut: Dut, path: str, data: bytes) -> None:
    with_retries(dut, lambda: dut.write_file(path, data, timeout_s=FILE_TIMEOUT_S, secret=True))


def _remove(dut: Dut, path: str) -> None:
    with_retries(dut, lambda: dut.remove_file(path, timeout_s=FILE_TIMEOUT_S))


def describe_identity(raw: bytes) -> tuple[str | None, str]:
    """``(device id or None, words for messages)`` of an ``/identity.json`` content; never the key."""
    try:
        ident = parse_identity(raw)
    except IdentityFormatError as exc:
        return None, f"an /identity.json the harness cannot read ({exc})"
    return ident.id, f"{ident.id} (zone {ident.zone}, key fingerprint {ident.fingerprint})"


def _rm_hint(dut: Dut) -> str:
    return f"mpremote connect {shlex.quote(dut.url)} fs rm :{SAVED_PATH}"


def _put_back(dut: Dut, previous: bytes | None) -> None:
    """Make ``/identity.json`` hold ``previous`` (remove it for None), check it, drop the record."""
    if previous is None:
        _remove(dut, IDENTITY_PATH)
    else:
        _write(dut, IDENTITY_PATH, previous)
    if _read_optional(dut, IDENTITY_PATH) != previous:
        raise BoardIdentityError(f"the board on {dut.url} does not hold its own identity after it was written back; "
                                 f"it is still saved in {SAVED_PATH} on the board", port=dut.url, reason="restore")
    _remove(dut, SAVED_PATH)


def recover_interrupted(dut: Dut) -> bool:
    """Put back the identity an interrupted run replaced (its :data:`SAVED_PATH` record), if any.

    Returns:
        True when the board's own identity was written back.

    Raises:
        BoardIdentityError: a record is there but cannot be applied safely: unreadable, or the board
            holds a valid identity that is neither the one the harness wrote nor the saved one
            (provisioned anew since).
    """
    raw = _read_optional(dut, SAVED_PATH)
    if raw is None:
        return False
    try:
        saved = SavedIdentity.from_json(raw)
    except ValueError:
        raise BoardIdentityError(
            f"the board on {dut.url} holds {SAVED_PATH}, an identity saved by an interrupted test run, but it cannot "
            f"be read; look at it (it may hold the board's own identity and key), then remove it ({_rm_hint(dut)})",
            port=dut.url, reason="saved-record") from None
    current = _read_optional(dut, IDENTITY_PATH)
    if current == saved.previous:  # the test identity was never written, or it was already put back
        _remove(dut, SAVED_PATH)
        return False
    # Refused only over a valid identity other than the test one (provisioned anew since): a missing or
    # broken /identity.json (a write cut short) cannot run the board, so the saved one goes back.
    if current is not None and _sha256(current) != saved.written and describe_identity(current)[0] is not None:
        now = "no /identity.json" if current is None else describe_identity(current)[1]
        before = "no identity" if saved.previous is None else describe_identity(saved.previous)[1]
        raise BoardIdentityError(
            f"the board on {dut.url} holds {SAVED_PATH}: an interrupted test run replaced its identity "
            f"{before}, but the board now holds {now}, not the test identity that run wrote, so the harness does not "
            f"put the saved one back; once the board holds the identity it should have, remove the record "
            f"({_rm_hint(dut)})", port=dut.url, reason="saved-record",
            device_id=None if saved.previous is None else describe_identity(saved.previous)[0])
    _put_back(dut, saved.previous)
    what = "removed the test identity" if saved.previous is None else (
        f"put back its identity {describe_identity(saved.previous)[1]}")
    log.warning("the board on %s still held the test identity of an interrupted run: %s", dut.url, what)
    return True


def check_board_identity(dut: Dut, *, reprovision: bool) -> bytes | None:
    """Put back what an interrupted run left (:func:`recover_interrupted`), then check the test identity
    may be written: returns the board's ``/identity.json`` content (None: it has none).

    Raises:
        BoardIdentityError: the board has an identity and ``reprovision`` is False; or its outbox holds
            reports framed under its own key (the firmware would drop them once it runs under the test
            key); or an interrupted run's record cannot be applied.
    """
    recover_interrupted(dut)
    current = _read_optional(dut, IDENTITY_PATH)
    if current is None:
        return None
    device_id, words = describe_identity(current)
    if not reprovision:
        raise BoardIdentityError(
            f"the board on {dut.url} is provisioned as {words}; a test would replace its identity and key with a "
            f"test identity, which the board's own gateway does not know. Pass {OPT_IN} to allow it (the board's "
            f"identity is saved on the board and in the test's work directory, and put back when the test "
            f"releases the board), or test on a board without /identity.json",
            port=dut.url, reason="provisioned", device_id=device_id)
    unsent = count_outbox(dut)
    if unsent:
        raise BoardIdentityError(
            f"the board on {dut.url} ({words}) holds {unsent} un-sent report(s) in its outbox, framed under its "
            "own key: under the test identity its firmware would drop them at boot. Let it deliver them to its "
            f"gateway first, then run again with {OPT_IN}", port=dut.url, reason="unsent", device_id=device_id)
    return current


def install_test_identity(dut: Dut, handle: BoardHandle, *, reprovision: bool) -> None:
    """Write ``handle.identity`` as the board's ``/identity.json``, saving what it replaces.

    Raises:
        BoardIdentityError: see :func:`check_board_identity`.
    """
    current = check_board_identity(dut, reprovision=reprovision)
    new = json.dumps(handle.identity, sort_keys=True).encode()
    backup: Path | None = None
    if current is not None:
        backup = handle.workdir / HOST_BACKUP_NAME
        try:  # a new file, never one already there (an earlier run's backup is kept; a link is not followed)
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise BoardIdentityError(
                f"{backup} already exists (a board identity an earlier run could not put back?); move it away "
                "and run again", port=dut.url, reason="backup-exists", device_id=describe_identity(current)[0]) from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(current)
        log.warning("replacing the identity %s of the board on %s for the test (saved in %s on the board and in %s)",
                    describe_identity(current)[1], dut.url, SAVED_PATH, backup)
    saved = SavedIdentity(current, _sha256(new))
    # Known to the teardown before anything is written: whichever write fails, restore_identity puts
    # ``previous`` back and removes the record (which holds the key) instead of leaving it on the board.
    handle.extras["saved_identity"] = saved
    handle.extras["identity_backup"] = backup
    # The record first: a run that dies after this point is undone by the next one (recover_interrupted).
    _write(dut, SAVED_PATH, saved.to_json())
    _write(dut, IDENTITY_PATH, new)


def restore_identity(dut: Dut, handle: BoardHandle) -> bool:
    """Put back what :func:`install_test_identity` replaced (the caller restarts the firmware: it holds
    the test key until then). True when there was something to put back.

    Raises:
        BoardIdentityError: it could not be put back (the message says where it is saved).
        DutError: the link failed (the record on the board stays for the next run).
    """
    saved = handle.extras.get("saved_identity")
    if not isinstance(saved, SavedIdentity):
        return False
    _put_back(dut, saved.previous)
    handle.extras.pop("saved_identity")
    # Confirmed on the board: the host copy (which holds the key) is not left among the test's artifacts.
    backup = handle.extras.pop("identity_backup", None)
    if isinstance(backup, Path):
        backup.unlink(missing_ok=True)
    return True
