"""QA of `civicedge routes plan` as a waste-operations manager runs it: config errors, --help, the clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from routes_helpers import run_cli


@pytest.mark.parametrize(("text", "needle"), [
    ("[routes\nvehicles = 2\n", "not valid TOML"),
    (None, "No such file"),
])
def test_a_bad_config_file_is_named_as_the_config_file(tmp_path: Path, text: str | None, needle: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "malformed.toml"
    if text is not None:
        cfg.write_text(text)
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89",
                              "--config", str(cfg)], capsys)
    assert code == 5 and out == ""
    assert f"cannot read the config file {cfg}: " in err and needle in err, err
    assert "bin data" not in err, err
