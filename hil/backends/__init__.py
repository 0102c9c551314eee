"""Board backends of the HIL harness: where a board under test runs.

* ``sim``: virtual boards (:mod:`hil.sim`), every capability.
* ``qemu``: Espressif QEMU on a flash image we build (:mod:`hil.backends.qemu`).
* ``serial``: real boards over USB serial or ``rfc2217://`` (:mod:`hil.backends.serial`).

Each publishes a :class:`~hil.backends.capabilities.CapabilityManifest` the pytest plugin matches
against ``@pytest.mark.requires(...)``.
"""

from __future__ import annotations

from hil.backends.capabilities import (
    BACKENDS,
    KNOWN_CAPABILITIES,
    CapabilityManifest,
    manifest_for,
)

__all__ = ["BACKENDS", "KNOWN_CAPABILITIES", "CapabilityManifest", "manifest_for"]
