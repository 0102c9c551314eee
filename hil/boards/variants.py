"""Lab variants of the shipped boards, written as board files of their own name.

The demo, the latency benchmark and the end-to-end tests run a bin that stays awake: a deep-sleeping
bin is awake 30 virtual seconds after a reading, at demo speeds shorter than a BLE scan and connect.
The variant gets its own ``name`` so nothing (``flash``'s "flashed NAME", the shipped-name warning)
takes it for the shipped ``bin-esp32c3``.
"""

from __future__ import annotations

from pathlib import Path

from hil.boards.errors import BoardError

AWAKE_BIN_NAME = "bin-esp32c3-awake"
"""``name`` of the shipped bin kept awake (``[sleep] mode = "none"``)."""


def write_awake_bin(directory: Path) -> Path:
    """Write the shipped ``bin-esp32c3`` with deep sleep switched off to ``directory``.

    Returns:
        The path of the board file (``<directory>/bin-esp32c3-awake.toml``).

    Raises:
        BoardError: the shipped file no longer has the lines this rewrites (its ``name`` or its
            ``[sleep] mode = "deep"``).
    """
    from gateway.resources import boards_dir

    shipped = boards_dir() / "bin-esp32c3.toml"
    text = shipped.read_text(encoding="utf-8")
    for line in ('name = "bin-esp32c3"', 'mode = "deep"'):
        if text.count(line) != 1:
            raise BoardError(f"expected one line {line!r} to rewrite for the kept-awake bin", source=str(shipped))
    text = text.replace('name = "bin-esp32c3"', f'name = "{AWAKE_BIN_NAME}"').replace('mode = "deep"', 'mode = "none"')
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{AWAKE_BIN_NAME}.toml"
    path.write_text(text, encoding="utf-8")
    return path
