"""The gateway's health problems carry stable codes and severities (gateway.health), so a monitor
tells a page (nothing stored) from a ticket (one port unplugged, broker away) without parsing text.

Was: every reason was free text with changing figures and paths; one unplugged serial port of two
was `degraded` exactly like a damaged store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from conftest import make_env
from gateway.config import load_config
from gateway.health import CRITICAL, OK, WARNING, overall, summary
from gateway.service import ALL_LINKS_DOWN_AFTER_S, Gateway


async def _until(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < end, what
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_a_missing_port_and_no_broker_are_warnings_a_damaged_store_is_critical(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB1")  # never created: the port cannot be opened
    master, slave = os.openpty()  # the other port is plugged in: the gateway still collects
    gw = Gateway(load_config(make_env(tmp_path, serial=(os.ttyname(slave), missing), mqtt_port=9)))
    await gw.start()
    try:
        await _until(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:" + os.ttyname(slave)}) == 1,
                     "the plugged-in port is up")
        await _until(lambda: any(p.code == "link_down" for p in gw.health()), "the port is reported down")
        problems = gw.health()
        assert {(p.code, p.severity, p.subject) for p in problems} == {
            ("mqtt_down", WARNING, None), ("link_down", WARNING, "serial:" + missing)}, problems
        assert overall(problems) == WARNING
        assert summary(problems) == "mqtt_down; link_down serial:%s" % missing
        # The reasons are the same texts as before: each problem is its reason.
        assert "serial:%s is down" % missing in problems

        gw.store.mark_damaged("PRAGMA quick_check found: On tree page 3 cell 0: invalid page number")
        problems = gw.health()
        assert [p.code for p in problems][0] == "store_damaged"
        assert problems[0].severity == CRITICAL and overall(problems) == CRITICAL
        assert summary(problems) == "store_damaged; mqtt_down; link_down serial:%s" % missing
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(60)
async def test_every_link_down_is_critical_ahead_of_the_link_warnings(tmp_path: Path) -> None:
    """Was: with every port unplugged the gateway collects nothing, yet its health was only a warning.
    (Critical once it lasted ALL_LINKS_DOWN_AFTER_S: test_all_links_down_delay.)"""
    ports = [tmp_path / "ttyUSB1", tmp_path / "ttyUSB2"]  # symlinks to a pty, made later: plugged in
    now = [0.0]
    gw = Gateway(load_config(make_env(tmp_path, serial=tuple(map(str, ports)))), health_monotonic=lambda: now[0])
    await gw.start()
    master, slave = os.openpty()
    try:
        await _until(lambda: len(gw.health()) == 2, "both ports are reported down")
        now[0] += ALL_LINKS_DOWN_AFTER_S
        problems = gw.health()
        assert [(p.code, p.severity, p.subject) for p in problems] == [
            ("all_links_down", CRITICAL, None),
            ("link_down", WARNING, "serial:%s" % ports[0]), ("link_down", WARNING, "serial:%s" % ports[1])]
        assert problems[0] == "every link is down (serial:%s, serial:%s): nothing is received or stored; the " \
                              "devices keep their reports" % (ports[0], ports[1])
        assert overall(problems) == CRITICAL
        assert summary(problems) == "all_links_down; link_down serial:%s; link_down serial:%s" % tuple(ports)

        ports[1].symlink_to(os.ttyname(slave))  # one port back: a warning again, the other still down
        await _until(lambda: len(gw.health()) == 1, "the port is back")
        assert [(p.code, p.subject) for p in gw.health()] == [("link_down", "serial:%s" % ports[0])]
        assert overall(gw.health()) == WARNING
    finally:
        await gw.stop()
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(60)
async def test_a_healthy_gateway_has_no_problems(tmp_path: Path) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    await gw.start()
    try:
        assert gw.health() == [] and overall(gw.health()) == OK and summary(gw.health()) == ""
    finally:
        await gw.stop()


def test_an_unknown_code_is_refused() -> None:
    from gateway.health import Problem

    with pytest.raises(ValueError, match="unknown health problem code 'disk_full'"):
        Problem("disk_full", "disk full")


def test_a_problem_copied_or_pickled_keeps_its_code() -> None:
    import copy
    import pickle

    from gateway.health import Problem

    p = Problem("link_down", "serial:/dev/ttyUSB1 is down", "serial:/dev/ttyUSB1")
    for q in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert (q, q.code, q.severity, q.subject) == (p, "link_down", "warning", "serial:/dev/ttyUSB1")
