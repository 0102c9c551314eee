"""Log lines an unauthenticated request causes: no forged lines (control characters escaped), rate
limited; refused admin calls are logged (without the token); weak admin tokens are refused."""

from __future__ import annotations

import logging
import re
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.auth import AdminToken

pytestmark = pytest.mark.timeout(30)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[TestClient]:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


async def test_a_refused_host_with_a_newline_and_escape_in_the_path_logs_one_clean_line(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.web")
    forged = "/x%0a2026-01-01 INFO gateway.web.admin_api admin API: revoked device sl-01%1b[2J"
    for _ in range(5):
        resp = await client.get(forged, headers={"Host": "evil.example"})
        assert resp.status == 400
    refused = [r for r in caplog.records if "refused" in r.getMessage() and "Host" in r.getMessage()]
    assert len(refused) == 1  # rate-limited: one line for five refusals
    message = refused[0].getMessage()
    assert not CONTROL.search(message), message
    assert "\\n2026-01-01" in message and "\\x1b[2J" in message


async def test_a_long_path_is_cut_in_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.web")
    await client.get("/" + "a" * 3000, headers={"Host": "evil.example"})
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "a" * 200 not in line and "a" * 150 in line and "..." in line


@pytest.mark.parametrize(("headers", "reason"), [({}, "missing_token"),
                                                  ({"Authorization": "Bearer guess-guess-guess-1234"}, "wrong_token")])
async def test_a_refused_admin_call_is_a_rate_limited_warning_without_the_token(
        client: TestClient, caplog: pytest.LogCaptureFixture, headers: dict[str, str], reason: str) -> None:
    caplog.set_level(logging.INFO, logger="gateway.web")
    for _ in range(4):
        resp = await client.put("/api/admin/retention", json={"kind": "streetlight", "field": "lux", "days": 7},
                                headers=headers)
        assert resp.status == 401
    refused = [r for r in caplog.records if "refused an admin call" in r.getMessage()]
    assert len(refused) == 1
    [record] = refused
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert reason in message and "127.0.0.1" in message and "'/api/admin/retention" in message
    assert "guess" not in caplog.text and ADMIN_TOKEN not in caplog.text


@pytest.mark.parametrize("token", ["a" * 32, "abababababababababab", "abcabcabcabcabcabcabcabc",
                                   "1234123412341234", "abcdabcdabcdabcdabcd"])
def test_a_placeholder_admin_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="placeholder.*openssl rand -hex 32"):
        AdminToken(token)


@pytest.mark.parametrize("token", ["0123456789abcdef", "0123456012345601234560", "1122334455667788",
                                   "abcdeabcdeabcdeabcde"])
def test_an_admin_token_that_is_no_short_unit_repeated_is_no_placeholder_but_refused_as_guessable(token: str) -> None:
    """The placeholder rule stops at units of 4; a sequence or a longer repeat is refused by the strength check
    (zxcvbn; tests/gateway/test_admin_token_strength.py), which names the pattern, not the token."""
    from gateway.config.loader import token_placeholder

    assert token_placeholder(token) is None
    with pytest.raises(ValueError, match="too easy to guess.*openssl rand -hex 32") as info:
        AdminToken(token)
    assert token not in str(info.value)


def test_the_placeholder_rule_refuses_no_random_hex_or_digit_token() -> None:
    # 16 random hex characters have fewer than 8 distinct ones 1.1% of the time, 16 random digits 24%:
    # the placeholder rule must not refuse any of them. (Whether 16 characters are enough is the strength
    # check's to say: zxcvbn finds dates in half of the digit strings, and prices a character at 10 guesses,
    # so it refuses about half of the 16-character hex ones too; the docs ask for openssl rand -hex 32.)
    import random

    from gateway.config.loader import token_placeholder

    rng = random.Random(20261205)
    for alphabet in ("0123456789abcdef", "0123456789"):
        refused = [t for t in ("".join(rng.choice(alphabet) for _ in range(16)) for _ in range(10_000))
                   if token_placeholder(t) is not None]
        assert refused == [], refused[:5]


def test_the_config_refuses_a_placeholder_admin_token_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway.config.loader import parse_config
    from gateway.errors import ConfigError

    token = tmp_path / "admin.token"
    token.write_text("abcdabcdabcdabcdabcdabcd\n")
    token.chmod(0o600)
    with pytest.raises(ConfigError, match="'abcd' repeated: it looks like a placeholder.*openssl rand -hex 32"):
        parse_config({"gateway": {"id": "gw", "data_dir": str(tmp_path)},
                      "http": {"admin_token_file": str(token)}}, source=None)


def test_the_config_accepts_a_random_admin_token_of_few_distinct_characters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway.config.loader import parse_config

    token = tmp_path / "admin.token"
    # 40 random digits, 4 distinct: refused before as a "placeholder" (and 40 so that zxcvbn, which prices a
    # digit at 10 guesses and finds dates in digits, has enough left: 16 such digits are refused as guessable)
    token.write_text("8491118141199141911419141489418414811149\n")
    token.chmod(0o600)
    cfg = parse_config({"gateway": {"id": "gw", "data_dir": str(tmp_path)},
                        "http": {"admin_token_file": str(token)}}, source=None)
    assert cfg.http is not None and cfg.http.admin_token_file == token
