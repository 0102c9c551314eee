"""A guessable admin token is refused wherever a token is taken (gateway.config.token_strength, zxcvbn): at config
load, when a token file is read again while the gateway runs (read_admin_token), and by the web layer's
AdminToken. A security audit found ``password12345678`` accepted (16 characters, no placeholder). Random tokens of
the sizes the docs give always pass (property test over uniformly random bytes, as secrets and openssl draw).
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.loader import parse_config, read_admin_token, token_weakness
from gateway.config.token_strength import JUDGED_CHARS, MIN_TOKEN_GUESSES_LOG10
from gateway.errors import ConfigError
from gateway.web.auth import AdminToken, token_problem

EXAMPLES = 300 if os.environ.get("CIVICEDGE_FULL") == "1" else 40

# Each is >= 16 printable characters without spaces and no placeholder: all passed before.
GUESSABLE = [
    "password12345678",  # the audit's
    "qwertyuiopasdfgh",  # a keyboard row
    "1qaz2wsx3edc4rfv",  # keyboard columns
    "2026-12-07-admin-token",  # a date and words
    "19700101-19991231",  # two dates
    "civicedge-admin-token-2026",  # this project's words joined by separators (10^16.8 judged as written)
    "correcthorsebatterystaple",  # a famous passphrase
    "Summer2026!Summer2026!",  # a repeated word and year
    "iloveyou12345678!",
    "P@ssw0rd1234567890",  # substitutions
    "test-admin-token-0123456789abcdef",  # tests/web's own fixture token until this check came
]


def _config(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def _no_window_of(token: str, text: str) -> None:
    """No 12-character window of ``token`` is in ``text``: a refusal names the pattern, never the token."""
    for i in range(len(token) - 11):
        assert token[i:i + 12] not in text, (token[i:i + 12], text)


@pytest.mark.parametrize("token", GUESSABLE)
def test_a_guessable_token_is_refused_at_load_at_reread_and_by_the_web_layer(tmp_path: Path, token: str) -> None:
    path = _config(tmp_path, token)
    with pytest.raises(ConfigError) as at_load:
        parse_config({"gateway": {"id": "gw", "data_dir": str(tmp_path)}, "http": {"admin_token_file": str(path)}},
                     source=None)
    assert at_load.value.key == "http.admin_token_file" and at_load.value.reason == "bad_value"
    message = str(at_load.value)
    assert str(path) in message and "too easy to guess" in message and "openssl rand -hex 32" in message, message
    assert "at least 10^16 needed" in message
    _no_window_of(token, message)
    with pytest.raises(ConfigError, match="too easy to guess"):
        read_admin_token(path)  # what AdminToken.refresh takes a changed token file through
    with pytest.raises(ValueError, match="admin token is too easy to guess") as in_web:
        AdminToken(token)
    _no_window_of(token, str(in_web.value))


def test_the_refusal_says_why() -> None:
    assert "common" in (token_weakness("password12345678") or "")
    assert "date" in (token_weakness("19700101-19991231") or "")
    assert "Straight rows of keys" in (token_weakness("qwertyuiopasdfgh") or "").capitalize() or \
        "common" in (token_weakness("qwertyuiopasdfgh") or "")
    assert "sequence" in (token_weakness("abcdefghijklmnopqrstu") or "").lower()


RECIPES = {
    # name: (bytes drawn, encoding) as the docs' commands produce them
    "openssl rand -hex 16": (16, lambda b: b.hex()),
    "openssl rand -hex 32": (32, lambda b: b.hex()),
    "openssl rand -base64 24": (24, lambda b: base64.b64encode(b).decode()),
    "secrets.token_urlsafe(32)": (32, lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()),
    "secrets.token_hex(32)": (32, lambda b: b.hex()),
}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=st.sampled_from(sorted(RECIPES)), rng=st.randoms(use_true_random=True))
def test_random_tokens_of_the_recommended_sizes_always_pass(recipe: str, rng: random.Random) -> None:
    """``use_true_random``: the bytes are uniform, as os.urandom's (a byte string Hypothesis picks would be all
    zeros first, which no generator hands out and which is rightly refused)."""
    size, encode = RECIPES[recipe]
    token = encode(rng.randbytes(size))
    assert token_weakness(token) is None, (recipe, token)
    assert token_problem(token) is None, (recipe, token)


def test_tokens_from_secrets_and_openssl_themselves_pass(tmp_path: Path) -> None:
    import secrets

    for _ in range(20):
        for token in (secrets.token_hex(16), secrets.token_hex(32), secrets.token_urlsafe(32),
                      base64.b64encode(secrets.token_bytes(24)).decode()):
            assert token_problem(token) is None, token
    if shutil.which("openssl") is None:
        pytest.skip("no openssl on this machine")
    for args in (["-hex", "16"], ["-hex", "32"], ["-base64", "24"]):
        token = subprocess.run(["openssl", "rand", *args], check=True, capture_output=True, text=True).stdout.strip()
        assert read_admin_token(_config(tmp_path, token)) == token


def test_a_long_token_is_judged_by_its_first_characters_and_quickly() -> None:
    """zxcvbn refuses input over 72 characters (ValueError) and slows down with the length: a 4 KiB token is judged
    by its first JUDGED_CHARS characters (judged whole, zxcvbn would raise)."""
    import secrets

    assert token_problem(secrets.token_hex(2048)) is None
    assert token_weakness("password" * 9 + secrets.token_hex(100)) is not None  # what is judged is guessable
    assert JUDGED_CHARS == 72 and MIN_TOKEN_GUESSES_LOG10 == 16
