"""docs/api.md says only generated admin tokens are safe, naming a hand-made token the strength check takes
(review LOW-6): this pins that example to what zxcvbn really does, so the docs cannot drift from it, and
docs/upgrading.md says guessable tokens now stop the gateway, with the check to run and the replacement."""

from __future__ import annotations

from pathlib import Path

from gateway.config.token_strength import token_weakness
from gateway.web.auth import token_problem

DOCS = Path(__file__).resolve().parents[2] / "docs"
WALK = "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p"


def test_the_documented_keyboard_walk_passes_the_check_and_the_docs_say_only_generated_tokens_are_safe() -> None:
    assert token_weakness(WALK) is None and token_problem(WALK) is None  # the gap the docs name is real
    api = " ".join((DOCS / "api.md").read_text(encoding="utf-8").split())
    assert "**Only generated tokens are safe.**" in api
    assert "`%s`" % WALK in api


def test_the_upgrade_steps_say_a_guessable_token_stops_the_gateway() -> None:
    text = " ".join((DOCS / "upgrading.md").read_text(encoding="utf-8").split())
    assert "a guessable admin token" in text and "stops the gateway from starting" in text
    assert "openssl rand -hex 32" in text and "run --check" in text
