"""The boards provision's advice names (a never-flashed board's flash command, a flash command's BOARD):
those --board NAME finds, a site's CIVICEDGE_BOARDS included, and the shipped ones when the variable is
wrong. Was: list_boards() outside the try, so a wrong CIVICEDGE_BOARDS crashed the advice with the
variable's error, and the docstring said "shipped" for what the search path finds."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.field.provision_cmd import _known_boards


def test_a_wrong_search_path_falls_back_to_the_shipped_boards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(tmp_path / "no-such-dir"))
    assert _known_boards(lambda d: d.chip == "esp32") == ["streetlight-esp32"]
    assert _known_boards(lambda d: d.chip == "esp32c3") == ["bin-esp32c3"]


def test_site_boards_are_offered_beside_the_shipped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    text = (boards_dir() / "streetlight-esp32.toml").read_text().replace('name = "streetlight-esp32"',
                                                                          'name = "sl-site"')
    (site / "sl-site.toml").write_text(text)
    (site / "broken.toml").write_text("not toml [")  # passed over, not an error
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(site))
    assert _known_boards(lambda d: d.chip == "esp32") == ["sl-site", "streetlight-esp32"]
