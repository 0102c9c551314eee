"""A new admin token ends every client's known-good status with the throttle (review LOW-5): a client that
presented the old token (perhaps the leak the token file was replaced for) is not let past the global cap of
wrong tokens until it presents the new one. Before: the throttle, made once, kept them known good for 24 h."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from .support import ADMIN_TOKEN, admin_headers
from gateway.web.admin_throttle import GLOBAL_BURST
from gateway.web.auth import TOKEN_RECHECK_S, TOKEN_SETTLE_S, AdminThrottled, AdminToken
from gateway.web.errors import Unauthorized

pytestmark = pytest.mark.timeout(30)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _request(peer: str, token: str) -> web.Request:
    """An admin request with ``token`` from socket peer ``peer`` (no trusted proxy)."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    return make_mocked_request("GET", "/api/admin/retention", headers=admin_headers(token), transport=transport,
                               app=web.Application())


def _write(path: Path, token: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _use_up_the_global_budget(token: AdminToken) -> None:
    for i in range(int(GLOBAL_BURST)):
        with pytest.raises(Unauthorized):
            token.check(_request("203.0.%d.9" % (i + 1), "f0e1d2c3b4a5968778695a4b3c2d1e0f"))


def test_clients_known_good_with_the_old_token_are_not_known_good_once_the_token_changed(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "admin.token"
    _write(path, ADMIN_TOKEN)
    token = AdminToken(ADMIN_TOKEN, clock, path=path)
    old_holder, operator = "198.51.100.7", "198.51.100.8"
    token.check(_request(old_holder, ADMIN_TOKEN))  # known good with the old token
    new = secrets.token_hex(32)
    _write(path, new)
    for _ in range(3):  # the new file is looked at, settles, and is taken
        clock.now += TOKEN_RECHECK_S + TOKEN_SETTLE_S
        token.refresh()
    with pytest.raises(Unauthorized):
        token.check(_request(operator, ADMIN_TOKEN))  # the new token is in use
    token.check(_request(operator, new))  # the operator shows the new token: known good again
    clock.now += GLOBAL_BURST  # the global budget full again (the operator's old token above used one)
    _use_up_the_global_budget(token)
    with pytest.raises(AdminThrottled) as refused:
        token.check(_request(old_holder, new))  # was checked (200) before: still known good from the old token
    assert refused.value.retry_after_s == 1
    token.check(_request(operator, new))


def test_a_rewrite_with_the_same_token_keeps_the_clients_known_good(tmp_path: Path) -> None:
    """Only a change of token forgets them (a chmod or a rewrite of the same token is no new credential)."""
    clock = Clock()
    path = tmp_path / "admin.token"
    _write(path, ADMIN_TOKEN)
    token = AdminToken(ADMIN_TOKEN, clock, path=path)
    token.check(_request("198.51.100.7", ADMIN_TOKEN))
    _write(path, ADMIN_TOKEN)
    for _ in range(3):
        clock.now += TOKEN_RECHECK_S + TOKEN_SETTLE_S
        token.refresh()
    _use_up_the_global_budget(token)
    token.check(_request("198.51.100.7", ADMIN_TOKEN))
