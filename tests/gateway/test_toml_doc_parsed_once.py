"""gateway.toml_text.read_toml_doc reads a TOML file as read_toml_text does and parses it once; the routes
planner's gateway.toml and a simulator stimuli file are parsed once through it. Before, read_toml_text
parsed the text to check its nesting and each caller parsed it again (two tomllib.loads per file)."""

from __future__ import annotations

import os
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.routes.config import load_plan_defaults
from gateway.routes.errors import BinDataError
from gateway.toml_text import TomlTextError, read_toml_doc, read_toml_text
from hil.boards import load_board
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli

DEEP = b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text tomllib.loads is called on, from here on."""
    seen: list[str] = []
    real = tomllib.loads

    def counting(text: str, /, **kwargs: Any) -> dict[str, Any]:
        seen.append(text)
        return real(text, **kwargs)

    monkeypatch.setattr(tomllib, "loads", counting)
    return seen


def test_read_toml_doc_parses_once_and_skips_a_bom(tmp_path: Path, parses: list[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"\xef\xbb\xbf[routes]\nvehicles = 2\n")
    assert read_toml_doc(path, what="config") == {"routes": {"vehicles": 2}}
    assert parses == ["[routes]\nvehicles = 2\n"]


def test_read_toml_doc_raises_what_read_toml_text_raises(tmp_path: Path) -> None:
    cases = {"big.toml": b"# " + b"x" * (1 << 20) + b"\n", "deep.toml": DEEP, "utf16.toml": b"\xff\xfea\x00",
             "latin1.toml": b"name = \"K\xf6ln\"\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for path in [*(tmp_path / name for name in cases), tmp_path, tmp_path / "absent.toml", Path("/dev/zero")]:
        with pytest.raises(TomlTextError) as text_error:
            read_toml_text(path, what="config")
        with pytest.raises(TomlTextError) as doc_error:
            read_toml_doc(path, what="config")
        assert (str(doc_error.value), doc_error.value.reason, doc_error.value.strerror) == (
            str(text_error.value), text_error.value.reason, text_error.value.strerror), path


def test_read_toml_doc_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "gateway.toml"
    os.mkfifo(fifo)
    caught: list[BaseException] = []

    def run() -> None:
        try:
            read_toml_doc(fifo, what="config")
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        with open(fifo, "wb"):  # a writer that closes at once: the blocked read ends
            pass
        t.join(10)
        pytest.fail("blocked on a FIFO")
    assert len(caught) == 1 and isinstance(caught[0], TomlTextError)
    assert str(caught[0]) == "cannot read the config: is a FIFO, not a regular file"


def test_read_toml_doc_leaves_not_toml_to_the_caller(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"a = = 1\n")
    with pytest.raises(tomllib.TOMLDecodeError):
        read_toml_doc(bad)


def test_routes_config_is_parsed_once(tmp_path: Path, parses: list[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\nid = \"gw\"\n[routes]\nvehicles = 3\n", encoding="utf-8")
    assert load_plan_defaults(path).vehicles == 3
    assert len(parses) == 1
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[routes\n")
    with pytest.raises(BinDataError, match=r"not valid TOML \(") as info:
        load_plan_defaults(bad)
    assert str(bad) in str(info.value)


def test_stimuli_file_is_parsed_once(tmp_path: Path, parses: list[str]) -> None:
    io = BoardIo(load_board("streetlight-esp32").to_device_config())
    parses.clear()  # the board definition's parse
    path = tmp_path / "stimuli.toml"
    path.write_text("[set]\nlight = 5\n", encoding="utf-8")
    assert len(load_stimuli(path, io, 0).initial) == 1
    assert parses == ["[set]\nlight = 5\n"]
    assert len(load_stimuli("[set]\nlight = 5\n", io, 0).initial) == 1  # TOML given inline: parsed as before
    assert len(parses) == 2
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[set\n")
    with pytest.raises(StimulusError, match="^stimuli file is not TOML: "):
        load_stimuli(bad, io, 0)
