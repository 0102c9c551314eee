"""Board definitions: load ``boards/*.toml`` into validated, typed :class:`BoardDefinition` objects.

Example::

    from hil.boards import load_board
    board = load_board("streetlight-esp32")
    board.capabilities          # frozenset({"console", "uart", "gpio", "adc", "pwm", "ble"})
    board.to_device_config()    # what is written to /board.json on the device
"""

from __future__ import annotations

from hil.boards.chips import CHIPS, ChipSpec
from hil.boards.errors import (
    BoardError,
    BoardFileNotFoundError,
    BoardNotFoundError,
    BoardSyntaxError,
    FieldTypeError,
    InputOnlyPinError,
    InvalidValueError,
    MissingFieldError,
    NotAdcPinError,
    NotWakePinError,
    PinConflictError,
    PinError,
    PinNotOnChipError,
    ReservedPinError,
    UnknownChipError,
    UnknownFieldError,
    suggest_board,
)
from hil.boards.loader import list_boards, load_board, resolve_board_path
from hil.boards.search import BOARDS_PATH_ENV, BoardDirectory, board_search_path, find_board_files
from hil.boards.model import CAPABILITY_NAMES, BleLink, BoardDefinition, IoPin, SleepSettings, UartLink

__all__ = [
    "BOARDS_PATH_ENV", "BoardDirectory", "board_search_path", "find_board_files", "suggest_board",
    "CAPABILITY_NAMES", "CHIPS", "BleLink", "BoardDefinition", "BoardError", "BoardFileNotFoundError", "BoardNotFoundError",
    "BoardSyntaxError", "ChipSpec", "FieldTypeError", "InputOnlyPinError", "InvalidValueError", "IoPin",
    "MissingFieldError", "NotAdcPinError", "NotWakePinError", "PinConflictError", "PinError",
    "PinNotOnChipError", "ReservedPinError", "SleepSettings", "UartLink", "UnknownChipError",
    "UnknownFieldError", "list_boards", "load_board", "resolve_board_path",
]
