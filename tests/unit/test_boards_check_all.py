"""`civicedge boards check` without arguments checks every board `boards list` shows (the shipped ones,
and a site directory's of CIVICEDGE_BOARDS) instead of stopping at "the following arguments are
required: boards" (package-install QA: a package user has no boards/*.toml to name)."""

from __future__ import annotations

from pathlib import Path

import pytest

import hil.boards.cli as boards_cli
from gateway.resources import boards_dir
from hil.boards.search import BOARDS_PATH_ENV
from hil.cli.main import main


def test_no_argument_checks_every_shipped_board(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOARDS_PATH_ENV, raising=False)
    assert main(["boards", "check"]) == 0
    captured = capsys.readouterr()
    shipped = sorted(p.stem for p in boards_dir().glob("*.toml"))
    assert len(shipped) > 1
    oks = [line.split()[1] for line in captured.out.splitlines() if line.startswith("ok: ")]
    assert oks == shipped
    assert "required" not in captured.err


def test_no_argument_checks_a_site_directorys_boards_too(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-boards"
    site.mkdir()
    (site / "site-broken.toml").write_text("chip = = \n")
    monkeypatch.setenv(BOARDS_PATH_ENV, str(site))
    assert main(["boards", "check"]) == 1
    out = capsys.readouterr().out
    assert f"error: {site / 'site-broken.toml'}: not valid TOML" in out
    assert out.count("ok: ") == len(list(boards_dir().glob("*.toml")))  # the shipped ones are still checked


def test_no_argument_and_no_definitions_says_where_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "boards"
    empty.mkdir()
    monkeypatch.delenv(BOARDS_PATH_ENV, raising=False)
    monkeypatch.setattr(boards_cli, "boards_dir", lambda: empty)
    assert main(["boards", "check"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"no board definitions in {empty}" in captured.err


def test_a_bad_search_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(BOARDS_PATH_ENV, str(tmp_path / "typo"))
    assert main(["boards", "check"]) == 1
    assert f"{tmp_path / 'typo'}" in capsys.readouterr().err
