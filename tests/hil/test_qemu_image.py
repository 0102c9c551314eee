"""QEMU flash image: partition table codec, image build round-trip, and clear errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from littlefs import LittleFS

from gateway.resources import firmware_dir
from hil.backends.errors import (
    ImageTooBigError,
    NoFilesystemPartitionError,
    PartitionTableError,
    ReleaseImageError,
    UnsupportedChipError,
)
from hil.backends.qemu.driver import QemuDriver
from hil.backends.qemu.image import build_flash_image, read_filesystem
from hil.backends.qemu.partition_table import (
    PARTITION_TABLE_MAX_LEN,
    SUBTYPE_DATA_FAT,
    TYPE_APP,
    TYPE_DATA,
    PartitionEntry,
    encode_partition_table,
    parse_partition_table,
)
from hil.dut.files import firmware_files

MAX_EXAMPLES = 300 if os.environ.get("CIVICEDGE_FULL") == "1" else 40
MIB = 1024 * 1024

# MicroPython's ESP32_GENERIC 4 MiB layout.
MPY_LAYOUT = (
    PartitionEntry("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
    PartitionEntry("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
    PartitionEntry("factory", TYPE_APP, 0x00, 0x10000, 0x1F0000),
    PartitionEntry("vfs", TYPE_DATA, SUBTYPE_DATA_FAT, 0x200000, 0x200000),
)


# MicroPython's ESP32_GENERIC_S3 layout (partitions-8MiB.csv): the filesystem runs to the end of 8 MiB.
S3_LAYOUT = MPY_LAYOUT[:3] + (PartitionEntry("vfs", TYPE_DATA, SUBTYPE_DATA_FAT, 0x200000, 0x600000),)

# Chip id in the extended header of a release image (esptool's IMAGE_CHIP_ID): esp32 at 0x1000, esp32c3 at 0x0
# (the default by offset); the S3 (9) is also at 0x0, so it is asked for with chip_id=.
FAKE_CHIP_IDS = {0x1000: 0, 0x0: 5}
ESP32S3_CHIP_ID = 9


def fake_release_image(chip_offset: int, entries: tuple[PartitionEntry, ...] = MPY_LAYOUT, *,
                       app_size: int = 96 * 1024, table: bytes | None = None, chip_id: int | None = None) -> bytes:
    """A stand-in for a MicroPython release .bin: bootloader bytes, a real partition table, an app."""
    image = bytearray(b"\xff" * (0x10000 - chip_offset + app_size))
    image[0:4] = b"\xe9\x03\x02\x20"  # ESP image header magic, like a real bootloader
    image[4:0x1000] = hashlib.sha256(b"boot").digest() * ((0x1000 - 4) // 32) + b"\x00" * ((0x1000 - 4) % 32)
    image[12:14] = (FAKE_CHIP_IDS[chip_offset] if chip_id is None else chip_id).to_bytes(2, "little")  # extended header: the image's chip id
    blob = table if table is not None else encode_partition_table(entries)
    start = 0x8000 - chip_offset
    image[start:start + len(blob)] = blob
    app = (hashlib.sha256(b"app").digest() * (app_size // 32 + 1))[:app_size]
    image[0x10000 - chip_offset:] = app
    return bytes(image)


@pytest.mark.parametrize(("chip", "offset", "chip_id"), [("esp32", 0x1000, None), ("esp32c3", 0x0, None),
                                                       ("esp32s3", 0x0, ESP32S3_CHIP_ID)])
def test_image_round_trip_shows_our_files(tmp_path: Path, chip: str, offset: int, chip_id: int | None) -> None:
    release = fake_release_image(offset, chip_id=chip_id)
    files = firmware_files(firmware_dir(), board_config={"board": "t", "chip": chip},
                           identity={"id": "sl-1", "kind": "streetlight", "zone": "z", "lat": "1", "lon": "2",
                                     "key": "00" * 32})
    assert "/policy.json" in files and any(p.startswith("/lib/civic/") for p in files)
    out = tmp_path / "flash.bin"
    built = build_flash_image(release_image=release, chip=chip, files=files, output=out)
    data = out.read_bytes()
    assert len(data) == 4 * MIB
    assert data[offset:offset + len(release)] == release, "release image not placed at the chip's offset"
    assert built.filesystem.label == "vfs" and built.filesystem.offset == 0x200000

    # Mount the partition with littlefs-python directly (as MicroPython's VfsLfs2 would).
    part = data[0x200000:0x400000]
    fs = LittleFS(block_size=4096, block_count=len(part) // 4096, mount=False)
    fs.context.buffer[:] = part
    fs.mount()
    for path, content in files.items():
        with fs.open(path, "rb") as fh:
            assert fh.read() == content, path
    assert read_filesystem(out, chip=chip) == files


def test_qemu_flash_step_collects_what_civicedge_flash_installs(tmp_path: Path) -> None:
    """The QEMU image holds civicedge flash --source's files and a /firmware.json that describes them
    (before: every file under firmware/, pyrightconfig.json included, and no manifest)."""
    import json

    from hil.backends.board import BoardHandle, make_identity
    from hil.boards import load_board
    from hil.field.firmware_copy import expected_files

    rel = tmp_path / "ESP32_GENERIC.bin"
    rel.write_bytes(fake_release_image(0x1000))
    definition = load_board("streetlight-esp32")
    handle = BoardHandle(backend="qemu", definition=definition, identity=make_identity(definition), workdir=tmp_path)
    driver = QemuDriver(release_image=rel)
    driver.check_available = lambda chip: None  # type: ignore[method-assign]  # no Espressif QEMU needed to build
    driver.flash(handle)
    driver.provision(handle)
    files = read_filesystem(handle.extras["image"].path, chip="esp32")
    assert "/pyrightconfig.json" not in files
    manifest = json.loads(files["/firmware.json"])
    assert manifest["mode"] == "source"
    assert {p: hashlib.sha256(files[p]).hexdigest() for p in manifest["files"]} == manifest["files"]
    assert set(files) == set(manifest["files"]) | {"/firmware.json", "/identity.json"}
    assert {p: h for p, h in manifest["files"].items() if p != "/board.json"} == expected_files("source")
    assert json.loads(files["/identity.json"]) == handle.identity


def test_an_s3_image_laid_out_for_8_mib_gets_an_8_mib_flash(tmp_path: Path) -> None:
    """ESP32_GENERIC_S3's vfs ends at 8 MiB: the flash QEMU gets is sized from the table, not fixed at 4 MiB
    (which refused it: 'partition vfs ends at 0x800000, past the 0x400000-byte flash')."""
    rel = tmp_path / "ESP32_GENERIC_S3.bin"
    rel.write_bytes(fake_release_image(0x0, S3_LAYOUT, chip_id=ESP32S3_CHIP_ID))
    out = tmp_path / "flash.bin"
    built = build_flash_image(release_image=rel, chip="esp32s3", files={"/main.py": b"print(3)\n"}, output=out)
    assert built.flash_size == 8 * MIB and out.stat().st_size == 8 * MIB
    assert (built.filesystem.offset, built.filesystem.size) == (0x200000, 0x600000)
    assert out.read_bytes()[:len(rel.read_bytes())] == rel.read_bytes(), "S3 release image not at 0x0"
    assert read_filesystem(out, chip="esp32s3") == {"/main.py": b"print(3)\n"}
    # An explicit size is still held to.
    with pytest.raises(PartitionTableError, match="past the 0x400000-byte flash"):
        build_flash_image(release_image=rel, chip="esp32s3", files={}, output=tmp_path / "f4.bin", flash_size=4 * MIB)


def test_an_s3_image_is_checked_like_the_others(tmp_path: Path) -> None:
    s3 = tmp_path / "ESP32_GENERIC_S3.bin"
    s3.write_bytes(fake_release_image(0x0, S3_LAYOUT, chip_id=ESP32S3_CHIP_ID))
    with pytest.raises(ReleaseImageError, match="MicroPython image for ESP32-S3, but the board definition needs ESP32-C3"):
        QemuDriver(release_image=s3).check_available("esp32c3")
    c3 = tmp_path / "ESP32_GENERIC_C3.bin"
    c3.write_bytes(fake_release_image(0x0))
    with pytest.raises(ReleaseImageError, match="MicroPython image for ESP32-C3, but the board definition needs ESP32-S3"):
        QemuDriver(release_image=c3).check_available("esp32s3")


def test_partition_read_from_table_not_assumed(tmp_path: Path) -> None:
    layout = (
        PartitionEntry("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
        PartitionEntry("factory", TYPE_APP, 0x00, 0x10000, 0x180000),
        PartitionEntry("ffat", TYPE_DATA, SUBTYPE_DATA_FAT, 0x190000, 0x40000),
    )
    out = tmp_path / "f.bin"
    built = build_flash_image(release_image=fake_release_image(0x1000, layout), chip="esp32",
                              files={"main.py": b"print(1)\n"}, output=out)
    assert (built.filesystem.label, built.filesystem.offset, built.filesystem.size) == ("ffat", 0x190000, 0x40000)
    assert read_filesystem(out, chip="esp32") == {"/main.py": b"print(1)\n"}


def test_release_path_input(tmp_path: Path) -> None:
    rel = tmp_path / "ESP32_GENERIC.bin"
    rel.write_bytes(fake_release_image(0x1000))
    out = tmp_path / "img" / "flash.bin"
    build_flash_image(release_image=rel, chip="esp32", files={"/a.txt": b"a"}, output=out)
    assert read_filesystem(out, chip="esp32") == {"/a.txt": b"a"}


@pytest.mark.parametrize(("content", "expected"), [
    (bytes(range(256)) * 8, "not an ESP firmware image (first byte 0x00, expected 0xe9)"),
    (b"\x17\x0b" + b"\x5a" * 4094, "not an ESP firmware image (first byte 0x17, expected 0xe9)"),
    (b"", "random.bin is empty"),
])
def test_a_release_file_that_is_not_an_esp_image_is_refused_as_flash_refuses_it(
        tmp_path: Path, content: bytes, expected: str) -> None:
    """Before, random bytes built as far as 'corrupt partition table entry at 0x0 (magic 0b17, expected aa50)'."""
    rel = tmp_path / "random.bin"
    rel.write_bytes(content)
    with pytest.raises(ReleaseImageError) as err:
        build_flash_image(release_image=rel, chip="esp32", files={}, output=tmp_path / "f.bin")
    assert expected in str(err.value) and err.value.image == str(rel)
    assert not (tmp_path / "f.bin").exists()
    # The qemu backend checks it when a test starts, whether or not Espressif QEMU is installed.
    with pytest.raises(ReleaseImageError) as start:
        QemuDriver(release_image=rel).check_available("esp32")
    assert expected in str(start.value)


def test_a_release_image_for_another_chip_is_refused(tmp_path: Path) -> None:
    rel = tmp_path / "ESP32_GENERIC_C3.bin"
    rel.write_bytes(fake_release_image(0x0))
    with pytest.raises(ReleaseImageError) as err:
        QemuDriver(release_image=rel).check_available("esp32")
    assert "MicroPython image for ESP32-C3, but the board definition needs ESP32" in str(err.value)
    with pytest.raises(ReleaseImageError, match="does not exist"):
        QemuDriver(release_image=tmp_path / "missing.bin").check_available("esp32c3")


def test_release_bytes_without_a_partition_table_name_the_likely_cause(tmp_path: Path) -> None:
    # Bytes are not checked as a file is (no header check); the missing table still says why.
    with pytest.raises(PartitionTableError) as err:
        build_flash_image(release_image=b"\x17\x0b" * 0x4800, chip="esp32c3", files={}, output=tmp_path / "f.bin")
    assert err.value.reason == "no-magic"
    assert str(err.value) == ("no partition table at flash offset 0x8000 of the release image (corrupt partition "
                              "table entry at 0x0 (magic 170b, expected aa50)): not a MicroPython release image for "
                              "esp32c3 (download the .bin for the board's chip from micropython.org/download)")


def test_release_image_too_big_for_flash(tmp_path: Path) -> None:
    with pytest.raises(ImageTooBigError) as err:
        build_flash_image(release_image=fake_release_image(0x1000, app_size=4 * MIB), chip="esp32",
                          files={}, output=tmp_path / "f.bin")
    assert err.value.what == "release image" and err.value.limit == 4 * MIB


def test_release_image_overlapping_filesystem(tmp_path: Path) -> None:
    with pytest.raises(ImageTooBigError) as err:
        build_flash_image(release_image=fake_release_image(0x1000, app_size=0x1F8000), chip="esp32",
                          files={}, output=tmp_path / "f.bin")
    assert "vfs" in err.value.what and err.value.limit == 0x200000


def test_files_too_big_for_partition(tmp_path: Path) -> None:
    layout = MPY_LAYOUT[:3] + (PartitionEntry("vfs", TYPE_DATA, SUBTYPE_DATA_FAT, 0x200000, 0x4000),)
    with pytest.raises(ImageTooBigError) as err:
        build_flash_image(release_image=fake_release_image(0x1000, layout), chip="esp32",
                          files={"/big.bin": os.urandom(64 * 1024)}, output=tmp_path / "f.bin")
    assert err.value.limit == 0x4000


def test_no_vfs_partition(tmp_path: Path) -> None:
    with pytest.raises(NoFilesystemPartitionError) as err:
        build_flash_image(release_image=fake_release_image(0x1000, MPY_LAYOUT[:3]), chip="esp32",
                          files={}, output=tmp_path / "f.bin")
    assert err.value.found == ("nvs", "phy_init", "factory")
    assert "vfs" in str(err.value)


def test_bad_table_no_magic(tmp_path: Path) -> None:
    with pytest.raises(PartitionTableError) as err:
        build_flash_image(release_image=fake_release_image(0x1000, table=b"\x00" * 64), chip="esp32",
                          files={}, output=tmp_path / "f.bin")
    assert err.value.reason == "no-magic"
    assert "not a MicroPython release image for esp32" in str(err.value)


def test_bad_table_md5_mismatch() -> None:
    blob = bytearray(encode_partition_table(MPY_LAYOUT))
    blob[2] ^= 0x01  # flip a type bit of the first entry: the MD5 no longer matches
    with pytest.raises(PartitionTableError) as err:
        parse_partition_table(bytes(blob))
    assert err.value.reason == "md5-mismatch" and err.value.offset == 4 * 32


def test_bad_table_overlap_and_beyond_flash() -> None:
    overlap = MPY_LAYOUT[:2] + (PartitionEntry("factory", TYPE_APP, 0, 0xF800, 0x1000),)
    with pytest.raises(PartitionTableError) as err:
        parse_partition_table(encode_partition_table(overlap))
    assert err.value.reason == "overlap"
    with pytest.raises(PartitionTableError) as err2:
        parse_partition_table(encode_partition_table(MPY_LAYOUT), flash_size=2 * MIB)
    assert err2.value.reason == "beyond-flash"


def test_bad_table_corrupt_entry_after_valid_one() -> None:
    blob = bytearray(encode_partition_table(MPY_LAYOUT, with_md5=False))
    blob[32:34] = b"\x12\x34"
    with pytest.raises(PartitionTableError) as err:
        parse_partition_table(bytes(blob))
    assert (err.value.reason, err.value.offset) == ("bad-entry", 32)


def test_unsupported_chip(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedChipError) as err:
        build_flash_image(release_image=fake_release_image(0), chip="esp32c6", files={}, output=tmp_path / "f")
    assert err.value.supported == ("esp32", "esp32c3", "esp32s3")


def test_encoder_rejects_bad_entries() -> None:
    with pytest.raises(PartitionTableError):
        encode_partition_table([PartitionEntry("a-very-long-label-x", TYPE_DATA, 1, 0x9000, 0x1000)])
    with pytest.raises(PartitionTableError):
        encode_partition_table([PartitionEntry("x", 256, 1, 0x9000, 0x1000)])
    with pytest.raises(PartitionTableError):
        encode_partition_table([PartitionEntry(f"p{i}", 1, 1, i * 0x1000, 0x1000) for i in range(100)])


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=16)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(specs=st.lists(st.tuples(labels, st.integers(0, 0xFE), st.integers(0, 0xFF), st.integers(1, 64),
                                st.integers(0, 3)), min_size=1, max_size=20, unique_by=lambda s: s[0]),
       with_md5=st.booleans())
def test_partition_table_round_trip(specs: list[tuple[str, int, int, int, int]], with_md5: bool) -> None:
    entries, offset = [], 0x9000
    for label, ptype, subtype, blocks, flags in specs:
        entries.append(PartitionEntry(label, ptype, subtype, offset, blocks * 0x1000, flags))
        offset += blocks * 0x1000
    blob = encode_partition_table(entries, with_md5=with_md5)
    assert len(blob) == PARTITION_TABLE_MAX_LEN
    table = parse_partition_table(blob)
    assert table.entries == tuple(entries) and table.has_md5 == with_md5
