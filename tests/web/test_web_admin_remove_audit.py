"""The audit line of an admin API removal whose handler was cancelled before the removal ended (the web surface's
shutdown at the gateway's stop, which then lets the removal finish; fifth review M1): written exactly once, removed
or refused, by whichever side comes last. The gateway-level case: tests/gateway/test_service_stop_admin_removal.py."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.web import admin_api
from gateway.web.errors import Conflict

RESULT = {"kind": "bin", "zone": "Centre"}


def _request():  # type: ignore[no-untyped-def]
    req = make_mocked_request("DELETE", "/api/admin/devices/bin-2", match_info={"device_id": "bin-2"})
    req[admin_api._AUTHORIZED] = True
    return req


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.web.admin_api"]


def test_a_removal_ending_after_its_handler_was_cancelled_is_audited_by_its_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.web.admin_api")
    audit = admin_api._RemovalAudit(_request(), "bin-2")
    audit.abandoned()
    assert _lines(caplog) == []  # not ended yet: nothing to say
    audit.ended(RESULT, None)
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("admin API: removed device bin-2 (bin, zone Centre; never heard "
                                                   "from"), lines


def test_a_removal_refused_after_its_handler_was_cancelled_leaves_the_refusal_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.web.admin_api")
    audit = admin_api._RemovalAudit(_request(), "bin-2")
    audit.abandoned()
    audit.ended(None, Conflict("device bin-2 was heard from", code="heard_from", param="device_id"))
    lines = _lines(caplog)
    assert len(lines) == 1 and "refused DELETE" in lines[0] and "(device bin-2): 409 heard_from, param device_id" \
        in lines[0], lines


def test_a_removal_ended_before_its_handler_was_cancelled_is_audited_by_the_handler_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.web.admin_api")
    audit = admin_api._RemovalAudit(_request(), "bin-2")
    audit.ended(RESULT, None)
    assert _lines(caplog) == []  # the handler writes the line itself when it gets the result
    audit.abandoned()  # cancelled before it got it
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("admin API: removed device bin-2 ("), lines
