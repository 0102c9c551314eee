"""Writing a new identity onto a board that may have no room for it: the free-flash check made before
a key is registered, and what a failed write leaves behind (its ``.part`` temp file, a registry holding
a key the board does not have) put back as it was.
"""

from __future__ import annotations

import logging
import shlex
from typing import Callable

from hil.dut import Dut
from hil.dut.errors import DutError
from hil.field.device import IDENTITY_PATH, read_identity, with_retries
from hil.errors import HilError
from hil.field.errors import BoardFullError, DeviceIOError, FieldError
from hil.field.identity import Identity
from hil.field.registration import Registered, Registration

log = logging.getLogger(__name__)

PART_PATH = IDENTITY_PATH + ".part"  # hil.dut.Dut.write_file writes here, then renames

# (block size, free blocks, size of a stale .part) or raises: os.statvfs is optional on MicroPython.
_SPACE = """\
import os
def _civic_room(part):
    s = os.statvfs('/')
    try:
        have = os.stat(part)[6]
    except OSError:
        have = 0
    return [s[1] or s[0], s[4], have]
print(repr(_civic_room({part!r})))
del _civic_room
"""

_REMOVE_PART = f"""\
import os
try:
    os.remove({PART_PATH!r})
except OSError:
    pass
"""


def check_identity_room(dut: Dut, identity: Identity) -> None:
    """Refuse, before anything is registered, a board whose flash has no room for the new
    ``/identity.json`` (written to a temp file next to the old one, then renamed over it). A board
    that cannot say (no ``os.statvfs``) passes: the write itself then says it.

    Raises:
        BoardFullError: not enough free blocks (``free_kb``, ``need_kb``).
    """
    try:
        block, avail, stale = with_retries(dut, lambda: dut.eval_code(_SPACE.format(part=PART_PATH), timeout_s=30))
        block, avail, stale = int(block) or 4096, int(avail), int(stale)
    except (DutError, TypeError, ValueError) as exc:
        log.info("cannot read the free space on %s: %s", dut.url, exc)
        return
    size = len(identity.to_json_bytes())
    need = -(-size // block)
    free = avail + -(-stale // block)  # a stale temp file is overwritten: its blocks count as free
    if need > free:
        port = shlex.quote(dut.url)
        raise BoardFullError(
            f"the board's filesystem is full ({free * block // 1024} KB free, its new {IDENTITY_PATH} needs "
            f"{-(-need * block // 1024)} KB): nothing was registered and the board's identity is unchanged; remove "
            f"files (mpremote connect {port} fs ls : lists them, mpremote connect {port} fs rm ':PATH' removes "
            "one), then run provision again", port=dut.url, free_kb=free * block // 1024,
            need_kb=-(-need * block // 1024))


def previous_registration(identity_id: str, registered: Registered | None, current: Identity | None,
                          own_id: bool, *, registry_read: bool) -> Identity | None:
    """The registration of ``identity_id`` to put back should the board not take its new identity, or
    None when it cannot be (the id was not registered: there is nothing to put back, and registering is
    not undone): with the registry directory read (``registry_read``), ``registered`` with its key;
    through the admin API, the board's own identity when it is re-keying its own id (the key on the
    board)."""
    if registry_read:
        if registered is None:
            return None
        if registered.key is None or registered.revoked or registered.retired:
            return None
        return Identity(id=identity_id, kind=registered.kind, zone=registered.zone, lat=registered.lat,
                        lon=registered.lon, key=registered.key)
    if own_id and current is not None and current.id == identity_id:
        return current
    return None


def undo_failed_write(dut: Dut, exc: DeviceIOError, *, current: Identity | None, previous: Identity | None,
                      register: Callable[[Identity, bool], Registration]) -> FieldError:
    """The error of a failed ``/identity.json`` write after the new key was registered. When the board
    refused the write (not a lost link: the board may hold the new identity by the time it answers
    again), its temp file is removed and, when it still holds its identity as before and ``previous``
    is known, the registry gets ``previous`` back (``details["registry_restored"]``). Otherwise ``exc``
    as it was (the caller says how to finish the provisioning)."""
    if exc.details.get("link_lost"):
        return exc
    try:
        with_retries(dut, lambda: dut.exec(_REMOVE_PART, timeout_s=10))
    except DutError as err:
        log.info("could not remove %s on %s: %s", PART_PATH, dut.url, err)
    if previous is None or current is None:
        return exc
    try:
        # Only when the board provably holds what it held: a write cut off at its rename may have
        # given it the new identity, which the registry must then keep.
        unchanged = read_identity(dut) == current
    except HilError as err:
        log.info("cannot read the identity back from %s: %s", dut.url, err)
        return exc
    if not unchanged:
        return exc
    try:
        register(previous, True)
    except HilError as err:
        log.warning("could not put the registration of %s back: %s", previous.id, err)
        return exc
    log.info("registration of %s put back (key %s)", previous.id, previous.fingerprint)
    return DeviceIOError(f"{exc}; the registry was restored ({previous.id} is registered with key "
                         f"{previous.fingerprint} again, as before) and the board's identity is unchanged",
                         **{**exc.details, "registry_restored": True})
