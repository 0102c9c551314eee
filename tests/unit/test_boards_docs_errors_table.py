"""docs/boards.md's Validation table names the ``hint`` of every pin error (review LOW: only
ReservedPinError's row had it, though every PinError ends with its free-pin hint)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import hil.boards as boards
from hil.boards import PinError

DOC = (Path(__file__).resolve().parents[2] / "docs" / "boards.md").read_text()


def test_every_pin_error_row_names_its_hint() -> None:
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)`[^|]*\|[^|]*\| (.*) \|$", DOC, re.M)}
    pin_errors = [name for name, cls in vars(boards).items()
                  if inspect.isclass(cls) and issubclass(cls, PinError) and cls is not PinError]
    assert len(pin_errors) == 6  # not on chip, reserved, no ADC, input-only, conflict, cannot wake
    for name in pin_errors:
        assert "hint" in inspect.signature(getattr(boards, name)).parameters
        assert "`hint`" in rows[name], f"docs/boards.md Validation: the {name} row lacks `hint`"
