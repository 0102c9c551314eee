"""Every hand-edited TOML file is read the same way (gateway.toml_text): a UTF-8 byte-order mark is
skipped, UTF-16 and other non-UTF-8 bytes are named. Before, the routes planner refused a gateway.toml
with a byte-order mark that `gateway run` read, and so did board definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.routes.config import load_plan_defaults
from gateway.routes.errors import BinDataError
from gateway.toml_text import TomlTextError, decode_toml_bytes, read_toml_text
from hil.boards import BoardError, load_board
from hil.boards.loader import boards_dir
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli

BOM = b"\xef\xbb\xbf"


def test_decode_skips_bom_and_names_bad_bytes() -> None:
    assert decode_toml_bytes(BOM + b"a = 1\n") == "a = 1\n"
    with pytest.raises(TomlTextError) as info:
        decode_toml_bytes("a = 1\n".encode("utf-16"), what="board definition")
    assert info.value.reason == "utf16" and "save the board definition as UTF-8" in str(info.value)
    with pytest.raises(TomlTextError) as info:
        decode_toml_bytes(b"a = '\xe9'\n")
    assert info.value.reason == "not_utf8" and "byte 0xe9 at offset 5" in str(info.value)


def test_read_names_directory_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(TomlTextError) as info:
        read_toml_text(tmp_path, what="config")
    assert info.value.reason == "directory" and str(info.value) == "is a directory, not a config"
    with pytest.raises(TomlTextError) as info:
        read_toml_text(tmp_path / "absent.toml")
    assert info.value.reason == "unreadable" and info.value.strerror == "No such file or directory"


def test_gateway_and_routes_read_the_same_bom_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_bytes(BOM + b'[gateway]\nid = "gw-bom"\ndata_dir = "data"\n\n[routes]\nvehicles = 3\n')
    assert load_config(config).id == "gw-bom"
    assert load_plan_defaults(config).vehicles == 3


def test_config_readers_name_utf16(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_bytes('[gateway]\nid = "gw"\n'.encode("utf-16"))
    with pytest.raises(ConfigError, match="UTF-16 byte-order mark"):
        load_config(config)
    with pytest.raises(BinDataError, match="UTF-16 byte-order mark"):
        load_plan_defaults(config)


def test_board_definition_with_bom_loads_and_latin1_is_named(tmp_path: Path) -> None:
    shipped = (boards_dir() / "streetlight-esp32.toml").read_bytes()
    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes(BOM + shipped)
    assert load_board(with_bom).name == load_board("streetlight-esp32").name
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"# \xe9clairage\n" + shipped)
    with pytest.raises(BoardError) as info:
        load_board(latin1)
    assert "not UTF-8 text (line 1, column 3: byte 0xe9 at offset 2, é in Windows-1252?)" in str(info.value) and str(latin1) in str(info.value)


def test_stimuli_file_utf16_named(tmp_path: Path) -> None:
    io = BoardIo(load_board("streetlight-esp32").to_device_config())
    good = tmp_path / "good.toml"
    good.write_bytes(BOM + b"[set]\nlight = 5\n")
    assert load_stimuli(good, io, 0) is not None
    bad = tmp_path / "bad.toml"
    bad.write_bytes("[set]\nlight = 5\n".encode("utf-16"))
    with pytest.raises(StimulusError, match=r"UTF-16 byte-order mark\); save the stimuli file as UTF-8"):
        load_stimuli(bad, io, 0)
