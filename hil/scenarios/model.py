"""The scenario data model (what a validated scenario file holds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPS = ("<", "<=", "==", "!=", ">=", ">")


@dataclass(frozen=True)
class FieldExpectation:
    """A released field reaches a value by a time: ``field op value`` holds for some stored reading
    with window start at or before ``start + by_ms`` (on any board, or on ``device`` only)."""

    field: str
    op: str
    value: int
    by_ms: int
    by_text: str
    device: str | None = None

    def holds(self, observed: int) -> bool:
        """True when ``observed op value``."""
        v = self.value
        return {"<": observed < v, "<=": observed <= v, "==": observed == v, "!=": observed != v,
                ">=": observed >= v, ">": observed > v}[self.op]

    @property
    def title(self) -> str:
        """Short name for reports."""
        where = f" on {self.device}" if self.device else ""
        return f"{self.field} {self.op} {self.value} by {self.by_text}{where}"


@dataclass(frozen=True)
class Expectations:
    """What the gateway must have stored at the end (``[expect]``); None/empty: not checked."""

    reports_min: int | None = None
    no_loss: bool = False
    alarms: tuple[str, ...] = ()
    alarms_within_ms: int | None = None
    alarms_within_text: str | None = None
    fields: tuple[FieldExpectation, ...] = ()
    eps_per_day_max: tuple[str, ...] | bool = ()

    def count(self) -> int:
        """Number of checks these expectations make (one JUnit testcase each)."""
        return ((self.reports_min is not None) + self.no_loss + len(self.alarms) + len(self.fields)
                + bool(self.eps_per_day_max))


@dataclass(frozen=True)
class BoardGroup:
    """One ``[[boards]]`` entry: one or more boards of one definition on one link.

    Attributes:
        board: board name (``boards/<name>.toml``) or a path.
        ids: device ids (from ``ids``, or generated from ``count``).
        link: ``uart`` or ``ble``.
        kind: ``streetlight`` or ``bin`` (from the board definition).
        zone, lat, lon: placement written to each board's identity and the registry.
        stimuli_toml: the board's stimuli document (TOML text incl. the faults timeline).
        stimuli_doc: the same document as data (for plots).
        sleep: ``awake`` keeps deep-sleep boards awake (see docs/scenarios.md), ``deep`` as shipped.
    """

    board: str
    ids: tuple[str, ...]
    link: str
    kind: str
    zone: str
    lat: str
    lon: str
    stimuli_toml: str
    stimuli_doc: dict[str, Any] = field(default_factory=dict)
    sleep: str = "awake"


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file."""

    name: str
    description: str
    path: Path | None
    start_ms: int
    duration_ms: int
    duration_text: str
    speed: float
    seed: int
    boards: tuple[BoardGroup, ...]
    expect: Expectations

    @property
    def device_ids(self) -> list[str]:
        """Every device id, in file order."""
        return [d for g in self.boards for d in g.ids]
