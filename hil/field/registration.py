"""Register a provisioned device with the gateway through its registry directory.

The gateway's admin HTTP API has no endpoint to add a device (it can revoke and rotate keys),
so registration goes through the registry directory the gateway reads (on the gateway host,
or a copy synced to it).
"""

from __future__ import annotations

import hmac
import logging
from enum import Enum
from pathlib import Path

from gateway.errors import RegistryError
from gateway.registry import Registry
from hil.field.errors import GatewayRegistrationError
from hil.field.identity import Identity

log = logging.getLogger(__name__)


class Registration(Enum):
    """What registering did."""

    ADDED = "added"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"


def registered_matches(registry_dir: Path, identity: Identity) -> bool | None:
    """None: not registered; True: registered with this exact identity and key; False: differently."""
    reg = _open(registry_dir)
    try:
        rec = reg.lookup(identity.id)
        if rec is None:
            return None
        same_meta = (rec.kind, rec.zone, rec.lat, rec.lon) == (identity.kind, identity.zone, identity.lat, identity.lon)
        return same_meta and not rec.revoked and hmac.compare_digest(reg.key(identity.id), identity.key)
    except RegistryError as exc:
        raise GatewayRegistrationError(f"cannot read registry {registry_dir}: {exc}", registry=str(registry_dir)) from exc
    finally:
        reg.close()


def register_device(registry_dir: Path, identity: Identity, *, force: bool = False) -> Registration:
    """Add ``identity`` to the registry; idempotent for the same identity and key.

    Args:
        registry_dir: the gateway's registry directory.
        identity: the device identity, key included.
        force: replace a different registration of the same id (new key, new metadata).

    Raises:
        GatewayRegistrationError: the id is registered differently and ``force`` is not set,
            or the registry refuses the values.
    """
    state = registered_matches(registry_dir, identity)
    if state is True:
        return Registration.UNCHANGED
    if state is False and not force:
        raise GatewayRegistrationError(
            f"device {identity.id} is already registered with another key or location; "
            "pass --force to replace that registration (the old key stops working)",
            device_id=identity.id)
    reg = _open(registry_dir)
    try:
        rec = reg.lookup(identity.id)
        if rec is None:
            reg.add(identity.id, kind=identity.kind, zone=identity.zone, lat=identity.lat, lon=identity.lon,
                    key=identity.key)
        elif (rec.kind, rec.zone, rec.lat, rec.lon) != (identity.kind, identity.zone, identity.lat, identity.lon):
            raise GatewayRegistrationError(
                f"device {identity.id} is registered as {rec.kind} in zone {rec.zone!r} at {rec.lat},{rec.lon}; "
                "the registry cannot move a device: provision it under a new id, or keep the registered "
                "zone and location", device_id=identity.id)
        else:
            reg.rotate_key(identity.id, key=identity.key)
    except RegistryError as exc:
        raise GatewayRegistrationError(f"the registry refused {identity.id}: {exc}", device_id=identity.id,
                                       reason=exc.reason) from exc
    finally:
        reg.close()
    log.info("registered %s in %s", identity.id, registry_dir)
    return Registration.REPLACED if state is False else Registration.ADDED


def _open(registry_dir: Path) -> Registry:
    if not registry_dir.is_dir():
        raise GatewayRegistrationError(
            f"registry directory {registry_dir} does not exist; pass the gateway's [registry] path",
            registry=str(registry_dir))
    try:
        return Registry(registry_dir)
    except RegistryError as exc:
        raise GatewayRegistrationError(f"cannot open registry {registry_dir}: {exc}", registry=str(registry_dir)) from exc
