"""What is on a board already (chip, board config, identity kind), checked against a board definition.

``flash --firmware-only`` and ``provision --board`` must not put a board definition of another
chip or kind on a board: a config for another chip names GPIOs the chip does not have (or its
flash pins), and an identity of another kind makes the firmware refuse to start.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from hil.boards import BoardDefinition
from hil.dut import Dut
from hil.dut.errors import DutError
from hil.field.chips import CHIPS, chip_profile
from hil.field.device import BOARD_CONFIG_PATH, read_identity, read_text, with_retries
from hil.field.errors import DamagedIdentityError, DeviceIOError, FieldError, WrongChipError, WrongKindError

log = logging.getLogger(__name__)

# MicroPython's machine string is "<board name> with <MCU name>", e.g. "Generic ESP32 module with
# ESP32" or "ESP32C3 module with ESP32C3" (os.uname().machine == sys.implementation._machine).
_MACHINE_RE = re.compile(r"\bwith\s+(ESP32(?:-?[A-Z][0-9]+)?)\s*$", re.I)

_MACHINE_CODE = """\
import sys
try:
    import os
    _m = os.uname().machine
except (AttributeError, ImportError):
    _m = getattr(sys.implementation, '_machine', None)
print(repr(_m))
del _m
"""


def chip_from_machine(machine: str | None) -> str | None:
    """Our chip name (``esp32``, ``esp32c3``...) for a MicroPython machine string, None if unknown."""
    if not machine:
        return None
    match = _MACHINE_RE.search(machine)
    if match is None:
        return None
    name = match.group(1).replace("-", "").lower()
    return name if name in CHIPS else None


@dataclass(frozen=True)
class BoardFacts:
    """What a board says about itself.

    Attributes:
        machine: MicroPython's machine string (None if it reports none).
        chip: our chip name, from ``machine`` or else from ``/board.json``; None if unknown.
        chip_source: where ``chip`` came from (``MicroPython`` or ``/board.json``).
        config: the board's ``/board.json`` (None if missing or not JSON).
        identity_kind, identity_id: of ``/identity.json`` (None when unprovisioned or damaged).
        identity_damaged: the error of an ``/identity.json`` that cannot be used (None if it can, or is missing).
    """

    machine: str | None
    chip: str | None
    chip_source: str | None
    config: dict[str, Any] | None
    identity_kind: str | None
    identity_id: str | None
    identity_damaged: DamagedIdentityError | None = field(default=None, compare=False)

    @property
    def config_kind(self) -> str | None:
        """The kind in ``/board.json``, if any."""
        kind = (self.config or {}).get("kind")
        return kind if isinstance(kind, str) else None

    @property
    def config_name(self) -> str | None:
        """The board definition name in ``/board.json``, if any."""
        name = (self.config or {}).get("name")
        return name if isinstance(name, str) else None


def read_board_facts(dut: Dut) -> BoardFacts:
    """Read the machine string, ``/board.json`` and the identity's kind from an open board.

    The chip comes from MicroPython itself when its machine string names one (a real board, or the
    simulator's os.uname());
    otherwise (a port whose machine string names none) from the
    chip the last flash wrote to ``/board.json``.

    Raises:
        DeviceIOError: the board could not be read.
    """
    try:
        machine: Any = with_retries(dut, lambda: dut.eval_code(_MACHINE_CODE))
    except DutError as exc:
        raise DeviceIOError(f"cannot read the machine type of the board on {dut.url}: {exc}", port=dut.url) from exc
    machine = machine if isinstance(machine, str) else None
    config = read_board_config(dut)
    chip = chip_from_machine(machine)
    source: str | None = "MicroPython"
    if chip is None:
        configured = (config or {}).get("chip")
        chip, source = (configured, BOARD_CONFIG_PATH) if isinstance(configured, str) else (None, None)
        log.info("machine %r names no known chip; chip from %s: %s", machine, BOARD_CONFIG_PATH, chip)
    try:
        identity = read_identity(dut)
    except DamagedIdentityError as exc:  # provision --force replaces it; check_definition_fits refuses it
        return BoardFacts(machine, chip, source if chip else None, config, None, None, identity_damaged=exc)
    return BoardFacts(machine, chip, source if chip else None, config,
                      identity.kind if identity else None, identity.id if identity else None)


def check_definition_fits(facts: BoardFacts, definition: BoardDefinition, *, port: str,
                          check_kind: bool = True) -> None:
    """Refuse a board definition of another chip, or (``check_kind``) of another kind than the board's identity.

    Raises:
        WrongChipError: the board's chip is not the definition's.
        WrongKindError: the board is provisioned as another kind.
        DamagedIdentityError: (``check_kind``) its kind cannot be known: the board's identity is damaged.
    """
    if facts.chip is not None and facts.chip != definition.chip:
        found, needed = _chip_label(facts.chip), _chip_label(definition.chip)
        said = f"MicroPython reports {facts.machine!r}" if facts.chip_source == "MicroPython" else \
            f"its {BOARD_CONFIG_PATH} says so"
        raise WrongChipError(
            f"the board on {port} is an {found} ({said}), but the board definition {definition.name} needs "
            f"{needed}; use the board definition for this board", port=port, expected=needed, found=found)
    if check_kind and facts.identity_damaged is not None:
        raise facts.identity_damaged
    if check_kind and facts.identity_kind is not None and facts.identity_kind != definition.kind:
        raise WrongKindError(
            f"the board on {port} is provisioned as {facts.identity_kind} {facts.identity_id}, but the board "
            f"definition {definition.name} is for a {definition.kind}: its firmware would not start; use a "
            f"{facts.identity_kind} board definition (to repurpose the board, flash MicroPython with erase, "
            "then provision it under a new id)",
            port=port, expected=definition.kind, found=facts.identity_kind)


def _chip_label(chip: str) -> str:
    try:
        return chip_profile(chip).esptool_name
    except FieldError:  # a chip without a profile is shown as it is named
        return chip


def read_board_config(dut: Dut) -> dict[str, Any] | None:
    """The board's ``/board.json`` as a dict, or None when it is missing or not a JSON object."""
    text = read_text(dut, BOARD_CONFIG_PATH)
    if text is None:
        return None
    try:
        doc: Any = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
