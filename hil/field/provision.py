"""Provision a board: identity + key on the device, the device in the gateway registry.

Idempotent: running it again with the same id on a board that already holds that id, and is
registered with the same key, changes nothing. A board holding a different identity is only
re-provisioned with ``force``.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from gateway.registry import same_decimal
from hil.dut import Dut
from hil.field.device import count_outbox, read_identity, write_identity
from hil.field.errors import DamagedIdentityError, DeviceIOError, IdentityExistsError, UnsentReportsError
from hil.field.identity import Identity, differing_fields, new_identity
from hil.field.provision_write import (
    Restore, check_identity_room, gateway_holds_own_key, previous_registration, restore_in_registry, restore_through,
    undo_failed_write,
)
from hil.field.registration import Registration, register_device, registered_device
from hil.field.seq_floor import raise_board_seq

log = logging.getLogger(__name__)

# Registers an identity with the gateway: (identity, force) -> what happened. Either a registry
# directory (register_device) or the gateway's admin API (registration.AdminApiRegistrar).
Registrar = Callable[[Identity, bool], Registration]


@dataclass(frozen=True)
class ProvisionResult:
    """What provisioning did.

    Attributes:
        identity: the identity now on the board (``repr`` hides the key).
        device_changed: /identity.json was written.
        registration: what happened in the registry.
        replaced: the identity the board held before, when it was replaced (``repr`` hides the key);
            when its id differs, that id stays registered with the old key (see
            :func:`hil.field.registration.old_id_status`).
        seq: the board's seq reservation (before, after) when a seq floor was given, else None.
    """

    identity: Identity
    device_changed: bool
    registration: Registration
    replaced: Identity | None = None
    seq: tuple[int, int] | None = None

    def label(self) -> str:
        """The short label for the pole: id, zone, key fingerprint (never the key)."""
        return f"{self.identity.id} | zone {self.identity.zone} | key {self.identity.fingerprint}"


def provision_board(dut: Dut, *, device_id: str, kind: str, zone: str, lat: str, lon: str,
                    registry_dir: Path | None = None, registrar: Registrar | None = None,
                    force: bool = False, take_over: bool = False, discard_unsent: bool = False,
                    on_registering: Callable[[], None] | None = None,
                    seq_floor: int | None = None) -> ProvisionResult:
    """Give the board an identity and register it.

    Args:
        dut: an open board.
        device_id, kind, zone, lat, lon: the identity fields (kind from the board definition).
        registry_dir: the gateway's registry directory, or
        registrar: another way to register (e.g. :class:`hil.field.registration.AdminApiRegistrar`).
        force: replace an identity the board already has (and, for its own id, its registration's key),
            or a damaged one (whose id cannot be read: no registration is replaced for it; the new id is
            registered as for an unprovisioned board).
        take_over: also replace a registration of the id made with a key this board does not hold
            (another board's: that board is refused from then on).
        discard_unsent: replace the key of a board whose outbox still holds un-sent reports (framed
            under its current key, the firmware drops them at its next boot).
        on_registering: called just before a new key is registered (the board is written after it):
            from then on an interruption or failure leaves the registry holding a key the board does
            not have, and only a re-run with ``force`` and ``take_over`` repairs it (except a write the
            board refused, whose registration is put back when it is known: see DeviceIOError).
        seq_floor: the highest seq the gateway stored under ``device_id`` (or one above which the board
            must count): the board's seq counter is raised so its next report is above it, never lowered
            (:func:`hil.field.seq_floor.raise_board_seq`); None leaves the counter as it is.

    Raises:
        IdentityExistsError: the board has a different identity and ``force`` is not set.
        UnsentReportsError: the board's identity would be replaced while its outbox holds reports
            (``details["unsent"]``) and ``discard_unsent`` is not set; nothing was changed.
        IdentityFormatError: a field is malformed.
        DamagedIdentityError: the board's identity file is malformed and ``force`` is not set.
        GatewayRegistrationError: the registry refused the device (``conflict``: the id is registered
            with another board's key and ``take_over`` is not set).
        BoardFullError: the board's flash has no room for the new identity; nothing was changed.
        DeviceIOError: the board could not be read or written; when the write of the new identity failed
            on a board that still holds its identity as before, the id's previous registration is put back
            (``details["registry_restored"]``) when it is proven: the one the registry directory held, or
            behind the admin API the board's own key the gateway confirmed holding; and only while the
            registry still holds the new key (else ``details["registry_changed"]``: kept as it is;
            ``details["registry_ended"]`` ``revoked``/``retired`` when the id was so meanwhile). Behind the
            admin API that check and the put-back are one compare-and-swap request; a gateway older than
            it gets nothing put back.
            Behind the admin API an id the gateway holds with another key than the board's needs
            ``take_over`` (GatewayRegistrationError ``conflict``), as with a registry directory.
    """
    if (registry_dir is None) == (registrar is None):
        raise ValueError("pass exactly one of registry_dir and registrar")
    restore: Restore
    if registrar is not None:
        register = registrar
        restore = restore_through(registrar)
    else:
        directory = Path(str(registry_dir))

        def register(ident: Identity, replace: bool) -> Registration:
            return register_device(directory, ident, force=replace)

        def restore(previous: Identity, registered_now: Identity) -> None:
            restore_in_registry(directory, previous, registered_now)

    wanted = new_identity(device_id=device_id, kind=kind, zone=zone, lat=lat, lon=lon)
    try:
        current = read_identity(dut)
    except DamagedIdentityError:
        if not force:
            raise
        log.warning("replacing the damaged identity on %s (its old id cannot be read)", dut.url)
        current = None
    registered = registered_device(Path(str(registry_dir)), device_id) if registry_dir is not None else None
    # The same place written differently (52.37 / 52.370) is the same place: keep the text already
    # on the board or in the registry, which compares its location as text.
    for have in (current if current is not None and current.id == device_id else None, registered):
        if have is not None and same_decimal(have.lat, lat) and same_decimal(have.lon, lon):
            wanted = replace(wanted, lat=have.lat, lon=have.lon)
    if current is not None and not force:
        differ = differing_fields(current, wanted)
        if differ:
            raise IdentityExistsError(
                f"this board is already provisioned as {current.id} (zone {current.zone}, location {current.lat},"
                f"{current.lon}, key {current.fingerprint}); the requested identity differs in {', '.join(differ)}; "
                "pass --force to replace it (the old identity stops reporting)",
                existing_id=current.id, requested_id=device_id, differs=differ)
        # Same identity already there: keep its key, just make sure the registry has it (and that the
        # board counts above the seqs stored under its id: its flash may have been erased and restored).
        seq = raise_board_seq(dut, seq_floor) if seq_floor is not None else None
        registration = register(current, False)
        log.info("board %s already provisioned; registry %s", current.id, registration.value)
        return ProvisionResult(current, False, registration, seq=seq)
    # Replacing a registration rotates its key: fine for this board's own id (re-keying it), but an
    # id registered with a key this board does not hold belongs to another board: take_over only.
    # (Behind the admin API the gateway is asked below, once the board is known to have room.)
    own_id = current is not None and current.id == device_id and (
        registered is None or (registered.key is not None and hmac.compare_digest(registered.key, current.key)))
    if current is not None and not discard_unsent:
        # Frames are framed under the board's key: with a new one the firmware drops them at boot.
        unsent = count_outbox(dut)
        if unsent:
            raise UnsentReportsError(
                f"the board holds {unsent} un-sent report(s) in its outbox, framed under its current key; a new key "
                "makes the firmware drop them at its next boot", unsent=unsent, device_id=current.id)
    # The counter first: raised, it only skips seqs, so an interruption after it changes nothing else.
    seq = raise_board_seq(dut, seq_floor) if seq_floor is not None else None
    # Room for the new identity first: registering a key the board then cannot store helps nobody.
    check_identity_room(dut, wanted)
    if registrar is not None:
        # The admin API cannot be read: the gateway is asked whether it holds the board's own key (a
        # rotated-away key, another gateway's board: --take-over, and nothing of before to put back).
        own_id, previous = gateway_holds_own_key(registrar, wanted, current)
    else:
        previous = previous_registration(device_id, registered)
    # Register first: a board holding a key the gateway does not know would report into the void.
    if on_registering is not None:
        on_registering()
    registration = register(wanted, own_id or take_over)
    try:
        write_identity(dut, wanted)
    except DeviceIOError as exc:
        error = undo_failed_write(dut, exc, current=current, wanted=wanted, previous=previous, restore=restore)
        if error is not None:
            raise error from None
    written = read_identity(dut)
    if written != wanted:
        raise DeviceIOError("the identity read back from the board differs from the one written; retry",
                            port=dut.url)
    return ProvisionResult(wanted, True, registration, current, seq)
