"""gateway.toml_text.read_toml_text (the routes planner's gateway.toml, simulator stimuli files) reads a
regular file of at most 1 MiB without blocking, and refuses a document nested too deeply for tomllib.
Before, a FIFO blocked for ever, /dev/zero was read until memory ran out, and ``a = [[[...]]]`` 5000
deep was a RecursionError traceback out of the caller's tomllib.loads. Tests fail before."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import pytest

from gateway.routes.config import load_plan_defaults
from gateway.routes.errors import BinDataError
from gateway.toml_text import TomlTextError, read_toml_text
from hil.boards import load_board
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli

DEEP = b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"


def _within(seconds: float, call: Callable[[], object], fifo: Path) -> BaseException:
    """The exception ``call`` raises, which must come within ``seconds`` (a blocked read is freed)."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        with open(fifo, "wb"):  # a writer that closes at once: the blocked read ends
            pass
        t.join(10)
        pytest.fail("blocked on a FIFO")
    assert caught, "no error"
    return caught[0]


def test_read_refuses_a_fifo_and_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "gateway.toml"
    os.mkfifo(fifo)
    exc = _within(10, lambda: read_toml_text(fifo, what="config"), fifo)
    assert isinstance(exc, TomlTextError) and exc.reason == "unreadable" and exc.strerror is None
    assert str(exc) == "cannot read the config: is a FIFO, not a regular file"
    with pytest.raises(TomlTextError, match="is a character device, not a regular file"):
        read_toml_text(Path("/dev/zero"), what="config")


def test_read_refuses_more_than_1_mib_and_deep_nesting(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(TomlTextError) as info:
        read_toml_text(big, what="config")
    assert str(info.value) == "cannot read the config: larger than 1 MiB, the most this file may hold"
    deep = tmp_path / "deep.toml"
    deep.write_bytes(DEEP)
    with pytest.raises(TomlTextError) as info:
        read_toml_text(deep, what="config")
    assert info.value.reason == "nested" and str(info.value).startswith("not valid TOML: nested too deeply")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"a = = 1\n")
    assert read_toml_text(bad) == "a = = 1\n"  # not TOML: left to the caller's parse, in its own words


def test_routes_config_errors_stay_bin_data_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "gateway.toml"
    os.mkfifo(fifo)
    exc = _within(10, lambda: load_plan_defaults(fifo), fifo)
    assert isinstance(exc, BinDataError) and "is a FIFO, not a regular file" in str(exc) and str(fifo) in str(exc)
    deep = tmp_path / "deep.toml"
    deep.write_bytes(b"[routes]\nvehicles = 2\n" + DEEP)
    with pytest.raises(BinDataError, match="nested too deeply") as info:
        load_plan_defaults(deep)
    assert str(deep) in str(info.value)


def test_stimuli_file_errors_stay_stimulus_errors(tmp_path: Path) -> None:
    io = BoardIo(load_board("streetlight-esp32").to_device_config())
    fifo = tmp_path / "stimuli.toml"
    os.mkfifo(fifo)
    exc = _within(10, lambda: load_stimuli(fifo, io, 0), fifo)
    assert isinstance(exc, StimulusError)
    assert str(exc) == "%s: cannot read the stimuli file: is a FIFO, not a regular file" % fifo
    deep = tmp_path / "deep.toml"
    deep.write_bytes(b"[set]\nlight = 5\n" + DEEP)
    with pytest.raises(StimulusError, match="nested too deeply"):
        load_stimuli(deep, io, 0)
