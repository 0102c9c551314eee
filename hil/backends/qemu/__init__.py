"""QEMU backend: build a flash image (MicroPython release + littlefs of our files) and run it."""

from __future__ import annotations

from hil.backends.qemu.image import FlashImage, build_flash_image, build_littlefs, check_release_image, read_filesystem
from hil.backends.qemu.launcher import QemuMachine, find_qemu
from hil.backends.qemu.partition_table import PartitionEntry, PartitionTable, encode_partition_table, parse_partition_table
from hil.backends.qemu.qmp import QmpClient

__all__ = [
    "FlashImage", "PartitionEntry", "PartitionTable", "QemuMachine", "QmpClient", "build_flash_image",
    "build_littlefs", "check_release_image", "encode_partition_table", "find_qemu", "parse_partition_table", "read_filesystem",
]
