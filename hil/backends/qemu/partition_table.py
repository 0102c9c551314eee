"""ESP-IDF partition table: binary encoder and parser (no I/O).

The table lives at flash offset 0x8000 and is at most 0xC00 bytes: 32-byte entries
``<magic 0xAA 0x50> <type u8> <subtype u8> <offset u32 LE> <size u32 LE> <label 16 bytes> <flags u32 LE>``,
optionally followed by an MD5 entry (``0xEB 0xEB``, 14 bytes of 0xFF, MD5 of all preceding
entries), then 0xFF padding. This is the format ESP-IDF's ``gen_esp32part.py`` writes and the
second-stage bootloader reads.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from hil.backends.errors import NoFilesystemPartitionError, PartitionTableError

PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_MAX_LEN = 0xC00
ENTRY_SIZE = 32
ENTRY_MAGIC = b"\xaa\x50"  # 0x50AA little-endian
MD5_MAGIC = b"\xeb\xeb"
_ENTRY = struct.Struct("<2sBBII16sI")

TYPE_APP = 0x00
TYPE_DATA = 0x01
SUBTYPE_DATA_NVS = 0x02
SUBTYPE_DATA_PHY = 0x01
SUBTYPE_DATA_FAT = 0x81
SUBTYPE_DATA_SPIFFS = 0x82
SUBTYPE_DATA_LITTLEFS = 0x83
SUBTYPE_APP_FACTORY = 0x00

# MicroPython's ESP32 port mounts the data partition labelled "vfs" (or "ffat" on boards with a
# FAT partition layout); that is where our littlefs goes.
FILESYSTEM_LABELS: tuple[str, ...] = ("vfs", "ffat")


@dataclass(frozen=True)
class PartitionEntry:
    """One partition of the table.

    Attributes:
        label: partition name (at most 16 bytes of ASCII).
        type: 0 = app, 1 = data (other values are custom types).
        subtype: e.g. 0x81 fat, 0x83 littlefs, 0x02 nvs.
        offset: flash offset in bytes.
        size: size in bytes.
        flags: bit 0 = encrypted, bit 1 = readonly.
    """

    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        """First byte after the partition."""
        return self.offset + self.size


@dataclass(frozen=True)
class PartitionTable:
    """A parsed partition table.

    Attributes:
        entries: the partitions in table order.
        has_md5: True when the table carried (a valid) MD5 entry.
    """

    entries: tuple[PartitionEntry, ...]
    has_md5: bool

    def find(self, label: str) -> PartitionEntry | None:
        """Return the partition named ``label``, or None."""
        for entry in self.entries:
            if entry.label == label:
                return entry
        return None

    def filesystem_partition(self, labels: Sequence[str] = FILESYSTEM_LABELS) -> PartitionEntry:
        """Return the data partition MicroPython mounts as its filesystem.

        Raises:
            NoFilesystemPartitionError: no data partition carries one of ``labels``.
        """
        for label in labels:
            entry = self.find(label)
            if entry is not None and entry.type == TYPE_DATA:
                return entry
        raise NoFilesystemPartitionError(labels, [e.label for e in self.entries])


def encode_partition_table(entries: Iterable[PartitionEntry], *, with_md5: bool = True) -> bytes:
    """Encode ``entries`` as a partition table blob of exactly 0xC00 bytes.

    Raises:
        PartitionTableError: a label is too long or not ASCII, a field does not fit its width,
            or there are too many entries.
    """
    out = bytearray()
    for index, entry in enumerate(entries):
        try:
            label = entry.label.encode("ascii")
        except UnicodeEncodeError:
            raise PartitionTableError(f"partition label {entry.label!r} is not ASCII",
                                      offset=index * ENTRY_SIZE, reason="bad-label") from None
        if len(label) > 16:
            raise PartitionTableError(f"partition label {entry.label!r} is longer than 16 bytes",
                                      offset=index * ENTRY_SIZE, reason="bad-label")
        for name, value, limit in (("type", entry.type, 0xFF), ("subtype", entry.subtype, 0xFF),
                                   ("offset", entry.offset, 0xFFFFFFFF), ("size", entry.size, 0xFFFFFFFF),
                                   ("flags", entry.flags, 0xFFFFFFFF)):
            if not 0 <= value <= limit:
                raise PartitionTableError(f"partition {entry.label!r}: {name}={value} out of range",
                                          offset=index * ENTRY_SIZE, reason="bad-field")
        out += _ENTRY.pack(ENTRY_MAGIC, entry.type, entry.subtype, entry.offset, entry.size,
                           label.ljust(16, b"\x00"), entry.flags)
    if with_md5:
        out += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    # Leave room for the end marker (one erased entry) the bootloader stops at.
    if len(out) > PARTITION_TABLE_MAX_LEN - ENTRY_SIZE:
        raise PartitionTableError(f"partition table of {len(out)} bytes exceeds {PARTITION_TABLE_MAX_LEN:#x}",
                                  offset=len(out), reason="too-long")
    return bytes(out.ljust(PARTITION_TABLE_MAX_LEN, b"\xff"))


def parse_partition_table(blob: bytes, *, flash_size: int | None = None) -> PartitionTable:
    """Parse a partition table blob (the bytes at flash offset 0x8000).

    Args:
        blob: at least the table; bytes past 0xC00 are ignored.
        flash_size: when given, partitions must end inside the flash.

    Raises:
        PartitionTableError: no entry magic at the start, a corrupt entry, an MD5 mismatch,
            overlapping partitions, or a partition past the end of the flash.
    """
    data = bytes(blob[:PARTITION_TABLE_MAX_LEN])
    entries: list[PartitionEntry] = []
    has_md5 = False
    pos = 0
    while pos + ENTRY_SIZE <= len(data):
        raw = data[pos:pos + ENTRY_SIZE]
        magic = raw[:2]
        if magic == ENTRY_MAGIC:
            _, ptype, subtype, offset, size, label_raw, flags = _ENTRY.unpack(raw)
            label_bytes = label_raw.split(b"\x00", 1)[0]
            try:
                label = label_bytes.decode("ascii")
            except UnicodeDecodeError:
                raise PartitionTableError(f"entry at {pos:#x} has a non-ASCII label {label_bytes!r}",
                                          offset=pos, reason="bad-label") from None
            entries.append(PartitionEntry(label, ptype, subtype, offset, size, flags))
        elif magic == MD5_MAGIC:
            expected = raw[16:]
            actual = hashlib.md5(data[:pos]).digest()
            if expected != actual:
                raise PartitionTableError(
                    f"partition table MD5 mismatch at {pos:#x}: stored {expected.hex()}, computed {actual.hex()}",
                    offset=pos, reason="md5-mismatch")
            has_md5 = True
        elif raw == b"\xff" * ENTRY_SIZE:
            break
        else:
            raise PartitionTableError(
                f"corrupt partition table entry at {pos:#x} (magic {magic.hex()}, expected aa50)",
                offset=pos, reason="no-magic" if pos == 0 else "bad-entry")
        pos += ENTRY_SIZE
    if not entries:
        raise PartitionTableError("no partition table: first entry has no 0xAA50 magic",
                                  offset=0, reason="no-magic")
    _check_layout(entries, flash_size)
    return PartitionTable(tuple(entries), has_md5)


def _check_layout(entries: Sequence[PartitionEntry], flash_size: int | None) -> None:
    """Reject overlapping partitions and partitions beyond the flash."""
    ordered = sorted(entries, key=lambda e: e.offset)
    for before, after in zip(ordered, ordered[1:]):
        if after.offset < before.end:
            raise PartitionTableError(f"partitions {before.label!r} and {after.label!r} overlap",
                                      offset=after.offset, reason="overlap")
    if flash_size is not None:
        for entry in ordered:
            if entry.end > flash_size:
                raise PartitionTableError(
                    f"partition {entry.label!r} ends at {entry.end:#x}, past the {flash_size:#x}-byte flash",
                    offset=entry.offset, reason="beyond-flash")
