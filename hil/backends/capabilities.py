"""Capability manifests: what each backend can do, matched against ``@pytest.mark.requires(...)``.

* ``sim`` (virtual boards) has what the board definition declares (a virtual board simulates each
  peripheral it has), plus harness-only features (fault injection, virtual time); without a board,
  everything. Stimuli (``hil_board.control``) are the simulator's only.
* ``qemu`` (Espressif QEMU) has a console, the UART and GPIO; no ADC, no BLE, no PWM peripheral
  model we can drive, so tests needing them skip.
* ``serial`` (real boards) has what the board definition declares (``[capabilities]`` of the
  board TOML, see :attr:`hil.boards.BoardDefinition.capabilities`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from hil.backends.errors import UnknownBackendError, UnknownCapabilityError
from hil.boards import CAPABILITY_NAMES, BoardDefinition

BACKENDS: tuple[str, ...] = ("sim", "qemu", "serial")

HARNESS_CAPABILITIES: frozenset[str] = frozenset({"faults", "stimuli", "virtual_time"})
"""Capabilities of the harness rather than the board: only the simulator can inject faults in
the middle of a flash write, set its inputs from the test (``hil_board.control.stimulus``) or run
a day in seconds."""

KNOWN_CAPABILITIES: frozenset[str] = CAPABILITY_NAMES | HARNESS_CAPABILITIES

QEMU_CAPABILITIES: frozenset[str] = frozenset({"console", "uart", "gpio"})


@dataclass(frozen=True)
class CapabilityManifest:
    """What one backend (with one board) offers.

    Attributes:
        backend: ``sim``, ``qemu`` or ``serial``.
        capabilities: capability names offered.
        source: where the list comes from, a clause for skip messages (e.g. ``"as declared by board
            streetlight-esp32"``).
    """

    backend: str
    capabilities: frozenset[str]
    source: str

    def missing(self, required: Iterable[str]) -> tuple[str, ...]:
        """Return the required capabilities this manifest lacks, in the order given.

        Raises:
            UnknownCapabilityError: a required name is not a known capability (a typo must not
                turn into a silent skip).
        """
        out: list[str] = []
        for name in required:
            if name not in KNOWN_CAPABILITIES:
                raise UnknownCapabilityError(name, sorted(KNOWN_CAPABILITIES))
            if name not in self.capabilities and name not in out:
                out.append(name)
        return tuple(out)

    def skip_reason(self, required: Iterable[str]) -> str | None:
        """Return why a test needing ``required`` cannot run here, or None when it can."""
        lacking = self.missing(required)
        if not lacking:
            return None
        return (f"backend {self.backend!r} lacks {', '.join(lacking)} "
                f"(has {', '.join(sorted(self.capabilities)) or 'nothing'}: {self.source})")


def manifest_for(backend: str, board: BoardDefinition | None = None) -> CapabilityManifest:
    """Return the capability manifest of ``backend`` running ``board``.

    Args:
        backend: ``sim``, ``qemu`` or ``serial``.
        board: the board definition: a virtual (``sim``) or real (``serial``) board has what its
            definition says (``sim`` adds fault injection and virtual time; without a board ``sim``
            offers everything, ``serial`` only the console), ``qemu`` what of it QEMU models.

    Raises:
        UnknownBackendError: unknown backend name.
        UnknownCapabilityError: the board declares a capability nobody defines.
    """
    if backend == "sim":
        if board is None:
            return CapabilityManifest("sim", KNOWN_CAPABILITIES, "virtual boards simulate every peripheral")
        # A virtual board has the peripherals its definition declares (a virtual streetlight does
        # not deep-sleep), plus what only the simulator offers.
        return CapabilityManifest("sim", _declared(board) | HARNESS_CAPABILITIES,
                                  f"a virtual {board.name} has what its definition declares, plus stimuli, "
                                  "fault injection and virtual time")
    if backend == "qemu":
        caps = QEMU_CAPABILITIES if board is None else QEMU_CAPABILITIES & (board.capabilities | {"console"})
        return CapabilityManifest("qemu", frozenset(caps), "Espressif QEMU models console, UART and GPIO only")
    if backend == "serial":
        if board is None:
            return CapabilityManifest("serial", frozenset({"console"}),
                                      "without a board definition only the console of a real board is assumed; "
                                      "name its definition with --hil-board NAME or @pytest.mark.board(NAME)")
        return CapabilityManifest("serial", _declared(board), f"as declared by board {board.name}")
    raise UnknownBackendError(backend, BACKENDS)


def _declared(board: BoardDefinition) -> frozenset[str]:
    """The capabilities ``board``'s definition declares, plus ``console`` (every board has one).

    Raises:
        UnknownCapabilityError: the board declares a capability nobody defines.
    """
    for name in board.capabilities:
        if name not in KNOWN_CAPABILITIES:
            raise UnknownCapabilityError(name, sorted(KNOWN_CAPABILITIES))
    return frozenset(board.capabilities) | {"console"}
