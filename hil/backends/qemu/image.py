"""Build the flash image QEMU boots: a MicroPython release image + a littlefs partition of our files.

The user supplies the official MicroPython release image for the chip (``ESP32_GENERIC-*.bin``
flashed at 0x1000, ``ESP32_GENERIC_C3-*.bin`` and ``ESP32_GENERIC_S3-*.bin`` at 0x0). It carries the bootloader, the partition
table at flash offset 0x8000 and the MicroPython app. We read the filesystem partition (``vfs``)
from that table, format it as littlefs with the parameters MicroPython's ``VfsLfs2`` uses, put
our files in it, and merge both with esptool's ``merge_bin`` into one raw flash image.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from littlefs import LittleFS, LittleFSError

from hil.backends.errors import (
    FlashImageError,
    ImageTooBigError,
    PartitionTableError,
    ReleaseImageError,
    UnsupportedChipError,
)
from hil.backends.qemu.launcher import QEMU_TARGETS
from hil.backends.qemu.partition_table import (
    PARTITION_TABLE_MAX_LEN,
    PARTITION_TABLE_OFFSET,
    PartitionEntry,
    PartitionTable,
    parse_partition_table,
)
from hil.dut.files import device_path, parent_dirs
from hil.field.chips import CHIPS

log = logging.getLogger(__name__)

# Flash offset of a chip's release image (where its second-stage bootloader starts), for the chips QEMU
# emulates: from the flasher's table, so `civicedge flash` and QEMU never disagree.
CHIP_IMAGE_OFFSETS: dict[str, int] = {chip: CHIPS[chip].image_offset for chip in QEMU_TARGETS}
DEFAULT_FLASH_SIZE = 4 * 1024 * 1024
FLASH_SIZES: dict[int, str] = {2 << 20: "2MB", 4 << 20: "4MB", 8 << 20: "8MB", 16 << 20: "16MB"}
"""The flash sizes Espressif QEMU takes (the image file's size), as esptool names them."""
# MicroPython's ESP32 port formats littlefs with these (extmod/vfs_lfs.c defaults, 4 KiB erase blocks).
LFS_BLOCK_SIZE = 4096
LFS_READ_SIZE = 32
LFS_PROG_SIZE = 32
LFS_LOOKAHEAD = 32
LFS_NAME_MAX = 255
# Disk format 2.0 is readable by every littlefs v2 release (MicroPython ships 2.x).
LFS_DISK_VERSION = 0x00020000


@dataclass(frozen=True)
class FlashImage:
    """A built flash image.

    Attributes:
        path: the raw image file (``flash_size`` bytes).
        chip: ``esp32``, ``esp32c3`` or ``esp32s3``.
        flash_size: image size in bytes.
        filesystem: the partition holding our littlefs.
        files: device paths written into the filesystem.
    """

    path: Path
    chip: str
    flash_size: int
    filesystem: PartitionEntry
    files: tuple[str, ...]


def chip_image_offset(chip: str) -> int:
    """Return the flash offset of ``chip``'s release image.

    Raises:
        UnsupportedChipError: QEMU does not emulate the chip (not one of :data:`CHIP_IMAGE_OFFSETS`).
    """
    try:
        return CHIP_IMAGE_OFFSETS[chip]
    except KeyError:
        raise UnsupportedChipError(chip, sorted(CHIP_IMAGE_OFFSETS)) from None


def check_release_image(image: Path, chip: str) -> None:
    """Refuse a file that is not an ESP firmware image for ``chip``, with ``civicedge flash``'s own
    check (:func:`hil.field.esp_flash.plan_flash`: the file, its header magic, its chip id).

    Done before anything is built or booted: a file of random bytes said ``corrupt partition table
    entry at 0x0`` only once a test built the image.

    Raises:
        UnsupportedChipError: QEMU cannot emulate ``chip``.
        ReleaseImageError: missing, empty, unreadable, not an ESP image, or built for another chip.
    """
    from hil.field.chips import chip_profile
    from hil.field.errors import FieldError
    from hil.field.esp_flash import plan_flash

    chip_image_offset(chip)
    try:
        plan_flash(port="qemu", chip=chip_profile(chip), image=image, erase=False)
    except FieldError as exc:
        raise ReleaseImageError(str(exc), image=str(image)) from None


def release_partition_table(release_image: bytes, chip: str, *, flash_size: int = DEFAULT_FLASH_SIZE) -> PartitionTable:
    """Parse the partition table embedded in a release image (flash offset 0x8000).

    Raises:
        PartitionTableError: the image is too short to hold a table, or the table is bad (no table at
            all: the message says the image is not a MicroPython release image for ``chip``).
    """
    start = PARTITION_TABLE_OFFSET - chip_image_offset(chip)
    blob = release_image[start:start + PARTITION_TABLE_MAX_LEN]
    if len(blob) < 32:
        raise PartitionTableError(
            f"release image of {len(release_image)} bytes is too short to contain a partition table "
            f"at flash offset {PARTITION_TABLE_OFFSET:#x}", offset=0, reason="truncated")
    try:
        return parse_partition_table(blob, flash_size=flash_size)
    except PartitionTableError as exc:
        if exc.reason != "no-magic":
            raise
        raise PartitionTableError(
            f"no partition table at flash offset {PARTITION_TABLE_OFFSET:#x} of the release image ({exc}): not a "
            f"MicroPython release image for {chip} (download the .bin for the board's chip from "
            "micropython.org/download)", offset=exc.offset, reason=exc.reason) from None


def fitting_flash_size(table: PartitionTable) -> int:
    """The smallest flash size QEMU takes, at least :data:`DEFAULT_FLASH_SIZE`, that holds every partition
    of ``table`` (the release image was built for a flash that large)."""
    end = max((entry.end for entry in table.entries), default=0)
    return min(size for size in FLASH_SIZES if size >= max(end, DEFAULT_FLASH_SIZE))


def build_littlefs(files: Mapping[str, bytes], *, size: int, label: str = "vfs") -> bytes:
    """Format a littlefs image of ``size`` bytes holding ``files`` (device path -> content).

    Raises:
        ImageTooBigError: the files do not fit in the partition.
        FlashImageError: the partition size is not a multiple of the 4 KiB block size.
    """
    if size % LFS_BLOCK_SIZE or size < 2 * LFS_BLOCK_SIZE:
        raise FlashImageError(f"partition {label!r} size {size} is not a multiple of {LFS_BLOCK_SIZE} "
                              "(at least 2 blocks)", size=size, label=label)
    fs = LittleFS(block_size=LFS_BLOCK_SIZE, block_count=size // LFS_BLOCK_SIZE, read_size=LFS_READ_SIZE,
                  prog_size=LFS_PROG_SIZE, lookahead_size=LFS_LOOKAHEAD, name_max=LFS_NAME_MAX,
                  disk_version=LFS_DISK_VERSION)
    paths = {device_path(p): data for p, data in files.items()}
    try:
        for directory in parent_dirs(list(paths)):
            fs.makedirs(directory, exist_ok=True)
        for path, data in paths.items():
            with fs.open(path, "wb") as fh:
                fh.write(data)
    except LittleFSError as exc:
        if exc.code == LittleFSError.Error.LFS_ERR_NOSPC:
            raise ImageTooBigError(f"files for partition {label!r}", size=sum(map(len, paths.values())),
                                   limit=size) from exc
        raise FlashImageError(f"littlefs error building partition {label!r}: {exc}", label=label) from exc
    return bytes(fs.context.buffer)


def build_flash_image(
    *,
    release_image: Path | bytes,
    chip: str,
    files: Mapping[str, bytes],
    output: Path,
    flash_size: int | None = None,
) -> FlashImage:
    """Merge a MicroPython release image and a littlefs partition of ``files`` into one flash image.

    Args:
        release_image: the MicroPython release ``.bin`` for ``chip`` (path or bytes).
        chip: ``esp32`` (image at 0x1000) or ``esp32c3`` (image at 0x0).
        files: device path -> content (see :func:`hil.dut.files.firmware_files`).
        output: where to write the raw image.
        flash_size: flash size in bytes (QEMU's ESP32 machines take 2, 4, 8 or 16 MiB); None: the
            smallest of 4, 8 and 16 MiB that holds every partition of the release image's table
            (``ESP32_GENERIC_S3`` images are laid out for 8 MiB).

    Raises:
        UnsupportedChipError: unknown chip.
        ReleaseImageError: ``release_image`` is a file that is not an ESP firmware image for ``chip``
            (:func:`check_release_image`; bytes are taken as they are).
        PartitionTableError: the release image has no valid partition table.
        NoFilesystemPartitionError: no ``vfs``/``ffat`` data partition.
        ImageTooBigError: the release image overlaps the filesystem partition or the flash end,
            or the files do not fit in the partition.
    """
    from esptool.cmds import merge_bin

    if isinstance(release_image, Path):
        check_release_image(release_image, chip)
    release = release_image.read_bytes() if isinstance(release_image, Path) else bytes(release_image)
    offset = chip_image_offset(chip)
    if flash_size is None:
        flash_size = fitting_flash_size(release_partition_table(release, chip, flash_size=max(FLASH_SIZES)))
    if offset + len(release) > flash_size:
        raise ImageTooBigError("release image", size=offset + len(release), limit=flash_size)
    table = release_partition_table(release, chip, flash_size=flash_size)
    fs_part = table.filesystem_partition()
    if offset + len(release) > fs_part.offset:
        raise ImageTooBigError(f"release image (overlaps partition {fs_part.label!r} at {fs_part.offset:#x})",
                               size=offset + len(release), limit=fs_part.offset)
    lfs = build_littlefs(files, size=fs_part.size, label=fs_part.label)
    output.parent.mkdir(parents=True, exist_ok=True)
    sizes = FLASH_SIZES
    if flash_size not in sizes:
        raise FlashImageError(f"flash size {flash_size} is not 2, 4, 8 or 16 MiB", flash_size=flash_size)
    chatter = io.StringIO()
    # esptool prints progress to stdout; keep it in our log instead.
    with contextlib.redirect_stdout(chatter):
        merge_bin([(offset, release), (fs_part.offset, lfs)], chip=chip, output=str(output),
                  pad_to_size=sizes[flash_size])
    log.debug("esptool merge_bin: %s", chatter.getvalue().strip())
    log.info("built %s flash image %s (%d files in %s at %#x)", chip, output, len(files), fs_part.label,
             fs_part.offset)
    return FlashImage(path=output, chip=chip, flash_size=flash_size, filesystem=fs_part,
                      files=tuple(sorted(device_path(p) for p in files)))


def read_filesystem(image: Path | bytes, *, chip: str) -> dict[str, bytes]:
    """Mount the littlefs partition of a built flash image and return its files (for checks).

    Raises:
        PartitionTableError, NoFilesystemPartitionError: the image has no usable table.
        FlashImageError: the partition is not a mountable littlefs.
    """
    data = image.read_bytes() if isinstance(image, Path) else bytes(image)
    chip_image_offset(chip)
    table = parse_partition_table(data[PARTITION_TABLE_OFFSET:], flash_size=len(data))
    part = table.filesystem_partition()
    try:
        fs = LittleFS(block_size=LFS_BLOCK_SIZE, block_count=part.size // LFS_BLOCK_SIZE, mount=False,
                      read_size=LFS_READ_SIZE, prog_size=LFS_PROG_SIZE, lookahead_size=LFS_LOOKAHEAD)
        fs.context.buffer[:] = data[part.offset:part.end]
        fs.mount()
    except LittleFSError as exc:
        raise FlashImageError(f"partition {part.label!r} is not a mountable littlefs: {exc}",
                              label=part.label) from exc
    out: dict[str, bytes] = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            path = root.rstrip("/") + "/" + name
            with fs.open(path, "rb") as fh:
                out[path] = fh.read()
    return out
