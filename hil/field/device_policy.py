"""The device's copy of the privacy policy: ``firmware/policy.json`` less what the firmware drops at load.

The firmware parses ``/policy.json`` whole at boot, then drops each field's documentation-only keys
(``civic.policy._DOC_ONLY``: label, unit, source, purpose, retention_days, valid_range) and the
top-level text for people (``civic.policy._DOC_ONLY_TOP``: statement, not_collected, recipients).
Boot's heap high-water (the firmware's peak) pays for the whole text and the parsed keys, so ``flash``
(and the simulator's and QEMU's installs, through :func:`hil.field.firmware_copy.stage_firmware`) writes
:func:`device_policy_bytes` instead: the same rules, without those keys, compact. So a change of the
wording of those keys (the recipients' lines, the statement) leaves the device copy's bytes, and what
``civicedge check`` expects a board to hold, as they were. The full policy stays where people read it:
the repository's ``firmware/policy.json`` and the gateway's ``/transparency`` page and ``/policy.json``.

The key lists have one source, the firmware: :func:`doc_only_keys` and :func:`doc_only_top_keys` read
the tuples out of ``lib/civic/policy.py`` of the firmware tree being installed, with :mod:`ast`. The
firmware module is not imported on the host: it is MicroPython code (a ``civic`` package on ``sys.path``
would shadow or be shadowed by host packages, and importing runs device code); the tuples are literals,
which ``ast`` reads without running anything, and a tree whose tuple is not a literal is refused (a
tree without ``_DOC_ONLY``, too; one without ``_DOC_ONLY_TOP`` is a firmware older than that tuple,
which drops no top-level key).
"""

from __future__ import annotations

import ast
import copy
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from gateway.errors import ConfigError
from gateway.policy_check import check_policy
from gateway.resources import firmware_dir
from gateway.small_files import loads_json
from hil.field.errors import FieldError

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()  # policy warnings said already (source, message)

#: Where the policy lives on the device.
POLICY_DEVICE_PATH = "/policy.json"
#: The firmware module holding the ``_DOC_ONLY`` tuple, relative to the firmware tree.
POLICY_MODULE = Path("lib") / "civic" / "policy.py"
_DOC_ONLY_NAME = "_DOC_ONLY"
_DOC_ONLY_TOP_NAME = "_DOC_ONLY_TOP"


class DevicePolicyError(FieldError):
    """The device copy of the policy cannot be made (policy not JSON, a field's release breaking the
    release rules, key list unreadable).

    Attributes (in ``details``):
        path: the file concerned.
        key: for a release-rule problem, the dotted policy key at fault (``kinds.bin.fields.lid.release``).
    """


def _policy_module(firmware_root: Path | None) -> ast.Module:
    """The tree's ``civic/policy.py``, parsed (read once for both of its key tuples).

    Raises:
        DevicePolicyError: the module cannot be read or parsed.
    """
    module = (firmware_root or firmware_dir()) / POLICY_MODULE
    try:
        return ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise DevicePolicyError(f"cannot read the policy keys the firmware drops from {module}: {exc}",
                                path=str(module)) from exc


def _firmware_tuple(tree: ast.Module, firmware_root: Path | None, name: str) -> tuple[str, ...] | None:
    """The tuple of strings assigned to ``name`` at the top of ``tree``, the parsed ``civic/policy.py`` of
    ``firmware_root`` (``name = ...`` or annotated, ``name: tuple[str, ...] = ...``), None when ``name`` is
    not assigned there.

    Raises:
        DevicePolicyError: ``name`` is assigned something other than a literal tuple of strings.
    """
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:  # (an annotation alone assigns nothing)
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and target.id == name):
            continue
        try:
            keys = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise _no_tuple(firmware_root, name) from exc
        if isinstance(keys, tuple) and all(isinstance(k, str) for k in keys):
            return keys
        raise _no_tuple(firmware_root, name)
    return None


def _no_tuple(firmware_root: Path | None, name: str) -> DevicePolicyError:
    """The error for a firmware tree whose ``civic/policy.py`` assigns ``name`` no literal tuple of strings."""
    module = (firmware_root or firmware_dir()) / POLICY_MODULE
    return DevicePolicyError(f"{module} has no {name} = (a tuple of key names): the device copy of "
                             "the policy cannot be made without the list of keys the firmware drops",
                             path=str(module))


def doc_only_keys(firmware_root: Path | None = None) -> tuple[str, ...]:
    """The field keys the firmware of ``firmware_root`` drops when it loads its policy.

    Args:
        firmware_root: a firmware tree (default: this host's ``firmware/``).

    Returns:
        ``civic.policy._DOC_ONLY`` of that tree, in its order.

    Raises:
        DevicePolicyError: the module is missing, or has no ``_DOC_ONLY`` assigned a tuple of strings.
    """
    return _doc_only(_policy_module(firmware_root), firmware_root)


def _doc_only(tree: ast.Module, firmware_root: Path | None) -> tuple[str, ...]:
    """:func:`doc_only_keys` of the parsed module ``tree``."""
    keys = _firmware_tuple(tree, firmware_root, _DOC_ONLY_NAME)
    if keys is None:
        raise _no_tuple(firmware_root, _DOC_ONLY_NAME)
    return keys


def doc_only_top_keys(firmware_root: Path | None = None) -> tuple[str, ...]:
    """The top-level policy keys the firmware of ``firmware_root`` drops when it loads its policy.

    Args:
        firmware_root: a firmware tree (default: this host's ``firmware/``).

    Returns:
        ``civic.policy._DOC_ONLY_TOP`` of that tree, in its order; empty for a firmware without it
        (older than the tuple: it drops none, and reads none of them either).

    Raises:
        DevicePolicyError: the module is missing, or assigns ``_DOC_ONLY_TOP`` something other than a
            tuple of strings.
    """
    return _doc_only_top(_policy_module(firmware_root), firmware_root)


def _doc_only_top(tree: ast.Module, firmware_root: Path | None) -> tuple[str, ...]:
    """:func:`doc_only_top_keys` of the parsed module ``tree``."""
    return _firmware_tuple(tree, firmware_root, _DOC_ONLY_TOP_NAME) or ()


def device_policy(policy: Mapping[str, Any], doc_only: Iterable[str],
                  doc_only_top: Iterable[str] = ()) -> dict[str, Any]:
    """The device copy of a parsed ``policy``: without the top-level keys in ``doc_only_top``, and every
    field spec without the keys in ``doc_only``.

    Only what the firmware drops is dropped (a field spec of every kind, as ``civic.policy`` does for its
    own kind); anything else, malformed parts included, is kept as it is, so the firmware refuses a bad
    policy exactly as it would the full one. ``policy`` is not modified.
    """
    doc: dict[str, Any] = copy.deepcopy(dict(policy))
    for key in doc_only_top:
        doc.pop(key, None)
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
        firmware_root: the firmware tree the copy is for (its ``_DOC_ONLY`` and ``_DOC_ONLY_TOP``;
            default ``firmware/``).
        source: the file ``text`` came from, for the error message.

    Raises:
        DevicePolicyError: ``text`` is not a JSON object (or is nested too deeply), or the gateway would refuse it
            (:func:`gateway.policy_check.check_policy`: shape, ranges, release rules; ``key`` in
            ``details``), or the firmware's key list cannot be read.
    """
    try:  # the shared parser: a policy nested thousands deep is "nested too deeply", not a RecursionError
        doc = loads_json(text)
    except ValueError as exc:  # UnicodeDecodeError and NestedTooDeeplyError included
        raise DevicePolicyError(f"{source} is not valid JSON ({exc}); the device would refuse it", path=source) from exc
    if not isinstance(doc, dict):
        raise DevicePolicyError(f"{source} is not a JSON object; the device would refuse it", path=source)
    try:  # a policy the gateway refuses (shape, ranges, release rules) never reaches a board
        for warning in check_policy(doc):  # taken, but the technician hears what `gateway run --check` says
            if (source, warning.message) not in _warned:  # once a process: check, a fleet, a QEMU image stage it too
                _warned.add((source, warning.message))
                log.warning("%s: %s", source, warning.message)
    except ConfigError as exc:
        raise DevicePolicyError(f"{source}: {exc}; the device would refuse it", path=source, key=exc.key) from exc
    tree = _policy_module(firmware_root)  # read and parsed once for both key lists
    stripped = device_policy(doc, _doc_only(tree, firmware_root), _doc_only_top(tree, firmware_root))
    return json.dumps(stripped, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
