"""-v/-vv are civicedge's detail, -vvv (or CIVICEDGE_LOG_DEBUG) the libraries' too; Bumble's expected noise.

Was: -vv turned DEBUG on at the root, so websockets frames and Bumble HCI dumps (ANSI colours)
flooded the log (385 KB in 90 s with one board); and at the default level every BLE connection
logged ``WARNING bumble.gatt_client: !!! received notification with no subscriber``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from gateway.cli.verbosity import DEBUG_LOGGERS_ENV, OWN_LOGGERS
from hil.cli.main import main

LIBRARIES = ("websockets.client", "bumble.host", "bumble.transport.common", "bleak", "aiomqtt", "paho.mqtt.client",
             "aiohttp.access")


@pytest.fixture
def levels() -> Iterator[None]:
    names = ["", *OWN_LOGGERS, *LIBRARIES, "bumble", "websockets"]
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def run_check(tmp_path: Path, *flags: str) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[http]\nenabled = false\n")
    assert main([*flags, "gateway", "run", "--config", str(cfg), "--check"]) == 0


@pytest.mark.parametrize(("before", "after", "own", "libraries"), [
    ([], [], logging.WARNING, logging.WARNING),
    (["-v"], [], logging.INFO, logging.WARNING),
    (["-vv"], [], logging.DEBUG, logging.WARNING),
    ([], ["-vv"], logging.DEBUG, logging.WARNING),
    (["-vvv"], [], logging.DEBUG, logging.DEBUG),
    (["-v"], ["-vv"], logging.DEBUG, logging.DEBUG),  # before and after `gateway run` add up
])
def test_vv_is_civicedge_debug_and_vvv_everything(tmp_path: Path, levels: None, before: list[str], after: list[str],
                                                  own: int, libraries: int) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[http]\nenabled = false\n")
    assert main([*before, "gateway", "run", "--config", str(cfg), *after, "--check"]) == 0
    for name in ("gateway.transports.ble_link", "hil.sim.radio.central"):
        assert logging.getLogger(name).getEffectiveLevel() == own, name
    for name in LIBRARIES:
        assert logging.getLogger(name).getEffectiveLevel() == libraries, name


def test_an_env_var_asks_for_one_librarys_debug(tmp_path: Path, levels: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEBUG_LOGGERS_ENV, "bumble, websockets")
    run_check(tmp_path, "-v")
    assert logging.getLogger("bumble.host").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("websockets.client").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("bleak").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("gateway.service").getEffectiveLevel() == logging.INFO


def test_bumbles_expected_virtual_radio_noise_is_debug(levels: None, caplog: pytest.LogCaptureFixture) -> None:
    """Early notifications (the board notifies before the central subscribed) and the relay closing."""
    import hil.sim.radio.hostlink  # noqa: F401 - installs the filters

    gatt, transport = logging.getLogger("bumble.gatt_client"), logging.getLogger("bumble.transport.common")
    closed = ConnectionClosedOK(Close(1001, "going away"), None)
    with caplog.at_level(logging.WARNING):
        gatt.warning("!!! received notification with no subscriber")
        try:
            raise closed
        except ConnectionClosedOK:
            transport.exception("exception while waiting for packet")
        gatt.warning("!!! some other warning")  # the rest of Bumble's warnings stay warnings
        try:
            raise ValueError("a real defect")
        except ValueError:
            transport.exception("exception while waiting for packet")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("bumble.gatt_client", "WARNING", "!!! some other warning"),
        ("bumble.transport.common", "ERROR", "exception while waiting for packet"),
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):  # -vvv: shown, as DEBUG
        gatt.warning("!!! received notification with no subscriber")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "!!! received notification with no subscriber")]


@pytest.mark.parametrize("value", ["*", "all", "ALL", "bumble,*"])
def test_an_env_var_of_star_or_all_is_everything(tmp_path: Path, levels: None, monkeypatch: pytest.MonkeyPatch,
                                                 value: str) -> None:
    monkeypatch.setenv(DEBUG_LOGGERS_ENV, value)
    run_check(tmp_path)
    for name in (*LIBRARIES, "gateway.service"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.DEBUG, name


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "on"])
def test_an_env_var_that_looks_like_a_switch_is_warned_about(
        tmp_path: Path, levels: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        value: str) -> None:
    from gateway.cli import verbosity

    monkeypatch.setattr(verbosity, "_warned", set())
    monkeypatch.setenv(DEBUG_LOGGERS_ENV, value)
    run_check(tmp_path, "-v")
    run_check(tmp_path, "-v")  # once per process
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "%s=%s ignored" % (DEBUG_LOGGERS_ENV, value) in err, err
    assert "or * for everything" in err
    assert logging.getLogger(value).level == logging.NOTSET
    assert logging.getLogger("bumble.host").getEffectiveLevel() == logging.WARNING


def test_the_relay_verbosity_is_civicedges_not_the_libraries(levels: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``python -m hil.sim.radio -v`` set the root logger to DEBUG (websockets frames, HCI dumps)."""
    from hil.sim.radio import __main__ as relay_main

    seen: dict[str, int] = {}

    async def serve(host: str, port: int, as_json: bool) -> None:  # instead of running a relay
        seen.update({n: logging.getLogger(n).getEffectiveLevel() for n in ("hil.sim.radio.relay", *LIBRARIES)})

    monkeypatch.setattr(relay_main, "_serve", serve)
    assert relay_main.main(["-vv"]) == 0
    assert seen.pop("hil.sim.radio.relay") == logging.DEBUG
    assert set(seen.values()) == {logging.WARNING}, seen


def test_a_command_lost_with_the_relay_is_debug(levels: None, caplog: pytest.LogCaptureFixture) -> None:
    """Bumble's "!!! Exception while sending command" (ERROR, traceback) when the relay went away mid-command."""
    import hil.sim.radio.hostlink  # noqa: F401 - installs the filters
    from bumble.colors import color
    from bumble.transport.common import TransportLostError

    host = logging.getLogger("bumble.host")
    with caplog.at_level(logging.WARNING):
        for error in (TransportLostError("transport lost"), ValueError("a malformed packet")):
            try:
                raise error
            except Exception:
                host.exception(color("!!! Exception while sending command:", "red"))
    assert [(r.name, r.levelname, type(r.exc_info[1]).__name__ if r.exc_info else None) for r in caplog.records] == [
        ("bumble.host", "ERROR", "ValueError")]


def test_a_late_answer_to_a_command_that_gave_up_is_debug(levels: None, caplog: pytest.LogCaptureFixture) -> None:
    """Bumble's "!!! Exception in on_packet" (ERROR, traceback) when an HCI command's answer came after the
    command had given up (the relay restarting): InvalidStateError in Host.on_command_processed. Failed
    once in CI (tests/gateway/test_ble_radio_recovery.py: 'Traceback' in the gateway's log)."""
    import asyncio

    import hil.sim.radio.hostlink  # noqa: F401 - installs the filters
    from bumble.colors import color

    def on_command_processed(future: asyncio.Future[None]) -> None:  # named as Bumble's handler is
        future.set_result(None)

    def elsewhere(future: asyncio.Future[None]) -> None:
        future.set_result(None)

    transport = logging.getLogger("bumble.transport.common")
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING):
            for handler in (on_command_processed, elsewhere):
                done: asyncio.Future[None] = loop.create_future()
                done.cancel()
                try:
                    handler(done)
                except asyncio.InvalidStateError:
                    transport.exception(color("!!! Exception in on_packet", "red"))
    finally:
        loop.close()
    assert [(r.name, r.levelname) for r in caplog.records] == [("bumble.transport.common", "ERROR")]
    assert caplog.records[0].exc_info is not None and caplog.records[0].exc_info[2] is not None
