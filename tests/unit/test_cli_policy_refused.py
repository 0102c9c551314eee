"""A privacy policy that breaks the release rules, met by a board or field command: a one-line error
naming the key, as `gateway run --check` gives it, not a traceback (review of 070ffab)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

import gateway.resources as resources
from hil.cli.main import main


@pytest.fixture
def typo_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    policy = json.loads(resources.policy_path().read_text(encoding="utf-8"))
    policy["kinds"]["bin"]["fields"]["lid"]["release"] = "noisy-count"
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps(policy), encoding="utf-8")
    board = resources.boards_dir() / "bin-esp32c3.toml"
    resources.load_policy.cache_clear()
    monkeypatch.setattr(resources, "policy_path", lambda: bad)
    try:
        yield board
    finally:
        monkeypatch.undo()
        resources.load_policy.cache_clear()


@pytest.mark.parametrize("argv", [["boards", "check", "{board}"], ["boards", "list"], ["boards", "show", "bin-esp32c3"]])
def test_a_policy_breaking_the_release_rule_is_one_error_line(typo_policy: Path, argv: list[str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main([a.format(board=typo_policy) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error (bad_value) [kinds.bin.fields.lid.release]" in err and "noisy_count" in err
