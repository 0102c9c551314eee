"""QEMU backend: build a flash image (MicroPython release + littlefs of our files) and run it.

The names below are imported on first use (PEP 562 ``__getattr__``): importing a submodule
(``hil.backends.qemu.launcher``) must not pull :mod:`hil.backends.qemu.image`, which needs
littlefs-python (the ``field`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.lazy_exports import lazy_attribute

if TYPE_CHECKING:
    from hil.backends.qemu.image import FlashImage, build_flash_image, build_littlefs, check_release_image, read_filesystem
    from hil.backends.qemu.launcher import QemuMachine, find_qemu
    from hil.backends.qemu.partition_table import PartitionEntry, PartitionTable, encode_partition_table, parse_partition_table
    from hil.backends.qemu.qmp import QmpClient

#: Public name -> the submodule that defines it.
_HOMES: dict[str, str] = {
    **dict.fromkeys(("FlashImage", "build_flash_image", "build_littlefs", "check_release_image", "read_filesystem"), "image"),
    **dict.fromkeys(("QemuMachine", "find_qemu"), "launcher"),
    **dict.fromkeys(("PartitionEntry", "PartitionTable", "encode_partition_table", "parse_partition_table"),
                    "partition_table"),
    "QmpClient": "qmp",
}

__all__ = [
    "FlashImage", "PartitionEntry", "PartitionTable", "QemuMachine", "QmpClient", "build_flash_image",
    "build_littlefs", "check_release_image", "encode_partition_table", "find_qemu", "parse_partition_table", "read_filesystem",
]


def __getattr__(name: str) -> Any:
    """``hil.backends.qemu.<name>``: imports the submodule defining it on first use."""
    return lazy_attribute(__name__, _HOMES, globals(), name)
