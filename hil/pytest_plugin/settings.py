"""The HIL options of one pytest session, parsed once (``config.stash[settings_key]``)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hil.backends.capabilities import CapabilityManifest, manifest_for
from hil.boards import BoardDefinition, load_board

DEFAULT_BOARD = "streetlight-esp32"


@dataclass
class HilSettings:
    """Parsed ``--hil-*`` options.

    Attributes:
        backend: ``sim``, ``qemu`` or ``serial``.
        board_name: ``--hil-board`` (None: the default board, or none at all for ``serial``).
        port: ``--hil-port`` selector (serial backend).
        data_port: ``--hil-data-port``: the board's data UART (serial backend), or None.
        qemu_image: ``--hil-qemu-image`` (qemu backend).
        lease_dir: directory of board leases (serial backend).
        lease_wait_s: how long to wait for a board held by another run.
        sim_speed: virtual seconds per wall second for virtual boards (0 = as fast as possible).
    """

    backend: str
    board_name: str | None
    port: str | None
    qemu_image: Path | None
    lease_dir: Path
    lease_wait_s: float = 30.0
    sim_speed: float | None = 1.0
    data_port: str | None = None
    _manifest: CapabilityManifest | None = field(default=None, repr=False)
    _boards: dict[str, BoardDefinition] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: pytest.Config) -> "HilSettings":
        """Read the options from a pytest config."""
        image = config.getoption("--hil-qemu-image", default=None)
        lease_dir = config.getoption("--hil-lease-dir", default=None)
        return cls(
            backend=str(config.getoption("--hil-backend", default="sim")),
            board_name=config.getoption("--hil-board", default=None),
            port=config.getoption("--hil-port", default=None),
            qemu_image=Path(image) if image else None,
            lease_dir=Path(lease_dir) if lease_dir else default_lease_dir(),
            lease_wait_s=float(config.getoption("--hil-lease-wait", default=30.0) or 0.0),
            sim_speed=float(config.getoption("--hil-sim-speed", default=1.0) or 0.0),
            data_port=config.getoption("--hil-data-port", default=None) or None,
        )

    def board(self, name: str | None = None) -> BoardDefinition:
        """Load (once) the board definition ``name``, ``--hil-board``, or the default board.

        Raises:
            hil.boards.BoardError: unknown or invalid board.
        """
        key = name or self.board_name or DEFAULT_BOARD
        if key not in self._boards:
            self._boards[key] = load_board(key)
        return self._boards[key]

    def manifest(self) -> CapabilityManifest:
        """The backend's capability manifest for the session's board (computed once)."""
        if self._manifest is None:
            if self.backend == "serial" and self.board_name is None:
                self._manifest = manifest_for("serial", None)
            else:
                self._manifest = manifest_for(self.backend, self.board())
        return self._manifest


def default_lease_dir() -> Path:
    """Where leases live unless ``--hil-lease-dir`` says otherwise (shared by the host's runs)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / "civicedge-leases"


def sim_speed_option(text: str) -> float:
    """``--hil-sim-speed`` as a number >= 0 (argparse type: a bad value is a usage error)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number of virtual seconds per wall second, got {text!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = as fast as possible), got {text!r}")
    return value


def lease_wait_option(text: str) -> float:
    """``--hil-lease-wait`` as a number of seconds >= 0 (argparse type: a bad value is a usage error)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds (0 = do not wait), got {text!r}")
    return value


def sim_marker_options(item: pytest.Item) -> tuple[float | None, int | None]:
    """``(speed, seed)`` of the item's closest ``sim`` marker (None where not given).

    Raises:
        pytest.UsageError: positional arguments, unknown keys, or a speed that is not a number >= 0.
    """
    import math

    mark = item.get_closest_marker("sim")
    if mark is None:
        return None, None
    opts = dict(mark.kwargs)
    unknown = set(opts) - {"speed", "seed"}
    if unknown or mark.args:
        raise pytest.UsageError(f"{item.nodeid}: sim(...) takes speed= and seed= only")
    speed = opts.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed < 0):
        raise pytest.UsageError(f"{item.nodeid}: sim(speed=...) must be a number >= 0 (0 = as fast as possible), "
                                f"got {speed!r}")
    seed = opts.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise pytest.UsageError(f"{item.nodeid}: sim(seed=...) must be an integer, got {seed!r}")
    return (None if speed is None else float(speed)), seed


settings_key = pytest.StashKey[HilSettings]()
