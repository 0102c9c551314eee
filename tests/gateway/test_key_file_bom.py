"""A hex key file saved by Notepad (i18n QA #3): its UTF-8 byte-order mark was refused generically ("does not
hold a 32-byte key"). The mark is skipped before hex text only: a raw 32-byte key stays byte-exact, even one
that begins with the mark's bytes. UTF-16 text is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry.devices import read_key_file

KEY = bytes(range(0x40, 0x60))
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("regular_only", [False, True])
@pytest.mark.parametrize("data", [BOM + KEY.hex().encode(), BOM + KEY.hex().upper().encode() + b"\r\n",
                                  BOM + b"  " + KEY.hex().encode() + b"\n"])
def test_hex_after_a_bom_is_the_key(tmp_path: Path, data: bytes, regular_only: bool) -> None:
    path = tmp_path / "k.hex"
    path.write_bytes(data)
    assert read_key_file(path, regular_only=regular_only) == KEY


def test_a_raw_key_beginning_with_the_bom_bytes_stays_byte_exact(tmp_path: Path) -> None:
    raw = BOM + bytes(range(0x80, 0x80 + 29))
    path = tmp_path / "k.bin"
    path.write_bytes(raw)
    assert read_key_file(path) == raw


def test_utf16_hex_is_named(tmp_path: Path) -> None:
    path = tmp_path / "k.hex"
    path.write_bytes((KEY.hex() + "\r\n").encode("utf-16"))
    with pytest.raises(RegistryError) as info:
        read_key_file(path)
    assert info.value.reason == "bad_key"
    assert str(info.value).startswith("key file %s is UTF-16 text" % path) and "save the 64 hex" in str(info.value)
    assert KEY.hex() not in str(info.value)


def test_a_bom_before_text_that_is_not_hex_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.hex"
    path.write_bytes(BOM + b"z" * 64)
    with pytest.raises(RegistryError, match="does not hold a 32-byte key"):
        read_key_file(path)
