"""Writing a new identity onto a board that may have no room for it: the free-flash check made before
a key is registered, which registration a failed write may put back (only one proven to be the one the
gateway held before), and what a failed write leaves behind (its ``.part`` temp file, a registry holding
a key the board does not have) put back as it was.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Callable

from gateway.errors import RegistryError
from gateway.registry import Registry
from hil.dut import Dut
from hil.dut.errors import DeviceDisconnectedError, DeviceTimeoutError, DutError
from hil.errors import HilError
from hil.field.device import IDENTITY_PATH
from hil.field.errors import BoardFullError, DeviceIOError, FieldError, GatewayRegistrationError, IdentityFormatError
from hil.field.firmware_copy import ROOM_MARGIN_BLOCKS, read_space
from hil.field.identity import Identity, parse_identity
from hil.field.registration import Registered, Registration

log = logging.getLogger(__name__)

PART_PATH = IDENTITY_PATH + ".part"  # hil.dut.Dut.write_file writes here, then renames
# Each board call after a failed write: a dead link ends the clean-up within seconds, not minutes.
CLEANUP_TIMEOUT_S = 5.0

Registrar = Callable[[Identity, bool], Registration]
# Puts ``previous`` back while the registry still holds ``registered_now`` (else GatewayRegistrationError).
Restore = Callable[[Identity, Identity], None]

_SIZES = f"""\
import os
def _civic_size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return -1
print(repr([_civic_size({IDENTITY_PATH!r}), _civic_size({PART_PATH!r})]))
del _civic_size
"""

def check_identity_room(dut: Dut, identity: Identity) -> None:
    """Refuse, before anything is registered, a board whose flash has no room for the new
    ``/identity.json`` (written to a temp file next to the old one, then renamed over it; LittleFS also
    needs a few blocks for its own records, as ``flash`` counts them). Only a board that cannot say
    (no ``os.statvfs``) passes unchecked: the write itself then says it.

    Raises:
        BoardFullError: not enough free blocks (``free_kb``, ``need_kb``).
        DeviceIOError: the link was lost or the board's answer garbled; nothing was registered.
    """
    try:
        space = read_space(dut, [PART_PATH])
    except (DeviceDisconnectedError, DeviceTimeoutError) as exc:
        raise DeviceIOError(
            f"the connection to the board on {dut.url} was lost while checking its free flash ({type(exc).__name__}); "
            "nothing was registered and the board's identity is unchanged; check the cable and retry",
            port=dut.url, link_lost=True) from None
    except (DutError, ValueError) as exc:
        raise DeviceIOError(
            f"cannot read the free flash of the board on {dut.url} ({type(exc).__name__}: a noisy link?); nothing "
            "was registered and the board's identity is unchanged; check the cable and retry", port=dut.url) from None
    if space is None:
        log.info("the board on %s cannot say its free space (no os.statvfs)", dut.url)
        return
    block, avail, have = space
    need = -(-len(identity.to_json_bytes()) // block) + ROOM_MARGIN_BLOCKS
    free = avail + -(-have.get(PART_PATH, 0) // block)  # a stale temp file is overwritten: its blocks count
    if need > free:
        port = shlex.quote(dut.url)
        raise BoardFullError(
            f"the board's filesystem is full ({free * block // 1024} KB free, its new {IDENTITY_PATH} needs "
            f"{need * block // 1024} KB with the filesystem's own records): nothing was registered and the board's "
            f"identity is unchanged; remove files (mpremote connect {port} fs ls : lists them, mpremote connect "
            f"{port} fs rm ':PATH' removes one), then run provision again", port=dut.url,
            free_kb=free * block // 1024, need_kb=need * block // 1024)


def previous_registration(identity_id: str, registered: Registered | None) -> Identity | None:
    """The registration of ``identity_id`` the registry directory held (``registered``, with its key)
    to put back should the board not take its new identity, or None when there is none to put back
    (not registered, revoked, retired, or without a usable key)."""
    if registered is None or registered.key is None or registered.revoked or registered.retired:
        return None
    return Identity(id=identity_id, kind=registered.kind, zone=registered.zone, lat=registered.lat,
                    lon=registered.lon, key=registered.key)


def gateway_holds_own_key(registrar: Registrar, wanted: Identity,
                          current: Identity | None) -> tuple[bool, Identity | None]:
    """Behind the admin API, where the registration cannot be read: whether the board re-keys its own
    registration (``own``: the id may be replaced without ``--take-over``) and the registration proven to
    be the one the gateway holds now (to put back after a failed write), as the registry directory path
    reads them. Only the board's own id is asked, and nothing is ever added by asking (the caller has not
    said yet that it registers). A gateway with the compare-and-swap (``replace_expecting``) is asked to
    replace the board's key by itself: ``unchanged`` proves it holds it, ``unknown_device`` that it does
    not (nothing to put back), ``conflict`` that the id holds another board's key (or a rotated one):
    ``--take-over`` then, as with ``--registry``. An older gateway: not registered there (``highest_seq``
    None), nothing to put back; else registering the board's own key unchanged proves the gateway holds
    it (and a ``conflict`` it does not). One that cannot say (``highest_seq`` failed or missing) is not
    asked by registering anything (that would add the key for an id it does not hold): ``(False, None)``.

    Raises:
        GatewayRegistrationError: the gateway refused or did not answer (nothing was registered).
    """
    if current is None or current.id != wanted.id:
        return False, None
    held = replace(wanted, key=current.key)  # the registration asked for, with the board's key
    probe = getattr(registrar, "replace_expecting", None)
    if callable(probe):
        try:
            probe(held, held)  # never added, never replaced: the key it expects is the one it would put
            return True, held
        except GatewayRegistrationError as exc:
            reason = exc.details.get("reason")
            if reason == "unknown_device":
                return True, None  # not registered there: registering adds it, nothing to put back
            if reason == "conflict":
                return False, None  # another key: not this board's registration
            if reason != "no_compare_and_swap":
                raise
    highest_seq = getattr(registrar, "highest_seq", None)
    where = getattr(registrar, "base_url", "the gateway")
    if not callable(highest_seq):
        return False, None  # cannot ask without registering: as another board's id (--take-over)
    try:
        if highest_seq(wanted.id) is None:
            return True, None  # not registered there: registering adds it, nothing to put back
    except GatewayRegistrationError as exc:
        # Registering the board's key to find out would add it for an id the gateway does not hold, before
        # the caller knows anything is registered: nothing is asked, as for another board's id.
        log.warning("cannot ask %s whether it holds %s (%s): re-keying it needs --take-over, and nothing is put "
                    "back should the board refuse its new identity", where, wanted.id, exc)
        return False, None
    try:
        outcome = registrar(held, False)
    except GatewayRegistrationError as exc:
        if exc.details.get("reason") == "conflict":
            return False, None  # another key: not this board's registration
        raise
    if outcome is Registration.UNCHANGED:
        return True, held
    # Added (deleted since highest_seq, on a gateway without the compare-and-swap): now it holds the key on
    # the board, not a registration of before.
    log.info("%s was not registered at the gateway; registered with the board's key", wanted.id)
    return True, None


def restore_in_registry(directory: Path, previous: Identity, registered_now: Identity) -> None:
    """Put ``previous`` back in the registry directory, only while it holds ``registered_now``'s key
    (checked under its write lock: a take-over or key rotation made meanwhile is kept).

    Raises:
        GatewayRegistrationError: ``conflict``/``unknown_device`` (changed meanwhile: left as it is), or
            the registry could not be opened or written.
    """
    try:
        reg = Registry(directory, create=False)
    except RegistryError as exc:
        raise GatewayRegistrationError(f"cannot open registry {directory}: {exc}", reason=exc.reason) from exc
    try:
        reg.enroll(previous.id, kind=previous.kind, zone=previous.zone, lat=previous.lat, lon=previous.lon,
                   key=previous.key, replace=True, expect_key=registered_now.key)
    except RegistryError as exc:
        raise GatewayRegistrationError(str(exc), device_id=previous.id, reason=exc.reason) from exc
    finally:
        reg.close()


def restore_through(registrar: Registrar) -> Restore:
    """:data:`Restore` behind the admin API: one compare-and-swap request (``replace_expecting``: the
    gateway replaces the key only while it still holds the one registered, under its write lock).

    Raises (from the restore): GatewayRegistrationError ``no_compare_and_swap`` when the registrar or
    the gateway cannot (an older gateway: nothing is put back, its registration is left as it is)."""

    def restore(previous: Identity, registered_now: Identity) -> None:
        swap = getattr(registrar, "replace_expecting", None)
        if not callable(swap):
            raise GatewayRegistrationError(f"{previous.id} cannot be put back by a compare-and-swap here",
                                           device_id=previous.id, reason="no_compare_and_swap")
        swap(previous, registered_now)

    return restore


def _read(dut: Dut, path: str, size: int) -> Identity | None:
    """The identity in ``path`` (``size`` from stat; -1 missing), or None when missing or not one."""
    if size < 0:
        return None
    try:
        return parse_identity(dut.read_file(path, timeout_s=CLEANUP_TIMEOUT_S, secret=True))
    except IdentityFormatError:
        return None


def undo_failed_write(dut: Dut, exc: DeviceIOError, *, current: Identity | None, wanted: Identity,
                      previous: Identity | None, restore: Restore) -> FieldError | None:
    """What a failed ``/identity.json`` write after the new key was registered leaves: None when the
    board holds ``wanted`` after all (its answer was lost after the rename: provisioned), else the error
    to raise. The board is read back first (each call bounded: a dead link ends it in seconds); its temp
    file is removed unless it is the only copy of the new identity (``/identity.json`` gone: kept, and
    said). When the board still holds ``current`` and ``previous`` is known, the registry gets
    ``previous`` back while it still holds ``wanted`` (``details["registry_restored"]``); a registration
    changed meanwhile is kept (``details["registry_changed"]``). A lost link: ``exc`` as it was (the
    caller says how to finish the provisioning)."""
    if exc.details.get("link_lost"):
        return exc
    try:
        target_size, part_size = dut.eval_code(_SIZES, timeout_s=CLEANUP_TIMEOUT_S)
        on_board = _read(dut, IDENTITY_PATH, int(target_size))
        part = _read(dut, PART_PATH, int(part_size))
    except (DutError, TypeError, ValueError) as err:
        log.info("cannot read the identity back from %s: %s", dut.url, err)
        return exc  # nothing proven: the .part may be the only copy, and the registry keeps the new key
    if part is not None and part == wanted and on_board is None and int(target_size) < 0:
        return DeviceIOError(
            f"{exc}; the board has no {IDENTITY_PATH} now and its new identity (key {wanted.fingerprint}, the one "
            f"registered) is only in {PART_PATH}, which was kept", **{**exc.details, "part_kept": True})
    if int(part_size) >= 0:
        try:
            dut.remove_file(PART_PATH, timeout_s=CLEANUP_TIMEOUT_S)
        except DutError as err:
            log.info("could not remove %s on %s: %s", PART_PATH, dut.url, err)
    if on_board is not None and on_board == wanted:
        log.info("the board on %s holds its new identity despite the error: %s", dut.url, exc)
        return None
    if previous is None or current is None or on_board != current:
        return exc
    try:
        restore(previous, wanted)
    except GatewayRegistrationError as err:
        reason = err.details.get("reason")
        if reason in ("conflict", "unknown_device"):
            log.warning("registration of %s changed meanwhile, not put back: %s", previous.id, err)
            return DeviceIOError(
                f"{exc}; the board's identity is unchanged; the registry was not put back: {previous.id} was "
                "changed meanwhile (another take-over, a key rotation or a revocation), which is kept",
                **{**exc.details, "registry_changed": True})
        if reason in ("revoked", "retired"):
            # Ended meanwhile by whoever administers the gateway: nothing to put back, and a take-over of a
            # revoked id is refused (a retired one needs its reinstatement first): no advice to retry.
            log.warning("%s was %s meanwhile, not put back: %s", previous.id, reason, err)
            return DeviceIOError(
                f"{exc}; the board's identity is unchanged; {previous.id} was {reason} meanwhile at the gateway, "
                "which is kept: nothing was put back", **{**exc.details, "registry_ended": reason})
        if reason == "no_compare_and_swap":
            log.warning("registration of %s not put back: %s", previous.id, err)
            return DeviceIOError(
                f"{exc}; the board's identity is unchanged; the previous registration of {previous.id} was not "
                f"put back ({err}): the gateway still holds the new key", **exc.details)
        log.warning("could not put the registration of %s back: %s", previous.id, err)
        return DeviceIOError(f"{exc}; putting the previous registration of {previous.id} back failed ({err})",
                             **exc.details)
    except HilError as err:
        log.warning("could not put the registration of %s back: %s", previous.id, err)
        return DeviceIOError(f"{exc}; putting the previous registration of {previous.id} back failed ({err})",
                             **exc.details)
    log.info("registration of %s put back (key %s)", previous.id, previous.fingerprint)
    return DeviceIOError(f"{exc}; the registry was restored ({previous.id} is registered with key "
                         f"{previous.fingerprint} again, as before) and the board's identity is unchanged",
                         **{**exc.details, "registry_restored": True})
