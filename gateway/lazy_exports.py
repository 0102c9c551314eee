"""A package's public names imported from their submodules on first use (PEP 562 ``__getattr__``).

Used where importing every submodule at once would load an optional extra's modules (numpy through
:mod:`gateway.routes`, littlefs through :mod:`hil.backends.qemu`) for a caller that needs none of them.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping


def lazy_attribute(package: str, homes: Mapping[str, str], namespace: dict[str, Any], name: str) -> Any:
    """``package.name``: the attribute of submodule ``homes[name]``, imported now and kept in ``namespace``
    (the package's globals) so the next lookup does not come here.

    Raises:
        AttributeError: ``name`` is not one of the package's lazy names.
    """
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{home}"), name)
    namespace[name] = value
    return value
