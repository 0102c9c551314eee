"""The registry's own key files are read through gateway.small_files (as configs and secrets are), not a
copy of it: a FIFO, a directory or a device in keys/ is refused by kind without blocking, a longer file
than any key is refused without being read to its end, and a symlink to a key file is still followed.
The split of gateway/registry/devices.py keeps its names importable there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry, devices, key_files, records, values
from gateway.registry.key_files import _KEY_FILE_MAX, read_key_file

KEY = bytes(range(0x20, 0x40))


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "reg")
    registry.add("b1", kind="bin", zone="north", lat="52.1", lon="4.2", key=KEY)
    return registry


def _refusal(reg: Registry) -> str:
    with pytest.raises(RegistryError) as info:
        reg.key("b1")
    assert info.value.reason == "bad_key"
    assert KEY.hex() not in str(info.value)
    return str(info.value)


@pytest.mark.timeout(20)
def test_a_fifo_in_place_of_a_key_file_is_named_and_does_not_block(reg: Registry) -> None:
    path = reg.key_path("b1")
    path.unlink()
    os.mkfifo(path, 0o600)
    assert _refusal(reg) == "cannot read key file %s: is a FIFO, not a regular file" % path
    reg.close()


def test_a_directory_in_place_of_a_key_file_is_named(reg: Registry) -> None:
    path = reg.key_path("b1")
    path.unlink()
    path.mkdir(mode=0o700)
    assert _refusal(reg) == "cannot read key file %s: is a directory, not a regular file" % path
    reg.close()


@pytest.mark.timeout(20)
def test_a_symlink_to_a_device_is_refused_and_one_to_a_key_file_followed(reg: Registry, tmp_path: Path) -> None:
    path = reg.key_path("b1")
    path.unlink()
    path.symlink_to("/dev/zero")
    assert _refusal(reg) == "cannot read key file %s: is a character device, not a regular file" % path
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_bytes(KEY.hex().encode() + b"\n")
    elsewhere.chmod(0o600)
    path.unlink()
    path.symlink_to(elsewhere)
    assert reg.key("b1") == KEY
    reg.close()


@pytest.mark.parametrize("regular_only", [False, True])
def test_a_key_file_of_the_largest_size_is_read_and_one_byte_more_is_refused(tmp_path: Path,
                                                                             regular_only: bool) -> None:
    path = tmp_path / "k.hex"
    text = KEY.hex().encode() + b"\n"
    path.write_bytes(text + b" " * (_KEY_FILE_MAX - len(text)))
    assert read_key_file(path, regular_only=regular_only) == KEY
    path.write_bytes(text + b" " * (_KEY_FILE_MAX + 1 - len(text)))
    with pytest.raises(RegistryError) as info:
        read_key_file(path, regular_only=regular_only)
    assert str(info.value) == "key file %s does not hold a 32-byte key (64 hex chars or 32 raw bytes)" % path
    assert info.value.reason == "bad_key"


def test_a_key_file_this_user_may_not_read_says_so_with_the_denial_as_cause(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.hex"
    path.write_bytes(KEY.hex().encode())

    def denied(file: str | Path, limit: int, *, pipes: bool = False) -> bytes:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(key_files, "read_limited", denied)
    with pytest.raises(RegistryError) as info:
        read_key_file(path, regular_only=True)
    assert str(info.value) == "cannot read key file %s: Permission denied" % path
    assert isinstance(info.value.__cause__, PermissionError)  # `devices show` tells "unreadable by this user" by it


def test_the_names_split_out_of_devices_stay_importable_there() -> None:
    for module, names in ((key_files, ("KEY_LEN", "generate_key", "key_fingerprint", "read_key_file")),
                          (records, ("DeviceRecord", "_ADDED_COLUMNS", "_COLUMNS")),
                          (values, ("MAX_DECIMALS", "decimal_text", "same_decimal", "same_place", "unsigned_zero",
                                    "validate_device"))):
        for name in names:
            assert getattr(devices, name) is getattr(module, name), name


def test_writing_a_key_file_goes_through_the_devices_module(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests and tools patch devices._write_private: the Registry must still write key files through it."""
    written: list[Path] = []
    real = devices._write_private

    def noted(path: Path, data: bytes) -> None:
        written.append(path)
        real(path, data)

    monkeypatch.setattr(devices, "_write_private", noted)
    reg.rotate_key("b1")
    assert written == [reg.key_path("b1")]
    reg.close()
