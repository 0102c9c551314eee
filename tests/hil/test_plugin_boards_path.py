"""CIVICEDGE_BOARDS in the pytest plugin: a bad entry is one usage error, not a traceback per test;
a site's board is found, suggested and named like a shipped one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.boards import load_board

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def not_a_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CIVICEDGE_BOARDS naming a file (a typo a site could make)."""
    entry = tmp_path / "site-boards.txt"
    entry.write_text("not a directory\n")
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(entry))
    return entry


def test_a_bad_entry_is_a_usage_error_for_a_session_using_a_board(pytester: pytest.Pytester,
                                                                   not_a_dir: Path) -> None:
    """Before: every test errored with the BoardError traceback from hil/boards/search.py."""
    pytester.makepyfile("""
        def test_board(hil_board_definition):
            pass

        def test_other(hil_manifest):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: CIVICEDGE_BOARDS: '{not_a_dir}' is not a directory; CIVICEDGE_BOARDS lists "
                                 "directories of board files (separated by ':'), searched before the shipped boards "
                                 "(fix or unset it); test_a_bad_entry_is_a_usage_error_for_a_session_using_a_board.py"
                                 "::test_board and every other test using a board by name cannot find it"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_session_not_looking_up_a_board_name_runs(pytester: pytest.Pytester, not_a_dir: Path) -> None:
    """Loading by path ignores CIVICEDGE_BOARDS (as hil.boards does), and a test using no board runs."""
    shutil.copy(boards_dir() / "bin-esp32c3.toml", pytester.path / "own-bin.toml")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.board("own-bin.toml")
        def test_own_file(hil_board_definition):
            assert hil_board_definition.source.name == "own-bin.toml"

        def test_no_board():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_serial_without_a_definition_names_the_bad_entry(pytester: pytest.Pytester, not_a_dir: Path,
                                                         tmp_path: Path) -> None:
    """no_definition_reason lists the boards; with a bad CIVICEDGE_BOARDS it says why it cannot (was a traceback)."""
    pytester.makepyfile("""
        def test_board(hil_board):
            pass
    """)
    result = pytester.runpytest("--hil-backend", "serial", "--hil-port", "/dev/ttyNOPE0", "--hil-lease-dir",
                                str(tmp_path / "leases"), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["hil_board_definition: no board definition for the board on --hil-port /dev/ttyNOPE0: "
                                 "* (boards: cannot be listed: CIVICEDGE_BOARDS: "
                                 f"'{not_a_dir}' is not a directory; * (fix or unset it))"])
    assert "BoardError" not in result.stdout.str()


def test_a_bad_entry_with_hil_board_is_a_usage_error(pytester: pytest.Pytester, not_a_dir: Path) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--hil-board", "streetlight-esp32", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --hil-board streetlight-esp32: CIVICEDGE_BOARDS: * is not a directory;*"])


def test_a_site_board_typo_gets_the_loaders_suggestion(pytester: pytest.Pytester, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker's did-you-mean is BoardNotFoundError.suggestion: it knows the CIVICEDGE_BOARDS boards too."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(load_board("bin-esp32c3").source, site / "depot-bin-c3.toml")
    monkeypatch.setenv("CIVICEDGE_BOARDS", str(site))
    pytester.makepyfile("""
        import pytest

        @pytest.mark.board("depot-bin-3c")
        def test_typo(hil_board_definition):
            pass

        @pytest.mark.board("depot-bin-c3")
        def test_found(hil_board_definition):
            assert hil_board_definition.source.parent.name == "site"

        @pytest.mark.board("depot.toml")
        def test_bare_file(hil_board_definition):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines([
        "hil_board: BoardNotFoundError: @pytest.mark.board('depot-bin-3c'): no such board 'depot-bin-3c' "
        "(did you mean 'depot-bin-c3'? boards: bin-esp32c3, depot-bin-c3, streetlight-esp32*)",
    ])
    # A bare x.toml: every place it was looked for, the site's directory among them.
    result.stdout.fnmatch_lines([f"*@pytest.mark.board('depot.toml'): no board file depot.toml (looked for "
                                 f"*/depot.toml next to the test, */depot.toml in the current directory, "
                                 f"{site}/depot.toml, */boards/depot.toml); boards by name: *"])
