"""A TOML file that is not UTF-8 names the first bad byte by line and column, as an editor shows it
(i18n QA #4: only a byte offset was given), and the Windows-1252 letter it would be."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import ConfigError, load_config
from gateway.toml_text import TomlTextError, decode_toml_bytes


def _message(data: bytes) -> str:
    with pytest.raises(TomlTextError) as info:
        decode_toml_bytes(data)
    assert info.value.reason == "not_utf8"
    return str(info.value)


def test_line_column_offset_and_the_cp1252_letter() -> None:
    data = '[gateway]\nid = "gw"\nname = "Grün"\n'.encode("cp1252")
    assert _message(data) == ("not UTF-8 text (line 3, column 11: byte 0xfc at offset 30, ü in Windows-1252?); "
                              "save the file as UTF-8")


def test_columns_count_characters_and_skip_the_bom() -> None:
    # "é" before the bad byte is one column, not two bytes; a leading BOM is no column.
    data = b"\xef\xbb\xbf" + 'x = "é'.encode() + b'\xe4"\n'
    assert "(line 1, column 7: byte 0xe4 at offset 10, ä in Windows-1252?)" in _message(data)


@pytest.mark.parametrize("byte", [b"\x80", b"\x81", b"\xa7"])  # €, not in Windows-1252, §: no letter, no guess
def test_no_guess_when_the_byte_is_no_letter(byte: bytes) -> None:
    message = _message(b'a = 1\nx = "' + byte + b'"\n')
    assert "(line 2, column 6: byte 0x%02x at offset 11); save" % byte[0] in message
    assert "Windows-1252" not in message


def test_the_config_error_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_bytes('[gateway]\nid = "gw"\ndata_dir = "data"\n# Köln\n'.encode("cp1252"))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "line 4, column 4: byte 0xf6 at offset 41, ö in Windows-1252?" in str(info.value)
