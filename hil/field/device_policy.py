"""The device's copy of the privacy policy: ``firmware/policy.json`` less what the firmware drops at load.

The firmware parses ``/policy.json`` whole at boot, then drops each field's documentation-only keys
(``civic.policy._DOC_ONLY``: label, unit, source, purpose, retention_days, valid_range). Boot's heap
high-water (the firmware's peak) pays for the whole text and the parsed keys, so ``flash`` (and the
simulator's and QEMU's installs, through :func:`hil.field.firmware_copy.stage_firmware`) writes
:func:`device_policy_bytes` instead: the same rules, without those keys, compact. The full policy stays
where people read it: the repository's ``firmware/policy.json`` and the gateway's ``/transparency`` page.

The key list has one source, the firmware: :func:`doc_only_keys` reads the ``_DOC_ONLY`` tuple out of
``lib/civic/policy.py`` of the firmware tree being installed, with :mod:`ast`. The firmware module is
not imported on the host: it is MicroPython code (a ``civic`` package on ``sys.path`` would shadow or be
shadowed by host packages, and importing runs device code); the tuple is a literal, which ``ast`` reads
without running anything, and a tree whose tuple is missing or not a literal is refused.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from gateway.errors import ConfigError
from gateway.policy_rules import check_release_rules
from gateway.resources import firmware_dir
from hil.field.errors import FieldError

#: Where the policy lives on the device.
POLICY_DEVICE_PATH = "/policy.json"
#: The firmware module holding the ``_DOC_ONLY`` tuple, relative to the firmware tree.
POLICY_MODULE = Path("lib") / "civic" / "policy.py"
_DOC_ONLY_NAME = "_DOC_ONLY"


class DevicePolicyError(FieldError):
    """The device copy of the policy cannot be made (policy not JSON, a field's release breaking the
    release rules, key list unreadable).

    Attributes (in ``details``):
        path: the file concerned.
        key: for a release-rule problem, the dotted policy key at fault (``kinds.bin.fields.lid.release``).
    """


def doc_only_keys(firmware_root: Path | None = None) -> tuple[str, ...]:
    """The field keys the firmware of ``firmware_root`` drops when it loads its policy.

    Args:
        firmware_root: a firmware tree (default: this host's ``firmware/``).

    Returns:
        ``civic.policy._DOC_ONLY`` of that tree, in its order.

    Raises:
        DevicePolicyError: the module is missing, or has no ``_DOC_ONLY`` assigned a tuple of strings.
    """
    module = (firmware_root or firmware_dir()) / POLICY_MODULE
    try:
        tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise DevicePolicyError(f"cannot read the policy keys the firmware drops from {module}: {exc}",
                                path=str(module)) from exc
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == _DOC_ONLY_NAME):
            try:
                keys = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(keys, tuple) and all(isinstance(k, str) for k in keys):
                return keys
            break
    raise DevicePolicyError(f"{module} has no {_DOC_ONLY_NAME} = (a tuple of key names): the device copy of "
                            "the policy cannot be made without the list of keys the firmware drops",
                            path=str(module))


def device_policy(policy: Mapping[str, Any], doc_only: Iterable[str]) -> dict[str, Any]:
    """The device copy of a parsed ``policy``: every field spec without the keys in ``doc_only``.

    Only what the firmware drops is dropped (a field spec of every kind, as ``civic.policy`` does for its
    own kind); anything else, malformed parts included, is kept as it is, so the firmware refuses a bad
    policy exactly as it would the full one. ``policy`` is not modified.
    """
    doc: dict[str, Any] = copy.deepcopy(dict(policy))
    drop = tuple(doc_only)
    kinds = doc.get("kinds")
    for spec in kinds.values() if isinstance(kinds, dict) else ():
        fields = spec.get("fields") if isinstance(spec, dict) else None
        for fspec in fields.values() if isinstance(fields, dict) else ():
            if isinstance(fspec, dict):
                for key in drop:
                    fspec.pop(key, None)
    return doc


def device_policy_bytes(text: bytes | str, *, firmware_root: Path | None = None, source: str = "policy.json") -> bytes:
    """The ``/policy.json`` the device receives for the full policy ``text``.

    Compact UTF-8 JSON in the policy's own key order, so the same policy always gives the same bytes
    (and the same hash in ``/firmware.json``), whatever the full file's layout.

    Args:
        text: the full policy file.
        firmware_root: the firmware tree the copy is for (its ``_DOC_ONLY``; default ``firmware/``).
        source: the file ``text`` came from, for the error message.

    Raises:
        DevicePolicyError: ``text`` is not a JSON object, a field's ``release`` is unknown or does not
            match its ``personal`` flag (:func:`gateway.policy_rules.check_release_rules`; ``key`` in
            ``details``), or the firmware's key list cannot be read.
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise DevicePolicyError(f"{source} is not valid JSON ({exc}); the device would refuse it", path=source) from exc
    if not isinstance(doc, dict):
        raise DevicePolicyError(f"{source} is not a JSON object; the device would refuse it", path=source)
    try:  # a people count with an unknown release, or personal without noisy_count, never reaches a board
        check_release_rules(doc)
    except ConfigError as exc:
        raise DevicePolicyError(f"{source}: {exc}; the device would refuse it", path=source, key=exc.key) from exc
    stripped = device_policy(doc, doc_only_keys(firmware_root))
    return json.dumps(stripped, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
